//! Consumes the email queue and sends each message through SES v2.

use aws_config::SdkConfig;
use notify::config::{ConfigError, EnvSource, Settings};
use notify::dispatch::Dispatcher;
use notify::provider::email::SesEmail;

pub type Function = Dispatcher<SesEmail>;

/// Reads configuration and builds the clients (once per cold start).
pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Function, ConfigError> {
    let mut settings = Settings::new(env);
    let provider = SesEmail::load(aws_sdk_sesv2::Client::new(&notify::aws::provider_config(sdk)), &mut settings);
    let dispatcher = Dispatcher::load(sdk, provider, &mut settings);
    settings.finish()?;
    Ok(dispatcher)
}
