//! The authorizer: a loopback HTTP proxy in front of the AWS endpoint that every function of a
//! stack talks to. Each function signs with an access key id of its own; the authorizer finds
//! the function's role by it, works out the permissions the request needs, and forwards only
//! what the role allows. Anything else is answered as the service answers an IAM denial, so the
//! function sees exactly what it would see in AWS, and is remembered for the tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::policy::{Decision, Permission, Statement, decide};
use super::request::{self, Scope, Service};
use crate::loopback::LoopbackServer;
use crate::provider_account::ProviderAccount;
use crate::relay::{Answer, MAX_BODY_BYTES, upstream_request};

/// Who signs with an access key id.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A function, in its execution role (the session is named after the function, as Lambda does).
    Function { logical_id: String, role_name: String, session_name: String, statements: Vec<Statement> },
    /// An operator with every permission (notifyctl, the stack's own provisioning).
    Admin,
}

/// A request the authorizer refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The function's logical id, or the access key id nobody owns.
    pub principal: String,
    pub operation: String,
    /// The permission refused (`None` when the request's permissions are unknown).
    pub permission: Option<Permission>,
    /// The message the service's error carried.
    pub message: String,
}

/// The requests the authorizer passed on for one caller and operation: how many, and the time
/// the emulator took to answer them all (its queueing included).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub seconds: f64,
}

/// The caller (a function's logical id, or `operator`) and the operation of passed requests.
pub type TrafficKey = (String, String);

struct Shared {
    upstream: String,
    http: reqwest::Client,
    principals: BTreeMap<String, Principal>,
    scope: Scope,
    account_id: String,
    denials: Mutex<Vec<Denial>>,
    traffic: Mutex<BTreeMap<TrafficKey, Traffic>>,
    /// The providers' side of the account (quotas), which answers before the emulator.
    providers: Arc<ProviderAccount>,
}

pub struct Authorizer {
    pub url: String,
    shared: Arc<Shared>,
    _server: LoopbackServer,
}

impl Authorizer {
    /// Starts authorizing requests for `principals` (by access key id) in front of `upstream`;
    /// what they are allowed to send goes through the account's `providers` first.
    pub async fn start(
        upstream: &str,
        principals: BTreeMap<String, Principal>,
        scope: Scope,
        providers: Arc<ProviderAccount>,
    ) -> Result<Self, std::io::Error> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            principals,
            account_id: scope.account_id.clone(),
            scope,
            denials: Mutex::new(Vec::new()),
            traffic: Mutex::new(BTreeMap::new()),
            providers,
        });
        let app = axum::Router::new().fallback(authorize).with_state(shared.clone());
        let server = LoopbackServer::start(app, "the IAM authorizer").await?;
        Ok(Self { url: server.url(), shared, _server: server })
    }

    /// What function `logical_id`'s role says about `permission` (`None`: no such function).
    pub fn decide(&self, logical_id: &str, permission: &Permission) -> Option<Decision> {
        self.shared.principals.values().find_map(|principal| match principal {
            Principal::Function { logical_id: id, statements, .. } if id == logical_id => {
                Some(decide(statements, permission))
            }
            _ => None,
        })
    }

    /// Every request refused so far.
    pub fn denials(&self) -> Vec<Denial> {
        self.shared.denials.lock().expect("denials lock").clone()
    }

    /// Every request passed on so far, per caller and operation (what a load makes the emulator
    /// do, and what it would cost in AWS).
    pub fn traffic(&self) -> BTreeMap<TrafficKey, Traffic> {
        self.shared.traffic.lock().expect("traffic lock").clone()
    }
}

/// `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, …` → key id and
/// service.
fn credential(headers: &HeaderMap) -> Option<(&str, &str)> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let scope = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    let key_id = parts.next()?;
    let service = parts.nth(2)?;
    Some((key_id, service))
}

async fn authorize(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return Response::builder().status(StatusCode::PAYLOAD_TOO_LARGE).body(Body::empty()).unwrap();
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let (key_id, signing_service) = credential(&parts.headers).unzip();
    let target = parts.headers.get("x-amz-target").and_then(|value| value.to_str().ok());
    let needed = request::needed(
        &request::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            target,
            signing_service,
            body: &body,
        },
        &shared.scope,
    );
    let principal = key_id.and_then(|key_id| shared.principals.get(key_id));
    let refusal = match (principal, &needed) {
        (Some(Principal::Admin), _) => None,
        (Some(Principal::Function { logical_id, role_name, session_name, statements }), Ok(needed)) => {
            let caller = format!("arn:aws:sts::{}:assumed-role/{role_name}/{session_name}", shared.account_id);
            needed.permissions.iter().find_map(|permission| match decide(statements, permission) {
                Decision::Allowed { .. } => None,
                decision => Some(Denial {
                    principal: logical_id.clone(),
                    operation: needed.operation.clone(),
                    message: denial_message(needed.service, &caller, permission, &decision),
                    permission: Some(permission.clone()),
                }),
            })
        }
        (Some(Principal::Function { logical_id, .. }), Err(unknown)) => Some(Denial {
            principal: logical_id.clone(),
            operation: parts.uri.path().to_string(),
            permission: None,
            message: unknown.to_string(),
        }),
        (None, _) => Some(Denial {
            principal: key_id.unwrap_or("(unsigned)").to_string(),
            operation: parts.uri.path().to_string(),
            permission: None,
            message: "The security token included in the request is invalid.".into(),
        }),
    };
    if let Some(denial) = refusal {
        tracing::warn!(principal = %denial.principal, operation = %denial.operation, detail = %denial.message, "AccessDenied");
        let service = needed.as_ref().map(|needed| needed.service).ok().or(match target {
            Some(target) if target.starts_with("DynamoDB") => Some(Service::DynamoDb),
            Some(target) if target.starts_with("AmazonSQS") => Some(Service::Sqs),
            _ => None,
        });
        let response = access_denied(service, &denial.message);
        shared.denials.lock().expect("denials lock").push(denial);
        return response;
    }
    if let Some(answer) = shared.providers.answer(&parts.method, parts.uri.path(), &body) {
        return answer;
    }
    let forwarded =
        upstream_request(&shared.http, &shared.upstream, &parts.method, &path_and_query, &parts.headers, body);
    let started = std::time::Instant::now();
    let answer = Answer::fetch(forwarded).await;
    let caller = match principal {
        Some(Principal::Function { logical_id, .. }) => logical_id.as_str(),
        _ => "operator",
    };
    let operation = needed.map_or_else(|_| parts.uri.path().to_string(), |needed| needed.operation);
    let mut traffic = shared.traffic.lock().expect("traffic lock");
    let tally = traffic.entry((caller.to_string(), operation)).or_default();
    tally.requests += 1;
    tally.seconds += started.elapsed().as_secs_f64();
    drop(traffic);
    match answer {
        Ok(answer) => answer.into_response(),
        Err(response) => response,
    }
}

/// The message AWS puts in an IAM denial. SES still words it the old way.
fn denial_message(service: Service, caller: &str, permission: &Permission, decision: &Decision) -> String {
    let Permission { action, resource } = permission;
    // SNS spells its service prefix in capitals in these messages.
    let action = match action.strip_prefix("sns:") {
        Some(operation) => format!("SNS:{operation}"),
        None => action.clone(),
    };
    if service == Service::SesV2 {
        return format!("User `{caller}' is not authorized to perform `{action}' on resource `{resource}'");
    }
    let because = match decision {
        Decision::ExplicitlyDenied { .. } => "with an explicit deny in an identity-based policy".to_string(),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    format!("User: {caller} is not authorized to perform: {action} on resource: {resource} {because}")
}

/// An IAM denial in the wire format of the service (what the SDK parses into its error code:
/// `AccessDeniedException`; `AccessDenied` for SQS, whose JSON protocol keeps its query-era
/// code in a header; `AuthorizationError` for SNS).
fn access_denied(service: Option<Service>, message: &str) -> Response {
    let json = |status: StatusCode, content_type: &str, body: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
            .body(Body::from(body.to_string()))
    };
    let coral = "com.amazon.coral.service#AccessDeniedException";
    let response = match service {
        Some(Service::DynamoDb) => json(
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            serde_json::json!({"__type": coral, "Message": message}),
        ),
        Some(Service::Sqs) => Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", "AccessDenied;Sender")
            .body(Body::from(serde_json::json!({"__type": coral, "Message": message}).to_string())),
        Some(Service::SecretsManager | Service::EventBridge) => json(
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": "AccessDeniedException", "Message": message}),
        ),
        Some(Service::SesV2 | Service::Scheduler) => Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "AccessDeniedException")
            .body(Body::from(serde_json::json!({"message": message}).to_string())),
        // SNS, and any query-protocol service.
        Some(Service::Sns) | None => Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("content-type", "text/xml")
            .body(Body::from(format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>\
                 <Code>AuthorizationError</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                xml_escape(message),
                uuid::Uuid::new_v4()
            ))),
    };
    response.expect("a static status and headers")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
