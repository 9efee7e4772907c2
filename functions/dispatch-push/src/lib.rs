//! Consumes the push queue and sends each message to its device through SNS mobile push (APNs, FCM).

use aws_config::SdkConfig;
use notify::config::{ConfigError, EnvSource, Settings};
use notify::dispatch::Dispatcher;
use notify::provider::push::SnsPush;
use notify::store::users::UserStore;

pub type Function = Dispatcher<SnsPush>;

/// Reads configuration and builds the clients (once per cold start).
pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Function, ConfigError> {
    let mut settings = Settings::new(env);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let users = UserStore::new(dynamodb.clone(), settings.required("USERS_TABLE"));
    let provider = SnsPush::load(aws_sdk_sns::Client::new(&notify::aws::provider_config(sdk)), users, &mut settings);
    let dispatcher = Dispatcher::load(sdk, &dynamodb, provider, None, &mut settings);
    settings.finish()?;
    Ok(dispatcher)
}
