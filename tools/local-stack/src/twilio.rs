//! A local Twilio, written from Twilio's Programmable Messaging API reference, so the SMS path
//! through Twilio is tested against Twilio's wire format and nothing reaches Twilio:
//!
//! - Create Message, `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: form-encoded, HTTP
//!   Basic with the account SID and auth token, `To` checked as E.164, `From` or
//!   `MessagingServiceSid`, `Body` up to 1,600 characters; `201` with the Message resource, or
//!   Twilio's error shape (`code`, `message`, `more_info`, `status`).
//! - List Messages (`GET …/Messages.json`, newest first, `To`/`From` filters, `PageSize` and
//!   `Page`) and Fetch Message (`GET …/Messages/{Sid}.json`): what it received.
//! - Status callbacks: for a message created with a `StatusCallback` URL, `sent` then
//!   `delivered` (or `undelivered` with `ErrorCode`) posted there form-encoded, signed with
//!   `X-Twilio-Signature` as Twilio signs them.
//! - Faults: the next requests, or every n-th, answered 500, 503 or 429, or created and never
//!   answered (a timeout after the request); and error codes for destinations by prefix
//!   (21408 for a country not enabled, 21211, 21610, 21614 for a number).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use notify::provider::twilio::{SIGNATURE_HEADER, signature};

use crate::loopback::LoopbackServer;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

const API_VERSION: &str = "2010-04-01";
const MAX_BODY_CHARS: usize = 1600;
/// The carrier's "Unreachable destination handset", reported on an `undelivered` message.
const UNREACHABLE_HANDSET: u32 = 30003;

/// The number the local stack's SMS go out from through Twilio (Twilio's magic test number
/// for a valid sender).
pub const SENDER: &str = "+15005550006";

/// A Twilio account: its SID (`AC` and 32 hex digits) and auth token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwilioAccount {
    pub sid: String,
    pub auth_token: String,
}

impl TwilioAccount {
    /// A new account with a random SID and token.
    pub fn generate() -> Self {
        Self {
            sid: format!("AC{}", uuid::Uuid::new_v4().simple()),
            auth_token: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// An answer the mock gives instead of creating a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `500`, Twilio's `20500` "An internal server error has occurred".
    ServerError,
    /// `503`, Twilio's `20503` "Service is unavailable".
    Unavailable,
    /// `429`, Twilio's `20429` "Too Many Requests".
    TooManyRequests,
    /// The message is created (and delivered) but no answer comes before `hang`: the caller
    /// times out not knowing whether it went out.
    TimeoutAfterRequest,
}

/// How the mock answers a Create Message that is not refused for its content.
#[derive(Debug, Default)]
struct Faults {
    /// Answered to the next requests, one each.
    next: VecDeque<Fault>,
    /// One in every `n` requests (the n-th, 2n-th, …) answered with the fault.
    every: Option<(u64, Fault)>,
    /// Error codes for destinations starting with a prefix (the longest wins).
    refused: BTreeMap<String, u32>,
    /// Create Message requests so far (`every` counts them).
    creates: u64,
}

/// One status callback the mock made, and how the stack answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    pub message_sid: String,
    pub status: String,
    /// The HTTP status the callback URL answered (0: no answer).
    pub answered: u16,
}

struct Shared {
    account: TwilioAccount,
    /// Message resources, oldest first.
    messages: Mutex<Vec<Value>>,
    faults: Mutex<Faults>,
    callbacks: Mutex<Vec<Callback>>,
    /// Numbers whose messages the carrier does not deliver (`undelivered`, `30003`).
    unreachable: Mutex<Vec<String>>,
    hang: Duration,
    http: reqwest::Client,
}

pub struct TwilioMock {
    pub url: String,
    shared: Arc<Shared>,
    _server: LoopbackServer,
}

impl TwilioMock {
    /// Starts serving `account` on a loopback port; a timeout fault holds its answer `hang`.
    pub async fn start(account: TwilioAccount, hang: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            account,
            messages: Mutex::default(),
            faults: Mutex::default(),
            callbacks: Mutex::default(),
            unreachable: Mutex::default(),
            hang,
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", get(list).post(create))
            .route("/2010-04-01/Accounts/{account}/Messages/{file}", get(fetch))
            .with_state(shared.clone());
        let server = LoopbackServer::start(app, "the Twilio mock").await?;
        Ok(Self { url: server.url(), shared, _server: server })
    }

    pub fn account(&self) -> &TwilioAccount {
        &self.shared.account
    }

    /// Answers the next requests with `faults`, one each, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().expect("faults lock").next.extend(faults);
    }

    /// Answers one in every `n` requests with `fault` (`None`: stop).
    pub fn fail_every(&self, every: Option<(u64, Fault)>) {
        self.shared.faults.lock().expect("faults lock").every = every;
    }

    /// Refuses messages to numbers starting with `prefix` with Twilio's error `code` (21211,
    /// 21408, 21610 or 21614); `None` lifts the refusal.
    pub fn refuse(&self, prefix: &str, code: Option<u32>) {
        let mut faults = self.shared.faults.lock().expect("faults lock");
        match code {
            Some(code) => faults.refused.insert(prefix.to_string(), code),
            None => faults.refused.remove(prefix),
        };
    }

    /// Messages to `number` are accepted, then reported `undelivered` (`30003`, unreachable).
    pub fn unreachable(&self, number: &str) {
        self.shared.unreachable.lock().expect("unreachable lock").push(number.to_string());
    }

    /// Every message created, oldest first, as its resource stands now.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.messages.lock().expect("messages lock").clone()
    }

    /// Every status callback made so far.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.shared.callbacks.lock().expect("callbacks lock").clone()
    }
}

/// Twilio's error answer.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    respond(status, &body)
}

fn respond(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("twilio-request-id", format!("RQ{}", uuid::Uuid::new_v4().simple()))
        .body(Body::from(body.to_string()))
        .expect("a static status and headers")
}

/// The answer to a request whose credentials are not the account's, if so.
fn unauthenticated(shared: &Shared, account: &str, headers: &HeaderMap) -> Option<Response> {
    let expected = STANDARD.encode(format!("{}:{}", shared.account.sid, shared.account.auth_token));
    let given =
        headers.get("authorization").and_then(|value| value.to_str().ok()).and_then(|v| v.strip_prefix("Basic "));
    if given != Some(expected.as_str()) {
        return Some(error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"));
    }
    if account != shared.account.sid {
        return Some(error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found"));
    }
    None
}

/// The message a documented error code is answered with, for the destination `to`.
fn refusal(code: u32, to: &str) -> Response {
    let message = match code {
        21211 => format!("Invalid 'To' Phone Number: {to}"),
        21408 => {
            format!("Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}")
        }
        21610 => "Attempt to send to unsubscribed recipient".to_string(),
        21614 => format!("'To' number {to} is not a valid mobile number"),
        other => format!("Error {other}"),
    };
    error(StatusCode::BAD_REQUEST, code, &message)
}

fn is_e164(number: &str) -> bool {
    notify::domain::contact::PhoneNumber::from_e164(number).is_ok()
}

fn now_rfc2822() -> String {
    OffsetDateTime::now_utc().format(&Rfc2822).expect("now formats as RFC 2822")
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = unauthenticated(&shared, &account, &headers) {
        return refused;
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|value| !value.is_empty());
    let Some(to) = field("To") else {
        return error(StatusCode::BAD_REQUEST, 21604, "A 'To' phone number is required.");
    };
    if !is_e164(to) {
        return refusal(21211, to);
    }
    let (from, service) = (field("From"), field("MessagingServiceSid"));
    if from.is_none() && service.is_none() {
        return error(StatusCode::BAD_REQUEST, 21603, "A 'From' phone number is required.");
    }
    let Some(text) = field("Body") else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if text.chars().count() > MAX_BODY_CHARS {
        return error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let fault = {
        let mut faults = shared.faults.lock().expect("faults lock");
        let refused =
            faults.refused.iter().filter(|(prefix, _)| to.starts_with(prefix.as_str())).max_by_key(|(p, _)| p.len());
        if let Some((_, code)) = refused {
            return refusal(*code, to);
        }
        faults.creates += 1;
        let creates = faults.creates;
        let every = faults.every.filter(|(n, _)| *n > 0 && creates % n == 0).map(|(_, fault)| fault);
        faults.next.pop_front().or(every)
    };
    match fault {
        Some(Fault::ServerError) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 20500, "An internal server error has occurred");
        }
        Some(Fault::Unavailable) => return error(StatusCode::SERVICE_UNAVAILABLE, 20503, "Service is unavailable"),
        Some(Fault::TooManyRequests) => return error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
        Some(Fault::TimeoutAfterRequest) | None => {}
    }
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let now = now_rfc2822();
    let message = json!({
        "account_sid": shared.account.sid,
        "api_version": API_VERSION,
        "body": text,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": if service.is_some() { "accepted" } else { "queued" },
        "subresource_uris": {"media": format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json")},
        "to": to,
        "uri": message_uri(&account, &sid),
    });
    shared.messages.lock().expect("messages lock").push(message.clone());
    let undelivered = shared.unreachable.lock().expect("unreachable lock").iter().any(|number| number == to);
    let statuses: &[&str] = if undelivered { &["sent", "undelivered"] } else { &["sent", "delivered"] };
    tokio::spawn(report(shared.clone(), sid, field("StatusCallback").map(str::to_string), statuses));
    if fault == Some(Fault::TimeoutAfterRequest) {
        tokio::time::sleep(shared.hang).await;
    }
    respond(StatusCode::CREATED, &message)
}

/// Moves message `sid` through `statuses`, posting each to its status callback URL, signed.
async fn report(shared: Arc<Shared>, sid: String, callback: Option<String>, statuses: &'static [&'static str]) {
    for status in statuses {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let error_code = (*status == "undelivered").then_some(UNREACHABLE_HANDSET);
        let message = {
            let mut messages = shared.messages.lock().expect("messages lock");
            let Some(message) = messages.iter_mut().find(|message| message["sid"] == sid.as_str()) else { return };
            message["status"] = json!(status);
            message["date_updated"] = json!(now_rfc2822());
            if *status == "sent" {
                message["date_sent"] = message["date_updated"].clone();
            }
            if let Some(code) = error_code {
                message["error_code"] = json!(code);
                message["error_message"] = json!("Unreachable destination handset");
            }
            message.clone()
        };
        let Some(url) = &callback else { continue };
        let text = |name: &str| message[name].as_str().unwrap_or_default().to_string();
        let mut params = vec![
            ("AccountSid", shared.account.sid.clone()),
            ("ApiVersion", API_VERSION.to_string()),
            ("From", text("from")),
            ("MessageSid", sid.clone()),
            ("MessageStatus", status.to_string()),
            ("SmsSid", sid.clone()),
            ("SmsStatus", status.to_string()),
            ("To", text("to")),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode", code.to_string()));
        }
        let signed =
            signature(&shared.account.auth_token, url, params.iter().map(|(name, value)| (*name, value.as_str())));
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
        let answer = shared
            .http
            .post(url)
            .header(SIGNATURE_HEADER, signed)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let answered = answer.map_or(0, |answer| answer.status().as_u16());
        if !(200..300).contains(&answered) {
            tracing::warn!(url = %url, sid = %sid, status, answered, "the Twilio mock's status callback was not accepted");
        }
        shared.callbacks.lock().expect("callbacks lock").push(Callback {
            message_sid: sid.clone(),
            status: status.to_string(),
            answered,
        });
    }
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthenticated(&shared, &account, &headers) {
        return refused;
    }
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let number = |name: &str| query.get(name).and_then(|value| value.parse::<usize>().ok());
    let page_size = number("PageSize").unwrap_or(50).clamp(1, 1000);
    let page = number("Page").unwrap_or(0);
    let matching: Vec<Value> = shared
        .messages
        .lock()
        .expect("messages lock")
        .iter()
        .rev()
        .filter(|message| {
            ["To", "From"]
                .iter()
                .all(|name| query.get(*name).is_none_or(|v| message[name.to_lowercase()] == v.as_str()))
        })
        .cloned()
        .collect();
    let start = page * page_size;
    let messages: Vec<Value> = matching.iter().skip(start).take(page_size).cloned().collect();
    let base = format!("/{API_VERSION}/Accounts/{account}/Messages.json");
    let page_uri = |page: usize| format!("{base}?PageSize={page_size}&Page={page}");
    let body = json!({
        "end": start + messages.len().saturating_sub(1),
        "first_page_uri": page_uri(0),
        "messages": messages,
        "next_page_uri": (start + page_size < matching.len()).then(|| page_uri(page + 1)),
        "page": page,
        "page_size": page_size,
        "previous_page_uri": (page > 0).then(|| page_uri(page - 1)),
        "start": start,
        "uri": page_uri(page),
    });
    respond(StatusCode::OK, &body)
}

async fn fetch(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthenticated(&shared, &account, &headers) {
        return refused;
    }
    let sid = file.strip_suffix(".json").unwrap_or(&file);
    let found = shared.messages.lock().expect("messages lock").iter().find(|message| message["sid"] == sid).cloned();
    match found {
        Some(message) => respond(StatusCode::OK, &message),
        None => error(
            StatusCode::NOT_FOUND,
            20404,
            &format!("The requested resource {} was not found", message_uri(&account, sid)),
        ),
    }
}

fn message_uri(account: &str, sid: &str) -> String {
    format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}.json")
}
