//! The hosted preference center's tokens and its form.
//!
//! - A **link** (`/v1/preferences/<token>`) names a user and when it stops working, sealed with
//!   the link-signing keys like the unsubscribe link: whoever holds an email's link may change
//!   that user's channels and quiet hours, no login, until it expires.
//! - A **form token** rides in the center's form. It names the user and when their preferences
//!   last changed when the page was rendered; a save applies only while they have not changed
//!   since. So a replayed form (the same POST again, or an old page submitted after a newer
//!   save) changes nothing, while a contact or device update in between does not stand in the
//!   way.
//! - An **undo token** rides in the page an unsubscribe answers: the same, for one channel, and
//!   sealed for that purpose only (a center form token is no undo, nor the reverse).

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::delivery::EmailContent;
use super::quiet_hours::{QuietHours, TimeOfDay};
use super::unsubscribe::LinkSigner;
use super::user::{PreferencesPatch, UserId};

const LINK: &str = "preferences";
const FORM: &str = "preferences-form";
const UNDO: &str = "unsubscribe-undo";

/// How long a link in an email keeps working. Long enough for an email kept in an inbox for
/// months; a link older than this shows the not-found page, and the next email brings a new one.
pub const LINK_VALIDITY_SECONDS: i64 = 180 * 24 * 3600;

#[derive(Serialize, Deserialize)]
struct LinkPayload {
    #[serde(rename = "u")]
    user_id: UserId,
    /// Expiry, epoch seconds.
    #[serde(rename = "x")]
    expires: i64,
}

#[derive(Serialize, Deserialize)]
struct FormPayload {
    #[serde(rename = "u")]
    user_id: UserId,
    /// The preferences' revision the form was rendered from.
    #[serde(rename = "r")]
    revision: String,
}

/// The template parameter every render gets: the recipient's preference center link.
pub const PREFERENCES_URL_PARAM: &str = "preferences_url";

/// `email` with a link to the preference center (`url`, titled `label`) at the end of each part
/// that does not already carry it: every email offers the way to the center, whether or not
/// its template places `{{ preferences_url }}`.
pub fn with_preferences_link(email: EmailContent, url: &str, label: &str) -> EmailContent {
    let escape =
        |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut html = email.html;
    // The template engine escapes the URL's `/` in html; either spelling is the link placed.
    if !html.contains(url) && !html.contains(&url.replace('/', "&#x2f;")) {
        let footer =
            format!(r#"<p style="font-size:12px;color:#57606a"><a href="{}">{}</a></p>"#, escape(url), escape(label));
        match html.rfind("</body>") {
            Some(end) => html.insert_str(end, &footer),
            None => html.push_str(&footer),
        }
    }
    let mut text = email.text;
    if !text.contains(url) {
        text.push_str(&format!("\n\n{label}: {url}\n"));
    }
    EmailContent { html, text, ..email }
}

/// The token of `user_id`'s preference center link, issued at `issued` (epoch seconds: now, or
/// the send time of the email whose unsubscribe link leads to it) and valid for
/// [`LINK_VALIDITY_SECONDS`] from then.
pub fn link_token(signer: &LinkSigner, user_id: &UserId, issued: i64) -> String {
    let payload = LinkPayload { user_id: user_id.clone(), expires: issued + LINK_VALIDITY_SECONDS };
    signer.seal(LINK, &serde_json::to_vec(&payload).expect("serializes"))
}

/// The user a link token names, if this deployment sealed it and it has not expired at `now`.
pub fn open_link(signer: &LinkSigner, token: &str, now: i64) -> Option<UserId> {
    let payload: LinkPayload = serde_json::from_slice(&signer.open(LINK, token)?).ok()?;
    (now < payload.expires).then_some(payload.user_id)
}

/// The form token of a page rendered for `user_id` from the profile at `revision`.
pub fn form_token(signer: &LinkSigner, user_id: &UserId, revision: &str) -> String {
    let payload = FormPayload { user_id: user_id.clone(), revision: revision.to_string() };
    signer.seal(FORM, &serde_json::to_vec(&payload).expect("serializes"))
}

/// The revision a form token was rendered from, if this deployment sealed it for `user_id`
/// (a form token of another user's page is as forged as a made-up one).
pub fn open_form(signer: &LinkSigner, token: &str, user_id: &UserId) -> Option<String> {
    let payload: FormPayload = serde_json::from_slice(&signer.open(FORM, token)?).ok()?;
    (payload.user_id == *user_id).then_some(payload.revision)
}

#[derive(Serialize, Deserialize)]
struct UndoPayload {
    #[serde(rename = "u")]
    user_id: UserId,
    #[serde(rename = "c")]
    channel: Channel,
    /// The preferences' revision the unsubscribe left.
    #[serde(rename = "r")]
    revision: String,
}

/// The token that undoes `user_id`'s unsubscribe from `channel`, which left the profile at
/// `revision`.
pub fn undo_token(signer: &LinkSigner, user_id: &UserId, channel: Channel, revision: &str) -> String {
    let payload = UndoPayload { user_id: user_id.clone(), channel, revision: revision.to_string() };
    signer.seal(UNDO, &serde_json::to_vec(&payload).expect("serializes"))
}

/// The revision an undo token expects, if this deployment sealed it for this user and channel.
pub fn open_undo(signer: &LinkSigner, token: &str, user_id: &UserId, channel: Channel) -> Option<String> {
    let payload: UndoPayload = serde_json::from_slice(&signer.open(UNDO, token)?).ok()?;
    (payload.user_id == *user_id && payload.channel == channel).then_some(payload.revision)
}

/// Why a submitted preferences form cannot be saved, by field (the form's own names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormError {
    pub field: &'static str,
    pub reason: FormErrorReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormErrorReason {
    /// No form token: the POST did not come from a page this deployment served.
    MissingFormToken,
    /// Quiet hours are on and this time is missing or not `HH:MM`.
    InvalidTime,
    /// Quiet hours are on and start where they end.
    EmptyWindow,
}

/// A submitted preference center form: its form token and the whole state it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferencesForm {
    pub form_token: String,
    pub patch: PreferencesPatch,
}

impl PreferencesForm {
    /// Parses an `application/x-www-form-urlencoded` body. A checkbox is on when present (HTML
    /// sends nothing for an unchecked one), so the form always sets every channel; quiet hours
    /// off clears the user's window (the deployment's default, if any, applies).
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let value = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.trim());
        let form_token = value("form")
            .filter(|token| !token.is_empty())
            .ok_or(FormError { field: "form", reason: FormErrorReason::MissingFormToken })?
            .to_string();
        let time = |field: &'static str| {
            value(field)
                .and_then(|text| TimeOfDay::parse(text).ok())
                .ok_or(FormError { field, reason: FormErrorReason::InvalidTime })
        };
        let quiet_hours = match value("quiet_hours") {
            Some(_) => Some(
                QuietHours::new(time("quiet_start")?, time("quiet_end")?)
                    .map_err(|_| FormError { field: "quiet_end", reason: FormErrorReason::EmptyWindow })?,
            ),
            None => None,
        };
        let patch = PreferencesPatch {
            push: Some(value("push").is_some()),
            sms: Some(value("sms").is_some()),
            email: Some(value("email").is_some()),
            quiet_hours: Some(quiet_hours),
        };
        Ok(Self { form_token, patch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::unsubscribe::SigningKey;

    fn signer(id: &str) -> LinkSigner {
        LinkSigner::new(SigningKey::new(id, "a secret of at least thirty-two bytes"), [])
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn a_link_opens_until_it_expires_and_only_with_this_deployments_keys() {
        let token = link_token(&signer("k1"), &user("u-1"), 1_000);
        assert_eq!(open_link(&signer("k1"), &token, 1_000), Some(user("u-1")));
        assert_eq!(open_link(&signer("k1"), &token, 1_000 + LINK_VALIDITY_SECONDS - 1), Some(user("u-1")));
        assert_eq!(open_link(&signer("k1"), &token, 1_000 + LINK_VALIDITY_SECONDS), None, "expired");
        assert_eq!(open_link(&LinkSigner::new(SigningKey::new("k1", "another secret"), []), &token, 1_000), None);
        assert_eq!(open_link(&signer("k1"), &token[..token.len() - 3], 1_000), None, "cut");
        // Tokens of other purposes do not open as links, nor links as form tokens.
        let form = form_token(&signer("k1"), &user("u-1"), "2026-12-05T10:00:00Z");
        assert_eq!(open_link(&signer("k1"), &form, 1_000), None);
        assert_eq!(open_form(&signer("k1"), &token, &user("u-1")), None);
    }

    #[test]
    fn a_form_token_names_its_revision_for_its_own_user_only() {
        let form = form_token(&signer("k1"), &user("u-1"), "2026-12-05T10:00:00Z");
        assert_eq!(open_form(&signer("k1"), &form, &user("u-1")).as_deref(), Some("2026-12-05T10:00:00Z"));
        assert_eq!(open_form(&signer("k1"), &form, &user("u-2")), None);
    }

    #[test]
    fn an_undo_token_undoes_one_users_one_channel_and_is_no_form_token() {
        let undo = undo_token(&signer("k1"), &user("u-1"), Channel::Email, "r1");
        assert_eq!(open_undo(&signer("k1"), &undo, &user("u-1"), Channel::Email).as_deref(), Some("r1"));
        assert_eq!(open_undo(&signer("k1"), &undo, &user("u-1"), Channel::Sms), None);
        assert_eq!(open_undo(&signer("k1"), &undo, &user("u-2"), Channel::Email), None);
        assert_eq!(open_form(&signer("k1"), &undo, &user("u-1")), None);
        let form = form_token(&signer("k1"), &user("u-1"), "r1");
        assert_eq!(open_undo(&signer("k1"), &form, &user("u-1"), Channel::Email), None);
    }

    #[test]
    fn a_form_sets_every_channel_and_quiet_hours() {
        let form =
            PreferencesForm::parse(b"form=t&email=on&quiet_hours=on&quiet_start=22%3A00&quiet_end=07%3A30").unwrap();
        assert_eq!(form.form_token, "t");
        assert_eq!((form.patch.push, form.patch.sms, form.patch.email), (Some(false), Some(false), Some(true)));
        let window = form.patch.quiet_hours.unwrap().unwrap();
        assert_eq!(window, QuietHours::parse_range("22:00-07:30").unwrap());

        let off = PreferencesForm::parse(b"form=t&push=on&sms=on&quiet_start=22%3A00&quiet_end=07%3A30").unwrap();
        assert_eq!(off.patch.quiet_hours, Some(None), "quiet hours off clears the window; the times are ignored");
    }

    #[test]
    fn an_email_gets_the_link_where_its_template_placed_none() {
        let url = "https://api.example.com/v1/preferences/k1.abc.def";
        let email = |html: &str, text: &str| EmailContent {
            to: crate::domain::contact::EmailAddress::parse("ada@example.com").unwrap(),
            subject: "Hi".into(),
            html: html.into(),
            text: text.into(),
        };
        let footed = with_preferences_link(email("<html><body><p>Hi</p></body></html>", "Hi"), url, "Manage <yours>");
        assert!(
            footed.html.ends_with(&format!(r#"<a href="{url}">Manage &lt;yours&gt;</a></p></body></html>"#)),
            "{}",
            footed.html
        );
        assert_eq!(footed.text, format!("Hi\n\nManage <yours>: {url}\n"));

        let escaped = url.replace('/', "&#x2f;");
        let placed = with_preferences_link(
            email(&format!("<a href=\"{escaped}\">prefs</a>"), &format!("prefs {url}")),
            url,
            "x",
        );
        assert_eq!(placed.html, format!("<a href=\"{escaped}\">prefs</a>"), "placed by the template: no footer");
        assert_eq!(placed.text, format!("prefs {url}"));
    }

    #[test]
    fn a_bad_form_names_its_field() {
        let error = |body: &[u8]| PreferencesForm::parse(body).unwrap_err();
        assert_eq!(error(b"email=on"), FormError { field: "form", reason: FormErrorReason::MissingFormToken });
        assert_eq!(
            error(b"form=t&quiet_hours=on&quiet_start=25%3A00&quiet_end=07%3A00"),
            FormError { field: "quiet_start", reason: FormErrorReason::InvalidTime }
        );
        assert_eq!(
            error(b"form=t&quiet_hours=on&quiet_start=22%3A00"),
            FormError { field: "quiet_end", reason: FormErrorReason::InvalidTime }
        );
        assert_eq!(
            error(b"form=t&quiet_hours=on&quiet_start=22%3A00&quiet_end=22%3A00"),
            FormError { field: "quiet_end", reason: FormErrorReason::EmptyWindow }
        );
    }
}
