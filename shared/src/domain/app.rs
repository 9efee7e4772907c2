//! Calling services ("apps") and their credentials. Secrets are 256-bit random values shown
//! once; only their SHA-256 is stored (a slow password hash buys nothing for secrets with this
//! much entropy and would cost milliseconds per request), and checks are constant-time.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What an app may do; each route requires one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Send,
    Users,
    Templates,
    Status,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Users, Scope::Templates, Scope::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Users => "users",
            Scope::Templates => "templates",
            Scope::Status => "status",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == value)
            .ok_or_else(|| format!("unknown scope {value:?}; expected one of send, users, templates, status"))
    }
}

/// Random bytes in an app key (hex after the `ak_` prefix).
const APP_KEY_BYTES: usize = 10;

/// An app key of the issued format, `ak_` and 20 lower-case hex digits: anything else cannot be
/// an app, and is refused without looking it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppKey(String);

impl AppKey {
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("ak_")?;
        let issued = digits.len() == APP_KEY_BYTES * 2
            && digits.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        issued.then(|| Self(text.to_string()))
    }

    fn generate() -> Self {
        Self(format!("ak_{}", random_hex(APP_KEY_BYTES)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An app secret in plain text: exists only between generation and being shown once.
pub struct PlainSecret(String);

impl PlainSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainSecret(****)")
    }
}

/// The stored form of one secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub created_at: String,
}

/// An app as stored in the apps table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub app_key: String,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    /// One secret normally; two while a rotation is in progress.
    pub secrets: Vec<StoredSecret>,
    pub disabled: bool,
    pub created_at: String,
}

/// How many secrets may be valid at once (the old and the new during a rotation).
pub const MAX_ACTIVE_SECRETS: usize = 2;

impl AppRecord {
    /// A new app with a fresh key and secret; the secret is returned to be shown once.
    pub fn create(name: &str, scopes: BTreeSet<Scope>, now: &str) -> (Self, PlainSecret) {
        let secret = PlainSecret(format!("sk_{}", random_token()));
        let record = Self {
            app_key: AppKey::generate().0,
            name: name.to_string(),
            scopes,
            secrets: vec![StoredSecret { sha256: sha256_hex(secret.expose()), created_at: now.to_string() }],
            disabled: false,
            created_at: now.to_string(),
        };
        (record, secret)
    }

    /// Adds a new secret, keeping the newest previous one valid until the next rotation.
    pub fn rotate(&mut self, now: &str) -> PlainSecret {
        let secret = PlainSecret(format!("sk_{}", random_token()));
        self.secrets.push(StoredSecret { sha256: sha256_hex(secret.expose()), created_at: now.to_string() });
        let excess = self.secrets.len().saturating_sub(MAX_ACTIVE_SECRETS);
        self.secrets.drain(..excess);
        secret
    }

    /// Whether `secret` matches any active secret. Every stored hash is compared, in constant
    /// time, so timing reveals neither which secret matched nor how much of it.
    pub fn verify(&self, secret: &str) -> bool {
        let presented = Sha256::digest(secret.as_bytes());
        let mut matched = subtle::Choice::from(0);
        for stored in &self.secrets {
            let mut expected = [0u8; 32];
            if decode_hex(&stored.sha256, &mut expected) {
                matched |= expected.ct_eq(presented.as_slice());
            }
        }
        bool::from(matched) && !self.disabled
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(&buffer)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn decode_hex(text: &str, out: &mut [u8; 32]) -> bool {
    hex::decode_to_slice(text, out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> (AppRecord, PlainSecret) {
        AppRecord::create("billing", BTreeSet::from([Scope::Send]), "2026-01-01T00:00:00Z")
    }

    #[test]
    fn a_created_app_verifies_its_secret_and_nothing_else() {
        let (record, secret) = app();
        assert_eq!(AppKey::parse(&record.app_key).map(|key| key.0), Some(record.app_key.clone()));
        assert!(record.verify(secret.expose()));
        assert!(!record.verify("sk_wrong"));
        assert!(!record.secrets[0].sha256.contains(secret.expose()));
        assert_eq!(format!("{secret:?}"), "PlainSecret(****)");
    }

    #[test]
    fn only_keys_of_the_issued_format_are_app_keys() {
        assert!(AppKey::parse("ak_0123456789abcdef0123").is_some());
        for other in [
            "",
            "ak_",
            "ak_0123456789ABCDEF0123",
            "ak_0123456789abcdef012",
            "bk_0123456789abcdef0123",
            "ak_0123456789abcdef0123'",
        ] {
            assert_eq!(AppKey::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn rotation_keeps_two_secrets_and_revokes_the_oldest() {
        let (mut record, first) = app();
        let second = record.rotate("2026-01-02T00:00:00Z");
        assert!(record.verify(first.expose()) && record.verify(second.expose()));
        let third = record.rotate("2026-01-03T00:00:00Z");
        assert!(!record.verify(first.expose()));
        assert!(record.verify(second.expose()) && record.verify(third.expose()));
    }

    #[test]
    fn a_disabled_app_never_verifies() {
        let (mut record, secret) = app();
        record.disabled = true;
        assert!(!record.verify(secret.expose()));
    }

    #[test]
    fn scopes_are_checked() {
        let (record, _) = app();
        assert!(record.allows(Scope::Send));
        assert!(!record.allows(Scope::Templates));
    }
}
