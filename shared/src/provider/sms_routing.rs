//! SMS through its providers, by the destination's route (`domain::sms_route`): SNS, and
//! Twilio when its credentials are configured. The dispatcher chooses among the route's
//! providers (`domain::failover`); this adapter says which they are now (those out of rotation
//! last), sends through the chosen one and keeps their health fleet-wide.

use aws_config::SdkConfig;

use super::Provider;
use super::sms::SnsSms;
use super::twilio::{TwilioSecret, TwilioSms};
use crate::config::{ConfigError, Settings};
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, SmsContent};
use crate::domain::notification::SkipReason;
use crate::domain::sms_route::{SmsProvider, SmsRoutes};
use crate::domain::user::UserProfile;
use crate::error::{DependencyError, FailureClass};
use crate::store::sms_providers::{HealthPolicy, ProviderHealth, RouteBook, RoutesStore};

/// Where Twilio posts status callbacks, under the API's public URL.
pub const RECEIPTS_PATH: &str = "/v1/receipts/twilio";

pub struct SmsProviders {
    sns: SnsSms,
    twilio: Option<TwilioSms>,
    routes: RouteBook,
    health: ProviderHealth,
}

impl SmsProviders {
    /// Settings: `SMS_ROUTES` (the template's `SmsRoutes`; `*=sns` when unset), the SNS
    /// adapter's, and for Twilio `TWILIO_SECRET_ARN` (its credentials), `TWILIO_SENDER` (a
    /// number or a Messaging Service SID), `TWILIO_API_URL` (`https://api.twilio.com`) and
    /// `PUBLIC_API_URL` (its callbacks' base). Twilio is configured when its secret is named;
    /// routes naming it without its configuration fail the init.
    pub fn load(sdk: &SdkConfig, dynamodb: &aws_sdk_dynamodb::Client, settings: &mut Settings<'_>) -> Self {
        let sns = SnsSms::load(aws_sdk_sns::Client::new(&crate::aws::provider_config(sdk)), settings);
        let default_routes = settings.parsed_or("SMS_ROUTES", SmsRoutes::sns_only());
        let twilio = match settings.optional("TWILIO_SECRET_ARN").filter(|arn| !arn.trim().is_empty()) {
            Some(secret_arn) => {
                let secret = TwilioSecret::new(aws_sdk_secretsmanager::Client::new(sdk), secret_arn);
                let sender = settings.required("TWILIO_SENDER");
                let api_url = settings.optional("TWILIO_API_URL").unwrap_or_else(|| "https://api.twilio.com".into());
                let callback_url =
                    format!("{}{RECEIPTS_PATH}", settings.required("PUBLIC_API_URL").trim_end_matches('/'));
                TwilioSms::new(api_url, sender, callback_url, secret).map_err(|problem| settings.problem(problem)).ok()
            }
            None => {
                if default_routes.providers().contains(&SmsProvider::Twilio) {
                    settings.problem(format!(
                        "SMS_ROUTES={default_routes} names twilio, but TWILIO_SECRET_ARN (its credentials) is not set"
                    ));
                }
                None
            }
        };
        let table = settings.required("RATE_LIMITS_TABLE");
        Self {
            sns,
            twilio,
            routes: RouteBook::new(RoutesStore::new(dynamodb.clone(), table.clone()), default_routes),
            health: ProviderHealth::new(dynamodb.clone(), table, HealthPolicy::default()),
        }
    }

    /// Reads Twilio's credentials, at init (when configured).
    pub async fn read_credentials(&self) -> Result<(), ConfigError> {
        let Some(twilio) = &self.twilio else { return Ok(()) };
        twilio.secret().read().await.map(|_| ()).map_err(|error| ConfigError {
            problems: vec![format!("cannot read the Twilio credentials (TWILIO_SECRET_ARN): {error}")],
        })
    }

    fn configured(&self, provider: SmsProvider) -> bool {
        match provider {
            SmsProvider::Sns => true,
            SmsProvider::Twilio => self.twilio.is_some(),
        }
    }
}

impl Provider for SmsProviders {
    type Content = SmsContent;
    const CHANNEL: Channel = Channel::Sms;

    async fn route(&self, message: &DeliveryMessage<SmsContent>) -> Vec<&'static str> {
        let routes = self.routes.current().await;
        let now_ms = crate::time::now_epoch_millis();
        let mut route = Vec::new();
        for &provider in routes.route(&message.content.to).providers() {
            // On-call's routes may name Twilio on a stack without it: skipped, loudly.
            if !self.configured(provider) {
                tracing::error!(%provider, "a route names a provider this stack has no credentials for; skipped");
                continue;
            }
            route.push((self.health.of(provider).await.in_rotation(now_ms), provider.as_str()));
        }
        // In rotation first, each group in the route's order (a stable sort).
        route.sort_by_key(|(in_rotation, _)| !in_rotation);
        let route: Vec<&'static str> = route.into_iter().map(|(_, provider)| provider).collect();
        if route.is_empty() { vec![SmsProvider::Sns.as_str()] } else { route }
    }

    async fn send(
        &self,
        message: &DeliveryMessage<SmsContent>,
        recipient: &UserProfile,
        provider: &str,
    ) -> Result<String, DependencyError> {
        match (provider.parse::<SmsProvider>(), &self.twilio) {
            (Ok(SmsProvider::Sns), _) => self.sns.send(message, recipient, provider).await,
            (Ok(SmsProvider::Twilio), Some(twilio)) => twilio.send(message).await,
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
        let Ok(provider) = provider.parse::<SmsProvider>() else { return };
        let failed = outcome.is_err_and(FailureClass::is_providers_fault);
        // Throttles and refusals of a recipient say nothing of the provider's health.
        if outcome.is_err() && !failed {
            return;
        }
        if let Err(error) = self.health.observe(provider, failed, crate::time::now_epoch_millis()).await {
            tracing::warn!(%provider, error = %error, "the provider's health could not be recorded");
        }
    }

    fn unreachable(&self, message: &DeliveryMessage<SmsContent>, recipient: &UserProfile) -> Option<SkipReason> {
        self.sns.unreachable(message, recipient)
    }
}
