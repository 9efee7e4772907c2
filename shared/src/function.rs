//! The shape every function has, so the local stack can invoke any of them with a JSON payload
//! exactly as the Lambda runtime does (deserialize the event, call the handler, serialize).

use std::future::Future;

use lambda_runtime::{Context, Error, LambdaEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait Function: Send + Sync + 'static {
    type Event: DeserializeOwned + Send;
    type Output: Serialize;

    fn handle(&self, event: LambdaEvent<Self::Event>) -> impl Future<Output = Result<Self::Output, Error>> + Send;
}

/// Invokes `function` with a raw JSON event.
pub async fn invoke_json<F: Function>(
    function: &F,
    payload: serde_json::Value,
    context: Context,
) -> Result<serde_json::Value, Error> {
    let event: F::Event = serde_json::from_value(payload)?;
    let output = function.handle(LambdaEvent::new(event, context)).await?;
    Ok(serde_json::to_value(output)?)
}
