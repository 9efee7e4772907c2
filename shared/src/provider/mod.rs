//! Provider adapters: each owns its SDK or HTTP calls and decides which of its provider's errors
//! are permanent. A channel's dispatcher sends through one [`Provider`]: one adapter (push,
//! email), or the SMS providers behind their routes (`sms_routing`).

pub mod email;
pub mod push;
pub mod sms;
pub mod sms_routing;
pub mod twilio;

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::domain::channel::Channel;
use crate::domain::delivery::DeliveryMessage;
use crate::domain::notification::SkipReason;
use crate::domain::user::UserProfile;
use crate::error::{DependencyError, FailureClass};

pub trait Provider: Send + Sync + 'static {
    type Content: DeserializeOwned + Send + Sync;
    const CHANNEL: Channel;

    /// The providers that can send `message` now, in the order to try them (never empty): its
    /// route, those out of rotation last. One, the channel's AWS service, unless routed.
    fn route(&self, _message: &DeliveryMessage<Self::Content>) -> impl Future<Output = Vec<&'static str>> + Send {
        async { vec![Self::CHANNEL.aws_provider()] }
    }

    /// Sends one delivery to `recipient` (as read at send time) through `provider` (one of its
    /// route); `Ok` is the provider's message id.
    fn send(
        &self,
        message: &DeliveryMessage<Self::Content>,
        recipient: &UserProfile,
        provider: &str,
    ) -> impl Future<Output = Result<String, DependencyError>> + Send;

    /// Hears how a send through `provider` ended (`Err`: its failure's class), for the
    /// providers' health fleet-wide.
    fn observe(&self, _provider: &str, _outcome: Result<(), FailureClass>) -> impl Future<Output = ()> + Send {
        async {}
    }

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
