//! Everything the notification functions share: validated domain types, the error taxonomy,
//! configuration, telemetry, the SQS batch helper and the adapters that own every AWS call.
//!
//! A reader finds any behaviour in one hop: binary → handler (function crate) → domain
//! (`domain`) → port/adapter (`store`, `queue`, `provider`).

pub mod aws;
pub mod batch;
pub mod cache;
pub mod cancel;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod event_stream;
pub mod feedback;
pub mod function;
pub mod link_keys;
#[cfg(test)]
pub mod memory;
pub mod metrics;
pub mod outputs;
pub mod pacing;
pub mod ports;
pub mod provider;
pub mod queue;
pub mod redrive;
pub mod secrets;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod time;
pub mod user_import;
