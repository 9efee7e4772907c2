//! The functions the template names by cargo binary, run in-process: each is built with its
//! own configuration loader from the environment the template gives it, and invoked with JSON
//! payloads, exactly as the Lambda runtime would (deserialize, handle, serialize).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use futures::future::BoxFuture;
use lambda_runtime::Context;
use notify::config::ConfigError;
use notify::function::{Function, invoke_json};
use serde_json::Value;

/// A function invocable with a JSON payload.
pub trait Invoke: Send + Sync {
    fn invoke(&self, payload: Value, context: Context) -> BoxFuture<'_, Result<Value, lambda_runtime::Error>>;
}

impl<F: Function> Invoke for F {
    fn invoke(&self, payload: Value, context: Context) -> BoxFuture<'_, Result<Value, lambda_runtime::Error>> {
        Box::pin(invoke_json(self, payload, context))
    }
}

/// A function's init: what its `main.rs` does at cold start, from its SDK configuration and
/// environment.
pub type Init = BoxFuture<'static, Result<Arc<dyn Invoke>, ConfigError>>;
type Factory = Box<dyn Fn(SdkConfig, HashMap<String, String>) -> Init + Send + Sync>;

/// Cargo binary name → how to build that function.
pub struct Registry {
    factories: HashMap<String, Factory>,
}

impl Registry {
    pub fn empty() -> Self {
        Self { factories: HashMap::new() }
    }

    /// The project's functions.
    pub fn project() -> Self {
        let mut registry = Self::empty();
        registry.register_async("intake", |sdk, env| {
            Box::pin(async move { Ok(Arc::new(intake::Intake::load(&sdk, &env).await?) as Arc<dyn Invoke>) })
        });
        registry.register("dispatch-push", |sdk, env| Ok(Arc::new(dispatch_push::load(sdk, env)?)));
        registry.register_async("dispatch-sms", |sdk, env| {
            Box::pin(async move { Ok(Arc::new(dispatch_sms::load(&sdk, &env).await?) as Arc<dyn Invoke>) })
        });
        registry.register_async("dispatch-email", |sdk, env| {
            Box::pin(async move { Ok(Arc::new(dispatch_email::load(&sdk, &env).await?) as Arc<dyn Invoke>) })
        });
        registry.register("retry", |sdk, env| Ok(Arc::new(retry::Retry::load(sdk, env)?)));
        registry.register("publish-events", |sdk, env| Ok(Arc::new(retry::events::PublishEvents::load(sdk, env)?)));
        registry
    }

    /// A function whose init makes no AWS call.
    pub fn register(
        &mut self,
        binary: &str,
        factory: impl Fn(&SdkConfig, &HashMap<String, String>) -> Result<Arc<dyn Invoke>, ConfigError>
        + Send
        + Sync
        + 'static,
    ) {
        let factory = Arc::new(factory);
        self.register_async(binary, move |sdk, env| {
            let factory = factory.clone();
            Box::pin(async move { factory(&sdk, &env) })
        });
    }

    /// A function whose init reads something (its keys) from AWS.
    pub fn register_async(
        &mut self,
        binary: &str,
        factory: impl Fn(SdkConfig, HashMap<String, String>) -> Init + Send + Sync + 'static,
    ) {
        self.factories.insert(binary.to_string(), Box::new(factory));
    }

    pub async fn build(
        &self,
        binary: &str,
        sdk: &SdkConfig,
        env: &HashMap<String, String>,
    ) -> Option<Result<Arc<dyn Invoke>, ConfigError>> {
        let factory = self.factories.get(binary)?;
        Some(factory(sdk.clone(), env.clone()).await)
    }
}

/// A function's handler holding the stack's IAM authorizer: an invocation still running when
/// its stack stops (which stops the pollers, not the invocations they started) keeps reaching
/// AWS through the authorizer until it ends, as a Lambda instance finishes its invocation.
pub struct Authorized {
    pub handler: Arc<dyn Invoke>,
    pub authorizer: Arc<crate::iam::Authorizer>,
}

impl Invoke for Authorized {
    fn invoke(&self, payload: Value, context: Context) -> BoxFuture<'_, Result<Value, lambda_runtime::Error>> {
        self.handler.invoke(payload, context)
    }
}

/// Why an invocation produced no result.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the function returned an error: {0}")]
    Failed(String),
    #[error("the function timed out after {0:?}")]
    TimedOut(Duration),
    #[error("the function crashed: {0}")]
    Crashed(String),
}

/// A function of the running stack.
pub struct LocalFunction {
    pub logical_id: String,
    pub name: String,
    pub arn: String,
    pub timeout: Duration,
    pub handler: Arc<dyn Invoke>,
}

impl LocalFunction {
    /// One invocation, with the function's timeout; a panic is a crash of the "runtime".
    pub async fn invoke(&self, payload: Value) -> Result<Value, InvokeError> {
        let mut context = Context::default();
        context.request_id = uuid::Uuid::new_v4().to_string();
        context.invoked_function_arn = self.arn.clone();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        context.deadline = now_ms + self.timeout.as_millis() as u64;
        let handler = self.handler.clone();
        let task =
            tokio::spawn(async move { handler.invoke(payload, context).await.map_err(|error| error.to_string()) });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => {
                // Lambda stops a timed-out invocation; so does the local stack.
                abort.abort();
                Err(InvokeError::TimedOut(self.timeout))
            }
            Ok(Err(join_error)) => Err(InvokeError::Crashed(join_error.to_string())),
            Ok(Ok(Err(message))) => Err(InvokeError::Failed(message)),
            Ok(Ok(Ok(output))) => Ok(output),
        }
    }
}
