//! Scheduled sends at a campaign's scale, locally (issue 20): N notifications (2,000 by default,
//! `SCHEDULE_NOTIFICATIONS`) to 200 users, all scheduled for the same second, a tenth of them
//! with a cancellation key that is cancelled within the minute before; then 200 users in quiet
//! hours across five time zones. Run with `scripts/bench.sh schedule`.
//!
//! Figures:
//! - lateness after due of each delivery's `released` (the claim that takes it when due) and
//!   `sent`, p50/p99/max: the goal is 0 early and p99 released ≤ 60 s;
//! - release throughput ÷ the emulator's raw rate for the same requests: as the throughput
//!   bench does, the stack runs behind the recording proxy and the recorded requests (accepting,
//!   cancelling, releasing and sending; not the empty long polls while nothing is due) are
//!   replayed straight to the emulator once the stack is stopped (`support::replay`, delays
//!   dropped); the pipeline's time is its busy time, the wait until due left out;
//! - exactly once: no cancelled notification sent, every other one's SMS once;
//! - quiet hours: each held delivery sent within 60 s after its window ends in its own zone.
//!
//! The stack sends SMS as fast as the emulator takes them (the provider quota is not what is
//! measured here; `backlog` measures that), with the template's defaults otherwise: the event
//! stream on, no events queue.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use local_stack::provider_account::Quotas;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::fault_proxy::FaultProxy;
use support::replay::{IDLE_POLL, forget, replay};
use support::{endpoint, eventually, queue_is_empty, recorded_sms};

const DEFAULT_NOTIFICATIONS: usize = 2000;
const USERS: usize = 200;
const PER_REQUEST: usize = 100;
const ZONES: [&str; 5] = ["America/New_York", "Europe/Paris", "Asia/Kolkata", "Asia/Tokyo", "Australia/Adelaide"];
const QUIET_USERS: usize = 200;

fn epoch_ms(rfc3339: &str) -> i64 {
    notify::time::parse_rfc3339_millis(rfc3339).unwrap()
}

/// When the delivery's timeline says `kind` happened (epoch ms).
fn event_at(view: &Value, kind: &str) -> Option<i64> {
    view["events"]
        .as_array()?
        .iter()
        .find(|event| event["type"] == kind)
        .map(|event| epoch_ms(event["at"].as_str().unwrap()))
}

fn percentile(values: &[f64], share: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn completed(api: &Api, id: &str) -> Value {
    eventually(Duration::from_secs(900), "a notification to complete", || async {
        let view = api.notification(id).await;
        (view["status"] == "completed").then_some(view)
    })
    .await
}

/// Accepts `items` (notification bodies) through the batch API; their ids, in order.
async fn accept(api: &Api, items: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in items.chunks(PER_REQUEST) {
        let with_keys: Vec<Value> = chunk
            .iter()
            .map(|item| {
                let mut item = item.clone();
                item["idempotency_key"] = json!(unique("k"));
                item
            })
            .collect();
        let reply = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": with_keys}))).await;
        for result in reply.body["results"].as_array().unwrap() {
            assert_eq!(result["status"], 202, "{result}");
            ids.push(result["body"]["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// The quiet hours a user in `zone` is given: crossing midnight, from `ahead + 1` minutes from
/// now round to `ahead` minutes from now, local time (all but a minute of the day); and when
/// that window next ends (epoch ms).
fn quiet_hours(zone: &str, ahead: i64) -> (Value, i64) {
    let tz = jiff::tz::TimeZone::get(zone).unwrap();
    let local = jiff::Timestamp::now().to_zoned(tz.clone());
    let minutes = local.hour() as i64 * 60 + local.minute() as i64;
    // The end at least 20 s away, so the dispatcher is sure to find itself inside.
    let ahead = ahead + i64::from(local.second() >= 40);
    let at = |m: i64| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let window = json!({"start": at(minutes + ahead + 1), "end": at(minutes + ahead)});
    let end = local
        .with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .unwrap()
        .checked_add(jiff::Span::new().minutes(ahead))
        .unwrap();
    (window, end.timestamp().as_millisecond())
}

#[tokio::main]
async fn main() {
    let notifications = std::env::var("SCHEDULE_NOTIFICATIONS")
        .map_or(DEFAULT_NOTIFICATIONS, |count| count.parse().expect("SCHEDULE_NOTIFICATIONS is a count"));
    let cancelled_count = notifications / 10;
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let quotas = Quotas { sms: 100_000.0, ..Quotas::default() };
    // The events queue as the template has it by default (off): the local stack turns it on
    // for the tests, and its sends would load the one emulator with work no deployment asked for.
    let parameters = BTreeMap::from([
        ("SmsSendRate".to_string(), "100000".to_string()),
        ("SmsRateLimitPerHour".to_string(), "100".to_string()),
        ("EventsQueue".to_string(), "disabled".to_string()),
    ]);
    let api =
        Api::start_in_account(&support::project_template_with_patient_intake(), &proxy.url, parameters, quotas).await;
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await.status, 201);
    let users = api.users_with_phone(USERS).await;

    // 1. The campaign: everything due at the same second, about four minutes from now (room
    //    for the intake to take the 2,000 on the one emulator the event stream's function also
    //    loads: two minutes stopped being enough once it ran).
    let due_ms = (notify::time::now_epoch_millis() / 10_000 + 24) * 10_000;
    let send_at = notify::time::rfc3339_millis(due_ms);
    let key = unique("campaign");
    let texts: Vec<String> = (0..notifications).map(|_| unique("text")).collect();
    let items: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut item = json!({"user_id": users[index % USERS], "template": template, "params": {"text": text}, "send_at": send_at});
            if index < cancelled_count {
                item["cancellation_key"] = json!(key);
            }
            item
        })
        .collect();
    proxy.take_operations();
    proxy.start_recording();
    let started = Instant::now();
    let ids = accept(&api, items).await;
    let accepted_in = started.elapsed();

    // 2. Within the minute before due, the keyed tenth is cancelled.
    let cancel_at = due_ms - 50_000;
    tokio::time::sleep(Duration::from_millis((cancel_at - notify::time::now_epoch_millis()).max(0) as u64)).await;
    let cancelling = Instant::now();
    let mut cancelled: BTreeSet<String> = BTreeSet::new();
    loop {
        let reply = api.call(Method::POST, "/v1/notifications/cancel", Some(json!({"cancellation_key": key}))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        cancelled
            .extend(reply.body["notifications"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()));
        if reply.body["complete"] == true {
            break;
        }
    }
    let cancelled_in = cancelling.elapsed();
    assert!(notify::time::now_epoch_millis() < due_ms, "the cancel ended before due");

    // 3. Due: released, sent; the clock runs until every SMS is out and the queue is empty.
    tokio::time::sleep(Duration::from_millis((due_ms - notify::time::now_epoch_millis()).max(0) as u64)).await;
    let releasing = Instant::now();
    let traffic_due = api.traffic();
    let queue = api.stack.deployed.queue("SmsQueue").unwrap().0.to_string();
    let to_send = notifications - cancelled.len();
    eventually(Duration::from_secs(1800), "every due SMS sent and the queue empty", || async {
        let sent = proxy.operations.lock().unwrap().get("sns:Publish").copied().unwrap_or(0);
        (sent as usize >= to_send && queue_is_empty(&api.clients.sqs, &queue).await).then_some(())
    })
    .await;
    let released_in = releasing.elapsed();
    let traffic_released = api.traffic();
    let recorded: Vec<_> =
        proxy.take_recording().into_iter().filter(|request| request.operation != IDLE_POLL).collect();

    let views: Vec<Value> = futures::stream::iter(&ids).map(|id| completed(&api, id)).buffered(8).collect().await;
    let (mut released_late, mut sent_late, mut early) = (Vec::new(), Vec::new(), 0);
    for view in views.iter().filter(|view| view["deliveries"][0]["status"] == "sent") {
        let (released, sent) = (event_at(view, "released").unwrap(), event_at(view, "sent").unwrap());
        early += usize::from(released < due_ms);
        released_late.push((released - due_ms) as f64 / 1000.0);
        sent_late.push((sent - due_ms) as f64 / 1000.0);
    }
    let mut copies: HashMap<String, usize> = HashMap::new();
    for sms in recorded_sms().await {
        *copies.entry(sms["message"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let (mut cancelled_sent, mut once) = (0, 0);
    for ((id, text), view) in ids.iter().zip(&texts).zip(&views) {
        let count = copies.get(text).copied().unwrap_or(0);
        if cancelled.contains(id) {
            cancelled_sent += count;
            assert_eq!(view["deliveries"][0]["status"], "cancelled", "{view}");
        } else {
            once += usize::from(count == 1);
        }
    }

    // 4. Quiet hours in five zones: windows ending one or two minutes from now, local time.
    let quiet_template = template.clone();
    let quiet_users: Vec<(String, i64)> = futures::stream::iter(0..QUIET_USERS)
        .map(|index| {
            let api = &api;
            async move {
                let zone = ZONES[index % ZONES.len()];
                let (window, ends) = quiet_hours(zone, 1 + (index % 2) as i64);
                let user = unique("q");
                let contacts = json!({"phone": "+12015550123", "timezone": zone});
                assert!(api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await.status.is_success());
                let path = format!("/v1/users/{user}/preferences");
                assert_eq!(api.call(Method::PUT, &path, Some(json!({"quiet_hours": window}))).await.status, 200);
                (user, ends)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let quiet_items: Vec<Value> = quiet_users
        .iter()
        .map(|(user, _)| json!({"user_id": user, "template": quiet_template, "params": {"text": unique("quiet")}}))
        .collect();
    let quiet_ids = accept(&api, quiet_items).await;
    let mut after_end = Vec::new();
    let mut wrong_end = 0;
    for (id, (_, ends)) in quiet_ids.iter().zip(&quiet_users) {
        let view = completed(&api, id).await;
        assert_eq!(view["deliveries"][0]["status"], "sent", "{view}");
        assert!(event_at(&view, "held_quiet_hours").is_some(), "{view}");
        let until = epoch_ms(view["deliveries"][0]["deliver_after"].as_str().unwrap());
        wrong_end += usize::from(until != *ends);
        after_end.push((event_at(&view, "sent").unwrap() - until) as f64 / 1000.0);
    }
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let rate_limits = api.stack.deployed.table("RateLimitsTable").unwrap().to_string();
    api.stack.stop().await;

    // 5. The emulator's own rate for the requests the campaign made.
    forget(&table, "id", &ids).await;
    let limited: Vec<String> = users
        .iter()
        .map(|user| notify::store::rate_limits::record_key(user, notify::domain::channel::Channel::Sms))
        .collect();
    forget(&rate_limits, "key", &limited).await;
    tokio::time::sleep(local_stack::poller::LONG_POLL * 2).await;
    let requests = recorded.len();
    let raw = replay(recorded).await;
    let busy = accepted_in + cancelled_in + released_in;

    println!("# Scheduled sends ({})\n", notify::time::now_rfc3339());
    println!(
        "{notifications} SMS notifications to {USERS} users, all due at {send_at}; {} with a key cancelled {:.0} s before due ({} cancelled); accepted in {:.1} s.\n",
        cancelled_count,
        (due_ms - cancel_at) as f64 / 1000.0,
        cancelled.len(),
        accepted_in.as_secs_f64()
    );
    println!("| after due (s) | first | p50 | p99 | max | within 60 s | goal |\n|---|---:|---:|---:|---:|---:|---|");
    for (name, values) in [("released", &released_late), ("sent", &sent_late)] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {} of {} | {} |",
            percentile(values, 0.0),
            percentile(values, 0.5),
            percentile(values, 0.99),
            percentile(values, 1.0),
            values.iter().filter(|late| **late <= 60.0).count(),
            values.len(),
            if name == "released" { "0 early; p99 ≤ 60" } else { "" }
        );
    }
    println!("\nreleased before due: {early} (goal 0)\n");
    let rate = |elapsed: Duration| notifications as f64 / elapsed.as_secs_f64();
    println!("| run | requests | seconds | notifications/s |\n|---|---:|---:|---:|");
    println!(
        "| pipeline, busy (accept {:.1} + cancel {:.1} + release and send {:.1}) | {requests} | {:.1} | {:.1} |",
        accepted_in.as_secs_f64(),
        cancelled_in.as_secs_f64(),
        released_in.as_secs_f64(),
        busy.as_secs_f64(),
        rate(busy)
    );
    println!(
        "| raw emulator (the same requests less {} stream reads) | {} | {:.1} | {:.1} |",
        raw.stream_reads,
        requests - raw.stream_reads,
        raw.elapsed.as_secs_f64(),
        rate(raw.elapsed)
    );
    println!(
        "\nrelease throughput ÷ raw: {:.2} (answers in the replay by status: {:?}; stale receipts {})\n",
        rate(busy) / rate(raw.elapsed),
        raw.by_status,
        raw.stale_receipts
    );
    support::print_traffic(
        "Emulator requests from due until every SMS was sent",
        &traffic_due,
        &traffic_released,
        to_send,
        ("delivery", "deliveries"),
    );
    println!("\n| exactly once | cancelled sent | |\n|---|---|---|");
    println!("| {once} of {to_send} sent once | {cancelled_sent} SMS (goal 0) | |");
    println!(
        "\nquiet hours: {} users in {} zones held; sent after their window ended (s): p50 {:.1}, p99 {:.1}, max {:.1} (goal ≤ 60); held until another time than the window's end: {wrong_end}",
        quiet_ids.len(),
        ZONES.len(),
        percentile(&after_end, 0.5),
        percentile(&after_end, 0.99),
        percentile(&after_end, 1.0)
    );
}
