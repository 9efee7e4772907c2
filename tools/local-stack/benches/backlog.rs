//! A backlog at a sustained provider quota (issue 19): the local account enforces 5 sends per
//! second per channel (`local_stack::provider_account`, with the providers' own throttling
//! answers), and the stack sends at that rate (`SmsSendRate` 5; email at the SES `MaxSendRate`
//! that `GetAccount` reports). Run with `scripts/bench.sh backlog`; `BACKLOG_NOTIFICATIONS`
//! sets the backlog (1,500 by default).
//!
//! 1. Idle: 20 transactional notifications (an SMS and an email each), one at a time: the
//!    accept → provider-call latency of a transactional send on an idle stack.
//! 2. Backlog: N bulk notifications (an SMS and an email each) accepted as fast as the API takes
//!    them (100 per request), then 20 transactional ones spread over the time it drains.
//! 3. Figures: each channel's drain rate ÷ its quota (every send of the channel from the first
//!    to the last bulk send, over that time); messages in the DLQs; the provider's throttling
//!    answers ÷ its accepted sends; the transactional latency p50 and p99 during the backlog ÷
//!    idle; and exactly-once (each SMS text and each email recipient once in the emulator).
//! 4. What the drain asked of the emulator: the requests each function made once the API had
//!    taken the backlog, per operation, per send, and how long the emulator took to answer them
//!    (counted by the stack's IAM authorizer, which every request of a function goes through).
//!
//! The latency is the delivery's `accepted` → `sent` on its timeline (`sent` is written as the
//! provider answers, a few milliseconds after the call). Beside it, the emulator's own latency
//! (a GetItem every half second) in each phase: every step of a send waits for the emulator,
//! which the drain keeps busy on this machine, as DynamoDB and SQS would not be.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use local_stack::provider_account::Quotas;
use notify::domain::channel::Channel;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::{emulator_state, endpoint, eventually, project_template_with_patient_intake};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const QUOTA: f64 = 5.0;
const DEFAULT_NOTIFICATIONS: usize = 1500;
const TRANSACTIONAL: usize = 20;
const PER_REQUEST: usize = 100;

fn at(event: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(event["at"].as_str().unwrap(), &Rfc3339).unwrap()
}

/// When a notification was accepted and when each of its channels was sent.
fn times(view: &Value) -> (OffsetDateTime, BTreeMap<String, OffsetDateTime>) {
    let events = view["events"].as_array().unwrap();
    let accepted = at(&events[0]);
    let sent = events
        .iter()
        .filter(|event| event["type"] == "sent")
        .map(|event| (event["channel"].as_str().unwrap().to_string(), at(event)))
        .collect();
    (accepted, sent)
}

async fn template(api: &Api, transactional: bool) -> String {
    let name = unique("t");
    let content = json!({"default_locale": "en", "transactional": transactional, "locales": {"en": {
        "sms": {"body": "{{ text }}"},
        "email": {"subject": "Your order", "text": "{{ text }}", "html": "<p>{{ text }}</p>"}}}});
    assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{name}"), Some(content)).await.status, 201);
    name
}

/// Users with a phone and an email address of their own.
async fn users(api: &Api, count: usize) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|_| async {
            let (user, address) = (unique("u"), format!("{}@example.com", unique("a")));
            let contacts = json!({"phone": "+12015550123", "email": address});
            let reply = api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await;
            assert!(reply.status.is_success(), "{}", reply.body);
            user
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// A sent notification: its id and what identifies its sends in the emulator.
struct Sent {
    id: String,
    text: String,
}

async fn send_one(api: &Api, user: &str, template: &str) -> Sent {
    let text = unique("text");
    let body = json!({"user_id": user, "template": template, "params": {"text": text}});
    let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    Sent { id: reply.body["id"].as_str().unwrap().to_string(), text }
}

async fn completed(api: &Api, id: &str) -> Value {
    eventually(Duration::from_secs(900), "a notification to complete", || async {
        let view = api.notification(id).await;
        (view["status"] == "completed").then_some(view)
    })
    .await
}

/// Accept → sent of each delivery of `sent`, in seconds, with its notification and channel.
async fn latencies(api: &Api, sent: &[Sent]) -> Vec<(f64, String, String)> {
    let mut latencies = Vec::new();
    for notification in sent {
        let (accepted, sent) = times(&completed(api, &notification.id).await);
        latencies.extend(
            sent.into_iter().map(|(channel, at)| ((at - accepted).as_seconds_f64(), notification.id.clone(), channel)),
        );
    }
    latencies
}

/// Messages in one of the stack's queues, visible or not.
async fn messages_in(api: &Api, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as Name;
    let attributes = api
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(api.stack.deployed.queue(queue).unwrap().0)
        .attribute_names(Name::ApproximateNumberOfMessages)
        .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attributes.values().filter_map(|count| count.parse::<u64>().ok()).sum()
}

/// Samples the emulator's latency (a GetItem of a key no one writes, every half second) until
/// `stop` is set: the seconds each took.
async fn emulator_latency(api: &Api, stop: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let table = api.stack.deployed.table("RateLimitsTable").unwrap().to_string();
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let started = Instant::now();
        let key = aws_sdk_dynamodb::types::AttributeValue::S("latency-probe".into());
        api.clients.dynamodb.get_item().table_name(&table).key("key", key).send().await.unwrap();
        samples.push(started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples
}

fn percentile(values: &[f64], share: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let notifications = std::env::var("BACKLOG_NOTIFICATIONS")
        .map_or(DEFAULT_NOTIFICATIONS, |count| count.parse().expect("BACKLOG_NOTIFICATIONS is a count"));
    let quotas = Quotas { email: QUOTA, sms: QUOTA, ..Quotas::default() };
    let parameters = BTreeMap::from([("SmsSendRate".to_string(), QUOTA.to_string())]);
    let api = Api::start_in_account(&project_template_with_patient_intake(), &endpoint(), parameters, quotas).await;
    let (bulk, transactional) = (template(&api, false).await, template(&api, true).await);
    let people = users(&api, notifications + 2 * TRANSACTIONAL).await;
    let (bulk_people, transactional_people) = people.split_at(notifications);

    // 1. Idle.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let probing = emulator_latency(&api, &stop);
    let idling = async {
        let mut idle = Vec::new();
        for person in &transactional_people[..TRANSACTIONAL] {
            let sent = send_one(&api, person, &transactional).await;
            completed(&api, &sent.id).await;
            idle.push(sent);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        idle
    };
    let (idle_emulator, idle) = futures::join!(probing, idling);
    let idle_latencies = latencies(&api, &idle).await;

    // 2. The backlog, as fast as the API takes it, then transactional sends spread over its drain.
    let started = Instant::now();
    let mut backlog = Vec::new();
    for chunk in bulk_people.chunks(PER_REQUEST) {
        let items: Vec<(Value, Sent)> = chunk
            .iter()
            .map(|user| {
                let text = unique("text");
                let item = json!({"idempotency_key": unique("k"), "user_id": user, "template": bulk, "params": {"text": text}});
                (item, Sent { id: String::new(), text })
            })
            .collect();
        let body = json!({"notifications": items.iter().map(|(item, _)| item).collect::<Vec<_>>()});
        let reply = api.call(Method::POST, "/v1/notifications/batch", Some(body)).await;
        for (result, (_, mut sent)) in reply.body["results"].as_array().unwrap().iter().zip(items) {
            assert_eq!(result["status"], 202, "{result}");
            sent.id = result["body"]["id"].as_str().unwrap().to_string();
            backlog.push(sent);
        }
    }
    let accepted_in = started.elapsed();
    let accepted_at = OffsetDateTime::now_utc();
    let traffic_accepted = api.traffic();
    let drain = Duration::from_secs_f64(notifications as f64 / QUOTA);
    let spacing = drain / (TRANSACTIONAL as u32 + 1);
    stop.store(false, std::sync::atomic::Ordering::SeqCst);
    let probing = emulator_latency(&api, &stop);
    let sending = async {
        let mut during = Vec::new();
        for person in &transactional_people[TRANSACTIONAL..] {
            tokio::time::sleep(spacing).await;
            during.push(send_one(&api, person, &transactional).await);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        during
    };
    let (during_emulator, during) = futures::join!(probing, sending);
    let during_latencies = latencies(&api, &during).await;
    let mut bulk_sent: BTreeMap<String, Vec<OffsetDateTime>> = BTreeMap::new();
    let views: Vec<Value> =
        futures::stream::iter(&backlog).map(|sent| completed(&api, &sent.id)).buffered(8).collect().await;
    let traffic_drained = api.traffic();
    for view in &views {
        for (channel, at) in times(view).1 {
            bulk_sent.entry(channel).or_default().push(at);
        }
    }
    let mut transactional_sent: BTreeMap<String, Vec<OffsetDateTime>> = BTreeMap::new();
    for sent in &during {
        for (channel, at) in times(&api.notification(&sent.id).await).1 {
            transactional_sent.entry(channel).or_default().push(at);
        }
    }

    // 3. Figures.
    println!("# Backlog at a provider quota of {QUOTA} sends/s per channel ({})\n", notify::time::now_rfc3339());
    println!(
        "{notifications} bulk notifications (an SMS and an email each) accepted in {:.1} s; {TRANSACTIONAL} transactional ones (SMS and email) every {:.0} s during the drain.\n",
        accepted_in.as_secs_f64(),
        spacing.as_secs_f64()
    );
    println!("| figure | sms | email | goal |\n|---|---:|---:|---|");
    let mut rates = Vec::new();
    let mut rates_after = Vec::new();
    let mut throttles = Vec::new();
    for channel in [Channel::Sms, Channel::Email] {
        let times = &bulk_sent[channel.as_str()];
        let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
        let window = (*last - *first).as_seconds_f64();
        let transactional_in_window = transactional_sent
            .get(channel.as_str())
            .map_or(0, |sent| sent.iter().filter(|at| *at >= first && *at <= last).count());
        rates.push((times.len() - 1 + transactional_in_window) as f64 / window / QUOTA);
        // The same once the API has taken the whole backlog (the intake no longer competes for
        // the emulator, on this machine's 2 cores).
        let after: Vec<&OffsetDateTime> = times.iter().filter(|at| **at >= accepted_at).collect();
        let transactional_after = transactional_sent
            .get(channel.as_str())
            .map_or(0, |sent| sent.iter().filter(|at| **at >= accepted_at && *at <= last).count());
        let after_window = (*last - accepted_at).as_seconds_f64();
        rates_after.push((after.len() + transactional_after) as f64 / after_window / QUOTA);
        let sends = api.stack.providers.sends(channel);
        throttles.push((sends.throttled, sends.accepted));
    }
    println!("| drain rate ÷ quota | {:.3} | {:.3} | ≥ 0.9 |", rates[0], rates[1]);
    println!("| … once the backlog is accepted | {:.3} | {:.3} | |", rates_after[0], rates_after[1]);
    println!(
        "| provider throttling answers ÷ sends | {}/{} = {:.2}% | {}/{} = {:.2}% | ≤ 5% |",
        throttles[0].0,
        throttles[0].1,
        100.0 * throttles[0].0 as f64 / throttles[0].1 as f64,
        throttles[1].0,
        throttles[1].1,
        100.0 * throttles[1].0 as f64 / throttles[1].1 as f64
    );
    let mut parked = 0;
    for dlq in ["PushDeadLetterQueue", "SmsDeadLetterQueue", "EmailDeadLetterQueue"] {
        parked += messages_in(&api, dlq).await;
    }
    println!(
        "\n| transactional accept → sent (s) | idle | during the backlog | ratio | goal |\n|---|---:|---:|---:|---|"
    );
    let seconds = |latencies: &[(f64, String, String)]| latencies.iter().map(|(s, _, _)| *s).collect::<Vec<_>>();
    let (idle_seconds, during_seconds) = (seconds(&idle_latencies), seconds(&during_latencies));
    for (name, share) in [("p50", 0.5), ("p99", 0.99)] {
        let (idle, during) = (percentile(&idle_seconds, share), percentile(&during_seconds, share));
        println!("| {name} | {idle:.3} | {during:.3} | {:.2} | ≤ 2 |", during / idle);
    }
    for (name, share) in [("p50", 0.5), ("p99", 0.99)] {
        let (idle, during) = (percentile(&idle_emulator, share), percentile(&during_emulator, share));
        println!("| emulator GetItem {name} | {idle:.3} | {during:.3} | {:.2} | |", during / idle);
    }
    let mut slowest = during_latencies.clone();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nThe slowest transactional deliveries during the backlog, their timelines (s after accepted):");
    for (seconds, id, channel) in slowest.iter().take(3) {
        let view = api.notification(id).await;
        let accepted = at(&view["events"][0]);
        let events: Vec<String> = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["channel"].as_str().is_none_or(|of| of == channel))
            .map(|event| {
                format!("{} {:.3}", event["type"].as_str().unwrap_or("?"), (at(event) - accepted).as_seconds_f64())
            })
            .collect();
        println!("- {id} {channel} {seconds:.3} s: {}", events.join(", "));
    }

    // What the drain asked of the emulator, once the API had taken the backlog: the requests the
    // functions and the stack's pollers (`operator`, with the bench's own reads) made per send.
    let sends_after: usize = bulk_sent.values().flatten().filter(|at| **at >= accepted_at).count()
        + transactional_sent.values().flatten().filter(|at| **at >= accepted_at).count();
    support::print_traffic(
        "Emulator requests after the backlog was accepted",
        &traffic_accepted,
        &traffic_drained,
        sends_after,
        ("send", "sends"),
    );

    // Exactly once: each notification's SMS (by its text) and email (by its X-Notification-Id
    // header) once each in the emulator.
    let state = emulator_state().await;
    let mut sms: HashMap<String, usize> = HashMap::new();
    for message in state["sns"]["SMS"].as_array().into_iter().flatten() {
        *sms.entry(message["message"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let mut emails: HashMap<String, usize> = HashMap::new();
    for message in state["ses"]["RawMessage"].as_array().into_iter().flatten() {
        let raw = message["raw_data"].as_str().unwrap_or_default();
        if let Some(id) = raw.lines().find_map(|line| line.trim_end().strip_prefix("X-Notification-Id: ")) {
            *emails.entry(id.to_string()).or_default() += 1;
        }
    }
    let everyone: Vec<&Sent> = idle.iter().chain(&backlog).chain(&during).collect();
    let sms_once = everyone.iter().filter(|sent| sms.get(&sent.text) == Some(&1)).count();
    let email_once = everyone.iter().filter(|sent| emails.get(&sent.id) == Some(&1)).count();
    println!("\n| exactly once | messages in the DLQs |\n|---|---|");
    println!(
        "| {sms_once} of {} notifications: one SMS; {email_once}: one email | {parked} (goal 0) |",
        everyone.len()
    );
    api.stack.stop().await;
}
