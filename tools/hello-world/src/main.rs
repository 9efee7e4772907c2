//! Answers every invocation with its payload: what a Lambda function costs before it does
//! anything (the baseline `scripts/bench.sh cold_start` compares each function with).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
