use lambda_runtime::{Error, run, service_fn};
use notify::config::ProcessEnv;
use notify::function::Function;
use retry::Retry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    notify::telemetry::init();
    let sdk = notify::aws::load_sdk_config().await;
    let retry = &Retry::load(&sdk, &ProcessEnv)?;
    run(service_fn(move |event| retry.handle(event))).await
}
