use lambda_runtime::{Error, run, service_fn};
use notify::config::ProcessEnv;
use notify::function::Function;

// One thread: at its 256 MB a function gets a fraction of one vCPU (BENCHMARKS.md, section 1).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    notify::telemetry::init();
    let sdk = notify::aws::load_sdk_config().await;
    let dispatcher = &dispatch_sms::load(&sdk, &ProcessEnv).await?;
    run(service_fn(move |event| dispatcher.handle(event))).await
}
