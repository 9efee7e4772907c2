//! The link-signing keys, from the stack's Secrets Manager secret (`LINK_SIGNING_KEY_ARN`): the
//! secret's current version signs new links and its previous version still verifies old ones,
//! so a rotation (`aws secretsmanager put-secret-value` or `rotate-secret`) keeps every link
//! already sent working. A key's id is its version's: links name the key that signed them.
//!
//! Read at init. A warm instance reads the secret again every [`REFRESH`] (so it signs with the
//! new key soon after a rotation) and when a link fails to verify with the keys it has (it may
//! be signed with a key newer than the instance's read), at most once per
//! [`REREAD_AFTER_FAILURE`]: forged links cost at most one read a minute.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;

use crate::aws::classify;
use crate::config::{ConfigError, Settings};
use crate::domain::unsubscribe::{LinkSigner, SigningKey};
use crate::error::DependencyError;

pub const REFRESH: Duration = Duration::from_secs(15 * 60);
pub const REREAD_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Letters of the version id a key id keeps: enough to tell a secret's versions apart, short
/// enough for links.
const KEY_ID_LENGTH: usize = 8;

struct Ring {
    signer: LinkSigner,
    read_at: Instant,
    /// When a link that failed to verify last made the instance read the keys again.
    reread_on_failure_at: Option<Instant>,
}

/// Cheap to clone: clones share the keys.
#[derive(Clone)]
pub struct LinkKeys {
    client: Client,
    secret_id: String,
    /// `None` until the first read.
    ring: Arc<RwLock<Option<Ring>>>,
}

impl LinkKeys {
    /// The keys of the secret `LINK_SIGNING_KEY_ARN` names, not yet read: a function's load
    /// reads its other settings too, reports every problem at once, then calls [`Self::read`].
    pub fn load(client: Client, settings: &mut Settings<'_>) -> Self {
        Self { client, secret_id: settings.required(SETTING), ring: Arc::new(RwLock::new(None)) }
    }

    /// Reads the keys, at init: a function that cannot read them cannot sign or verify links.
    pub async fn read(&self) -> Result<(), ConfigError> {
        self.reread().await.map(|_| ()).map_err(|error| ConfigError {
            problems: vec![format!("cannot read the link-signing key {} ({SETTING}): {error}", self.secret_id)],
        })
    }

    async fn reread(&self) -> Result<LinkSigner, DependencyError> {
        let signer = read(&self.client, &self.secret_id).await?;
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        let reread_on_failure_at = ring.as_ref().and_then(|ring| ring.reread_on_failure_at);
        *ring = Some(Ring { signer: signer.clone(), read_at: Instant::now(), reread_on_failure_at });
        Ok(signer)
    }

    /// Reads the keys again, keeping those in hand if that fails (for another [`REFRESH`]).
    async fn reread_or_keep(&self, in_hand: LinkSigner) -> LinkSigner {
        match self.reread().await {
            Ok(signer) => signer,
            Err(error) => {
                tracing::warn!(error = %error, "the link-signing key could not be read again; the keys in hand are kept");
                if let Some(ring) = self.ring.write().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    ring.read_at = Instant::now();
                }
                in_hand
            }
        }
    }

    /// The signer of new links: the keys in hand, read again first when older than [`REFRESH`]
    /// (or never read).
    pub async fn signer(&self) -> Result<LinkSigner, DependencyError> {
        let in_hand = self
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|ring| (ring.signer.clone(), ring.read_at));
        match in_hand {
            None => self.reread().await,
            Some((signer, read_at)) if read_at.elapsed() < REFRESH => Ok(signer),
            Some((signer, _)) => Ok(self.reread_or_keep(signer).await),
        }
    }

    /// What `check` finds with the keys in hand, or after reading the secret again when it
    /// finds nothing (the token may be signed with a key newer than this instance's read).
    pub async fn verified<T>(&self, check: impl Fn(&LinkSigner) -> Option<T>) -> Result<Option<T>, DependencyError> {
        let in_hand = self.signer().await?;
        if let Some(found) = check(&in_hand) {
            return Ok(Some(found));
        }
        let may_reread = {
            let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
            let ring = ring.as_mut().expect("signer() read the keys");
            let due = ring.reread_on_failure_at.is_none_or(|at| at.elapsed() >= REREAD_AFTER_FAILURE);
            if due {
                ring.reread_on_failure_at = Some(Instant::now());
            }
            due
        };
        if !may_reread {
            return Ok(None);
        }
        let fresh = self.reread_or_keep(in_hand.clone()).await;
        Ok(if fresh.same_keys(&in_hand) { None } else { check(&fresh) })
    }
}

/// The secret's current version (signs) and previous one (verifies), as a signer.
async fn read(client: &Client, secret_id: &str) -> Result<LinkSigner, DependencyError> {
    let version = |stage: &'static str| async move {
        let output = client.get_secret_value().secret_id(secret_id).version_stage(stage).send().await;
        match output {
            Ok(output) => Ok(Some(key(output.version_id(), output.secret_string()))),
            // A secret never rotated has no previous version.
            Err(error)
                if stage == PREVIOUS
                    && error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(error) => Err(classify("secretsmanager", "GetSecretValue", error, &[])),
        }
    };
    let (current, previous) = futures::future::try_join(version(CURRENT), version(PREVIOUS)).await?;
    let current = current.flatten().ok_or_else(|| DependencyError {
        class: crate::error::FailureClass::Permanent,
        service: "secretsmanager",
        operation: "GetSecretValue",
        code: "EmptySecret".into(),
        message: format!("the secret {secret_id} has no current value"),
    })?;
    Ok(LinkSigner::new(current, previous.flatten()))
}

const CURRENT: &str = "AWSCURRENT";
const PREVIOUS: &str = "AWSPREVIOUS";

fn key(version_id: Option<&str>, value: Option<&str>) -> Option<SigningKey> {
    let value = value.filter(|value| !value.is_empty())?;
    let id: String =
        version_id.unwrap_or_default().chars().filter(char::is_ascii_alphanumeric).take(KEY_ID_LENGTH).collect();
    Some(SigningKey::new(&id, value))
}

/// The setting naming the secret.
pub const SETTING: &str = "LINK_SIGNING_KEY_ARN";
