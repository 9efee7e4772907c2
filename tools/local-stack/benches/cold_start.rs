//! Cold start: each function's release binary started as Lambda starts it, against a minimal
//! Runtime API (`tests/support/runtime_api.rs`) with the emulator as its AWS endpoint. Measures exec →
//! first `GET /runtime/invocation/next` (init) and the first invocation against warm ones, and
//! compares init with a hello-world `lambda_runtime` binary built in the same run. Run with
//! `scripts/bench.sh cold_start`, which builds the release binaries first.
//!
//! The events are real: notifications sent through the intake binary fill the channel queues
//! the dispatcher binaries then read; the recovery function gets its scheduled event.

#[path = "../tests/support/mod.rs"]
mod support;
// Only this benchmark starts function binaries.
#[path = "../tests/support/runtime_api.rs"]
mod runtime_api;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use local_stack::provision::Deployed;
use local_stack::resolve::Physical;
use runtime_api::RuntimeApi;
use serde_json::{Map, Value, json};
use support::api::{Api, unique};

/// Processes started per function (each one cold start).
const LAUNCHES: usize = 10;
/// Invocations after the first, per process.
const WARM_INVOCATIONS: usize = 3;
const TARGET_INIT_RATIO: f64 = 1.5;
const TARGET_FIRST_RATIO: f64 = 2.0;
const PATIENCE: Duration = Duration::from_secs(30);

fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let path = target.join("release").join(name);
    assert!(path.exists(), "{} is missing: run scripts/bench.sh cold_start, which builds it", path.display());
    path
}

/// What one function's launches measured.
struct Measured {
    init: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// What a function is invoked with.
enum Events {
    /// Any payload (the baseline echoes it).
    Echo,
    /// `POST /v1/notifications` through API Gateway.
    Send,
    /// One message from this channel queue (the intake's sends put them there).
    Queue(&'static str),
    /// This schedule's EventBridge event.
    Scheduled(local_stack::spec::Schedule),
}

/// A function as the template deploys it: its binary, name, ARN, resolved environment and
/// what it is invoked with.
struct Subject {
    label: String,
    binary: PathBuf,
    arn: String,
    environment: HashMap<String, String>,
    events: Events,
    log_path: PathBuf,
    measured: Measured,
}

impl Subject {
    fn new(label: &str, binary: PathBuf, arn: String, environment: HashMap<String, String>, events: Events) -> Self {
        Self {
            label: label.to_string(),
            binary,
            arn,
            environment,
            events,
            log_path: std::env::temp_dir().join(format!("cold-start-{}.log", unique(label))),
            measured: Measured { init: vec![], first: vec![], warm: vec![] },
        }
    }

    fn hello_world() -> Self {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:hello-world".to_string();
        Self::new("hello-world", release_binary("hello-world"), arn, HashMap::new(), Events::Echo)
    }

    fn function(deployed: &Deployed, logical_id: &str, events: Events) -> Self {
        let spec = deployed.spec.functions.iter().find(|function| function.logical_id == logical_id).unwrap();
        let Some(Physical::Function { arn, .. }) = deployed.resources.get(logical_id) else {
            panic!("{logical_id} is deployed")
        };
        let environment = deployed.function_environments[logical_id].clone();
        Self::new(&spec.binary, release_binary(&spec.binary), arn.clone(), environment, events)
    }

    /// Starts the binary with Lambda's environment (and nothing else of ours) and the emulator
    /// as its AWS endpoint; logs go to a file so a failure can be shown.
    fn spawn(&self, runtime_api: &RuntimeApi, endpoint: &str, log: std::fs::File) -> tokio::process::Child {
        let name = self.arn.rsplit(':').next().unwrap();
        tokio::process::Command::new(&self.binary)
            .env_clear()
            .envs(&self.environment)
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_ENDPOINT_URL", endpoint)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary.display()))
    }

    /// One cold start followed by `WARM_INVOCATIONS` more invocations; every answer is checked.
    async fn launch(&mut self, setting: &Setting) {
        let mut runtime_api = RuntimeApi::start(&self.arn).await;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let started = Instant::now();
        let mut child = self.spawn(&runtime_api, &setting.endpoint, log);
        let ready = runtime_api.first_poll(PATIENCE).await.unwrap_or_else(|error| self.fail(error));
        self.measured.init.push(ready - started);
        for invocation in 0..=WARM_INVOCATIONS {
            let event = setting.event(&self.events).await;
            let done = runtime_api.invoke(event, PATIENCE).await.unwrap_or_else(|error| self.fail(error));
            let accepted = match self.events {
                Events::Send => done.output["statusCode"] == 202,
                Events::Queue(_) => done.output["batchItemFailures"].as_array().is_some_and(Vec::is_empty),
                Events::Echo | Events::Scheduled(_) => true,
            };
            if !accepted {
                self.fail(format!("unexpected answer {}", done.output));
            }
            if invocation == 0 { &mut self.measured.first } else { &mut self.measured.warm }.push(done.duration);
        }
        child.kill().await.unwrap();
    }

    /// Panics with what the function logged last.
    fn fail(&self, message: String) -> ! {
        let output = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let last: Vec<&str> = output.lines().rev().take(20).collect();
        panic!("{}: {message}\n{}", self.label, last.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

/// The deployed stack the functions run against, and what they need to be invoked.
struct Setting {
    endpoint: String,
    deployed: Deployed,
    sqs: aws_sdk_sqs::Client,
    credentials: (String, String),
    user: String,
    template: String,
}

impl Setting {
    async fn event(&self, events: &Events) -> Value {
        match events {
            Events::Echo => json!({"hello": "world"}),
            Events::Send => {
                let body = json!({"user_id": self.user, "template": self.template, "params": {"order": unique("o")}});
                send_event(&self.deployed, &self.credentials, &body)
            }
            Events::Queue(queue) => next_message_event(&self.sqs, &self.deployed, queue).await,
            Events::Scheduled(schedule) => local_stack::scheduler::scheduled_event(
                schedule,
                &self.deployed.region,
                &self.deployed.account_id,
                "sweep",
            ),
        }
    }
}

/// An API Gateway event for `POST /v1/notifications`, as the HTTP API sends it.
fn send_event(deployed: &Deployed, credentials: &(String, String), body: &Value) -> Value {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credentials.0, credentials.1));
    let (parts, ()) = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/notifications")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {basic}"))
        .header("idempotency-key", unique("k"))
        .body(())
        .unwrap()
        .into_parts();
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let body = body.to_string();
    local_stack::api::event(&deployed.account_id, "POST /v1/notifications", &parts, Map::new(), body.as_bytes(), peer)
}

/// An SQS event of the next message on `queue` (the intake binary put it there).
async fn next_message_event(sqs: &aws_sdk_sqs::Client, deployed: &Deployed, queue: &str) -> Value {
    let (queue_url, queue_arn) = deployed.queue(queue).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .visibility_timeout(900)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        if let Some(message) = received.messages.unwrap_or_default().into_iter().next() {
            let source = local_stack::poller::Source {
                queue_url: queue_url.into(),
                queue_arn: queue_arn.into(),
                region: deployed.region.clone(),
            };
            return local_stack::poller::event(&[message], &source);
        }
        assert!(Instant::now() < deadline, "{queue} has no message for the dispatcher");
    }
}

#[tokio::main]
async fn main() {
    let api = Api::start().await;
    let (user, template) = api.user_and_template_on_every_channel().await;
    // From here on the binaries do the work: the in-process functions must not drain the queues.
    let Api { stack, clients, app, .. } = api;
    let deployed = stack.deployed.clone();
    stack.stop().await;
    // A receive the stopped pollers had in flight would still take the intake's messages.
    tokio::time::sleep(local_stack::poller::LONG_POLL * 2).await;

    let retry = deployed.spec.functions.iter().find(|function| function.logical_id == "RetryFunction").unwrap();
    let sweep = retry.schedules.first().expect("the recovery function runs on a schedule").clone();
    let mut subjects = vec![
        Subject::hello_world(),
        Subject::function(&deployed, "IntakeFunction", Events::Send),
        Subject::function(&deployed, "DispatchSmsFunction", Events::Queue("SmsQueue")),
        Subject::function(&deployed, "DispatchEmailFunction", Events::Queue("EmailQueue")),
        Subject::function(&deployed, "DispatchPushFunction", Events::Queue("PushQueue")),
        Subject::function(&deployed, "RetryFunction", Events::Scheduled(sweep)),
    ];
    let setting = Setting {
        endpoint: support::endpoint(),
        deployed,
        sqs: clients.sqs,
        credentials: (app.app_key, app.app_secret),
        user,
        template,
    };
    // Round by round, so the machine's noise falls on every function alike; in each round the
    // intake's sends come before the dispatchers read them.
    for _ in 0..LAUNCHES {
        for subject in &mut subjects {
            subject.launch(&setting).await;
        }
    }
    for subject in &subjects {
        let _ = std::fs::remove_file(&subject.log_path);
    }
    report(&subjects);
}

fn report(subjects: &[Subject]) {
    let baseline = median(&subjects[0].measured.init);
    println!(
        "cold start: {LAUNCHES} launches per function, {WARM_INVOCATIONS} warm invocations each; medians\n\
         {:<16} {:>10} {:>12} {:>12} {:>12} {:>13}",
        "function", "init ms", "init ÷ hello", "first ms", "warm ms", "first ÷ warm"
    );
    let mut held = true;
    for (index, subject) in subjects.iter().enumerate() {
        let measured = &subject.measured;
        let (init, first, warm) = (median(&measured.init), median(&measured.first), median(&measured.warm));
        let init_ratio = init.as_secs_f64() / baseline.as_secs_f64();
        let first_ratio = first.as_secs_f64() / warm.as_secs_f64();
        held &= index == 0 || (init_ratio <= TARGET_INIT_RATIO && first_ratio <= TARGET_FIRST_RATIO);
        println!(
            "{:<16} {:>10.2} {:>12.2} {:>12.2} {:>12.2} {:>13.2}",
            subject.label,
            ms(init),
            init_ratio,
            ms(first),
            ms(warm),
            first_ratio
        );
    }
    println!(
        "targets (init ≤ {TARGET_INIT_RATIO}× hello-world, first ≤ {TARGET_FIRST_RATIO}× warm): {}",
        if held { "held" } else { "MISSED" }
    );
}
