//! Domain types. Each can only hold a valid value: parse at the boundary, then trust the type.

/// The conversions of a validated string type `T(String)` whose `T::parse` checks a value:
/// serde goes through `parse` (`#[serde(try_from = "String", into = "String")]`), or through
/// the named `$from_stored` where values read back from our own records need a cheaper check.
macro_rules! validated_string {
    ($type:ident) => {
        $crate::domain::validated_string!($type, parse);
    };
    // `$from_stored` reads the type back from our own records and messages.
    ($type:ident, $from_stored:ident) => {
        impl $type {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $type {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::$from_stored(&value)
            }
        }

        impl From<$type> for String {
            fn from(value: $type) -> Self {
                value.0
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}
pub(crate) use validated_string;

pub mod app;
pub mod backoff;
pub mod channel;
pub mod contact;
pub mod delivery;
pub mod email_event;
pub mod event_stream;
pub mod failover;
pub mod lifecycle;
pub mod notification;
pub mod plan;
pub mod preference_center;
pub mod quiet_hours;
pub mod rate_limit;
pub mod send_rate;
pub mod sms_route;
pub mod stats;
pub mod template;
pub mod tracking;
pub mod unsubscribe;
pub mod user;

/// One reason a field of a request is invalid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
