//! Bulk user import (`notifyctl users import`): one row per user, checked with the same domain
//! types as the API, then written as the API writes it (contacts replaced as `PUT
//! /v1/users/{id}` does, preferences patched, devices registered). A bad row is rejected with
//! every field that is wrong and writes nothing; good rows are kept.

use serde::Deserialize;

use crate::domain::FieldError;
use crate::domain::delivery::Platform;
use crate::domain::user::{Contacts, ContactsInput, Device, DeviceToken, MAX_DEVICES, PreferencesPatch, UserId};
use crate::error::DependencyError;
use crate::store::users::{Registration, UserStore};

/// The columns an import file may have; `user_id` is required, every other is optional.
pub const COLUMNS: [&str; 9] =
    ["user_id", "email", "phone", "locale", "timezone", "devices", "push_opt_in", "sms_opt_in", "email_opt_in"];

/// A row as read: every cell is text, an empty cell is `None`.
#[derive(Debug, Default, Deserialize)]
pub struct ImportRow {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    /// Space-separated `platform:token` entries, e.g. `ios:<64 hex> android:<fcm token>`.
    pub devices: Option<String>,
    pub push_opt_in: Option<String>,
    pub sms_opt_in: Option<String>,
    pub email_opt_in: Option<String>,
}

/// A checked row.
#[derive(Debug, PartialEq)]
pub struct ImportedUser {
    pub user_id: UserId,
    pub contacts: Contacts,
    pub preferences: PreferencesPatch,
    pub devices: Vec<(Platform, DeviceToken)>,
}

/// Checks the header: unknown columns are refused (a typo would silently drop a column).
pub fn check_columns<'a>(header: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let header: Vec<&str> = header.into_iter().collect();
    if let Some(unknown) = header.iter().find(|column| !COLUMNS.contains(column)) {
        return Err(format!("unknown column {unknown:?}; the columns are {}", COLUMNS.join(", ")));
    }
    if !header.contains(&"user_id") {
        return Err("the header has no user_id column".into());
    }
    Ok(())
}

impl ImportRow {
    pub fn check(self) -> Result<ImportedUser, Vec<FieldError>> {
        let mut errors = Vec::new();
        let user_id = match self.user_id.as_deref().map(UserId::parse) {
            Some(Ok(user_id)) => Some(user_id),
            Some(Err(message)) => {
                errors.push(FieldError::new("user_id", message));
                None
            }
            None => {
                errors.push(FieldError::new("user_id", "is required"));
                None
            }
        };
        let contacts =
            ContactsInput { email: self.email, phone: self.phone, locale: self.locale, timezone: self.timezone }
                .check()
                .map_err(|invalid| errors.extend(invalid))
                .ok();
        let mut opt_in = |name: &str, cell: Option<String>| {
            let cell = cell?;
            parse_bool(&cell).map_err(|message| errors.push(FieldError::new(name, message))).ok()
        };
        let preferences = PreferencesPatch {
            push: opt_in("push_opt_in", self.push_opt_in),
            sms: opt_in("sms_opt_in", self.sms_opt_in),
            email: opt_in("email_opt_in", self.email_opt_in),
            quiet_hours: None,
        };
        let devices = parse_devices(self.devices.as_deref().unwrap_or_default())
            .map_err(|message| errors.push(FieldError::new("devices", message)))
            .ok();
        match (user_id, contacts, devices) {
            (Some(user_id), Some(contacts), Some(devices)) if errors.is_empty() => {
                Ok(ImportedUser { user_id, contacts, preferences, devices })
            }
            _ => Err(errors),
        }
    }
}

fn parse_bool(cell: &str) -> Result<bool, String> {
    match cell.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{cell:?} is not one of true, false, yes, no, 1, 0 (or empty: unchanged)")),
    }
}

fn parse_devices(cell: &str) -> Result<Vec<(Platform, DeviceToken)>, String> {
    let mut devices = Vec::new();
    for entry in cell.split_whitespace() {
        let (platform, token) =
            entry.split_once(':').ok_or_else(|| format!("{entry:?} is not platform:token (ios or android)"))?;
        let platform = match platform {
            "ios" => Platform::Ios,
            "android" => Platform::Android,
            other => return Err(format!("unknown platform {other:?} (ios or android)")),
        };
        let token = DeviceToken::parse(platform, token).map_err(|message| format!("{platform:?} token {message}"))?;
        devices.push((platform, token));
    }
    if devices.len() > MAX_DEVICES {
        return Err(format!("a user may have at most {MAX_DEVICES} devices"));
    }
    Ok(devices)
}

/// Why a checked row was not (fully) written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The data is fine but the table's state refuses part of it (the user's devices are full).
    #[error("{}: {}", .0.field, .0.message)]
    Refused(FieldError),
    #[error(transparent)]
    Dependency(#[from] DependencyError),
}

/// Writes one checked row: contacts, then preferences, then each device.
pub async fn apply(users: &UserStore, user: &ImportedUser, now: &str) -> Result<(), ImportError> {
    users.put_contacts(&user.user_id, &user.contacts, now).await?;
    if user.preferences != PreferencesPatch::default() {
        users.set_preferences(&user.user_id, user.preferences, now, None).await?;
    }
    for (platform, token) in &user.devices {
        let device = Device::registered(*platform, token, now);
        match users.register_device(&user.user_id, token, device, now).await? {
            Registration::Added(_) | Registration::AlreadyRegistered(_) => {}
            Registration::NoSuchUser => {
                return Err(ImportError::Refused(FieldError::new("user_id", "the user was deleted during the import")));
            }
            Registration::TooManyDevices => {
                return Err(ImportError::Refused(FieldError::new(
                    "devices",
                    format!("the user already has {MAX_DEVICES} devices; contacts and preferences were imported"),
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ImportRow {
        ImportRow { user_id: Some("u-1".into()), ..Default::default() }
    }

    #[test]
    fn a_good_row_is_checked_into_domain_types() {
        let ios = "ab".repeat(32);
        let user = ImportRow {
            email: Some("ada@example.com".into()),
            phone: Some("+12015550123".into()),
            locale: Some("pt-BR".into()),
            devices: Some(format!("ios:{ios}")),
            sms_opt_in: Some("no".into()),
            ..row()
        }
        .check()
        .unwrap();
        assert_eq!(user.user_id.as_str(), "u-1");
        assert_eq!(user.contacts.phone.unwrap().as_str(), "+12015550123");
        assert_eq!(user.preferences, PreferencesPatch { sms: Some(false), ..Default::default() });
        assert_eq!(user.devices, vec![(Platform::Ios, DeviceToken::parse(Platform::Ios, &ios).unwrap())]);
    }

    #[test]
    fn every_bad_field_of_a_row_is_reported() {
        let errors = ImportRow {
            user_id: None,
            email: Some("not an address".into()),
            push_opt_in: Some("maybe".into()),
            devices: Some("windows:abc".into()),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["user_id", "email", "push_opt_in", "devices"]);
    }

    #[test]
    fn a_header_with_an_unknown_or_missing_column_is_refused() {
        assert!(check_columns(["user_id", "email", "phone"]).is_ok());
        assert!(check_columns(["user_id", "e-mail"]).unwrap_err().contains("\"e-mail\""));
        assert!(check_columns(["email"]).unwrap_err().contains("user_id"));
    }

    #[test]
    fn too_many_devices_are_refused_before_writing() {
        let devices: Vec<String> = (0..11).map(|i| format!("ios:{}", format!("{i:02x}").repeat(32))).collect();
        let errors = ImportRow { devices: Some(devices.join(" ")), ..row() }.check().unwrap_err();
        assert_eq!(errors[0].field, "devices");
    }
}
