//! Provider adapters: one per channel, each owning its SDK calls and deciding which provider
//! errors are permanent.

pub mod email;
pub mod push;
pub mod sms;
pub mod twilio;

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::domain::channel::Channel;
use crate::domain::delivery::DeliveryMessage;
use crate::domain::notification::SkipReason;
use crate::domain::user::UserProfile;
use crate::error::DependencyError;

pub trait Provider: Send + Sync + 'static {
    type Content: DeserializeOwned + Send + Sync;
    const CHANNEL: Channel;

    /// Sends one delivery to `recipient` (as read at send time); `Ok` is the provider's message id.
    fn send(
        &self,
        message: &DeliveryMessage<Self::Content>,
        recipient: &UserProfile,
    ) -> impl Future<Output = Result<String, DependencyError>> + Send;

    /// Why the delivery can no longer reach its target at send time, if so (push: the device
    /// was retired since intake).
    fn unreachable(&self, _message: &DeliveryMessage<Self::Content>, _recipient: &UserProfile) -> Option<SkipReason> {
        None
    }

    /// Whether the target is on the suppression list (email: it hard-bounced or complained).
    fn suppressed(
        &self,
        _message: &DeliveryMessage<Self::Content>,
    ) -> impl Future<Output = Result<bool, DependencyError>> + Send {
        async { Ok(false) }
    }

    /// Called after a permanent failure, before it is recorded (push retires the device).
    fn on_permanent_failure(
        &self,
        _message: &DeliveryMessage<Self::Content>,
        _error: &DependencyError,
    ) -> impl Future<Output = Result<(), DependencyError>> + Send {
        async { Ok(()) }
    }
}
