//! Consumes the SMS queues and sends each message through the providers of its destination's
//! route (SNS, Twilio).

use aws_config::SdkConfig;
use notify::config::{ConfigError, EnvSource, Settings};
use notify::dispatch::Dispatcher;
use notify::provider::sms_routing::SmsProviders;

pub type Function = Dispatcher<SmsProviders>;

/// Reads configuration and Twilio's credentials (when configured) and builds the clients (once
/// per cold start).
pub async fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Function, ConfigError> {
    let mut settings = Settings::new(env);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let providers = SmsProviders::load(sdk, &dynamodb, &mut settings);
    let dispatcher = Dispatcher::load(sdk, &dynamodb, providers, None, &mut settings);
    settings.finish()?;
    dispatcher.provider().read_credentials().await?;
    Ok(dispatcher)
}
