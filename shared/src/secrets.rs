//! A Secrets Manager secret as a rotation leaves it: its current version and the previous one
//! (absent until the first rotation), which readers of things signed before the rotation still
//! accept. [`RotatingSecret`] holds them for a warm instance: read at init, again every
//! [`REFRESH`] (keeping those in hand if that read fails), and when the ones in hand failed (a
//! signature did not verify, a provider refused them) at most once per
//! [`REREAD_AFTER_FAILURE`]: forgeries cost at most one read a minute.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;

use crate::aws::classify;
use crate::error::{DependencyError, FailureClass};

pub const REFRESH: Duration = Duration::from_secs(15 * 60);
pub const REREAD_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// One version of a secret, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    pub version_id: Option<String>,
    pub value: String,
}

/// A secret's versions in use, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions<T> {
    pub current: T,
    pub previous: Option<T>,
}

struct Held<T> {
    versions: Arc<Versions<T>>,
    /// Tells a new current version from the one in hand.
    current_version_id: Option<String>,
    read_at: Instant,
    /// When a failure of the versions in hand last made the instance read them again.
    reread_at: Option<Instant>,
}

/// A rotating secret whose values parse as `T`. Cheap to clone: clones share what they hold.
pub struct RotatingSecret<T> {
    client: Client,
    secret_id: String,
    parse: fn(&SecretVersion) -> Result<T, String>,
    held: Arc<RwLock<Option<Held<T>>>>,
}

impl<T> Clone for RotatingSecret<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            secret_id: self.secret_id.clone(),
            parse: self.parse,
            held: self.held.clone(),
        }
    }
}

impl<T> RotatingSecret<T> {
    pub fn new(client: Client, secret_id: String, parse: fn(&SecretVersion) -> Result<T, String>) -> Self {
        Self { client, secret_id, parse, held: Arc::new(RwLock::new(None)) }
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// Reads both versions. A current value that does not parse is a permanent error naming
    /// the secret; a previous one that does not is ignored.
    pub async fn read(&self) -> Result<Arc<Versions<T>>, DependencyError> {
        let (current, previous) = current_and_previous(&self.client, &self.secret_id).await?;
        let parsed = (self.parse)(&current).map_err(|problem| DependencyError {
            class: FailureClass::Permanent,
            service: "secretsmanager",
            operation: "GetSecretValue",
            code: "InvalidSecret".into(),
            message: format!("the secret {}: {problem}", self.secret_id),
        })?;
        let versions = Arc::new(Versions { current: parsed, previous: previous.and_then(|v| (self.parse)(&v).ok()) });
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        let reread_at = held.as_ref().and_then(|held| held.reread_at);
        *held = Some(Held {
            versions: versions.clone(),
            current_version_id: current.version_id,
            read_at: Instant::now(),
            reread_at,
        });
        Ok(versions)
    }

    /// The versions in hand, read again first when older than [`REFRESH`] (or never read); if
    /// that read fails, those in hand are kept for another [`REFRESH`].
    pub async fn versions(&self) -> Result<Arc<Versions<T>>, DependencyError> {
        let in_hand = self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|held| (held.versions.clone(), held.read_at));
        match in_hand {
            None => self.read().await,
            Some((versions, read_at)) if read_at.elapsed() < REFRESH => Ok(versions),
            Some((versions, _)) => match self.read().await {
                Ok(fresh) => Ok(fresh),
                Err(error) => {
                    tracing::warn!(secret = %self.secret_id, error = %error, "the secret could not be read again; the versions in hand are kept");
                    if let Some(held) = self.held.write().unwrap_or_else(PoisonError::into_inner).as_mut() {
                        held.read_at = Instant::now();
                    }
                    Ok(versions)
                }
            },
        }
    }

    /// After the versions in hand failed: reads them again, unless that was done within the last
    /// [`REREAD_AFTER_FAILURE`]; the new versions if the current one changed.
    pub async fn reread_after_failure(&self) -> Result<Option<Arc<Versions<T>>>, DependencyError> {
        let before = {
            let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
            match held.as_mut() {
                Some(held) if held.reread_at.is_some_and(|at| at.elapsed() < REREAD_AFTER_FAILURE) => return Ok(None),
                Some(held) => {
                    held.reread_at = Some(Instant::now());
                    held.current_version_id.clone()
                }
                None => None,
            }
        };
        let fresh = self.read().await?;
        let now = self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|h| h.current_version_id.clone());
        Ok((now != before || before.is_none()).then_some(fresh))
    }
}

const CURRENT: &str = "AWSCURRENT";
const PREVIOUS: &str = "AWSPREVIOUS";

/// Reads the secret's current and previous versions (two reads, together). An empty value counts
/// as none; a secret with no current value is a permanent error, naming it.
async fn current_and_previous(
    client: &Client,
    secret_id: &str,
) -> Result<(SecretVersion, Option<SecretVersion>), DependencyError> {
    let version = |stage: &'static str| async move {
        let output = client.get_secret_value().secret_id(secret_id).version_stage(stage).send().await;
        match output {
            Ok(output) => Ok(output.secret_string().filter(|value| !value.is_empty()).map(|value| SecretVersion {
                version_id: output.version_id().map(str::to_string),
                value: value.to_string(),
            })),
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
    let current = current.ok_or_else(|| DependencyError {
        class: FailureClass::Permanent,
        service: "secretsmanager",
        operation: "GetSecretValue",
        code: "EmptySecret".into(),
        message: format!("the secret {secret_id} has no current value"),
    })?;
    Ok((current, previous))
}
