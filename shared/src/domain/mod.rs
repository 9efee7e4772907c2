//! Domain types. Each can only hold a valid value: parse at the boundary, then trust the type.

pub mod app;
pub mod channel;
pub mod contact;
pub mod delivery;
pub mod notification;
pub mod plan;
pub mod template;
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
