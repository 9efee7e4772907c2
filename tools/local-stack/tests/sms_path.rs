//! The first real path: an HTTP request to the intake ends as an SMS recorded by the
//! emulator's SNS, through the production handlers, queues and event-source mapping.

mod support;

use std::time::Duration;

use notify::store::notifications::NotificationStore;
use serde_json::{Value, json};
use support::{demo_stack, eventually, recorded_sms};

#[tokio::test]
async fn a_notification_request_ends_as_an_sms_in_the_emulator() {
    // Given the local stack with its demo app, user and template
    let (stack, clients, app) = demo_stack().await;
    let name = format!("Ada-{}", uuid::Uuid::new_v4().simple());

    // When a service asks for an SMS
    let response = reqwest::Client::new()
        .post(format!("{}/v1/notifications", stack.api_url))
        .basic_auth(&app.app_key, Some(&app.app_secret))
        .json(&json!({"user_id": "demo-user", "template": "welcome", "params": {"name": name}, "channels": ["sms"]}))
        .send()
        .await
        .unwrap();

    // Then it is accepted with one queued SMS delivery
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["deliveries"], json!([{"channel": "sms", "target": "+12015550123", "status": "queued"}]));

    // And the emulator's SNS records the rendered text to the user's number
    let expected = format!("Hi {name}, welcome to notify!");
    let sms = eventually(Duration::from_secs(20), "the SMS in the emulator", || async {
        recorded_sms().await.into_iter().find(|sms| sms["message"] == expected.as_str())
    })
    .await;
    assert_eq!(sms["phone_number"], "+12015550123");

    // And the notification is in the log
    let table = local_stack::demo::tables(&stack.deployed).unwrap().notifications;
    let record = NotificationStore::new(clients.dynamodb.clone(), table)
        .get(&body["id"].as_str().unwrap().into())
        .await
        .unwrap();
    assert_eq!(record.expect("logged").deliveries["sms"].target, "+12015550123");
    stack.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_challenge() {
    let (stack, _, app) = demo_stack().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/notifications", stack.api_url))
        .basic_auth(&app.app_key, Some("sk_wrong"))
        .json(&json!({"user_id": "demo-user", "template": "welcome", "params": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    stack.stop().await;
}

#[tokio::test]
async fn routes_the_template_does_not_declare_are_not_found() {
    let (stack, _, _) = demo_stack().await;
    let response = reqwest::get(format!("{}/v1/nowhere", stack.api_url)).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Not Found"}));
    stack.stop().await;
}
