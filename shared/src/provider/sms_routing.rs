//! SMS through its providers, by the destination's route (`domain::sms_route`): SNS, and
//! Twilio when its credentials are configured. The dispatcher chooses among the route's
//! providers (`domain::failover`); this adapter says which they are now (those out of rotation
//! last), sends through the chosen one and keeps their health fleet-wide.

use aws_config::SdkConfig;

use super::Provider;
use super::sms::SnsSms;
use super::twilio::{TwilioSms, twilio_secret};
use crate::config::{ConfigError, Settings};
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, SmsContent};
use crate::domain::notification::SkipReason;
use crate::domain::sms_route::{SmsProvider, SmsRoutes};
use crate::domain::user::UserProfile;
use crate::error::{DependencyError, FailureClass};
use crate::store::sms_providers::{HealthPolicy, ProviderHealth, RouteBook, RoutesStore};

/// Where Twilio posts status callbacks under the API's public URL `base` (the intake checks
/// their signature over the same URL).
pub fn receipts_url(base: &str) -> String {
    format!("{}/v1/receipts/twilio", base.trim_end_matches('/'))
}

pub struct SmsProviders {
    sns: SnsSms,
    /// Twilio, and what choosing between providers needs (routes, health), when the stack has
    /// Twilio's credentials; without them SNS takes every number and nothing is read for it.
    routed: Option<Routed>,
}

struct Routed {
    twilio: TwilioSms,
    routes: RouteBook,
    health: ProviderHealth,
}

impl SmsProviders {
    /// Settings: `SMS_ROUTES` (the template's `SmsRoutes`; `*=sns` when unset), the SNS
    /// adapter's, and for Twilio `TWILIO_SECRET_ARN` (its credentials), `TWILIO_SENDER` (a
    /// number or a Messaging Service SID), `TWILIO_API_URL` (`https://api.twilio.com`),
    /// `PUBLIC_API_URL` (its callbacks' base), `RATE_LIMITS_TABLE` (routes set by on-call,
    /// providers' health) and `PROVIDER_COOL_DOWN_SECONDS` (60: how long a failing provider is
    /// out of rotation). Twilio is configured when its secret is named; routes naming it
    /// without it fail the init.
    pub fn load(sdk: &SdkConfig, dynamodb: &aws_sdk_dynamodb::Client, settings: &mut Settings<'_>) -> Self {
        let sns = SnsSms::load(aws_sdk_sns::Client::new(&crate::aws::provider_config(sdk)), settings);
        let default_routes = settings.parsed_or("SMS_ROUTES", SmsRoutes::sns_only());
        let Some(secret_arn) = settings.optional("TWILIO_SECRET_ARN") else {
            if default_routes.providers().contains(&SmsProvider::Twilio) {
                settings.problem(format!(
                    "SMS_ROUTES={default_routes} names twilio, but TWILIO_SECRET_ARN (its credentials) is not set"
                ));
            }
            return Self { sns, routed: None };
        };
        let secret = twilio_secret(aws_sdk_secretsmanager::Client::new(sdk), secret_arn);
        let sender = settings.required("TWILIO_SENDER");
        let api_url = settings.optional("TWILIO_API_URL").unwrap_or_else(|| "https://api.twilio.com".into());
        let callback_url = receipts_url(&settings.required("PUBLIC_API_URL"));
        let table = settings.required("RATE_LIMITS_TABLE");
        let cool_down = settings.parsed_or("PROVIDER_COOL_DOWN_SECONDS", HealthPolicy::default().cool_down.as_secs());
        let health = HealthPolicy { cool_down: std::time::Duration::from_secs(cool_down), ..HealthPolicy::default() };
        let routed = TwilioSms::new(api_url, sender, callback_url, secret)
            .map_err(|problem| settings.problem(problem))
            .ok()
            .map(|twilio| Routed {
                twilio,
                routes: RouteBook::new(RoutesStore::new(dynamodb.clone(), table.clone()), default_routes),
                health: ProviderHealth::new(dynamodb.clone(), table, health),
            });
        Self { sns, routed }
    }

    /// Reads Twilio's credentials, at init (when configured).
    pub async fn read_credentials(&self) -> Result<(), ConfigError> {
        let Some(routed) = &self.routed else { return Ok(()) };
        routed.twilio.secret().read().await.map(|_| ()).map_err(|error| ConfigError {
            problems: vec![format!("cannot read the Twilio credentials (TWILIO_SECRET_ARN): {error}")],
        })
    }
}

impl Provider for SmsProviders {
    type Content = SmsContent;
    const CHANNEL: Channel = Channel::Sms;

    async fn route(&self, message: &DeliveryMessage<SmsContent>) -> Vec<&'static str> {
        let Some(routed) = &self.routed else { return vec![SmsProvider::Sns.as_str()] };
        let routes = routed.routes.current().await;
        let providers = routes.route(&message.content.to).providers();
        // One provider: nothing to order, so no health to read.
        if let [provider] = providers {
            return vec![provider.as_str()];
        }
        let now_ms = crate::time::now_epoch_millis();
        let health = futures::future::join_all(providers.iter().map(|provider| routed.health.of(*provider))).await;
        let mut route: Vec<(bool, &'static str)> = health
            .iter()
            .zip(providers)
            .map(|(health, provider)| (health.in_rotation(now_ms), provider.as_str()))
            .collect();
        // In rotation first, each group in the route's order (a stable sort).
        route.sort_by_key(|(in_rotation, _)| !in_rotation);
        route.into_iter().map(|(_, provider)| provider).collect()
    }

    async fn send(
        &self,
        message: &DeliveryMessage<SmsContent>,
        recipient: &UserProfile,
        provider: &str,
    ) -> Result<String, DependencyError> {
        match (provider.parse::<SmsProvider>(), &self.routed) {
            (Ok(SmsProvider::Sns), _) => self.sns.send(message, recipient, provider).await,
            (Ok(SmsProvider::Twilio), Some(routed)) => routed.twilio.send(message).await,
            // A delivery pinned to Twilio on a stack that no longer has it.
            _ => Err(DependencyError {
                class: FailureClass::AccessDenied,
                service: "sms",
                operation: "Send",
                code: "ProviderNotConfigured".into(),
                message: format!("this stack cannot send through {provider:?}"),
            }),
        }
    }

    async fn observe(&self, provider: &str, outcome: Result<(), FailureClass>) {
        let (Some(routed), Ok(provider)) = (&self.routed, provider.parse::<SmsProvider>()) else { return };
        let failed = outcome.is_err_and(FailureClass::is_providers_fault);
        // Throttles and refusals of a recipient say nothing of the provider's health.
        if outcome.is_err() && !failed {
            return;
        }
        if let Err(error) = routed.health.observe(provider, failed, crate::time::now_epoch_millis()).await {
            tracing::warn!(%provider, error = %error, "the provider's health could not be recorded");
        }
    }

    fn unreachable(&self, message: &DeliveryMessage<SmsContent>, recipient: &UserProfile) -> Option<SkipReason> {
        self.sns.unreachable(message, recipient)
    }
}
