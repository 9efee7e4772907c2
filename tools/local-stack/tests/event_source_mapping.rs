//! The SQS event-source mapping emulation, with a recording function on a fixture template
//! whose queue has a 1 s visibility timeout and maxReceiveCount 2, so redelivery and
//! dead-lettering happen within seconds.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::LambdaEvent;
use local_stack::LocalStack;
use local_stack::functions::Registry;
use local_stack::template::Template;
use notify::function::Function;
use serde_json::{Value, json};
use support::{eventually, options, sdk, unique_stack_name};

const FIXTURE: &str = r#"
Resources:
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt WorkDeadLetterQueue.Arn
        maxReceiveCount: 2
  WorkDeadLetterQueue:
    Type: AWS::SQS::Queue
  Worker:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: recorder
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      Timeout: 5
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
"#;

/// Records every body it is handed (with its receive count) and behaves as the body says:
/// `fail…` is reported as a batch item failure; `explode…` on its first receive makes the
/// whole invocation fail; `forge…` on its first receive answers a batch response naming a
/// message that is not in the batch; anything else succeeds.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Recorder {
    fn times_seen(&self, body: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(seen, _)| seen == body).count()
    }
}

impl Function for Recorder {
    type Event = SqsEvent;
    type Output = Value;

    async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<Value, lambda_runtime::Error> {
        let mut failures = Vec::new();
        let mut explode = false;
        let mut forge = false;
        for record in &event.payload.records {
            let body = record.body.clone().unwrap_or_default();
            let receive_count: u32 = record.attributes["ApproximateReceiveCount"].parse().unwrap();
            self.seen.lock().unwrap().push((body.clone(), receive_count));
            explode |= body.starts_with("explode") && receive_count == 1;
            forge |= body.starts_with("forge") && receive_count == 1;
            if body.starts_with("fail") {
                failures.push(json!({"itemIdentifier": record.message_id}));
            }
        }
        if explode {
            return Err("exploded".into());
        }
        if forge {
            return Ok(json!({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}));
        }
        Ok(json!({ "batchItemFailures": failures }))
    }
}

struct Fixture {
    stack: LocalStack,
    recorder: Recorder,
    sqs: aws_sdk_sqs::Client,
}

impl Fixture {
    async fn start() -> Self {
        let recorder = Recorder::default();
        let mut registry = Registry::empty();
        let shared = recorder.clone();
        registry.register("recorder", move |_, _| Ok(Arc::new(shared.clone())));
        let sdk = sdk().await;
        let template = Template::parse(FIXTURE).unwrap();
        let stack =
            LocalStack::start(&sdk, &template, options(&unique_stack_name(), BTreeMap::new(), registry)).await.unwrap();
        Self { stack, recorder, sqs: aws_sdk_sqs::Client::new(&sdk) }
    }

    fn url(&self, logical_id: &str) -> String {
        self.stack.deployed.queue(logical_id).unwrap().0.to_string()
    }

    /// Sends the bodies in one SendMessageBatch, so one receive sees them together.
    async fn send(&self, bodies: &[&str]) {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(*body)
                    .build()
                    .unwrap()
            })
            .collect();
        let sent = self
            .sqs
            .send_message_batch()
            .queue_url(self.url("WorkQueue"))
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(sent.failed.is_empty());
    }

    async fn dead_letters(&self) -> Vec<String> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(self.url("WorkDeadLetterQueue"))
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        received.messages.unwrap_or_default().into_iter().filter_map(|message| message.body).collect()
    }

    async fn queue_is_empty(&self) -> bool {
        support::queue_is_empty(&self.sqs, &self.url("WorkQueue")).await
    }
}

#[tokio::test]
async fn a_partial_failure_keeps_only_the_failed_items_until_they_reach_the_dlq() {
    let fixture = Fixture::start().await;
    fixture.send(&["ok-1", "fail-1", "ok-2"]).await;

    // The failing message comes back once (maxReceiveCount 2), then lands in the DLQ.
    let dead = eventually(Duration::from_secs(30), "fail-1 in the DLQ", || async {
        let dead = fixture.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead, vec!["fail-1"]);
    assert_eq!(fixture.recorder.times_seen("fail-1"), 2, "handed out exactly maxReceiveCount times");
    // The successful ones were deleted after their first invocation: by now (over two
    // visibility timeouts later) they would have come back otherwise.
    assert_eq!(fixture.recorder.times_seen("ok-1"), 1);
    assert_eq!(fixture.recorder.times_seen("ok-2"), 1);
    assert!(fixture.queue_is_empty().await);
    fixture.stack.stop().await;
}

/// Sends `[first, ok]` as one batch whose invocation fails the first time, then checks that
/// both came back once and were deleted after the successful second invocation.
async fn assert_whole_batch_returns(first: &str, ok: &str) {
    let fixture = Fixture::start().await;
    fixture.send(&[first, ok]).await;
    eventually(Duration::from_secs(30), "both messages handled twice", || async {
        (fixture.recorder.times_seen(first) == 2 && fixture.recorder.times_seen(ok) == 2).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the queue to empty", || async {
        fixture.queue_is_empty().await.then_some(())
    })
    .await;
    assert!(fixture.dead_letters().await.is_empty());
    fixture.stack.stop().await;
}

#[tokio::test]
async fn a_handler_error_keeps_the_whole_batch() {
    assert_whole_batch_returns("explode-1", "ok-3").await;
}

#[tokio::test]
async fn an_invalid_batch_response_keeps_the_whole_batch() {
    assert_whole_batch_returns("forge-1", "ok-4").await;
}
