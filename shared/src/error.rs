//! The error taxonomy. Every failure that crosses a boundary says how it must be handled:
//! a *transient* failure is retried with backoff (and ends in a DLQ, which pages someone, if it
//! never clears); a *permanent* one is recorded and never retried; *throttled* (the service
//! refused the call for its rate, not for the call) waits and is tried again without spending
//! the retry budget; *access denied* (the function's role does not allow the call) is the
//! deployment's configuration error: retried like a transient one, so nothing is lost and a
//! fixed grant delivers it, but alarmed at once.
//! Request problems that the caller must fix (validation, auth) are the HTTP boundary's own
//! enum in `intake`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Transient,
    Permanent,
    Throttled,
    AccessDenied,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
            FailureClass::Throttled => "throttled",
            FailureClass::AccessDenied => "access_denied",
        })
    }
}

/// A failed call to AWS or to a provider behind it, classified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{service}.{operation} failed ({class}): {code}: {message}")]
pub struct DependencyError {
    pub class: FailureClass,
    pub service: &'static str,
    pub operation: &'static str,
    /// The provider's error code (`Throttling`, `EndpointDisabled`, …), or what went wrong on the
    /// wire (`Timeout`, `Dispatch`) when there was no answer.
    pub code: String,
    pub message: String,
}

impl DependencyError {
    /// Whether the call is tried again (only permanent failures are not).
    pub fn is_retried(&self) -> bool {
        self.class != FailureClass::Permanent
    }
}
