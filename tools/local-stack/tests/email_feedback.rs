//! SES feedback end to end: real-shaped SES event-publishing records go to the template's
//! email events topic (the emulator emits none itself), SNS delivers them to the events queue,
//! and the email function records them: DELIVERY → `delivered`; a hard bounce → `bounced` and
//! the address suppressed, so the next notification to it is `skipped: suppressed` with no
//! provider call; a soft bounce suppresses nothing; a complaint → `complained` and suppressed.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::emulator_state;

/// A user with a fresh address and an email template; returns (user, template, address).
async fn email_user(api: &Api) -> (String, String, String) {
    let (user, template) = (unique("u"), unique("t"));
    let address = format!("{}@example.com", unique("ada"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"email": address}))).await;
    let content = json!({"default_locale": "en", "locales": {"en": {"email": {"subject": "Hi", "html": "<p>{{ text }}</p>", "text": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    (user, template, address)
}

async fn send(api: &Api, user: &str, template: &str) -> Value {
    let body = json!({"user_id": user, "template": template, "params": {"text": unique("text")}});
    api.call(Method::POST, "/v1/notifications", Some(body)).await.body
}

async fn email_delivery(api: &Api, id: &str, status: &str) -> Value {
    api.wait_for_notification(id, &format!("the email delivery to be {status}"), |view| {
        view["deliveries"]
            .as_array()
            .is_some_and(|all| all.iter().any(|d| d["channel"] == "email" && d["status"] == status))
    })
    .await
}

async fn emails_to(address: &str) -> usize {
    let state = emulator_state().await;
    state["ses"]["RawMessage"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["destinations"].to_string().contains(address))
        .count()
}

/// The email's skip reason, whether intake or the dispatcher skipped it.
async fn email_skip_reason(api: &Api, body: &Value) -> String {
    let id = body["id"].as_str().unwrap();
    if let Some(skipped) = body["skipped"].as_array().unwrap().iter().find(|s| s["channel"] == "email") {
        return skipped["reason"].as_str().unwrap().to_string();
    }
    email_delivery(api, id, "skipped").await["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == "email")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn delivery_and_hard_bounce_feedback_update_the_delivery_and_suppress_the_address() {
    let api = Api::start().await;
    let (user, template, address) = email_user(&api).await;

    let first = send(&api, &user, &template).await;
    let id = first["id"].as_str().unwrap().to_string();
    email_delivery(&api, &id, "sent").await;
    api.publish_ses_event(
        &id,
        &address,
        "Delivery",
        json!({"timestamp": "2026-11-22T10:00:01.000Z", "recipients": [address], "smtpResponse": "250 ok"}),
    )
    .await;
    let delivered = email_delivery(&api, &id, "delivered").await;
    let events: Vec<&str> =
        delivered["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events.last(), Some(&"delivered"), "{events:?}");

    // A duplicate of the event (SNS delivers at least once) changes nothing.
    api.publish_ses_event(&id, &address, "Delivery", json!({"recipients": [address]})).await;

    // The recipient's server bounces a later email for good.
    let second = send(&api, &user, &template).await;
    let bounced_id = second["id"].as_str().unwrap().to_string();
    email_delivery(&api, &bounced_id, "sent").await;
    api.publish_ses_event(
        &bounced_id,
        &address.to_uppercase(),
        "Bounce",
        support::api::hard_bounce(&address.to_uppercase()),
    )
    .await;
    let bounced = email_delivery(&api, &bounced_id, "bounced").await;
    let delivery = bounced["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == "email").unwrap();
    assert_eq!(delivery["error"]["code"], "Bounce");
    assert!(delivery["error"]["message"].as_str().unwrap().contains("550 5.1.1"), "{delivery}");

    let sent_before = emails_to(&address).await;
    assert_eq!(sent_before, 2);
    let third = send(&api, &user, &template).await;
    assert_eq!(email_skip_reason(&api, &third).await, "suppressed");
    assert_eq!(emails_to(&address).await, sent_before, "no provider call for a suppressed address");

    let again = api.notification(&id).await;
    let events = again["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["type"] == "delivered").count(), 1, "the duplicate event changed nothing");
    api.stack.stop().await;
}

#[tokio::test]
async fn a_soft_bounce_suppresses_nothing_and_a_complaint_suppresses_the_address() {
    let api = Api::start().await;
    let (user, template, address) = email_user(&api).await;

    let first = send(&api, &user, &template).await;
    let id = first["id"].as_str().unwrap().to_string();
    email_delivery(&api, &id, "sent").await;
    let soft = json!({"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": address}]});
    api.publish_ses_event(&id, &address, "Bounce", soft).await;
    api.wait_for_notification(&id, "the soft bounce on the timeline", |view| {
        view["events"].as_array().is_some_and(|events| events.iter().any(|e| e["type"] == "soft_bounced"))
    })
    .await;
    let still_sent = api.notification(&id).await;
    assert_eq!(still_sent["deliveries"][0]["status"], "sent");

    let second = send(&api, &user, &template).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    email_delivery(&api, &second_id, "sent").await;
    api.publish_ses_event(&second_id, &address, "Complaint", json!({"complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse", "timestamp": "2026-11-22T10:00:05.000Z", "feedbackId": "f-2"})).await;
    email_delivery(&api, &second_id, "complained").await;

    let third = send(&api, &user, &template).await;
    assert_eq!(email_skip_reason(&api, &third).await, "suppressed");
    assert_eq!(emails_to(&address).await, 2);
    api.stack.stop().await;
}
