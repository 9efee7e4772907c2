//! The intake function: the HTTP API behind API Gateway. API Gateway matches the routes
//! declared in template.yaml and passes the matched `routeKey`, so routing here is one `match`.

mod auth;
mod problem;
mod send;

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use base64::Engine;
use lambda_runtime::{Error, LambdaEvent};
use notify::config::{ConfigError, EnvSource, Settings, Tables};
use notify::domain::app::Scope;
use notify::function::Function;
use notify::queue::{ChannelQueues, Enqueuer};
use notify::store::apps::AppStore;
use notify::store::notifications::NotificationStore;
use notify::store::templates::TemplateStore;
use notify::store::users::UserStore;

pub use problem::ApiError;

/// Request bodies larger than this are refused with 413 (API Gateway allows up to 10 MB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The routes this function serves, as `METHOD /path` route keys; template.yaml declares the
/// same set (a test holds them equal).
pub const ROUTES: &[&str] = &["POST /v1/notifications"];

pub struct Intake {
    apps: AppStore,
    users: UserStore,
    templates: TemplateStore,
    notifications: NotificationStore,
    enqueuer: Enqueuer,
}

impl Intake {
    /// Reads configuration and builds the clients (once per cold start).
    pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(env);
        let tables = Tables::load(&mut settings);
        let queues = ChannelQueues::load(&mut settings);
        settings.finish()?;
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Ok(Self {
            apps: AppStore::new(dynamodb.clone(), tables.apps),
            users: UserStore::new(dynamodb.clone(), tables.users),
            templates: TemplateStore::new(dynamodb.clone(), tables.templates),
            notifications: NotificationStore::new(dynamodb, tables.notifications),
            enqueuer: Enqueuer::new(aws_sdk_sqs::Client::new(sdk), queues),
        })
    }

    pub async fn route(&self, request: ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let route = request.route_key.as_deref().unwrap_or_default();
        match route {
            "POST /v1/notifications" => {
                let app = auth::authenticate(&self.apps, &request.headers, Scope::Send).await?;
                let key = send::idempotency_key(&request)?;
                self.send(&app, key, &body(&request)?).await
            }
            other => Err(ApiError::NotFound(format!("no route {other:?}"))),
        }
    }
}

/// The request body as bytes (API Gateway base64-encodes bodies it considers binary).
fn body(request: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let raw = request.body.as_deref().unwrap_or_default();
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| ApiError::Malformed("the body is not valid base64".into()))?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    Ok(bytes)
}

impl Function for Intake {
    type Event = ApiGatewayV2httpRequest;
    type Output = ApiGatewayV2httpResponse;

    async fn handle(&self, event: LambdaEvent<ApiGatewayV2httpRequest>) -> Result<ApiGatewayV2httpResponse, Error> {
        Ok(self.route(event.payload).await.unwrap_or_else(ApiError::into_response))
    }
}
