//! Cancelling, end to end: deliveries waiting in a backlog (SMS at 1 per second) are taken back
//! by id or by cancellation key and never sent; what was sent or is sending is left alone; a
//! second cancel is a 409; another app's notification is a 404; the stats count cancellations.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use local_stack::provider_account::Quotas;
use notify::domain::app::Scope;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, fields, unique};
use support::{endpoint, eventually, project_template_text, queue_is_empty, recorded_sms};

/// A stack sending one SMS per second whose SMS dispatcher runs 8 s at most, so it holds a
/// delivery for a send slot about 3 s ahead (8 s less the margin a send needs) and sends any
/// later one back through its queue (`waiting`, queued again): a few notifications make a
/// backlog whose tail waits in the queue, where it can be cancelled.
async fn slow_sms_stack() -> (Api, String) {
    let template_text = project_template_text().replacen(
        "      Description: Sends SMS through SNS and Twilio, by route.",
        "      Description: Sends SMS through SNS and Twilio, by route.\n      Timeout: 8",
        1,
    );
    assert!(template_text.contains("Timeout: 8"), "the edit applied");
    let parameters = BTreeMap::from([
        ("SmsSendRate".to_string(), "1".to_string()),
        ("SmsRateLimitPerHour".to_string(), "100".to_string()),
    ]);
    let quotas = Quotas { sms: 1.0, ..Quotas::default() };
    let api = Api::start_in_account(&template_text, &endpoint(), parameters, quotas).await;
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await.status, 201);
    (api, template)
}

/// Whether a notification's SMS is where the dispatcher put it for now: sent, being sent, or
/// back in the queue waiting for its slot.
fn settled_for_now(view: &Value) -> bool {
    let delivery = &view["deliveries"][0];
    match delivery["status"].as_str() {
        Some("queued") => delivery["waits"].as_u64().is_some_and(|waits| waits > 0),
        Some("sending" | "sent") => true,
        _ => false,
    }
}

async fn wait_until_settled_for_now(api: &Api, ids: &[String]) {
    for id in ids {
        api.wait_for_notification(id, "the dispatcher to take it or send it back", settled_for_now).await;
    }
}

/// Sends one SMS with `text` to `user`, with a cancellation key if given: its id.
async fn send(api: &Api, user: &str, template: &str, text: &str, key: Option<&str>) -> String {
    let mut body = json!({"user_id": user, "template": template, "params": {"text": text}});
    if let Some(key) = key {
        body["cancellation_key"] = json!(key);
    }
    let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_string()
}

fn sms_status(view: &Value) -> &str {
    view["deliveries"][0]["status"].as_str().unwrap()
}

/// Waits until every one of `ids` has its SMS sent or cancelled and every message is gone from
/// the queue; then checks the emulator got exactly the SMS of the sent ones.
async fn settle(api: &Api, sent: &[(String, String)]) -> Vec<Value> {
    let mut views = Vec::new();
    for (id, _) in sent {
        views.push(api.wait_for_notification(id, "an outcome", |view| view["status"] == "completed").await);
    }
    // A cancelled delivery's message comes back from its wait, finds it cancelled, and is dropped.
    let queue = api.stack.deployed.queue("SmsQueue").unwrap().0.to_string();
    eventually(Duration::from_secs(60), "the SMS queue to be empty", || async {
        queue_is_empty(&api.clients.sqs, &queue).await.then_some(())
    })
    .await;
    let recorded = recorded_sms().await;
    for ((id, text), view) in sent.iter().zip(&views) {
        let copies = recorded.iter().filter(|sms| sms["message"] == text.as_str()).count();
        let expected = usize::from(sms_status(view) == "sent");
        assert_eq!(copies, expected, "{id} is {}: {copies} SMS", sms_status(view));
    }
    views
}

#[tokio::test]
async fn queued_notifications_are_cancelled_by_id_and_never_sent() {
    let (api, template) = slow_sms_stack().await;
    let users = api.users_with_phone(8).await;
    let mut sent = Vec::new();
    for user in &users {
        let text = unique("text");
        sent.push((send(&api, user, &template, &text, None).await, text));
    }
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    wait_until_settled_for_now(&api, &ids).await;

    // Cancel them all: what waits in the queue is cancelled, what is sending or sent is not.
    let mut cancelled = Vec::new();
    for id in &ids {
        let reply = api.call(Method::DELETE, &format!("/v1/notifications/{id}"), None).await;
        match reply.status.as_u16() {
            200 => {
                assert_eq!((sms_status(&reply.body), reply.body["status"].as_str()), ("cancelled", Some("completed")));
                let events = reply.body["events"].as_array().unwrap();
                assert_eq!(events.last().unwrap()["type"], "cancelled", "{}", reply.body);
                cancelled.push(id.clone());
            }
            409 => {
                let detail = reply.body["detail"].as_str().unwrap();
                assert!(detail.contains("sms is sending") || detail.contains("sms is sent"), "{detail}");
            }
            other => panic!("{other}: {}", reply.body),
        }
    }
    // About 3 s of slots are held in the function; at 1 per second the rest wait in the queue.
    assert!(cancelled.len() >= 3, "{} of 8 cancelled", cancelled.len());
    let last = cancelled[0].clone();
    let again = api.call(Method::DELETE, &format!("/v1/notifications/{last}"), None).await;
    assert_eq!(again.status, 409);
    assert!(again.body["detail"].as_str().unwrap().contains("sms is cancelled"), "{}", again.body);

    let views = settle(&api, &sent).await;
    for ((id, _), view) in sent.iter().zip(&views) {
        let expected = if cancelled.contains(id) { "cancelled" } else { "sent" };
        assert_eq!(sms_status(view), expected, "{view}");
    }

    // Another app's notification is not this one's to cancel, nor a made-up id.
    let scopes = std::collections::BTreeSet::from([Scope::Send]);
    let other = local_stack::demo::create_app(&api.clients, &api.stack.deployed, "other", scopes).await.unwrap();
    let theirs = api
        .call_as(
            Some((&other.app_key, &other.app_secret)),
            Method::DELETE,
            &format!("/v1/notifications/{last}"),
            None,
            &[],
        )
        .await;
    assert_eq!(theirs.status, 404);
    assert_eq!(api.call(Method::DELETE, "/v1/notifications/not-an-id", None).await.status, 404);

    let stats = api
        .wait_for_stats(&format!("template={template}"), "the sends in the stats", |counts| {
            counts["sent"] == 8 - cancelled.len()
        })
        .await;
    assert_eq!(stats["counts"]["cancelled"], cancelled.len());
    assert_eq!(stats["counts"]["accepted"], 8);
    api.stack.stop().await;
}

#[tokio::test]
async fn a_cancellation_key_takes_back_a_users_notifications_or_everyones() {
    // The SMS dispatcher does not poll its bulk queue (SAM's `Enabled: false`): every SMS stays
    // queued, so what a cancel by key finds is the test's to say.
    let template_text = project_template_text().replacen(
        "            Queue: !GetAtt SmsQueue.Arn\n",
        "            Queue: !GetAtt SmsQueue.Arn\n            Enabled: false\n",
        1,
    );
    assert!(template_text.contains("Enabled: false"), "the edit applied");
    let api = Api::start_from(&template_text, &endpoint(), BTreeMap::new()).await;
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let users = api.users_with_phone(3).await;
    let key = unique("reminder");
    let mut reminders = Vec::new();
    for user in [&users[0], &users[0], &users[1]] {
        reminders.push(send(&api, user, &template, &unique("text"), Some(&key)).await);
    }
    let other_key = send(&api, &users[0], &template, &unique("text"), Some(&unique("other"))).await;
    // One with the key that finished at once: its user opted out of SMS, nothing to send.
    let opted_out = api.users_with_phone(1).await.remove(0);
    let preferences = Some(json!({"sms": false}));
    api.call(Method::PUT, &format!("/v1/users/{opted_out}/preferences"), preferences).await;
    let finished = send(&api, &opted_out, &template, &unique("text"), Some(&key)).await;
    let unkeyed = send(&api, &users[2], &template, &unique("text"), None).await;

    let body = json!({"cancellation_key": key, "user_id": users[0]});
    let mine = api.call(Method::POST, "/v1/notifications/cancel", Some(body)).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    let mut expected = vec![reminders[0].clone(), reminders[1].clone()];
    expected.sort();
    assert_eq!(mine.body, json!({"cancelled": 2, "notifications": expected, "complete": true}));

    // Another app's cancel with the same key finds nothing of this app's.
    let scopes = std::collections::BTreeSet::from([Scope::Send]);
    let other = local_stack::demo::create_app(&api.clients, &api.stack.deployed, "other", scopes).await.unwrap();
    let credentials = Some((other.app_key.as_str(), other.app_secret.as_str()));
    let path = "/v1/notifications/cancel";
    let theirs = api.call_as(credentials, Method::POST, path, Some(json!({"cancellation_key": key})), &[]).await;
    assert_eq!(theirs.body["cancelled"], 0);

    let rest = api.call(Method::POST, path, Some(json!({"cancellation_key": key}))).await;
    assert_eq!(rest.body, json!({"cancelled": 1, "notifications": [reminders[2]], "complete": true}));
    // Looked at and found finished, it leaves the key's index.
    let table = api.stack.deployed.table("NotificationsTable").unwrap().to_string();
    let log = notify::store::notifications::NotificationStore::new(api.clients.dynamodb.clone(), table);
    let record = log.get(&finished.as_str().into()).await.unwrap().unwrap();
    assert_eq!((record.deliveries.len(), record.cancel_scope), (0, None));

    let none = api.call(Method::POST, path, Some(json!({"cancellation_key": key}))).await;
    assert_eq!(none.body, json!({"cancelled": 0, "notifications": [], "complete": true}));

    for id in &reminders {
        let view = api.notification(id).await;
        assert_eq!((sms_status(&view), &view["cancellation_key"]), ("cancelled", &json!(key)));
    }
    for id in [&other_key, &unkeyed] {
        assert_eq!(sms_status(&api.notification(id).await), "queued", "not cancelled");
    }
    let stats = api.call(Method::GET, &format!("/v1/stats?template={template}"), None).await.body;
    assert_eq!((stats["counts"]["accepted"].clone(), stats["counts"]["cancelled"].clone()), (json!(6), json!(3)));
    api.stack.stop().await;
}

#[tokio::test]
async fn bad_cancellation_keys_and_cancel_requests_are_refused_naming_the_field() {
    let api = Api::start().await;
    let (user, template) = api.user_and_template_on_every_channel().await;
    let long = "k".repeat(256);
    let body = json!({"user_id": user, "template": template, "cancellation_key": long});
    let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
    assert_eq!((reply.status.as_u16(), fields(&reply)), (422, vec!["cancellation_key".to_string()]));

    let item = json!({"idempotency_key": unique("k"), "user_id": user, "template": template, "cancellation_key": 7});
    let batch = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": [item]}))).await;
    assert_eq!(batch.body["results"][0]["body"]["errors"][0]["field"], "cancellation_key");

    for (body, field) in [
        (json!({}), "cancellation_key"),
        (json!({"cancellation_key": ""}), "cancellation_key"),
        (json!({"cancellation_key": "k", "user_id": "not a user id"}), "user_id"),
        (json!({"cancellation_key": "k", "campaign": "x"}), "campaign"),
    ] {
        let reply = api.call(Method::POST, "/v1/notifications/cancel", Some(body.clone())).await;
        assert_eq!((reply.status.as_u16(), fields(&reply)), (422, vec![field.to_string()]), "{body}");
    }
    let reply =
        api.call_as(None, Method::POST, "/v1/notifications/cancel", Some(json!({"cancellation_key": "k"})), &[]).await;
    assert_eq!(reply.status, 401);
    api.stack.stop().await;
}
