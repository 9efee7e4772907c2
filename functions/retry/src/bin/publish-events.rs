use lambda_runtime::{Error, run, service_fn};
use notify::config::ProcessEnv;
use notify::function::Function;
use retry::events::PublishEvents;

// One thread: at its 256 MB a function gets a fraction of one vCPU (BENCHMARKS.md, section 1).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    notify::telemetry::init();
    let sdk = notify::aws::load_sdk_config().await;
    let publish = &PublishEvents::load(&sdk, &ProcessEnv)?;
    run(service_fn(move |event| publish.handle(event))).await
}
