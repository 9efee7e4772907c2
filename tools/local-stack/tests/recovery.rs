//! The retry function, invoked directly. Redrive: deliveries that already have an outcome are
//! dropped from the DLQ, messages that are not deliveries stay. (The whole on-call path, a
//! delivery parked by a persistent fault and redriven with notifyctl, is in notifyctl's tests.)
//! Sweep: a notification whose enqueue failed is accepted and sent by the sweep; one whose
//! enqueue succeeded never enters its index.

mod support;

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use notify::domain::notification::NotificationRecord;
use notify::store::notifications::NotificationStore;
use serde_json::{Value, json};
use support::api::{Api, every_delivery_sent};
use support::fault_proxy::FaultProxy;
use support::{endpoint, recorded_sms};

async fn redrive(api: &Api) -> Value {
    let retry = api.stack.function("RetryFunction").unwrap();
    retry.invoke(json!({"action": "redrive", "channel": "sms"})).await.unwrap()
}

#[tokio::test]
async fn a_redrive_drops_deliveries_that_already_have_an_outcome_and_leaves_strangers() {
    let api = Api::start().await;
    let (id, text) = api.send_sms().await;
    api.wait_for_notification(&id, "the delivery to be sent", every_delivery_sent).await;

    // A stale copy of the sent delivery, and a message that is no delivery at all, in the DLQ.
    let record = record(&api, &id).await;
    let dlq = api.stack.deployed.queue("SmsDeadLetterQueue").unwrap().0.to_string();
    let delivery = &record.deliveries["sms"];
    let stale = json!({"notification_id": id, "delivery_id": "sms", "user_id": record.user_id, "template": record.template, "transactional": false, "channel": "sms", "to": delivery.target, "body": text});
    for body in [stale.to_string(), "not a delivery".to_string()] {
        api.clients.sqs.send_message().queue_url(&dlq).message_body(body).send().await.unwrap();
    }
    let report = redrive(&api).await;
    assert_eq!(
        (report["redriven"].clone(), report["already_finished"].clone(), report["left_in_dlq"].clone()),
        (json!(0), json!(1), json!(1)),
        "{report}"
    );
    assert_eq!(recorded_sms().await.iter().filter(|sms| sms["message"] == text.as_str()).count(), 1, "no second send");
    api.stack.stop().await;
}

async fn record(api: &Api, id: &str) -> NotificationRecord {
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    NotificationStore::new(api.clients.dynamodb.clone(), table).get(&id.into()).await.unwrap().unwrap()
}

async fn sweep(api: &Api) -> Value {
    api.stack.function("RetryFunction").unwrap().invoke(json!({"action": "sweep"})).await.unwrap()
}

/// Makes a record in the sweep's index due now, as if accepted ten minutes ago.
async fn make_due(api: &Api, id: &str) {
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let then = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    api.clients
        .dynamodb
        .update_item()
        .table_name(table)
        .key("id", AttributeValue::S(id.to_string()))
        .update_expression("SET created_at = :then, sweep_at = :now")
        .expression_attribute_values(":then", AttributeValue::S(notify::time::rfc3339(then)))
        .expression_attribute_values(":now", AttributeValue::N(notify::time::now_epoch_seconds().to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_notification_sqs_did_not_take_is_accepted_and_sent_by_the_sweep_and_no_other_is_swept() {
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let api = Api::start_with(&proxy.url, BTreeMap::new()).await;
    let (sent, _) = api.send_sms().await;
    api.wait_for_notification(&sent, "the delivery to be sent", every_delivery_sent).await;
    let enqueued = record(&api, &sent).await;
    assert_eq!(enqueued.sweep_at, None, "an enqueued notification costs the sweep nothing");
    assert!(enqueued.deliveries.values().all(|d| d.message.is_none()), "nor its record a message body");

    // Every try the SDK makes of the enqueue fails: still accepted, and left for the sweep.
    proxy.refuse_next(r#""MessageBody""#, 3);
    let (id, text) = api.send_sms().await;
    assert_eq!(proxy.targeted_faults.load(std::sync::atomic::Ordering::SeqCst), 3, "the enqueue failed");
    let stranded = record(&api, &id).await;
    let due = stranded.sweep_at.expect("in the sweep's index");
    assert!(stranded.deliveries["sms"].message.is_some(), "with the message SQS refused");
    assert!(due > notify::time::now_epoch_seconds(), "due after a while, not at once");

    // Due now, and SQS refuses the sweep too: it looks again within a minute, not later.
    make_due(&api, &id).await;
    proxy.refuse_next(r#""MessageBody""#, 3);
    let report = sweep(&api).await;
    assert_eq!((report["examined"].clone(), report["not_enqueued"].clone()), (json!(1), json!(1)), "{report}");
    let next = record(&api, &id).await.sweep_at.expect("still in the sweep's index");
    assert!(next <= notify::time::now_epoch_seconds() + 60, "looked at again soon, not ten minutes out");

    // Then the sweep enqueues it and the dispatcher sends it, once.
    make_due(&api, &id).await;
    let report = sweep(&api).await;
    assert_eq!((report["examined"].clone(), report["requeued"].clone()), (json!(1), json!(1)), "{report}");
    api.wait_for_notification(&id, "the swept delivery to be sent", every_delivery_sent).await;
    assert_eq!(recorded_sms().await.iter().filter(|sms| sms["message"] == text.as_str()).count(), 1);
    api.stack.stop().await;
}
