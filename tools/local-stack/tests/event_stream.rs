//! The event stream end to end, through the local stack with every role enforced: the
//! notifications table's stream → the publish-events function → the stack's EventBridge bus →
//! its rule → the events queue, read here as a consumer would.
//! - a notification's life (accepted → sent → delivered → opened → clicked) arrives as exactly
//!   those events, in order, each matching `schemas/notification-event.v1.json`;
//! - a bus outage during a run delays no send and loses no event: once the bus is back, every
//!   event the records committed arrives;
//! - past the retry window, events are parked in the events DLQ and redriven from there.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::api::{Api, every_delivery_sent, unique};
use support::events::{Consumer, strings};
use support::fault_proxy::FaultProxy;
use support::{endpoint, eventually};

/// What only a PutEvents request body names: the bus outage refuses exactly those.
const PUT_EVENTS: &str = "\"EventBusName\"";
/// The timeline entries that are published (the rest are an attempt's steps).
const PUBLISHED: [&str; 14] = [
    "accepted",
    "scheduled",
    "sent",
    "failed",
    "skipped",
    "parked",
    "redriven",
    "delivered",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "converted",
    "cancelled",
];

/// The published events notification `id`'s record committed, in timeline order.
async fn committed(api: &Api, id: &str) -> Vec<String> {
    let record = api.notification(id).await;
    record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_string())
        .filter(|kind| PUBLISHED.contains(&kind.as_str()))
        .collect()
}

#[tokio::test]
async fn a_notifications_life_arrives_as_exactly_its_events_in_order() {
    let api = Api::start().await;
    let mut consumer = Consumer::new(&api);
    let (user, template) = (unique("u"), unique("t"));
    let address = format!("{}@example.com", unique("ada"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"email": address}))).await;
    let content = json!({"default_locale": "en", "tracking": true, "locales": {"en": {"email": {
        "subject": "Your order", "html": "<p><a href=\"https://shop.example.com/o/1\">Order</a></p>", "text": "Hi"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    api.wait_for_notification(&id, "the email to be sent", every_delivery_sent).await;
    consumer.wait_for(&api, &id, &strings(&["accepted", "sent"])).await;

    api.publish_ses_event(&id, &address, "Delivery", json!({"recipients": [address], "smtpResponse": "250 ok"})).await;
    api.wait_for_notification(&id, "the email to be delivered", |view| view["deliveries"][0]["status"] == "delivered")
        .await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (pixels, _) = api.tracking_links(&id, "o").await;
    assert_eq!(http.get(&pixels[0]).send().await.unwrap().status().as_u16(), 200);
    let (clicks, _) = api.tracking_links(&id, "c").await;
    for _ in 0..2 {
        assert_eq!(http.get(&clicks[0]).send().await.unwrap().status().as_u16(), 302);
    }

    let life = strings(&["accepted", "sent", "delivered", "opened", "clicked"]);
    consumer.wait_for(&api, &id, &life).await;
    let events = &consumer.read[&id];
    let sent = events.iter().find(|event| event["type"] == "sent").unwrap();
    assert_eq!((sent["channel"].as_str(), sent["provider"].as_str()), (Some("email"), Some("ses")), "{sent}");
    assert_eq!(sent["template"], template.as_str());
    assert_eq!(sent["user_id"], user.as_str());
    let sequences: Vec<u64> = events.iter().map(|event| event["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "in timeline order: {sequences:?}");
    let text = serde_json::to_string(events).unwrap();
    assert!(!text.contains(&address), "no contact data in events: {text}");

    // Nothing more arrives: one event per change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.read(&api).await;
    assert_eq!(consumer.read[&id].len(), life.len(), "{:?}", consumer.read[&id]);
    assert_eq!(api.stack.denials(), vec![], "every call the stream makes is granted");
    api.stack.stop().await;
}

#[tokio::test]
async fn a_bus_outage_delays_no_send_and_loses_no_event() {
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let api = Api::start_with(&proxy.url, BTreeMap::new()).await;
    let mut consumer = Consumer::new(&api);
    let users = api.users_with_phone(8).await;
    let template = unique("t");
    api.call(
        Method::PUT,
        &format!("/v1/templates/{template}"),
        Some(json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "Your code"}}}})),
    )
    .await;

    proxy.refuse_next(PUT_EVENTS, u32::MAX);
    let mut ids = Vec::new();
    for user in &users {
        let body = json!({"user_id": user, "template": template});
        let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
        ids.push(reply.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        api.wait_for_notification(id, "the SMS to be sent while the bus is down", every_delivery_sent).await;
    }
    eventually(Duration::from_secs(30), "the stream to try the bus", || async {
        (proxy.targeted_faults.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    consumer.read(&api).await;
    assert!(consumer.read.is_empty(), "the bus is down: {:?}", consumer.read);

    proxy.refuse_next(PUT_EVENTS, 0);
    for id in &ids {
        let expected = committed(&api, id).await;
        assert_eq!(expected, strings(&["accepted", "sent"]), "{id}");
        consumer.wait_for(&api, id, &expected).await;
    }
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}

#[tokio::test]
async fn events_past_the_retry_window_are_parked_and_redriven_once_the_bus_is_back() {
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let parameters = BTreeMap::from([("EventsRetryWindowSeconds".to_string(), "60".to_string())]);
    let api = Api::start_with(&proxy.url, parameters).await;
    let mut consumer = Consumer::new(&api);
    proxy.refuse_next(PUT_EVENTS, u32::MAX);
    let (id, _) = api.send_sms().await;
    api.wait_for_notification(&id, "the SMS to be sent", every_delivery_sent).await;

    let dead_letters = api.stack.deployed.queue("EventsDeadLetterQueue").unwrap().0.to_string();
    eventually(Duration::from_secs(120), "the events to be parked past the window", || async {
        (api.queue_depth("EventsDeadLetterQueue").await >= 2).then_some(())
    })
    .await;
    proxy.refuse_next(PUT_EVENTS, 0);
    let publisher = api.stack.function("PublishEventsFunction").unwrap();
    let report = publisher.invoke(json!({"action": "redrive"})).await.unwrap();
    assert_eq!(report, json!({"published": 2, "unreadable": 0}));
    // A redrive is not ordered (the DLQ is a standard queue): each event says its `sequence`.
    consumer.wait_until(&api, &id, &strings(&["accepted", "sent"]), false).await;
    assert!(support::queue_is_empty(&api.clients.sqs, &dead_letters).await);
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}

#[tokio::test]
async fn with_the_stream_off_the_stack_has_no_bus_stream_or_publisher_and_sends_as_before() {
    let parameters = BTreeMap::from([("EventStream".to_string(), "disabled".to_string())]);
    let api = Api::start_with(&endpoint(), parameters).await;
    let resources = &api.stack.deployed.resources;
    for absent in ["NotificationEventBus", "PublishEventsFunction", "NotificationEventsQueue", "EventsDeadLetterQueue"]
    {
        assert!(!resources.contains_key(absent), "{absent} exists with the stream off");
    }
    let Some(local_stack::resolve::Physical::Table { stream_arn, .. }) = resources.get("NotificationsTable") else {
        panic!("the template has a NotificationsTable")
    };
    assert_eq!(stream_arn, &None, "no table stream: nothing to pay for");
    let (id, _) = api.send_sms().await;
    api.wait_for_notification(&id, "the SMS to be sent", every_delivery_sent).await;
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}

#[tokio::test]
async fn only_the_event_types_the_deployment_names_are_published() {
    let parameters = BTreeMap::from([("EventTypes".to_string(), "sent,converted".to_string())]);
    let api = Api::start_with(&endpoint(), parameters).await;
    let mut consumer = Consumer::new(&api);
    let (id, _) = api.send_sms().await;
    api.wait_for_notification(&id, "the SMS to be sent", every_delivery_sent).await;
    let reply =
        api.call(Method::POST, &format!("/v1/notifications/{id}/events"), Some(json!({"type": "converted"}))).await;
    assert_eq!(reply.status, 201);
    consumer.wait_for(&api, &id, &strings(&["sent", "converted"])).await;
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}
