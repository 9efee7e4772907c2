//! The error taxonomy. Every failure that crosses a boundary says how it must be handled:
//! a *transient* failure is retried with backoff (and ends in a DLQ, which pages someone, if it
//! never clears); a *permanent* one is recorded and never retried; *throttled* (the service
//! refused the call for its rate, not for the call) waits and is tried again without spending
//! the retry budget; *access denied* (the function's role does not allow the call) is the
//! deployment's configuration error: retried like a transient one, so nothing is lost and a
//! fixed grant delivers it, but alarmed at once; *unserved* (the provider does not serve the
//! destination: another provider may) moves the delivery to the next provider of its route;
//! *ambiguous* (a transient failure after the request was written: a timeout, a connection
//! dropped mid-response, a provider's internal error) is retried like a transient one, but only
//! through the same provider, since the message may have gone out.
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
    Unserved,
    Ambiguous,
}

impl FailureClass {
    /// Whether a provider's answer of this class is a failure on the provider's side (what its
    /// failure rate counts, and what takes it out of rotation): not a refusal of the recipient
    /// or of the destination, and not a throttle.
    pub fn is_providers_fault(self) -> bool {
        matches!(self, FailureClass::Transient | FailureClass::Ambiguous | FailureClass::AccessDenied)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
            FailureClass::Throttled => "throttled",
            FailureClass::AccessDenied => "access_denied",
            FailureClass::Unserved => "unserved",
            FailureClass::Ambiguous => "ambiguous",
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
