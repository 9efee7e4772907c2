//! The retry function's redrive, invoked directly: deliveries that already have an outcome are
//! dropped from the DLQ, messages that are not deliveries stay. (The whole on-call path, a
//! delivery parked by a persistent fault and redriven with notifyctl, is in notifyctl's tests.)

mod support;

use serde_json::{Value, json};
use support::api::{Api, every_delivery_sent};
use support::recorded_sms;

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
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let record = notify::store::notifications::NotificationStore::new(api.clients.dynamodb.clone(), table)
        .get(&id)
        .await
        .unwrap()
        .unwrap();
    let dlq = api.stack.deployed.queue("SmsDeadLetterQueue").unwrap().0.to_string();
    for body in [record.deliveries["sms"].message.clone(), "not a delivery".to_string()] {
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
