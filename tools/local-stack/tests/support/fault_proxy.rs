//! A fault-injecting HTTP proxy for tests (loopback only): forwards every request to the
//! emulator, except that a given share of provider sends (SNS `Publish`, SES v2 `SendEmail`)
//! are answered with the provider's own throttling error instead. It also counts every AWS
//! operation it forwards (the request-count benchmark reads them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use rand::Rng;

pub struct FaultProxy {
    pub url: String,
    /// Share of provider sends throttled, in thousandths.
    per_mille: Arc<AtomicU32>,
    pub throttled: Arc<AtomicU64>,
    pub forwarded_sends: Arc<AtomicU64>,
    /// Forwarded requests by operation (`dynamodb:PutItem`, `sqs:SendMessageBatch`, …).
    pub operations: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    per_mille: Arc<AtomicU32>,
    throttled: Arc<AtomicU64>,
    forwarded_sends: Arc<AtomicU64>,
    operations: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` throttling `share` (0.0–1.0) of provider sends.
    pub async fn start(upstream: &str, share: f64) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let per_mille = Arc::new(AtomicU32::new((share * 1000.0) as u32));
        let throttled = Arc::new(AtomicU64::new(0));
        let forwarded_sends = Arc::new(AtomicU64::new(0));
        let operations = Arc::new(Mutex::new(BTreeMap::new()));
        let state = Upstream {
            operations: operations.clone(),
            url: upstream.to_string(),
            http: reqwest::Client::new(),
            per_mille: per_mille.clone(),
            throttled: throttled.clone(),
            forwarded_sends: forwarded_sends.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, per_mille, throttled, forwarded_sends, operations, task }
    }

    /// The operations counted so far, and a fresh count from now on.
    pub fn take_operations(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.operations.lock().unwrap())
    }

    /// Changes the share of throttled sends (0.0–1.0) from now on.
    pub fn set_share(&self, share: f64) {
        self.per_mille.store((share * 1000.0) as u32, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
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
    let body = to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if let Some(send) = provider_send(parts.uri.path(), &body) {
        if rand::rng().random_range(0..1000) < upstream.per_mille.load(Ordering::SeqCst) {
            upstream.throttled.fetch_add(1, Ordering::SeqCst);
            return throttle(send);
        }
        upstream.forwarded_sends.fetch_add(1, Ordering::SeqCst);
    }
    let mut forwarded =
        upstream.http.request(parts.method.clone(), format!("{}{path}", upstream.url)).body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forwarded.send().await.unwrap();
    let answer_status = answer.status();
    let answer_headers = answer.headers().clone();
    let answer_body = answer.bytes().await.unwrap();
    let mut name = operation(&parts.headers, parts.uri.path(), &body);
    if name == "sqs:ReceiveMessage" && !answer_body.windows(10).any(|w| w == b"\"Messages\"") {
        name.push_str(" (empty)");
    }
    *upstream.operations.lock().unwrap().entry(name).or_default() += 1;
    let mut response = Response::builder().status(answer_status.as_u16());
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response.body(Body::from(answer_body)).unwrap()
}

/// The AWS operation of a request, as `service:Operation`.
fn operation(headers: &axum::http::HeaderMap, path: &str, body: &[u8]) -> String {
    // JSON protocols name it in a header: `DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`.
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (service, operation) = target.split_once('.').unwrap_or((target, ""));
        let service = if service.starts_with("DynamoDB") {
            "dynamodb"
        } else if service == "AmazonSQS" {
            "sqs"
        } else {
            service
        };
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

/// The providers' throttling errors, as each protocol spells them.
fn throttle(send: Send) -> Response {
    match send {
        Send::Sns => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "text/xml")
            .body(Body::from(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>\
                 <Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>",
            ))
            .unwrap(),
        Send::Ses => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "TooManyRequestsException")
            .body(Body::from(r#"{"message":"Too many requests"}"#))
            .unwrap(),
    }
}
