//! A fault-injecting HTTP proxy for tests (loopback only): forwards every request to the
//! emulator, except that a given share of provider sends (SNS `Publish`, SES v2 `SendEmail`)
//! are answered with the provider's own throttling error instead, (when asked) another share with
//! the provider's internal error (a transient failure), and a share of SQS and DynamoDB requests
//! with a 500 internal error. It also counts every AWS operation it
//! forwards (the request-count benchmark reads them) and, when asked, keeps the requests
//! themselves (the throughput benchmark sends them again). A test can also refuse the next few
//! requests whose body contains a given text (one particular write).

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use local_stack::loopback::LoopbackServer;
use local_stack::relay::{Answer, MAX_BODY_BYTES, upstream_request};
use notify::domain::channel::Channel;
use rand::Rng;

pub struct FaultProxy {
    pub url: String,
    /// Share of provider sends throttled, in thousandths.
    per_mille: Arc<AtomicU32>,
    /// Share of provider sends failed with the provider's internal error, in thousandths.
    failure_per_mille: Arc<AtomicU32>,
    /// Share of SQS and DynamoDB requests failed, in thousandths.
    infrastructure_per_mille: Arc<AtomicU32>,
    pub throttled: Arc<AtomicU64>,
    pub failed_sends: Arc<AtomicU64>,
    pub infrastructure_faults: Arc<AtomicU64>,
    pub forwarded_sends: Arc<AtomicU64>,
    /// Forwarded requests by operation (`dynamodb:PutItem`, `sqs:SendMessageBatch`, …).
    pub operations: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The forwarded requests, while recording.
    recording: Arc<Mutex<Option<Vec<Recorded>>>>,
    targeted: Arc<Mutex<Option<Targeted>>>,
    pub targeted_faults: Arc<AtomicU64>,
    _server: LoopbackServer,
}

/// Requests to refuse: the next `remaining` whose body contains `needle`.
struct Targeted {
    needle: Vec<u8>,
    remaining: u32,
}

/// How the count names a take of slots from a channel's send timeline (an UpdateItem of its
/// item), told apart from the notification record's writes.
pub const SEND_TIMELINE_TAKE: &str = "dynamodb:UpdateItem (send timeline)";

/// How the count names the entries of the PutEvents requests, and their bytes.
pub const PUT_EVENTS_ENTRIES: &str = "events:PutEvents (entries)";
pub const PUT_EVENTS_BYTES: &str = "events:PutEvents (bytes)";

/// A forwarded request, as it can be sent again.
pub struct Recorded {
    /// As counted: `sqs:ReceiveMessage (empty)` for a receive that found no message.
    pub operation: String,
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The same request, to `upstream`.
    pub fn request(&self, http: &reqwest::Client, upstream: &str) -> reqwest::RequestBuilder {
        upstream_request(http, upstream, &self.method, &self.path_and_query, &self.headers, self.body.clone())
    }
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    per_mille: Arc<AtomicU32>,
    failure_per_mille: Arc<AtomicU32>,
    infrastructure_per_mille: Arc<AtomicU32>,
    throttled: Arc<AtomicU64>,
    failed_sends: Arc<AtomicU64>,
    infrastructure_faults: Arc<AtomicU64>,
    forwarded_sends: Arc<AtomicU64>,
    operations: Arc<Mutex<BTreeMap<String, u64>>>,
    recording: Arc<Mutex<Option<Vec<Recorded>>>>,
    targeted: Arc<Mutex<Option<Targeted>>>,
    targeted_faults: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` throttling `share` (0.0–1.0) of provider sends.
    pub async fn start(upstream: &str, share: f64) -> Self {
        let per_mille = Arc::new(AtomicU32::new((share * 1000.0) as u32));
        let failure_per_mille = Arc::new(AtomicU32::new(0));
        let infrastructure_per_mille = Arc::new(AtomicU32::new(0));
        let throttled = Arc::new(AtomicU64::new(0));
        let failed_sends = Arc::new(AtomicU64::new(0));
        let infrastructure_faults = Arc::new(AtomicU64::new(0));
        let forwarded_sends = Arc::new(AtomicU64::new(0));
        let operations = Arc::new(Mutex::new(BTreeMap::new()));
        let recording = Arc::new(Mutex::new(None));
        let targeted = Arc::new(Mutex::new(None));
        let targeted_faults = Arc::new(AtomicU64::new(0));
        let state = Upstream {
            targeted: targeted.clone(),
            targeted_faults: targeted_faults.clone(),
            operations: operations.clone(),
            recording: recording.clone(),
            url: upstream.to_string(),
            http: reqwest::Client::new(),
            per_mille: per_mille.clone(),
            failure_per_mille: failure_per_mille.clone(),
            infrastructure_per_mille: infrastructure_per_mille.clone(),
            throttled: throttled.clone(),
            failed_sends: failed_sends.clone(),
            infrastructure_faults: infrastructure_faults.clone(),
            forwarded_sends: forwarded_sends.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let server = LoopbackServer::start(app, "the fault proxy").await.unwrap();
        Self {
            url: server.url(),
            per_mille,
            failure_per_mille,
            infrastructure_per_mille,
            throttled,
            failed_sends,
            infrastructure_faults,
            forwarded_sends,
            operations,
            recording,
            targeted,
            targeted_faults,
            _server: server,
        }
    }

    /// Refuses (a transient 500, not forwarded) the next `count` requests whose body contains
    /// `needle`.
    pub fn refuse_next(&self, needle: &str, count: u32) {
        *self.targeted.lock().unwrap() = Some(Targeted { needle: needle.as_bytes().to_vec(), remaining: count });
    }

    /// Keeps every request forwarded from now on, until `take_recording`.
    pub fn start_recording(&self) {
        *self.recording.lock().unwrap() = Some(Vec::new());
    }

    /// The requests kept since `start_recording`, in the order their answers came (a request
    /// made because of another's answer comes after it), and no more recording.
    pub fn take_recording(&self) -> Vec<Recorded> {
        self.recording.lock().unwrap().take().unwrap_or_default()
    }

    /// The operations counted so far, and a fresh count from now on.
    pub fn take_operations(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.operations.lock().unwrap())
    }

    /// Changes the share of throttled sends (0.0–1.0) from now on.
    pub fn set_share(&self, share: f64) {
        self.per_mille.store((share * 1000.0) as u32, Ordering::SeqCst);
    }

    /// Changes the share of sends failed with the provider's internal error (0.0–1.0) from now on:
    /// failures that spend the retry budget, where a throttle only waits.
    pub fn set_failure_share(&self, share: f64) {
        self.failure_per_mille.store((share * 1000.0) as u32, Ordering::SeqCst);
    }

    /// Changes the share (0.0–1.0) of SQS and DynamoDB requests failed from now on.
    pub fn set_infrastructure_share(&self, share: f64) {
        self.infrastructure_per_mille.store((share * 1000.0) as u32, Ordering::SeqCst);
    }
}

enum Send {
    Sns,
    Ses,
}

fn provider_send(path: &str, body: &[u8]) -> Option<Send> {
    if path == "/v2/email/outbound-emails" {
        return Some(Send::Ses);
    }
    let form = std::str::from_utf8(body).ok()?;
    form.split('&').any(|pair| pair == "Action=Publish").then_some(Send::Sns)
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_BODY_BYTES).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if let Some(targeted) = upstream.targeted.lock().unwrap().as_mut()
        && targeted.remaining > 0
        && body_has(&body, &targeted.needle)
    {
        targeted.remaining -= 1;
        upstream.targeted_faults.fetch_add(1, Ordering::SeqCst);
        return internal_error();
    }
    if let Some(send) = provider_send(parts.uri.path(), &body) {
        let roll = rand::rng().random_range(0..1000);
        let throttles = upstream.per_mille.load(Ordering::SeqCst);
        if roll < throttles {
            upstream.throttled.fetch_add(1, Ordering::SeqCst);
            return throttle(send);
        }
        if roll < throttles + upstream.failure_per_mille.load(Ordering::SeqCst) {
            upstream.failed_sends.fetch_add(1, Ordering::SeqCst);
            return provider_internal_error(send);
        }
        upstream.forwarded_sends.fetch_add(1, Ordering::SeqCst);
    }
    // Half the SQS/DynamoDB faults are refused requests, half are requests that took effect
    // but whose answer was lost: the second kind is what makes retries meet their own writes.
    let infrastructure_fault = is_infrastructure(&parts.headers)
        && rand::rng().random_range(0..1000) < upstream.infrastructure_per_mille.load(Ordering::SeqCst);
    if infrastructure_fault {
        upstream.infrastructure_faults.fetch_add(1, Ordering::SeqCst);
        if rand::rng().random_bool(0.5) {
            return internal_error();
        }
    }
    let forwarded = upstream_request(&upstream.http, &upstream.url, &parts.method, &path, &parts.headers, body.clone());
    let answer = match Answer::fetch(forwarded).await {
        Ok(answer) => answer,
        Err(bad_gateway) => return bad_gateway,
    };
    let mut name = operation(&parts.headers, parts.uri.path(), &body);
    if name == "sqs:ReceiveMessage" && !answer.body.windows(10).any(|w| w == b"\"Messages\"") {
        name.push_str(" (empty)");
    }
    // EventBridge bills each entry of a PutEvents (and an archive each byte).
    let billed = match name.as_str() {
        "events:PutEvents" => vec![
            (PUT_EVENTS_ENTRIES, body.windows(12).filter(|window| window == b"\"DetailType\"").count() as u64),
            (PUT_EVENTS_BYTES, body.len() as u64),
        ],
        _ => Vec::new(),
    };
    if let Some(recording) = upstream.recording.lock().unwrap().as_mut() {
        recording.push(Recorded {
            operation: name.clone(),
            method: parts.method.clone(),
            path_and_query: path,
            headers: parts.headers.clone(),
            body,
        });
    }
    let mut operations = upstream.operations.lock().unwrap();
    for (counted, n) in billed {
        *operations.entry(counted.into()).or_default() += n;
    }
    *operations.entry(name).or_default() += 1;
    drop(operations);
    if infrastructure_fault {
        return internal_error();
    }
    answer.into_response()
}

/// The AWS operation of a request, as `service:Operation`.
fn operation(headers: &axum::http::HeaderMap, path: &str, body: &[u8]) -> String {
    // JSON protocols name it in a header: `DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`.
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (service, operation) = target.split_once('.').unwrap_or((target, ""));
        let service = if service.starts_with("DynamoDBStreams") {
            "dynamodb-streams"
        } else if service.starts_with("DynamoDB") {
            "dynamodb"
        } else if service == "AmazonSQS" {
            "sqs"
        } else if service == "AWSEvents" {
            "events"
        } else {
            service
        };
        // Billed at half a read unit: told apart so the cost can be.
        if service == "dynamodb" && operation == "GetItem" && !body_has(body, br#""ConsistentRead":true"#) {
            return "dynamodb:GetItem (eventually consistent)".into();
        }
        if service == "dynamodb" && operation == "UpdateItem" && body_has(body, br#""S":"send-rate/"#) {
            return SEND_TIMELINE_TAKE.into();
        }
        return format!("{service}:{operation}");
    }
    if path == "/v2/email/outbound-emails" {
        return "sesv2:SendEmail".into();
    }
    // The query protocol (SNS) names it in the form body.
    let form = String::from_utf8_lossy(body);
    match form.split('&').find_map(|pair| pair.strip_prefix("Action=")) {
        Some(action) => format!("sns:{action}"),
        None => format!("other:{path}"),
    }
}

fn body_has(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|window| window == needle)
}

/// Whether a request is to SQS or DynamoDB (both speak JSON protocols named in `x-amz-target`).
fn is_infrastructure(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|target| target.starts_with("DynamoDB") || target.starts_with("AmazonSQS"))
}

/// A server-side failure as the JSON protocols spell it: transient, so the SDK retries it.
fn internal_error() -> Response {
    Response::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-errortype", "InternalFailure")
        .body(Body::from(r#"{"__type":"InternalFailure","message":"injected fault"}"#))
        .unwrap()
}

/// The providers' internal errors (HTTP 500), as each protocol spells them.
fn provider_internal_error(send: Send) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = match send {
        Send::Ses => Response::builder()
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "InternalFailure")
            .header("x-amzn-requestid", request_id)
            .body(Body::from(r#"{"message":"An internal error occurred."}"#)),
        Send::Sns => Response::builder().header("content-type", "text/xml").body(Body::from(format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Receiver</Type>\
             <Code>InternalError</Code><Message>Internal Error</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ))),
    };
    let mut response = response.unwrap();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The providers' throttling errors, as each protocol spells them.
fn throttle(send: Send) -> Response {
    local_stack::provider_account::throttled(match send {
        Send::Sns => Channel::Sms,
        Send::Ses => Channel::Email,
    })
}
