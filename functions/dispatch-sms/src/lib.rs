//! Consumes the SMS queue and sends each message as an SMS through SNS.

use aws_config::SdkConfig;
use notify::config::{ConfigError, EnvSource, Settings};
use notify::dispatch::Dispatcher;
use notify::provider::sms::SnsSms;

pub type Function = Dispatcher<SnsSms>;

/// Reads configuration and builds the clients (once per cold start).
pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Function, ConfigError> {
    let mut settings = Settings::new(env);
    let provider = SnsSms::load(aws_sdk_sns::Client::new(&notify::aws::provider_config(sdk)), &mut settings);
    let dispatcher = Dispatcher::load(sdk, &aws_sdk_dynamodb::Client::new(sdk), provider, None, &mut settings);
    settings.finish()?;
    Ok(dispatcher)
}
