//! The link-signing keys, from the stack's Secrets Manager secret (`LINK_SIGNING_KEY_ARN`): the
//! secret's current version signs new links and its previous version still verifies old ones,
//! so a rotation (`aws secretsmanager put-secret-value` or `rotate-secret`) keeps every link
//! already sent working. A key's id is its version's: links name the key that signed them.
//!
//! Read at init. A warm instance reads the secret again every
//! [`REFRESH`](crate::secrets::REFRESH) (so it signs with the new key soon after a rotation)
//! and when a link fails to verify with the keys it has (it may be signed with a key newer than
//! the instance's read), at most once a minute (`crate::secrets::RotatingSecret`).

use aws_sdk_secretsmanager::Client;

use crate::config::{ConfigError, Settings};
use crate::domain::unsubscribe::{LinkSigner, SigningKey};
use crate::error::DependencyError;
use crate::secrets::{RotatingSecret, SecretVersion, Versions};

/// Letters of the version id a key id keeps: enough to tell a secret's versions apart, short
/// enough for links.
const KEY_ID_LENGTH: usize = 8;

/// Cheap to clone: clones share the keys.
#[derive(Clone)]
pub struct LinkKeys {
    secret: RotatingSecret<SigningKey>,
}

impl LinkKeys {
    /// The keys of the secret `LINK_SIGNING_KEY_ARN` names, not yet read: a function's load
    /// reads its other settings too, reports every problem at once, then calls [`Self::read`].
    pub fn load(client: Client, settings: &mut Settings<'_>) -> Self {
        Self { secret: RotatingSecret::new(client, settings.required(SETTING), signing_key) }
    }

    /// Reads the keys, at init: a function that cannot read them cannot sign or verify links.
    pub async fn read(&self) -> Result<(), ConfigError> {
        self.secret.read().await.map(|_| ()).map_err(|error| ConfigError {
            problems: vec![format!(
                "cannot read the link-signing key {} ({SETTING}): {error}",
                self.secret.secret_id()
            )],
        })
    }

    /// The signer of new links: the current key signs, the previous one still verifies.
    pub async fn signer(&self) -> Result<LinkSigner, DependencyError> {
        Ok(signer(&*self.secret.versions().await?))
    }

    /// What `check` finds with the keys in hand, or after reading the secret again when it
    /// finds nothing (the token may be signed with a key newer than this instance's read).
    pub async fn verified<T>(&self, check: impl Fn(&LinkSigner) -> Option<T>) -> Result<Option<T>, DependencyError> {
        if let Some(found) = check(&self.signer().await?) {
            return Ok(Some(found));
        }
        match self.secret.reread_after_failure().await {
            Ok(fresh) => Ok(fresh.and_then(|fresh| check(&signer(&fresh)))),
            Err(error) => {
                tracing::warn!(error = %error, "the link-signing key could not be read again; the keys in hand are kept");
                Ok(None)
            }
        }
    }
}

fn signer(keys: &Versions<SigningKey>) -> LinkSigner {
    LinkSigner::new(keys.current.clone(), keys.previous.clone())
}

fn signing_key(version: &SecretVersion) -> Result<SigningKey, String> {
    Ok(key(version.version_id.as_deref(), &version.value))
}

fn key(version_id: Option<&str>, value: &str) -> SigningKey {
    let id: String =
        version_id.unwrap_or_default().chars().filter(char::is_ascii_alphanumeric).take(KEY_ID_LENGTH).collect();
    SigningKey::new(&id, value)
}

/// The setting naming the secret.
pub const SETTING: &str = "LINK_SIGNING_KEY_ARN";
