//! Recovery end to end: a delivery that keeps failing is parked in the DLQ with its last
//! error on record, and after the fault is gone a redrive delivers it exactly once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::fault_proxy::FaultProxy;
use support::{endpoint, eventually, recorded_sms};

async fn dead_letters(api: &Api) -> u64 {
    let url = api.stack.deployed.queue("SmsDeadLetterQueue").unwrap().0.to_string();
    let attributes = api
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    attributes.values().next().unwrap().parse().unwrap()
}

/// A user, an SMS template and a notification to the user; returns its id and text.
async fn send_sms(api: &Api) -> (String, String) {
    let (user, template, text) = (unique("u"), unique("t"), unique("text"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template, "params": {"text": text}});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    (id, text)
}

async fn redrive(api: &Api) -> Value {
    let retry = api.stack.function("RetryFunction").unwrap();
    retry.invoke(json!({"action": "redrive", "channel": "sms"})).await.unwrap()
}

#[tokio::test]
async fn a_persistently_failing_delivery_is_parked_then_redriven_exactly_once() {
    // Every SMS send is throttled; retries come back after 1 s.
    let proxy = FaultProxy::start(&endpoint(), 1.0).await;
    let parameters = BTreeMap::from([
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        ("RetryMaxSeconds".to_string(), "1".to_string()),
    ]);
    let api = Api::start_with(&proxy.url, parameters).await;
    let (id, text) = send_sms(&api).await;

    eventually(Duration::from_secs(90), "the message in the SMS DLQ", || async {
        (dead_letters(&api).await == 1).then_some(())
    })
    .await;
    let parked = api.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.body["deliveries"][0].clone();
    assert_eq!(parked["status"], "queued");
    assert_eq!(parked["attempts"], 8, "maxReceiveCount attempts");
    assert_eq!(parked["error"], json!({"class": "transient", "code": "Throttling", "message": "Rate exceeded"}));

    // The fault is fixed; on-call redrives.
    proxy.set_share(0.0);
    let report = redrive(&api).await;
    assert_eq!((report["redriven"].clone(), report["dead_letters"].clone()), (json!(1), json!(1)), "{report}");
    let delivered = eventually(Duration::from_secs(30), "the delivery to be sent", || async {
        let body = api.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.body;
        (body["deliveries"][0]["status"] == "sent").then_some(body)
    })
    .await;
    let events: Vec<&str> =
        delivered["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "redriven").count(), 1, "{events:?}");
    assert_eq!(events.last(), Some(&"sent"));
    assert_eq!(recorded_sms().await.iter().filter(|sms| sms["message"] == text.as_str()).count(), 1);

    // A second redrive finds nothing to do.
    let again = redrive(&api).await;
    assert_eq!((again["redriven"].clone(), again["dead_letters"].clone()), (json!(0), json!(0)), "{again}");
    api.stack.stop().await;
}

#[tokio::test]
async fn a_redrive_drops_deliveries_that_already_have_an_outcome_and_leaves_strangers() {
    let api = Api::start().await;
    let (id, text) = send_sms(&api).await;
    eventually(Duration::from_secs(30), "the delivery to be sent", || async {
        let body = api.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.body;
        (body["deliveries"][0]["status"] == "sent").then_some(())
    })
    .await;

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
