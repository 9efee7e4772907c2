//! Local throughput: SMS notifications per second through the whole local stack (intake, SMS
//! queue, dispatcher, schedules) against the emulator, beside the emulator's own rate for the
//! same AWS requests, measured in the same run. Locally the emulator is the bottleneck, so the
//! ratio (target ≥ 0.8) shows what the pipeline adds: its waiting, batching and concurrency
//! limits, its CPU, and the recording proxy's hop. Run with `scripts/bench.sh throughput`
//! (`THROUGHPUT_NOTIFICATIONS` sets how many; 1,000 by default).
//!
//! Pipeline: the stack runs behind the proxy (no faults). N users and an SMS template are made
//! first; then the clock runs from the first of the batch requests (100 notifications each,
//! `REQUESTS_IN_FLIGHT` at a time) until every SMS is sent and the SMS queue is empty (the
//! poller deletes a batch only after the dispatcher wrote its outcomes). Every AWS request the
//! proxy forwards meanwhile is recorded, except the poller's empty long-polls (waiting, not work).
//!
//! Raw: the stack is stopped and the recorded requests are sent again straight to the emulator,
//! in recorded order, `REPLAY_CONCURRENCY` at a time, changed only where the recording would
//! make the emulator wait or skip work: `ReceiveMessage` waits 0 s instead of long-polling, and
//! `DeleteMessageBatch` names messages the replay itself received (the recorded receipts are
//! spent). Before it (untimed), the notification and rate-limit records are deleted, so the
//! conditional writes (the intake's log put, the dispatcher's claim, rate-limit record and
//! outcome) meet the same state and
//! write again; any that still fail (answered 400, counted below) cost the emulator nearly the
//! same work: it reads the item and evaluates the condition either way and skips only the
//! write, which if anything flatters the raw rate.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use local_stack::provider_account::Quotas;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::fault_proxy::{FaultProxy, Recorded};
use support::replay::{IDLE_POLL, REPLAY_CONCURRENCY, forget, replay};
use support::{endpoint, eventually, outcomes_final, queue_is_empty, recorded_sms};

const DEFAULT_NOTIFICATIONS: usize = 1000;
const PER_REQUEST: usize = 100;
/// Batch requests in flight: one at a time already keeps the emulator busy (each is about 200
/// emulator requests, 100 at once), and more only make each take longer.
const REQUESTS_IN_FLIGHT: usize = 1;
const TARGET: f64 = 0.8;

struct Pipeline {
    elapsed: Duration,
    slowest_request: Duration,
    ids: Vec<String>,
    users: Vec<String>,
    recorded: Vec<Recorded>,
    idle_polls: usize,
}

async fn pipeline(api: &Api, proxy: &FaultProxy, notifications: usize) -> Pipeline {
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let users = api.users_with_phone(notifications).await;
    let text = unique("text");
    let requests: Vec<Value> = users
        .chunks(PER_REQUEST)
        .map(|chunk| {
            let items: Vec<Value> = chunk
                .iter()
                .map(|user| json!({"user_id": user, "template": template, "params": {"text": text}, "idempotency_key": unique("k")}))
                .collect();
            json!({"notifications": items})
        })
        .collect();
    // The checks read the emulator directly, so the proxy neither counts nor records them.
    let direct = support::sdk().await;
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let queue = api.stack.deployed.queue("SmsQueue").unwrap().0.to_string();
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let log = notify::store::notifications::NotificationStore::new(aws_sdk_dynamodb::Client::new(&direct), table);

    proxy.take_operations();
    proxy.start_recording();
    let started = Instant::now();
    let replies: Vec<(Vec<String>, Duration)> = futures::stream::iter(requests)
        .map(|body| async {
            let sent = Instant::now();
            let reply = api.call(Method::POST, "/v1/notifications/batch", Some(body)).await;
            let ids = reply.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|result| {
                    assert_eq!(result["status"], 202, "a notification was not accepted: {result}");
                    result["body"]["id"].as_str().unwrap().to_string()
                })
                .collect();
            (ids, sent.elapsed())
        })
        .buffer_unordered(REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    // Every message was enqueued before its request was answered; the proxy's live count of
    // sends costs nothing to read, so the queue is only asked once all of them went out.
    let deadline = Duration::from_secs(60) + Duration::from_millis(500) * notifications as u32;
    eventually(deadline, "every SMS sent and the SMS queue empty", || async {
        let sent = proxy.operations.lock().unwrap().get("sns:Publish").copied().unwrap_or(0);
        (sent as usize >= notifications && queue_is_empty(&sqs, &queue).await).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let slowest_request = replies.iter().map(|(_, took)| *took).max().unwrap_or_default();
    let ids: Vec<String> = replies.into_iter().flat_map(|(ids, _)| ids).collect();
    let (idle, recorded): (Vec<Recorded>, Vec<Recorded>) =
        proxy.take_recording().into_iter().partition(|request| request.operation == IDLE_POLL);

    // The figure only counts if the run did what it claims: each notification sent once, with
    // its outcome written.
    let sent = recorded_sms().await.iter().filter(|sms| sms["message"] == text).count();
    assert_eq!(sent, notifications, "SMS recorded by the emulator");
    assert!(outcomes_final(&log, &ids).await, "every delivery has its outcome");
    Pipeline { elapsed, slowest_request, ids, users, recorded, idle_polls: idle.len() }
}

#[tokio::main]
async fn main() {
    let notifications = std::env::var("THROUGHPUT_NOTIFICATIONS")
        .map_or(DEFAULT_NOTIFICATIONS, |count| count.parse().expect("THROUGHPUT_NOTIFICATIONS is a count"));
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    // What the stack itself can do: an account and a send rate far above what the emulator takes.
    let quotas = Quotas { sms: 100_000.0, ..Quotas::default() };
    let parameters = BTreeMap::from([("SmsSendRate".to_string(), "100000".to_string())]);
    let template = support::project_template_with_patient_intake();
    let api = Api::start_in_account(&template, &proxy.url, parameters, quotas).await;
    let run = pipeline(&api, &proxy, notifications).await;
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let rate_limits = api.stack.deployed.table("RateLimitsTable").unwrap().to_string();
    // Stopped, so the replay has the emulator to itself (its pollers would take replayed sends).
    api.stack.stop().await;
    forget(&table, "id", &run.ids).await;
    let limited: Vec<String> = run
        .users
        .iter()
        .map(|user| notify::store::rate_limits::record_key(user, notify::domain::channel::Channel::Sms))
        .collect();
    forget(&rate_limits, "key", &limited).await;
    // A receive the stopped pollers had in flight runs on at the emulator, unseen from here, and
    // would hide replayed messages: it ends within the long-poll.
    tokio::time::sleep(local_stack::poller::LONG_POLL * 2).await;
    let mut by_operation = BTreeMap::<String, u64>::new();
    for request in &run.recorded {
        *by_operation.entry(request.operation.clone()).or_default() += 1;
    }
    let requests = run.recorded.len();
    let raw = replay(run.recorded).await;

    let rate = |elapsed: Duration| notifications as f64 / elapsed.as_secs_f64();
    let (pipeline_rate, raw_rate) = (rate(run.elapsed), rate(raw.elapsed));
    let ratio = pipeline_rate / raw_rate;
    println!("# Local throughput ({})", notify::time::now_rfc3339());
    println!(
        "\n{notifications} SMS notifications to as many users, {} batch requests of up to {PER_REQUEST}, {REQUESTS_IN_FLIGHT} in flight (the slowest took {:.1} s)",
        notifications.div_ceil(PER_REQUEST),
        run.slowest_request.as_secs_f64()
    );
    println!("\n| phase | AWS requests | seconds | notifications/s |\n|---|---:|---:|---:|");
    println!(
        "| pipeline (whole local stack, through the proxy) | {requests} (+{} empty long-polls left out) | {:.2} | {pipeline_rate:.1} |",
        run.idle_polls,
        run.elapsed.as_secs_f64()
    );
    println!(
        "| raw emulator (the same requests, {REPLAY_CONCURRENCY} in flight) | {requests} | {:.2} | {raw_rate:.1} |",
        raw.elapsed.as_secs_f64()
    );
    let verdict = if ratio >= TARGET { "holds" } else { "is MISSED" };
    println!("\n**ratio pipeline/raw: {ratio:.2}: the target (≥ {TARGET}) {verdict}**");
    println!("\n| replayed operation | requests | per notification |\n|---|---:|---:|");
    for (operation, count) in &by_operation {
        println!("| {operation} | {count} | {:.3} |", *count as f64 / notifications as f64);
    }
    let statuses: Vec<String> = raw.by_status.iter().map(|(status, count)| format!("{status}: {count}")).collect();
    println!(
        "\nreplay answers by status: {}; delete entries left with a spent receipt: {}; stream reads not replayed: {}",
        statuses.join(", "),
        raw.stale_receipts,
        raw.stream_reads
    );
}
