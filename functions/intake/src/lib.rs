//! The intake function: the HTTP API behind API Gateway. API Gateway matches the routes
//! declared in template.yaml and passes the matched `routeKey`, so routing here is one `match`.

mod auth;
mod cancel;
mod conversions;
mod pages;
mod preference_center;
mod problem;
#[cfg(test)]
mod properties;
mod receipts;
mod request;
mod send;
/// Exposed for the CPU benchmark (`benches/cpu.rs`).
pub use send::{Prepared, SendRequest, assemble};
mod stats;
mod status;
mod templates;
mod tracking;
mod unsubscribe;
mod users;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use base64::Engine;
use lambda_runtime::{Error, LambdaEvent};
use notify::cache::TtlCache;
use notify::config::{ConfigError, EnvSource, Settings, Tables};
use notify::domain::app::{AppRecord, Scope};
use notify::domain::quiet_hours::QuietHoursPolicy;
use notify::domain::template::{Template, TemplateName};
use notify::domain::user::{UserId, UserProfile};
use notify::function::Function;
use notify::link_keys::LinkKeys;
use notify::provider::twilio::{TwilioSecret, twilio_secret};
use notify::queue::{ChannelQueues, Enqueuer};
use notify::store::apps::AppStore;
use notify::store::notifications::NotificationStore;
use notify::store::stats::{StatsRecorder, StatsStore};
use notify::store::suppressions::SuppressionStore;
use notify::store::templates::TemplateStore;
use notify::store::users::UserStore;
use tracing::Instrument;

pub use problem::ApiError;

/// Request bodies larger than this are refused with 413 (API Gateway allows up to 10 MB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The routes this function serves, as route keys; template.yaml and openapi.json declare the
/// same set (tests hold them equal).
pub const ROUTES: &[&str] = &[
    "PUT /v1/users/{user_id}",
    "GET /v1/users/{user_id}",
    "DELETE /v1/users/{user_id}",
    "POST /v1/users/{user_id}/devices",
    "DELETE /v1/users/{user_id}/devices/{token}",
    "GET /v1/users/{user_id}/preferences",
    "PUT /v1/users/{user_id}/preferences",
    "PUT /v1/templates/{name}",
    "GET /v1/templates/{name}",
    "POST /v1/notifications",
    "POST /v1/notifications/batch",
    "GET /v1/notifications/{id}",
    "DELETE /v1/notifications/{id}",
    "POST /v1/notifications/{id}/events",
    "POST /v1/notifications/cancel",
    "GET /v1/openapi.json",
    "GET /v1/unsubscribe/{token}",
    "POST /v1/unsubscribe/{token}",
    "GET /v1/preferences/{token}",
    "POST /v1/preferences/{token}",
    "GET /t/c/{token}",
    "GET /t/o/{token}",
    "POST /t/p/{token}",
    "GET /v1/stats",
    "POST /v1/receipts/twilio",
];

/// The OpenAPI 3.1 document of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Entries kept per cache; a warm instance rarely sees more distinct keys between expiries.
const CACHE_CAPACITY: usize = 10_000;

pub struct Intake {
    apps: AppStore,
    users: UserStore,
    templates: TemplateStore,
    notifications: NotificationStore,
    suppressions: SuppressionStore,
    stats: StatsRecorder,
    enqueuer: Enqueuer,
    app_cache: TtlCache<String, Option<AppRecord>>,
    user_cache: TtlCache<UserId, Option<UserProfile>>,
    template_cache: TtlCache<TemplateName, Option<Template>>,
    /// Lower-cased address → whether it is suppressed.
    suppression_cache: TtlCache<String, bool>,
    /// Sign tracking links and verify them and unsubscribe links.
    link_keys: LinkKeys,
    /// Base of tracking links; without it, the domain a send request came in on.
    public_api_url: Option<String>,
    /// Verifies Twilio's status callbacks (when the stack sends through Twilio).
    twilio: Option<TwilioSecret>,
    /// The deployment's default time zone and quiet hours, shown in the preference center.
    quiet_hours: QuietHoursPolicy,
}

impl Intake {
    /// Reads configuration and the link-signing keys and builds the clients (once per cold
    /// start). `CACHE_TTL_SECONDS` (default 5) bounds how stale an app, user or template read
    /// through another instance may be; the keys (`LINK_SIGNING_KEY_ARN`) verify unsubscribe
    /// links and seal tracking links, which point at `PUBLIC_API_URL` (optional: by default the
    /// domain the send request came in on).
    pub async fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(env);
        let link_keys = LinkKeys::load(aws_sdk_secretsmanager::Client::new(sdk), &mut settings);
        let tables = Tables::load(&mut settings);
        let queues = ChannelQueues::load(&mut settings);
        let ttl = Duration::from_secs(settings.parsed_or("CACHE_TTL_SECONDS", 5u64));
        let public_api_url = settings.optional("PUBLIC_API_URL");
        let quiet_hours = QuietHoursPolicy::load(&mut settings);
        // Read at the first receipt: most cold starts serve other routes.
        let twilio = settings
            .optional("TWILIO_SECRET_ARN")
            .map(|arn| twilio_secret(aws_sdk_secretsmanager::Client::new(sdk), arn));
        settings.finish()?;
        link_keys.read().await?;
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Ok(Self {
            apps: AppStore::new(dynamodb.clone(), tables.apps),
            users: UserStore::new(dynamodb.clone(), tables.users),
            templates: TemplateStore::new(dynamodb.clone(), tables.templates),
            notifications: NotificationStore::new(dynamodb.clone(), tables.notifications),
            suppressions: SuppressionStore::new(dynamodb.clone(), tables.suppressions),
            stats: StatsRecorder::new(StatsStore::new(dynamodb, tables.stats)),
            enqueuer: Enqueuer::new(aws_sdk_sqs::Client::new(sdk), queues),
            app_cache: TtlCache::new(ttl, CACHE_CAPACITY),
            user_cache: TtlCache::new(ttl, CACHE_CAPACITY),
            template_cache: TtlCache::new(ttl, CACHE_CAPACITY),
            suppression_cache: TtlCache::new(ttl, CACHE_CAPACITY),
            link_keys,
            public_api_url,
            twilio,
            quiet_hours,
        })
    }

    /// Where tracking links point: `PUBLIC_API_URL`, or the domain this request came in on.
    fn link_base(&self, request: &ApiGatewayV2httpRequest) -> String {
        match (&self.public_api_url, request.request_context.domain_name.as_deref()) {
            // Without a trailing slash, so every link built on it has one spelling.
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(domain)) => format!("https://{domain}"),
            (None, None) => String::new(),
        }
    }

    /// The calling app; from here on every log line of the request names it.
    async fn authenticate(&self, request: &ApiGatewayV2httpRequest, scope: Scope) -> Result<AppRecord, ApiError> {
        let app = auth::authenticate(&self.apps, &self.app_cache, &request.headers, scope).await?;
        tracing::Span::current().record("app_key", app.app_key.as_str());
        Ok(app)
    }

    /// Answers `request` in an invocation that ends at `deadline_ms` (epoch ms).
    pub async fn route(
        &self,
        request: ApiGatewayV2httpRequest,
        deadline_ms: i64,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let route = request.route_key.clone().unwrap_or_default();
        let request = &request;
        match route.as_str() {
            "GET /v1/openapi.json" => {
                let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON (tested)");
                Ok(problem::json_response(200, "application/json", &document))
            }
            "GET /v1/unsubscribe/{token}" => self.unsubscribe_page(request).await,
            "POST /v1/unsubscribe/{token}" => self.unsubscribe(request, &body(request)?).await,
            "GET /v1/preferences/{token}" => self.preference_center(request).await,
            "POST /v1/preferences/{token}" => self.save_preferences(request, &body(request)?).await,
            "GET /t/c/{token}" => self.click(request).await,
            "GET /t/o/{token}" => self.open(request).await,
            "POST /t/p/{token}" => self.push_open(request).await,
            "POST /v1/receipts/twilio" => self.twilio_receipt(request, &body(request)?).await,
            "PUT /v1/users/{user_id}" => {
                self.authenticate(request, Scope::Users).await?;
                self.put_user(request, &body(request)?).await
            }
            "GET /v1/users/{user_id}" => {
                self.authenticate(request, Scope::Users).await?;
                self.get_user(request).await
            }
            "DELETE /v1/users/{user_id}" => {
                self.authenticate(request, Scope::Users).await?;
                self.delete_user(request).await
            }
            "POST /v1/users/{user_id}/devices" => {
                self.authenticate(request, Scope::Users).await?;
                self.register_device(request, &body(request)?).await
            }
            "DELETE /v1/users/{user_id}/devices/{token}" => {
                self.authenticate(request, Scope::Users).await?;
                self.delete_device(request).await
            }
            "GET /v1/users/{user_id}/preferences" => {
                self.authenticate(request, Scope::Users).await?;
                self.get_preferences(request).await
            }
            "PUT /v1/users/{user_id}/preferences" => {
                self.authenticate(request, Scope::Users).await?;
                self.put_preferences(request, &body(request)?).await
            }
            "PUT /v1/templates/{name}" => {
                self.authenticate(request, Scope::Templates).await?;
                self.put_template(request, &body(request)?).await
            }
            "GET /v1/templates/{name}" => {
                self.authenticate(request, Scope::Templates).await?;
                self.get_template(request).await
            }
            "POST /v1/notifications" => {
                let app = self.authenticate(request, Scope::Send).await?;
                let key = send::idempotency_key(request)?;
                self.send(&app, &self.link_base(request), key, &body(request)?).await
            }
            "POST /v1/notifications/batch" => {
                let app = self.authenticate(request, Scope::Send).await?;
                self.send_batch(&app, &self.link_base(request), &body(request)?).await
            }
            "GET /v1/notifications/{id}" => {
                let app = self.authenticate(request, Scope::Status).await?;
                self.get_notification(&app, request).await
            }
            "DELETE /v1/notifications/{id}" => {
                let app = self.authenticate(request, Scope::Send).await?;
                self.cancel_notification(&app, request).await
            }
            "POST /v1/notifications/{id}/events" => {
                let app = self.authenticate(request, Scope::Send).await?;
                self.record_event(&app, request, &body(request)?).await
            }
            "POST /v1/notifications/cancel" => {
                let app = self.authenticate(request, Scope::Send).await?;
                self.cancel_by_key(&app, &body(request)?, deadline_ms).await
            }
            "GET /v1/stats" => {
                let app = self.authenticate(request, Scope::Status).await?;
                self.get_stats(&app, request).await
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
        let (request, deadline_ms) = (event.payload, event.context.deadline as i64);
        // Every log line of a request names its route and API Gateway's request id (the access
        // log's requestId), and, once authenticated, the calling app.
        let span = tracing::info_span!(
            "request",
            route = request.route_key.as_deref().unwrap_or_default(),
            api_request_id = request.request_context.request_id.as_deref().unwrap_or_default(),
            app_key = tracing::field::Empty,
        );
        async {
            let response = self.route(request, deadline_ms).await.unwrap_or_else(ApiError::into_response);
            self.stats.flush().await;
            notify::metrics::flush();
            Ok(response)
        }
        .instrument(span)
        .await
    }
}
