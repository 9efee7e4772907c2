//! Provider adapters: one per channel, each owning its SDK calls and deciding which provider
//! errors are permanent.

pub mod email;
pub mod push;
pub mod sms;

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::domain::channel::Channel;
use crate::domain::delivery::DeliveryMessage;
use crate::error::DependencyError;

/// Sends one delivery; `Ok` carries the provider's message id.
pub trait Provider: Send + Sync + 'static {
    type Content: DeserializeOwned + Send + Sync;
    const CHANNEL: Channel;

    fn send(
        &self,
        message: &DeliveryMessage<Self::Content>,
    ) -> impl Future<Output = Result<String, DependencyError>> + Send;
}
