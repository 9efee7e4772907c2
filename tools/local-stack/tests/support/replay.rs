//! Replaying recorded AWS requests straight to the emulator: the emulator's own rate for the
//! requests a pipeline made, which the local benchmarks divide their rate by (the emulator is
//! the bottleneck locally, so the ratio shows what the pipeline adds).
//!
//! Changed only where the recording would make the emulator wait or skip work: `ReceiveMessage`
//! waits 0 s instead of long-polling, a message sent with a delay is sent without it, and
//! `DeleteMessageBatch` names messages the replay itself received (the recorded receipts are
//! spent). Before it, the caller deletes the records the pipeline's conditional writes created
//! (`forget`), so they meet the same state and write again. The table stream's reads are left
//! out: each names an iterator the pipeline spent, and read again it returns everything after
//! that position (up to 1,000 records with both images) instead of the few the pipeline got.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::fault_proxy::Recorded;

/// Replayed requests in flight: enough that the emulator never waits for the next one.
pub const REPLAY_CONCURRENCY: usize = 8;
/// How the recording names a long poll that found nothing (waiting, not work).
pub const IDLE_POLL: &str = "sqs:ReceiveMessage (empty)";

pub struct Raw {
    pub elapsed: Duration,
    pub by_status: BTreeMap<u16, u64>,
    pub stale_receipts: u64,
    /// The recorded stream reads, not replayed.
    pub stream_reads: usize,
}

/// Deletes the items keyed `key` = each of `keys` (the notification records, the users'
/// rate-limit records), so the replayed conditional writes meet the state the pipeline's met
/// and do the same writes.
pub async fn forget(table: &str, key: &str, keys: &[String]) {
    use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
    let dynamodb = aws_sdk_dynamodb::Client::new(&super::sdk().await);
    for chunk in keys.chunks(25) {
        let deletes = chunk
            .iter()
            .map(|value| {
                let key = DeleteRequest::builder().key(key, AttributeValue::S(value.clone())).build().unwrap();
                WriteRequest::builder().delete_request(key).build()
            })
            .collect();
        let output = dynamodb.batch_write_item().request_items(table, deletes).send().await.expect("records deleted");
        assert!(output.unprocessed_items.unwrap_or_default().is_empty(), "the emulator deletes every record");
    }
}

fn json_body(request: &Recorded) -> Value {
    serde_json::from_slice(&request.body).expect("SQS requests have a JSON body")
}

/// `request` as the emulator should get it alone: a receive that answers at once.
fn without_waiting(mut request: Recorded) -> Recorded {
    let mut body = match request.operation.as_str() {
        "sqs:ReceiveMessage" | "sqs:SendMessage" | "sqs:SendMessageBatch" => json_body(&request),
        _ => return request,
    };
    body["WaitTimeSeconds"] = json!(0);
    if let Some(object) = body.as_object_mut() {
        object.remove("DelaySeconds");
    }
    for entry in body["Entries"].as_array_mut().into_iter().flatten() {
        if let Some(entry) = entry.as_object_mut() {
            entry.remove("DelaySeconds");
        }
    }
    if request.operation != "sqs:ReceiveMessage" {
        body.as_object_mut().map(|object| object.remove("WaitTimeSeconds"));
    }
    request.body = serde_json::to_vec(&body).unwrap().into();
    request
}

/// Receipts of the messages the replay received and has not deleted yet, by queue URL.
#[derive(Default)]
struct Receipts {
    by_queue: Mutex<HashMap<String, VecDeque<String>>>,
    /// Delete entries left with a recorded receipt, for want of a received message.
    stale: AtomicU64,
}

impl Receipts {
    /// A delete of messages the replay itself received. The recorded receipts are spent: the
    /// emulator would answer them from its list of deleted receipts without touching the
    /// queue, and the replayed messages would pile up in it, slowing every later receive.
    fn delete_received(&self, request: &mut Recorded) {
        let mut body = json_body(request);
        let queue = body["QueueUrl"].as_str().unwrap_or_default().to_string();
        let mut by_queue = self.by_queue.lock().unwrap();
        let received = by_queue.entry(queue).or_default();
        for entry in body["Entries"].as_array_mut().into_iter().flatten() {
            match received.pop_front() {
                Some(receipt) => entry["ReceiptHandle"] = json!(receipt),
                None => _ = self.stale.fetch_add(1, Ordering::Relaxed),
            }
        }
        request.body = serde_json::to_vec(&body).unwrap().into();
    }

    fn add(&self, receive: &Recorded, answer: &[u8]) {
        let queue = json_body(receive)["QueueUrl"].as_str().unwrap_or_default().to_string();
        let answer: Value = serde_json::from_slice(answer).unwrap_or_default();
        let receipts =
            answer["Messages"].as_array().into_iter().flatten().filter_map(|message| message["ReceiptHandle"].as_str());
        self.by_queue.lock().unwrap().entry(queue).or_default().extend(receipts.map(str::to_string));
    }
}

pub async fn replay(requests: Vec<Recorded>) -> Raw {
    let http = reqwest::Client::new();
    let emulator = super::endpoint();
    let (stream_reads, requests): (Vec<Recorded>, Vec<Recorded>) =
        requests.into_iter().partition(|request| request.operation.starts_with("dynamodb-streams:"));
    let requests: Vec<Recorded> = requests.into_iter().map(without_waiting).collect();
    let receipts = Receipts::default();
    let (http, emulator, shared) = (&http, &emulator, &receipts);
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(requests)
        .map(|mut request| async move {
            if request.operation == "sqs:DeleteMessageBatch" {
                shared.delete_received(&mut request);
            }
            let answer = request.request(http, emulator).send().await.expect("the emulator answers");
            let status = answer.status().as_u16();
            let body = answer.bytes().await.expect("the emulator's answer is read");
            if request.operation == "sqs:ReceiveMessage" {
                shared.add(&request, &body);
            }
            status
        })
        .buffer_unordered(REPLAY_CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut by_status = BTreeMap::new();
    for status in statuses {
        *by_status.entry(status).or_default() += 1;
    }
    Raw { elapsed, by_status, stale_receipts: receipts.stale.into_inner(), stream_reads: stream_reads.len() }
}
