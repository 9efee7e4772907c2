//! AWS requests per notification, counted by operation through a counting proxy in front of the
//! emulator while the whole local stack runs (intake, queues, dispatchers): SMS as single sends
//! and through the batch endpoint (100 per request), and an email of realistic size through the
//! batch endpoint; then the AWS cost per million notifications at the us-east-1 list prices
//! below. Run with `scripts/bench.sh aws_requests`.
//!
//! What is counted: every request our functions make (and the local event-source pollers', shown
//! apart: Lambda's own SQS poller makes the same billed calls in AWS; its stream reads are free),
//! and the events the event stream puts on the bus (billed per entry). Provider charges (the SMS or
//! email itself) are not AWS infrastructure and are left out.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::fault_proxy::{FaultProxy, PUT_EVENTS_BYTES, PUT_EVENTS_ENTRIES, SEND_TIMELINE_TAKE};
use support::{endpoint, eventually};

const NOTIFICATIONS: usize = 200;

/// us-east-1 list prices (USD), as published in 2026: API Gateway HTTP API per request (first
/// 300 M), Lambda per request, SQS per request (64 KiB chunk), DynamoDB on demand per write and
/// read request unit, Lambda arm64 per GB-second.
const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
const SQS_REQUEST: f64 = 0.40 / 1e6;
const DYNAMODB_WRU: f64 = 0.625 / 1e6;
const DYNAMODB_RRU: f64 = 0.125 / 1e6;
/// EventBridge custom events per entry (64 KB chunk), and an archive per GB it ingests.
const EVENTBRIDGE_ENTRY: f64 = 1.00 / 1e6;
const EVENTBRIDGE_ARCHIVE_GB: f64 = 0.10;
/// Assumed billed duration per invocation at 256 MB (the CPU benchmark measures our share).
const ASSUMED_INVOCATION: Duration = Duration::from_millis(50);

/// DynamoDB's size of an item: attribute names plus values (numbers and strings as text).
fn item_bytes(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.iter().map(|(name, value)| name.len() + item_bytes(value)).sum::<usize>() + 3,
        Value::Array(list) => list.iter().map(item_bytes).sum::<usize>() + 3,
        Value::String(text) => text.len(),
        Value::Number(number) => number.to_string().len(),
        _ => 1,
    }
}

/// One kind of notification the benchmark sends: the users' contacts, the template's content,
/// and the queue its deliveries go through.
struct Scenario {
    contacts: Value,
    content: Value,
    queue: &'static str,
}

fn sms() -> Scenario {
    Scenario {
        contacts: json!({"phone": "+12015550123"}),
        content: json!({"sms": {"body": "{{ text }}"}}),
        queue: "SmsQueue",
    }
}

/// A receipt email as services send them: inline-styled HTML with a table of twelve line
/// items (about 7 KB rendered) and its text part.
fn email() -> Scenario {
    let style = "font-family:Helvetica,Arial,sans-serif;font-size:14px;line-height:20px;color:#333333;padding:8px 12px;border-bottom:1px solid #eeeeee";
    let rows: String = (1..=12)
        .map(|line| format!("<tr><td style=\"{style}\">Item {line}: {{{{ text }}}}</td><td style=\"{style};text-align:right\">1 &times; $19.99</td></tr>"))
        .collect();
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Your receipt</title></head>\
         <body style=\"margin:0;background:#f4f4f4\"><table role=\"presentation\" width=\"100%\" style=\"max-width:600px;margin:0 auto;background:#ffffff\">\
         <tr><td style=\"{style};font-size:20px\">Thanks for your order</td><td></td></tr>{rows}\
         <tr><td style=\"{style};font-weight:bold\">Total</td><td style=\"{style};text-align:right;font-weight:bold\">$239.88</td></tr>\
         <tr><td colspan=\"2\" style=\"{style};font-size:12px;color:#888888\">Questions? Reply to this email. You get this because you ordered at example.com.</td></tr>\
         </table></body></html>"
    );
    let text: String = (1..=12).map(|line| format!("Item {line}: {{{{ text }}}}  1 x $19.99\n")).collect();
    Scenario {
        contacts: json!({"email": "ada@example.com"}),
        content: json!({"email": {"subject": "Your receipt", "html": html, "text": format!("Thanks for your order\n{text}Total $239.88")}}),
        queue: "EmailQueue",
    }
}

struct Run {
    operations: BTreeMap<String, u64>,
    requests: u64,
    record_bytes: usize,
}

async fn run(api: &Api, proxy: &FaultProxy, scenario: &Scenario, batch: bool) -> Run {
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": scenario.content}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let users = api.users_with(NOTIFICATIONS, &scenario.contacts).await;
    let text = unique("text");
    let ids: Vec<String>;
    proxy.take_operations();
    let requests = if batch {
        let mut all = Vec::new();
        for chunk in users.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|user| json!({"user_id": user, "template": template, "params": {"text": text}, "idempotency_key": unique("k")}))
                .collect();
            let reply = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": items}))).await;
            all.extend(
                reply.body["results"].as_array().unwrap().iter().map(|r| r["body"]["id"].as_str().unwrap().to_string()),
            );
        }
        ids = all;
        users.len().div_ceil(100)
    } else {
        ids = futures::stream::iter(&users)
            .map(|user| {
                let body = json!({"user_id": user, "template": template, "params": {"text": text}});
                async move {
                    api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        users.len()
    };
    // Counted once every outcome write landed and the poller deleted every message (read
    // straight from the emulator, so the polling is not counted).
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let direct = aws_sdk_dynamodb::Client::new(&support::sdk().await);
    let log = notify::store::notifications::NotificationStore::new(direct.clone(), table.clone());
    let sqs = aws_sdk_sqs::Client::new(&support::sdk().await);
    let queue = api.stack.deployed.queue(scenario.queue).unwrap().0.to_string();
    eventually(Duration::from_secs(300), "every outcome written and every message deleted", || async {
        (support::outcomes_final(&log, &ids).await && support::queue_is_empty(&sqs, &queue).await).then_some(())
    })
    .await;
    // And once the event stream published every event the records committed.
    let mut events = 0;
    for id in &ids {
        let record = log.get(&id.as_str().into()).await.unwrap().unwrap();
        assert!(record.deliveries.values().all(|d| d.status.as_str() == "sent"), "every delivery sent: {record:?}");
        events += notify::domain::event_stream::changes(None, &record).len() as u64;
    }
    eventually(Duration::from_secs(120), "every event published", || async {
        let published = proxy.operations.lock().unwrap().get(PUT_EVENTS_ENTRIES).copied().unwrap_or(0);
        (published >= events).then_some(())
    })
    .await;
    let operations = proxy.take_operations();
    let item = direct
        .get_item()
        .table_name(table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(ids[0].clone()))
        .send()
        .await
        .unwrap();
    let record: Value = serde_dynamo::from_item(item.item.unwrap()).unwrap();
    Run { operations, requests: requests as u64, record_bytes: item_bytes(&record) }
}

/// Whether an operation is an event-source poller's (Lambda's, in AWS) rather than a function's.
/// Lambda's reads of a DynamoDB stream are free.
fn is_polling(operation: &str) -> bool {
    operation.starts_with("sqs:ReceiveMessage")
        || operation == "sqs:DeleteMessageBatch"
        || operation.starts_with("dynamodb-streams:")
}

fn cost_per_million(run: &Run) -> (f64, Vec<(String, f64)>) {
    let per = |operation: &str| *run.operations.get(operation).unwrap_or(&0) as f64 / NOTIFICATIONS as f64;
    let record_wru = run.record_bytes.div_ceil(1024) as f64;
    let mut lines = Vec::new();
    lines.push(("API Gateway requests".to_string(), run.requests as f64 / NOTIFICATIONS as f64 * HTTP_API_REQUEST));
    let batches = per("sqs:DeleteMessageBatch").max(per("sqs:ReceiveMessage"));
    // The event stream's invocations: about one per PutEvents (a batch of up to 100 records
    // puts its events 10 at a time; a batch with nothing to publish, such as only `sending`
    // steps, invokes without putting, and is not counted here).
    let invocations = run.requests as f64 / NOTIFICATIONS as f64 + batches + per("events:PutEvents");
    let gb_seconds = invocations * 0.25 * ASSUMED_INVOCATION.as_secs_f64();
    lines.push((
        "Lambda requests and duration".to_string(),
        invocations * LAMBDA_REQUEST + gb_seconds * LAMBDA_ARM_GB_SECOND,
    ));
    let sqs: f64 = run
        .operations
        .iter()
        .filter(|(op, _)| op.starts_with("sqs:") && !op.ends_with("(empty)"))
        .map(|(op, _)| per(op))
        .sum();
    lines.push(("SQS requests (idle polls excluded)".to_string(), sqs * SQS_REQUEST));
    // Every write is billed at the notification record's size: the other items written (the
    // rate-limit record, counters, users) are smaller.
    let record_writes = per("dynamodb:PutItem") + per("dynamodb:UpdateItem");
    let other_writes = per("dynamodb:TransactWriteItems") * 2.0;
    lines.push((
        format!("DynamoDB writes (record {} bytes: {record_wru} WRU each, counted for every write)", run.record_bytes),
        (record_writes * record_wru + other_writes) * DYNAMODB_WRU,
    ));
    // The channel's send timeline: an item under 1 KB, one unit per take.
    lines.push((
        "DynamoDB writes: the send timeline (1 WRU per batch's take)".to_string(),
        per(SEND_TIMELINE_TAKE) * DYNAMODB_WRU,
    ));
    // Every item this run reads is under 4 KB (the rate-limit record too, at the default
    // limits): a strongly consistent read is one unit, another half.
    let reads = per("dynamodb:GetItem")
        + per("dynamodb:GetItem (eventually consistent)") / 2.0
        + per("dynamodb:Query")
        + per("dynamodb:BatchGetItem");
    lines.push(("DynamoDB reads (1 RRU, 0.5 eventually consistent)".to_string(), reads * DYNAMODB_RRU));
    // The event stream: each entry put on the bus, and the archive ingesting it (the stream's
    // reads are free). The events queue, when enabled (the local stack enables it), takes each
    // event with an SQS send.
    let entries = per(PUT_EVENTS_ENTRIES);
    lines.push((
        format!("event stream: EventBridge, {entries:.2} events per notification"),
        entries * EVENTBRIDGE_ENTRY,
    ));
    lines.push((
        format!("event stream: archive ({:.0} bytes per notification)", per(PUT_EVENTS_BYTES)),
        per(PUT_EVENTS_BYTES) / 1e9 * EVENTBRIDGE_ARCHIVE_GB,
    ));
    let total = lines.iter().map(|(_, cost)| cost).sum::<f64>() * 1e6;
    // Optional (off by default), so shown after the total.
    lines.push((
        "not in the total: the events queue, if EventsQueue=enabled (a send per event)".to_string(),
        entries * SQS_REQUEST,
    ));
    (total, lines.into_iter().map(|(name, cost)| (name, cost * 1e6)).collect())
}

fn report(name: &str, run: &Run) {
    println!("\n## {name}: {NOTIFICATIONS} notifications in {} requests", run.requests);
    println!("\n| operation | requests | per notification |\n|---|---:|---:|");
    for (operation, count) in &run.operations {
        let shown =
            if is_polling(operation) { format!("{operation} (event-source poller)") } else { operation.clone() };
        println!("| {shown} | {count} | {:.3} |", *count as f64 / NOTIFICATIONS as f64);
    }
    let (total, lines) = cost_per_million(run);
    println!("\n| cost per million notifications | USD |\n|---|---:|");
    let (optional, counted) = lines.split_last().expect("lines");
    for (line, cost) in counted {
        println!("| {line} | {cost:.3} |");
    }
    println!("| **total** | **{total:.2}** |");
    println!("| {} | {:.3} |", optional.0, optional.1);
}

#[tokio::main]
async fn main() {
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let api = Api::start_from(&support::project_template_with_patient_intake(), &proxy.url, BTreeMap::new()).await;
    let (sms, email) = (sms(), email());
    let single = run(&api, &proxy, &sms, false).await;
    let batch = run(&api, &proxy, &sms, true).await;
    let email_batch = run(&api, &proxy, &email, true).await;
    println!("# AWS requests per notification ({})", notify::time::now_rfc3339());
    report("SMS, single sends (POST /v1/notifications)", &single);
    report("SMS, batch sends (POST /v1/notifications/batch, 100 per request)", &batch);
    report("email (receipt, about 7 KB), batch sends (100 per request)", &email_batch);
    api.stack.stop().await;
}
