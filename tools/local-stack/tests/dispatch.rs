//! The dispatchers end to end through the local stack: what reaches the emulator's providers,
//! how failures are classified, and the state machine under injected provider throttling.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, ios_token, unique};
use support::fault_proxy::FaultProxy;
use support::{emulator_state, endpoint, recorded_sms};

/// A user with the given contact data and a template with every channel.
async fn user_and_template(api: &Api, contacts: Value, transactional: bool) -> (String, String) {
    let (user, template) = (unique("u"), unique("t"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await;
    let content = json!({"default_locale": "en", "transactional": transactional, "locales": {"en": {
        "push": {"title": "Hi {{ name }}", "body": "Order {{ order }} shipped", "sound": "chime"},
        "sms": {"body": "Order {{ order }} shipped, {{ name }}"},
        "email": {"subject": "Order {{ order }}", "html": "<p>Hi <b>{{ name }}</b></p>", "text": "Hi {{ name }}, order {{ order }}"}
    }}});
    assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await.status, 201);
    (user, template)
}

async fn send(api: &Api, user: &str, template: &str, order: &str, channels: &[&str]) -> String {
    let body =
        json!({"user_id": user, "template": template, "params": {"order": order, "name": "Ada"}, "channels": channels});
    let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_string()
}

/// How many SMS for `order` the emulator recorded.
async fn sms_for(order: &str) -> usize {
    recorded_sms().await.iter().filter(|sms| sms["message"] == format!("Order {order} shipped, Ada").as_str()).count()
}

/// Polls the notification until every delivery has an outcome.
async fn completed(api: &Api, id: &str) -> Value {
    api.wait_for_notification(id, "the notification to complete", |view| view["status"] == "completed").await
}

/// The emulator's platform endpoints whose token is one of `tokens`.
async fn endpoints_for(tokens: &[&str]) -> Vec<Value> {
    let state = emulator_state().await;
    state["sns"]["PlatformEndpoint"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|endpoint| tokens.contains(&endpoint["token"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

#[tokio::test]
async fn push_reaches_ios_and_android_with_each_platforms_payload() {
    let api = Api::start().await;
    let (user, template) = user_and_template(&api, json!({}), false).await;
    let (ios, android) = (ios_token(), format!("fcm-token:{}", ios_token()));
    for (platform, token) in [("ios", &ios), ("android", &android)] {
        let reply = api
            .call(
                Method::POST,
                &format!("/v1/users/{user}/devices"),
                Some(json!({"platform": platform, "token": token})),
            )
            .await;
        assert_eq!(reply.status, 201);
    }
    let id = send(&api, &user, &template, "42", &["push"]).await;
    let notification = completed(&api, &id).await;
    assert!(notification["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "sent"), "{notification}");

    let endpoints = endpoints_for(&[&ios, &android]).await;
    assert_eq!(endpoints.len(), 2, "one platform endpoint per device");
    for endpoint in endpoints {
        let messages: Vec<Value> = endpoint["messages"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| serde_json::from_str(m.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(messages.len(), 1, "one push per device");
        let message = &messages[0];
        if endpoint["token"] == ios.as_str() {
            let apns: Value = serde_json::from_str(message["APNS"].as_str().unwrap()).unwrap();
            assert_eq!(
                apns["aps"],
                json!({"alert": {"title": "Hi Ada", "body": "Order 42 shipped"}, "sound": "chime"})
            );
            assert_eq!(apns["notification_id"], id.as_str());
        } else {
            let fcm: Value = serde_json::from_str(message["GCM"].as_str().unwrap()).unwrap();
            assert_eq!(
                fcm["fcmV1Message"]["message"]["notification"],
                json!({"title": "Hi Ada", "body": "Order 42 shipped"})
            );
            assert_eq!(fcm["fcmV1Message"]["message"]["data"]["notification_id"], id.as_str());
        }
    }
    api.stack.stop().await;
}

#[tokio::test]
async fn sms_and_email_land_rendered_with_one_click_unsubscribe() {
    let api = Api::start().await;
    let address = format!("{}@example.com", unique("ada"));
    let (user, template) = user_and_template(&api, json!({"phone": "+12015550123", "email": address}), false).await;
    let order = unique("order");
    let id = send(&api, &user, &template, &order, &["sms", "email"]).await;
    let notification = completed(&api, &id).await;
    assert!(notification["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "sent"), "{notification}");
    let events: Vec<&str> =
        notification["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "sent").count(), 2, "{events:?}");

    let sms = sms_for(&order).await;
    assert_eq!(sms, 1);

    let state = emulator_state().await;
    let raw = state["ses"]["RawMessage"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|message| message["destinations"].to_string().contains(&address))
        .expect("the email reached SES")["raw_data"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(raw.contains(&format!("Subject: Order {order}")), "{raw}");
    assert!(
        raw.contains("Hi <b>Ada</b>") && raw.contains(&format!("Hi Ada, order {order}")),
        "html and text parts: {raw}"
    );
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{raw}");
    let link =
        raw.lines().find_map(|line| line.strip_prefix("List-Unsubscribe: <")).expect("a List-Unsubscribe header");
    let link = link.trim_end_matches('>').to_string();
    assert!(link.starts_with(&format!("{}/v1/unsubscribe/", api.stack.api_url)), "{link}");

    // One click (what mail clients POST) opts the user out of email; a forged link does nothing.
    let path = link.trim_start_matches(&api.stack.api_url).to_string();
    let forged = api.call_as(None, Method::POST, &format!("{path}x"), None, &[]).await;
    assert_eq!(forged.status, 404);
    let form = api.call_as(None, Method::GET, &path, None, &[]).await;
    assert_eq!(form.status, 200);
    assert_eq!(
        api.call(Method::GET, &format!("/v1/users/{user}/preferences"), None).await.body["email"],
        true,
        "GET changes nothing"
    );
    let clicked =
        api.call_as(None, Method::POST, &path, None, &[("content-type", "application/x-www-form-urlencoded")]).await;
    assert_eq!(clicked.status, 200);
    assert_eq!(api.call(Method::GET, &format!("/v1/users/{user}/preferences"), None).await.body["email"], false);
    api.stack.stop().await;
}

#[tokio::test]
async fn a_disabled_endpoint_retires_the_device() {
    let api = Api::start().await;
    let (user, template) = user_and_template(&api, json!({}), true).await;
    let token = ios_token();
    api.call(Method::POST, &format!("/v1/users/{user}/devices"), Some(json!({"platform": "ios", "token": token})))
        .await;
    let first = send(&api, &user, &template, "1", &["push"]).await;
    assert_eq!(completed(&api, &first).await["deliveries"][0]["status"], "sent");

    // The platform (APNs) reports the token dead: SNS disables the endpoint.
    let endpoint_arn = endpoints_for(&[&token]).await[0]["arn"].as_str().unwrap().to_string();
    api.clients
        .sns
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint_arn)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();

    let second = send(&api, &user, &template, "2", &["push"]).await;
    let delivery = completed(&api, &second).await["deliveries"][0].clone();
    assert_eq!((delivery["status"].clone(), delivery["attempts"].clone()), (json!("failed"), json!(1)), "{delivery}");
    assert_eq!(delivery["error"]["class"], "permanent");
    assert_eq!(delivery["error"]["code"], "EndpointDisabled");
    assert_eq!(api.call(Method::GET, &format!("/v1/users/{user}"), None).await.body["devices"][0]["active"], false);

    // Intake may still plan the device for a few seconds (its user cache); the dispatcher
    // re-checks at send time either way, and nothing reaches the dead endpoint.
    let third = send(&api, &user, &template, "3", &["push"]).await;
    let notification = completed(&api, &third).await;
    let reasons: Vec<&Value> = notification["deliveries"].as_array().unwrap().iter().map(|d| &d["reason"]).collect();
    assert!(reasons.iter().all(|reason| **reason == "device_inactive"), "{notification}");
    assert!(reasons.is_empty() || notification["skipped"].as_array().unwrap().is_empty());
    let messages = endpoints_for(&[&token]).await[0]["messages"].as_object().unwrap().len();
    assert_eq!(messages, 1, "only the first push reached the endpoint");

    // The app registers the token again (it is live again): the endpoint is re-enabled.
    let registered = api
        .call(Method::POST, &format!("/v1/users/{user}/devices"), Some(json!({"platform": "ios", "token": token})))
        .await;
    assert_eq!((registered.status.as_u16(), registered.body["active"].clone()), (201, json!(true)));
    let fourth = send(&api, &user, &template, "4", &["push"]).await;
    let notification = completed(&api, &fourth).await;
    assert!(notification["deliveries"].as_array().unwrap().iter().any(|d| d["status"] == "sent"), "{notification}");
    assert_eq!(endpoints_for(&[&token]).await[0]["messages"].as_object().unwrap().len(), 2);
    api.stack.stop().await;
}

#[tokio::test]
async fn an_unverified_sender_fails_permanently_after_one_attempt() {
    let parameters = BTreeMap::from([("EmailFromAddress".to_string(), "noreply@unverified.example.org".to_string())]);
    let api = Api::start_with(&endpoint(), parameters).await;
    let (user, template) = user_and_template(&api, json!({"email": "bob@example.com"}), false).await;
    let id = send(&api, &user, &template, "1", &["email"]).await;
    let delivery = completed(&api, &id).await["deliveries"][0].clone();
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["error"]["class"], "permanent");
    assert_eq!(delivery["error"]["code"], "MessageRejected");
    api.stack.stop().await;
}

#[tokio::test]
async fn a_send_whose_outcome_write_fails_is_recorded_later_and_not_sent_again() {
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let api = Api::start_with(&proxy.url, BTreeMap::new()).await;
    let (user, template) = user_and_template(&api, json!({"phone": "+12015550123"}), false).await;
    // Every try the SDK makes of the first `sent` write fails, after the SMS went out.
    proxy.refuse_next(r#"":status":{"S":"sent"}"#, 3);
    let order = unique("order");
    let id = send(&api, &user, &template, &order, &["sms"]).await;
    let notification = completed(&api, &id).await;
    assert_eq!(notification["deliveries"][0]["status"], "sent", "{notification}");
    assert_eq!(proxy.targeted_faults.load(Ordering::SeqCst), 3, "the outcome write failed");
    let sms = sms_for(&order).await;
    assert_eq!(sms, 1, "the lease was kept, not released for a second send: {notification}");
    api.stack.stop().await;
}

#[tokio::test]
async fn with_30_percent_provider_throttling_every_delivery_is_sent_exactly_once_and_no_throttle_is_a_failure() {
    let proxy = FaultProxy::start(&endpoint(), 0.3).await;
    let api = Api::start_with(&proxy.url, BTreeMap::new()).await;
    let mut sent = Vec::new();
    for _ in 0..12 {
        let address = format!("{}@example.com", unique("u"));
        let (user, template) = user_and_template(&api, json!({"phone": "+12015550123", "email": address}), false).await;
        let order = unique("order");
        sent.push((send(&api, &user, &template, &order, &["sms", "email"]).await, order, address));
    }
    for (id, order, address) in &sent {
        let notification = completed(&api, id).await;
        for delivery in notification["deliveries"].as_array().unwrap() {
            assert_eq!(delivery["status"], "sent", "{notification}");
            // A throttled send waits for a later slot: it spends none of the retry budget.
            let waits = delivery["waits"].as_u64().unwrap_or(0);
            assert_eq!(delivery["attempts"].as_u64(), Some(1 + waits), "no failed attempt: {notification}");
        }
        let events = notification["events"].as_array().unwrap();
        assert!(!events.iter().any(|event| event["type"] == "retrying"), "{notification}");
        let sms = sms_for(order).await;
        assert_eq!(sms, 1, "exactly one SMS for {id}");
        let emails = emulator_state().await["ses"]["RawMessage"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|message| message["destinations"].to_string().contains(address.as_str()))
            .count();
        assert_eq!(emails, 1, "exactly one email for {id}");
    }
    assert!(proxy.throttled.load(Ordering::SeqCst) > 0, "faults were injected");
    assert_eq!(proxy.forwarded_sends.load(Ordering::SeqCst), 24, "one successful provider call per delivery");
    api.stack.stop().await;
}
