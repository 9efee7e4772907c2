//! The DynamoDB stream event-source mapping, emulated with Lambda's semantics: each shard is
//! read in order from the mapping's starting position; up to `BatchSize` records gathered
//! within the batching window are one invocation with the DynamoDB event, then
//! - with `ReportBatchItemFailures`: the first reported sequence number is where the next
//!   invocation starts (the records before it are done); an empty report finishes the batch; a
//!   report naming a record not in the batch fails the batch;
//! - on an error, timeout or crash (or a failure without `ReportBatchItemFailures`): the same
//!   batch again.
//!
//! A batch is retried until it succeeds (the template's `MaximumRetryAttempts: -1`), a pause
//! apart, so a shard's records are never skipped nor reordered.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::functions::LocalFunction;
use crate::spec::StreamMapping;

/// How long a shard with nothing new waits before reading again: every stack of the parallel
/// tests polls the one emulator, so an idle stream reads once a second (Lambda reads four times).
const IDLE: Duration = Duration::from_secs(1);
/// The least time between two reads of a shard, as Lambda's (four a second): a busy table's
/// stream must not read the one emulator in a loop that competes with the table's own writers.
const READ_GAP: Duration = Duration::from_millis(250);
/// How long a failed batch waits before it is invoked again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where a mapping reads from.
#[derive(Clone, Debug)]
pub struct Source {
    pub stream_arn: String,
    pub region: String,
}

/// Reads every shard of the stream until the task is aborted.
pub async fn run(
    streams: aws_sdk_dynamodbstreams::Client,
    function: Arc<LocalFunction>,
    mapping: StreamMapping,
    source: Source,
) {
    let shards = loop {
        match streams.describe_stream().stream_arn(&source.stream_arn).send().await {
            Ok(described) => {
                break described.stream_description.map(|description| description.shards.unwrap_or_default());
            }
            Err(error) => {
                tracing::warn!(stream = %source.stream_arn, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(error), "cannot describe the stream");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    };
    let mut readers = tokio::task::JoinSet::new();
    for shard in shards.unwrap_or_default() {
        let Some(shard_id) = shard.shard_id else { continue };
        readers.spawn(read_shard(streams.clone(), function.clone(), mapping.clone(), source.clone(), shard_id));
    }
    while readers.join_next().await.is_some() {}
}

async fn iterator(
    streams: &aws_sdk_dynamodbstreams::Client,
    source: &Source,
    shard_id: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
) -> Option<String> {
    let result = streams
        .get_shard_iterator()
        .stream_arn(&source.stream_arn)
        .shard_id(shard_id)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence_number.map(str::to_string))
        .send()
        .await;
    match result {
        Ok(output) => output.shard_iterator,
        Err(error) => {
            tracing::warn!(shard = shard_id, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(error), "cannot get a shard iterator");
            None
        }
    }
}

async fn read_shard(
    streams: aws_sdk_dynamodbstreams::Client,
    function: Arc<LocalFunction>,
    mapping: StreamMapping,
    source: Source,
    shard_id: String,
) {
    let start = ShardIteratorType::from(mapping.starting_position.as_str());
    let mut position = loop {
        if let Some(position) = iterator(&streams, &source, &shard_id, start.clone(), None).await {
            break position;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    // Records read but not yet done, in order, and when the first of them was read; the last
    // sequence number read (where a fresh iterator resumes); whether the shard is closed.
    let mut pending: Vec<Record> = Vec::new();
    let mut first_read: Option<Instant> = None;
    let mut last_read: Option<String> = None;
    let mut closed = false;
    let mut last_get: Option<Instant> = None;
    loop {
        while !closed && pending.len() < mapping.batching.size as usize {
            if first_read.is_some_and(|at| at.elapsed() >= mapping.batching.window) {
                break;
            }
            if let Some(at) = last_get {
                tokio::time::sleep_until(at + READ_GAP).await;
            }
            last_get = Some(Instant::now());
            match streams.get_records().shard_iterator(&position).send().await {
                Ok(output) => {
                    let records = output.records.unwrap_or_default();
                    match output.next_shard_iterator {
                        Some(next) => position = next,
                        // A closed shard: what it had is read.
                        None => closed = true,
                    }
                    if let Some(last) = records.last().and_then(|record| record.dynamodb.as_ref()) {
                        last_read = last.sequence_number.clone();
                    }
                    if records.is_empty() {
                        tokio::time::sleep(IDLE).await;
                    } else {
                        first_read.get_or_insert_with(Instant::now);
                        pending.extend(records);
                    }
                }
                Err(error) => {
                    tracing::warn!(shard = %shard_id, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(error), "cannot read the stream: reading on from the last record read");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    // An iterator expires (after 15 minutes in AWS): a fresh one resumes after
                    // the last record read.
                    let fresh = match &last_read {
                        Some(last) => {
                            iterator(&streams, &source, &shard_id, ShardIteratorType::AfterSequenceNumber, Some(last))
                                .await
                        }
                        None => iterator(&streams, &source, &shard_id, start.clone(), None).await,
                    };
                    if let Some(fresh) = fresh {
                        position = fresh;
                    }
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        let batch: Vec<Record> = pending.iter().take(mapping.batching.size as usize).cloned().collect();
        let result = function.invoke(event(&batch, &source)).await.map_err(|error| error.to_string());
        match done(&mapping, &batch, &result) {
            Some(done) => {
                pending.drain(..done);
                first_read = (!pending.is_empty()).then(Instant::now);
                if done < batch.len() {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            None => {
                tracing::warn!(function = %function.logical_id, result = ?result, "stream batch failed: invoked again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// How many records of the batch are done after the invocation (`None`: none, the batch fails).
fn done(mapping: &StreamMapping, batch: &[Record], result: &Result<Value, String>) -> Option<usize> {
    let output = result.as_ref().ok()?;
    if !mapping.batching.report_batch_item_failures {
        return Some(batch.len());
    }
    let failures = match output.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(batch.len()),
        Some(Value::Array(failures)) => failures,
        Some(_) => return None,
    };
    let Some(first) = failures.first() else { return Some(batch.len()) };
    let sequence = first.get("itemIdentifier").and_then(Value::as_str)?;
    batch
        .iter()
        .position(|record| record.dynamodb.as_ref().and_then(|r| r.sequence_number.as_deref()) == Some(sequence))
}

/// The DynamoDB event Lambda invokes the function with.
fn event(batch: &[Record], source: &Source) -> Value {
    let records: Vec<Value> = batch
        .iter()
        .map(|record| {
            let change = record.dynamodb.as_ref();
            let image = |image: Option<
                &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
            >| {
                image.map(|image| serde_json::to_value(serde_dynamo::Item::from(image.clone())).unwrap_or(Value::Null))
            };
            let mut dynamodb = json!({
                // A record without its time is taken as written now (never as long ago).
                "ApproximateCreationDateTime": change
                    .and_then(|change| change.approximate_creation_date_time)
                    .map(|at| at.as_secs_f64())
                    .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()),
                "Keys": image(change.and_then(|change| change.keys.as_ref())),
                "SequenceNumber": change.and_then(|change| change.sequence_number.clone()),
                "SizeBytes": change.and_then(|change| change.size_bytes).unwrap_or_default(),
                "StreamViewType": change.and_then(|change| change.stream_view_type.as_ref()).map(|view| view.as_str()),
            });
            if let Some(new) = image(change.and_then(|change| change.new_image.as_ref())) {
                dynamodb["NewImage"] = new;
            }
            if let Some(old) = image(change.and_then(|change| change.old_image.as_ref())) {
                dynamodb["OldImage"] = old;
            }
            json!({
                "eventID": record.event_id,
                "eventName": record.event_name.as_ref().map(|name| name.as_str()),
                "eventVersion": record.event_version,
                "eventSource": "aws:dynamodb",
                "awsRegion": source.region,
                "eventSourceARN": source.stream_arn,
                "dynamodb": dynamodb,
            })
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, StreamRecord};

    use super::*;
    use crate::spec::Batching;

    fn record(sequence: &str) -> Record {
        Record::builder()
            .event_id(format!("e-{sequence}"))
            .event_name(OperationType::Insert)
            .dynamodb(
                StreamRecord::builder()
                    .sequence_number(sequence)
                    .keys("id", AttributeValue::S("n-1".into()))
                    .new_image("id", AttributeValue::S("n-1".into()))
                    .build(),
            )
            .build()
    }

    fn mapping(report: bool) -> StreamMapping {
        StreamMapping {
            event_name: "Stream".into(),
            table: "T".into(),
            batching: Batching { size: 100, window: Duration::ZERO, report_batch_item_failures: report },
            starting_position: "TRIM_HORIZON".into(),
        }
    }

    #[test]
    fn a_reported_record_is_where_the_next_invocation_starts() {
        let batch = [record("1"), record("2"), record("3")];
        let reported = Ok(json!({"batchItemFailures": [{"itemIdentifier": "2"}]}));
        assert_eq!(done(&mapping(true), &batch, &reported), Some(1));
        assert_eq!(done(&mapping(true), &batch, &Ok(json!({"batchItemFailures": []}))), Some(3));
        assert_eq!(done(&mapping(true), &batch, &Ok(Value::Null)), Some(3));
        assert_eq!(done(&mapping(true), &batch, &Err("boom".into())), None);
        assert_eq!(done(&mapping(true), &batch, &Ok(json!({"batchItemFailures": [{"itemIdentifier": "9"}]}))), None);
        assert_eq!(done(&mapping(false), &batch, &Err("boom".into())), None);
    }

    #[test]
    fn the_event_carries_the_images_as_dynamodb_json() {
        let source =
            Source { stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/x".into(), region: "us-east-1".into() };
        let event = event(&[record("1")], &source);
        let record = &event["Records"][0];
        assert_eq!(record["dynamodb"]["NewImage"], json!({"id": {"S": "n-1"}}));
        assert_eq!(record["eventSourceARN"], source.stream_arn);
        let parsed: aws_lambda_events::dynamodb::Event = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.records[0].change.sequence_number.as_deref(), Some("1"));
    }
}
