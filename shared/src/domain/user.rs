//! Users: who a notification is for, how to reach them and what they agreed to receive.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::contact::{EmailAddress, PhoneNumber};

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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-channel opt-in. A user who never said otherwise is opted in to every channel they have
/// a contact for: the calling services send what their users signed up for, and a user can
/// opt out per channel at any time (including the email one-click unsubscribe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub push: bool,
    pub sms: bool,
    pub email: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { push: true, sms: true, email: true }
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

/// A user's contact data and preferences (one item in the users table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub preferences: Preferences,
    pub updated_at: String,
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
    fn preferences_default_to_opted_in() {
        let preferences = Preferences::default();
        assert!(Channel::ALL.iter().all(|channel| preferences.allows(*channel)));
        let no_sms = Preferences { sms: false, ..preferences };
        assert!(!no_sms.allows(Channel::Sms));
    }
}
