//! notifyctl for on-call: `status` and `dlq list/show` explain a delivery parked in a DLQ from
//! the notification log, without reading logs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use notify::domain::channel::Channel;
use notify::domain::notification::{DeliveryFailure, DeliveryRecord, NotificationRecord, TimelineEvent};
use notify::error::FailureClass;
use notify::ports::{AttemptOutcome, Claim, DeliveryLog};
use notify::store::notifications::NotificationStore;
use serde_json::json;
use support::notifyctl;

#[tokio::test]
async fn a_parked_delivery_is_grouped_by_its_error_and_explained() {
    let (stack, outputs, directory) = support::start().await;
    let sdk = local_stack::emulator_config(&std::env::var("NOTIFY_TEST_ENDPOINT").unwrap()).await;
    let table = local_stack::demo::tables(&stack.deployed).unwrap().notifications;
    let store = NotificationStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);

    // A logged SMS delivery whose last attempt was throttled, and its message in the SMS DLQ.
    let id = uuid::Uuid::now_v7().to_string();
    let now = notify::time::now_rfc3339();
    let body = json!({"notification_id": id, "delivery_id": "sms", "user_id": "u", "template": "t", "transactional": false, "channel": "sms", "to": "+12015550123", "body": "hi"}).to_string();
    let delivery = DeliveryRecord::queued(Channel::Sms, "+12015550123".into(), &now, None);
    let record = NotificationRecord {
        id: id.as_str().into(),
        app_key: "ak_test".into(),
        idempotency_key: None,
        request_hash: "h".into(),
        user_id: "u".into(),
        template: "t".into(),
        created_at: now.clone(),
        expires_at: notify::time::now_epoch_seconds() + 3600,
        deliveries: BTreeMap::from([("sms".into(), delivery)]),
        skipped: vec![],
        events: vec![TimelineEvent {
            at: now,
            kind: notify::domain::lifecycle::TimelineKind::Accepted,
            channel: None,
            delivery: None,
        }],
        sweep_shard: None,
        sweep_at: None,
        cancellation_key: None,
        cancel_scope: None,
        send_at: None,
        conversion: None,
    };
    store.create(&record, notify::time::now_epoch_seconds()).await.unwrap();
    let now_ms = notify::time::now_epoch_millis();
    let Claim::Taken { lease, .. } =
        store.claim(&id.as_str().into(), &"sms".into(), Channel::Sms, now_ms, Duration::from_secs(60)).await.unwrap()
    else {
        panic!("a queued delivery is taken")
    };
    let throttled = DeliveryFailure {
        class: FailureClass::Transient,
        code: "InternalError".into(),
        message: "Internal Error".into(),
        provider: Some("sns".into()),
    };
    store
        .record(&id.as_str().into(), &"sms".into(), Channel::Sms, lease, &AttemptOutcome::Retrying(throttled))
        .await
        .unwrap();
    let dlq = stack.deployed.queue("SmsDeadLetterQueue").unwrap().0.to_string();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let message_id = sqs.send_message().queue_url(&dlq).message_body(body).send().await.unwrap().message_id.unwrap();
    sqs.send_message().queue_url(&dlq).message_body("not a delivery").send().await.unwrap();

    let groups = notifyctl(&outputs, &["dlq", "list", "--channel", "sms"]).await;
    let groups: Vec<(String, String, u64)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (g["class"].as_str().unwrap().into(), g["code"].as_str().unwrap().into(), g["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("transient".into(), "InternalError".into(), 1),
            ("unreadable".into(), "not a delivery message".into(), 1)
        ]
    );

    let shown = notifyctl(&outputs, &["dlq", "show", &message_id]).await;
    assert_eq!((shown["class"].clone(), shown["code"].clone()), (json!("transient"), json!("InternalError")));
    let events: Vec<&str> =
        shown["notification"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["accepted", "sending", "retrying"]);

    let status = notifyctl(&outputs, &["status", &id]).await;
    assert_eq!(status["deliveries"][0]["error"]["code"], "InternalError");
    assert_eq!(status["deliveries"][0]["attempts"], 1);
    // Reading the DLQ took nothing out of it.
    assert_eq!(notifyctl(&outputs, &["dlq", "list"]).await.as_array().unwrap().len(), 2);
    stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}
