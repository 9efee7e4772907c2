//! Shared by the integration tests: the emulator endpoint started by scripts/test.sh, unique
//! resource prefixes (tests share one emulator and run in parallel), and polling with a
//! deadline instead of sleeping.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod api;
pub mod events;
pub mod fault_proxy;
pub mod reliability;
pub mod replay;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use aws_config::SdkConfig;
use local_stack::demo::DemoApp;
use local_stack::functions::Registry;
use local_stack::iam::{Traffic, TrafficKey};
use local_stack::template::Template;
use local_stack::{Clients, LocalStack, StackError, StackOptions, demo};
use serde_json::Value;

/// The emulator's URL; scripts/test.sh starts one and exports it.
pub fn endpoint() -> String {
    std::env::var("NOTIFY_TEST_ENDPOINT")
        .expect("NOTIFY_TEST_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the emulator")
}

pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    // The functions' JSON logs, when asked for (RUST_LOG=info scripts/test.sh -- --nocapture).
    if std::env::var_os("RUST_LOG").is_some() {
        notify::telemetry::init();
    }
    local_stack::emulator_config(endpoint).await
}

pub async fn sdk() -> SdkConfig {
    sdk_for(&endpoint()).await
}

/// A stack name no other test uses.
pub fn unique_stack_name() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub fn project_template_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))
        .expect("template.yaml is readable")
}

/// The project's template with the intake's timeout at API Gateway's own limit (30 s bounds
/// it), for benchmarks that send batches of 100: its 10 s are meant for AWS latencies, and the
/// emulator, answering the dispatchers' requests beside them, took longer than that for one.
pub fn project_template_with_patient_intake() -> String {
    let template = project_template_text();
    let patient = template.replacen("Timeout: 10\n", "Timeout: 29\n", 1);
    assert_ne!(patient, template, "the intake's timeout is in template.yaml");
    patient
}

pub fn project_template() -> Template {
    Template::parse(&project_template_text()).expect("template.yaml parses")
}

pub fn options(stack_name: &str, parameters: BTreeMap<String, String>, registry: Registry) -> StackOptions {
    StackOptions {
        stack_name: stack_name.to_string(),
        parameters,
        api_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        registry,
        quotas: Default::default(),
        twilio: None,
    }
}

/// Starts a stack from `template` with the project's functions and local parameters.
pub async fn start_project_stack(template: &Template) -> Result<(LocalStack, Clients), StackError> {
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    local_stack::start_project(
        &sdk().await,
        template,
        &unique_stack_name(),
        &BTreeMap::new(),
        address,
        Default::default(),
    )
    .await
}

/// The project's stack with the demo data in it.
pub async fn demo_stack() -> (LocalStack, Clients, DemoApp) {
    let (stack, clients) = start_project_stack(&project_template()).await.expect("the project stack starts");
    let app = demo::seed(&clients, &stack.deployed).await.expect("demo data is seeded");
    (stack, clients, app)
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The emulator's recorded state (`GET /moto-api/data.json`). The emulator builds it while
/// other tests change its models, which now and then fails the dump; it is asked again.
pub async fn emulator_state() -> Value {
    let url = format!("{}/moto-api/data.json", endpoint());
    let mut last_error = String::new();
    for _ in 0..10 {
        match reqwest::get(&url).await {
            Ok(response) if response.status().is_success() => match response.json().await {
                Ok(state) => return state,
                Err(error) => last_error = error.to_string(),
            },
            Ok(response) => last_error = format!("status {}", response.status()),
            Err(error) => last_error = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the emulator's data.json could not be read: {last_error}");
}

/// The SMS messages the emulator's SNS recorded.
pub async fn recorded_sms() -> Vec<Value> {
    emulator_state().await["sns"]["SMS"].as_array().cloned().unwrap_or_default()
}

/// Whether a queue holds no message, visible or in flight.
pub async fn queue_is_empty(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> bool {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    attributes.values().all(|count| count == "0")
}

/// Whether every delivery of each notification in `ids` has its final outcome in `log`.
pub async fn outcomes_final(log: &notify::store::notifications::NotificationStore, ids: &[String]) -> bool {
    for id in ids {
        match log.get(&id.as_str().into()).await.expect("the notification log is readable") {
            Some(record) if record.finished() => {}
            _ => return false,
        }
    }
    true
}

/// Prints what the stack asked of the emulator between two reads of the authorizer's traffic
/// (`local_stack::iam`): each caller's operations (a function, or `operator`: the stack's
/// pollers and the bench's own reads), busiest first, per unit (`units` of them, and what one
/// and several are called: sends, deliveries), with their mean answer, the emulator's queueing
/// included.
pub fn print_traffic(
    heading: &str,
    before: &BTreeMap<TrafficKey, Traffic>,
    after: &BTreeMap<TrafficKey, Traffic>,
    units: usize,
    (unit, plural): (&str, &str),
) {
    let mut passed: Vec<(&TrafficKey, u64, f64)> = after
        .iter()
        .map(|(key, now)| {
            let then = before.get(key).copied().unwrap_or_default();
            (key, now.requests - then.requests, now.seconds - then.seconds)
        })
        .filter(|(_, requests, _)| *requests > 0)
        .collect();
    passed.sort_by_key(|(_, requests, _)| std::cmp::Reverse(*requests));
    let total: u64 = passed.iter().map(|(_, requests, _)| requests).sum();
    println!("\n{heading}: {total} for {units} {plural} ({:.1} per {unit})\n", total as f64 / units as f64);
    println!("| caller | operation | requests | per {unit} | mean answer (ms) |\n|---|---|---:|---:|---:|");
    for ((caller, operation), requests, seconds) in passed.iter().take(16) {
        println!(
            "| {caller} | {operation} | {requests} | {:.2} | {:.0} |",
            *requests as f64 / units as f64,
            1000.0 * seconds / *requests as f64
        );
    }
}
