//! A minimal Lambda Runtime API, the interface a `provided.al2023` bootstrap talks to: enough
//! to start a function binary as Lambda does, hand it invocations one at a time and time them.
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>

use std::collections::HashMap;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use local_stack::loopback::LoopbackServer;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "/2018-06-01/runtime";

/// One finished invocation: how long the function took from receiving the event to posting
/// its answer, and the answer.
pub struct Invocation {
    pub duration: Duration,
    pub output: Value,
}

struct Completion {
    request_id: String,
    at: Instant,
    outcome: Result<Value, String>,
}

struct Shared {
    /// Resolved by the function's first `GET next` (its init is over) or by an init error.
    first_poll: Mutex<Option<oneshot::Sender<Result<Instant, String>>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>,
    handed_out: Mutex<HashMap<String, Instant>>,
    completions: mpsc::UnboundedSender<Completion>,
    function_arn: String,
}

/// The API for one function process; drop it when the process is gone.
pub struct RuntimeApi {
    /// `AWS_LAMBDA_RUNTIME_API` for the process: host and port, no scheme.
    pub address: String,
    shared: Arc<Shared>,
    first_poll: Option<oneshot::Receiver<Result<Instant, String>>>,
    events: mpsc::Sender<(String, Value)>,
    completions: mpsc::UnboundedReceiver<Completion>,
    _server: LoopbackServer,
}

impl RuntimeApi {
    pub async fn start(function_arn: &str) -> Self {
        let (first_poll_sender, first_poll) = oneshot::channel();
        let (events, event_receiver) = mpsc::channel(1);
        let (completion_sender, completions) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            first_poll: Mutex::new(Some(first_poll_sender)),
            events: tokio::sync::Mutex::new(event_receiver),
            handed_out: Mutex::new(HashMap::new()),
            completions: completion_sender,
            function_arn: function_arn.to_string(),
        });
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(&format!("{PREFIX}/invocation/{{id}}/response"), post(response))
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .with_state(shared.clone());
        let server = LoopbackServer::start(app, "the runtime API").await.unwrap();
        Self {
            address: server.address().to_string(),
            shared,
            first_poll: Some(first_poll),
            events,
            completions,
            _server: server,
        }
    }

    /// When the function first asked for an invocation: the end of its init.
    pub async fn first_poll(&mut self, timeout: Duration) -> Result<Instant, String> {
        let receiver = self.first_poll.take().expect("first_poll is awaited once");
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the runtime API stopped".into()),
            Err(_) => Err(format!("the function did not ask for an invocation within {timeout:?}")),
        }
    }

    /// Hands `payload` to the function and waits for its answer; an error answer is an `Err`.
    pub async fn invoke(&mut self, payload: Value, timeout: Duration) -> Result<Invocation, String> {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.events.send((request_id.clone(), payload)).await.map_err(|_| "the runtime API stopped")?;
        let completion = tokio::time::timeout(timeout, self.completions.recv())
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .ok_or("the runtime API stopped")?;
        if completion.request_id != request_id {
            return Err(format!("answer for {} while {request_id} was running", completion.request_id));
        }
        let handed_out =
            self.shared.handed_out.lock().unwrap().remove(&request_id).expect("handed out before answered");
        let output = completion.outcome?;
        Ok(Invocation { duration: completion.at - handed_out, output })
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Result<(HeaderMap, String), StatusCode> {
    if let Some(sender) = shared.first_poll.lock().unwrap().take() {
        let _ = sender.send(Ok(Instant::now()));
    }
    let Some((request_id, payload)) = shared.events.lock().await.recv().await else {
        return Err(StatusCode::GONE);
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    let mut headers = HeaderMap::new();
    let value = |text: &str| HeaderValue::from_str(text).unwrap();
    headers.insert("lambda-runtime-aws-request-id", value(&request_id));
    headers.insert("lambda-runtime-deadline-ms", value(&deadline.as_millis().to_string()));
    headers.insert("lambda-runtime-invoked-function-arn", value(&shared.function_arn));
    headers.insert("content-type", value("application/json"));
    shared.handed_out.lock().unwrap().insert(request_id, Instant::now());
    Ok((headers, payload.to_string()))
}

fn complete(shared: &Shared, request_id: String, outcome: Result<Value, String>) -> StatusCode {
    let _ = shared.completions.send(Completion { request_id, at: Instant::now(), outcome });
    StatusCode::ACCEPTED
}

async fn response(State(shared): State<Arc<Shared>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    let outcome = serde_json::from_slice(&body).map_err(|error| format!("the answer is not JSON: {error}"));
    complete(&shared, request_id, outcome)
}

async fn error(State(shared): State<Arc<Shared>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    complete(&shared, request_id, Err(String::from_utf8_lossy(&body).into_owned()))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    if let Some(sender) = shared.first_poll.lock().unwrap().take() {
        let _ = sender.send(Err(format!("init error: {}", String::from_utf8_lossy(&body))));
    }
    StatusCode::ACCEPTED
}
