//! Engagement the app reports, end to end through the local stack with every role enforced:
//! - a push carries its open token in the custom data (APNs top-level keys, FCM `data`); the
//!   app's `POST /t/p/{token}` with the token read from the emulator's recorded payload counts
//!   the open once (timeline, stats, event stream); a forged or cut token is a 404 and records
//!   nothing;
//! - `POST /v1/notifications/{id}/events` records a conversion once, shows it in stats (count and
//!   rate) and in the event stream; another app's notification is a 404; a bad report names
//!   each field at fault.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use notify::domain::app::Scope;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, every_delivery_sent, ios_token, unique};
use support::emulator_state;
use support::events::{Consumer, strings};

/// The open token in each push the emulator recorded for these device tokens, by device token.
async fn open_tokens(device_tokens: &[&str]) -> Vec<(String, String)> {
    let state = emulator_state().await;
    let mut found = Vec::new();
    for endpoint in state["sns"]["PlatformEndpoint"].as_array().into_iter().flatten() {
        let token = endpoint["token"].as_str().unwrap_or_default();
        if !device_tokens.contains(&token) {
            continue;
        }
        for message in endpoint["messages"].as_object().into_iter().flatten().map(|(_, message)| message) {
            let outer: Value = serde_json::from_str(message.as_str().unwrap()).unwrap();
            let open_token = if let Some(apns) = outer["APNS"].as_str() {
                let apns: Value = serde_json::from_str(apns).unwrap();
                assert!(apns.to_string().len() <= 4096, "within APNs' 4 KB: {apns}");
                apns["open_token"].as_str().unwrap().to_string()
            } else {
                let fcm: Value = serde_json::from_str(outer["GCM"].as_str().unwrap()).unwrap();
                fcm["fcmV1Message"]["message"]["data"]["open_token"].as_str().unwrap().to_string()
            };
            found.push((token.to_string(), open_token));
        }
    }
    found
}

#[tokio::test]
async fn a_push_open_reported_with_the_payloads_token_counts_once_and_a_forged_one_records_nothing() {
    let api = Api::start().await;
    let mut consumer = Consumer::new(&api);
    let (user, template) = (unique("u"), unique("t"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({}))).await;
    let (ios, android) = (ios_token(), format!("fcm-token:{}", ios_token()));
    for (platform, token) in [("ios", &ios), ("android", &android)] {
        let body = json!({"platform": platform, "token": token});
        assert_eq!(api.call(Method::POST, &format!("/v1/users/{user}/devices"), Some(body)).await.status, 201);
    }
    let content =
        json!({"default_locale": "en", "locales": {"en": {"push": {"title": "Hi", "body": "Your order shipped"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    api.wait_for_notification(&id, "both pushes to be sent", every_delivery_sent).await;

    let tokens = open_tokens(&[&ios, &android]).await;
    assert_eq!(tokens.len(), 2, "one push per device, each with its token: {tokens:?}");
    let ios_open = &tokens.iter().find(|(device, _)| *device == ios).unwrap().1;

    // Forged (its claims changed) and cut tokens: 404, nothing recorded.
    let (key_id, rest) = ios_open.split_once('.').unwrap();
    let (payload, tag) = rest.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["d"] = json!("push-9");
    let forged = format!("{key_id}.{}.{tag}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    for bad in [forged.as_str(), &ios_open[..ios_open.len() - 4]] {
        let reply = api.call_as(None, Method::POST, &format!("/t/p/{bad}"), None, &[]).await;
        assert_eq!(reply.status, 404, "{bad}");
    }
    assert!(api.notification(&id).await["deliveries"].as_array().unwrap().iter().all(|d| d["opened_at"].is_null()));

    // The app reports the open (twice: a retry after a lost answer).
    for _ in 0..2 {
        let reply = api.call_as(None, Method::POST, &format!("/t/p/{ios_open}"), None, &[]).await;
        assert_eq!(reply.status, 204);
    }
    let view = api.notification(&id).await;
    let opened: Vec<&Value> =
        view["deliveries"].as_array().unwrap().iter().filter(|delivery| delivery["opened_at"].is_string()).collect();
    assert_eq!(opened.len(), 1, "only the iOS delivery: {view}");
    let timeline: Vec<&str> = view["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(timeline.iter().filter(|kind| **kind == "opened").count(), 1, "{timeline:?}");
    let stats = api
        .wait_for_stats(&format!("template={template}&channel=push"), "the open to be counted", |counts| {
            counts["opened"] == 1
        })
        .await;
    assert_eq!(stats["rates"]["push_open_rate"], 0.5, "one open of two pushes sent: {stats}");
    consumer.wait_for(&api, &id, &strings(&["accepted", "sent", "sent", "opened"])).await;
    let open_event = consumer.read[&id].iter().find(|event| event["type"] == "opened").unwrap();
    assert_eq!((open_event["channel"].as_str(), open_event["provider"].as_str()), (Some("push"), Some("sns")));
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}

#[tokio::test]
async fn a_conversion_is_recorded_once_counted_in_stats_and_published() {
    let api = Api::start().await;
    let mut consumer = Consumer::new(&api);
    let (id, _) = api.send_sms().await;
    let sent = api.wait_for_notification(&id, "the SMS to be sent", every_delivery_sent).await;
    let template = sent["template"].as_str().unwrap().to_string();
    let path = format!("/v1/notifications/{id}/events");

    let bad = api.call(Method::POST, &path, Some(json!({"type": "bought", "value": "12"}))).await;
    assert_eq!(bad.status, 422);
    assert_eq!(support::api::fields(&bad), ["type", "value"]);

    let first = api
        .call(
            Method::POST,
            &path,
            Some(json!({"type": "converted", "value": 42.5, "occurred_at": "2026-12-01T10:00:00Z"})),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["conversion"], json!({"occurred_at": "2026-12-01T10:00:00Z", "value": 42.5}));
    let again = api.call(Method::POST, &path, Some(json!({"type": "converted", "value": 7}))).await;
    assert_eq!((again.status.as_u16(), &again.body["conversion"]), (200, &first.body["conversion"]), "the first stays");

    let scopes = std::collections::BTreeSet::from([Scope::Send]);
    let other = local_stack::demo::create_app(&api.clients, &api.stack.deployed, "other", scopes).await.unwrap();
    let body = Some(json!({"type": "converted"}));
    let theirs = api.call_as(Some((&other.app_key, &other.app_secret)), Method::POST, &path, body, &[]).await;
    assert_eq!(theirs.status, 404, "another app's notification");

    let stats = api
        .wait_for_stats(&format!("template={template}"), "the conversion to be counted", |counts| {
            counts["converted"] == 1
        })
        .await;
    assert_eq!(stats["rates"]["conversion_rate"], 1.0, "{stats}");
    assert_eq!(api.notification(&id).await["conversion"], first.body["conversion"]);
    consumer.wait_for(&api, &id, &strings(&["accepted", "sent", "converted"])).await;
    let converted = consumer.read[&id].iter().find(|event| event["type"] == "converted").unwrap();
    assert_eq!(
        (converted["value"].as_f64(), converted["occurred_at"].as_str()),
        (Some(42.5), Some("2026-12-01T10:00:00Z"))
    );
    assert_eq!(api.stack.denials(), vec![]);
    api.stack.stop().await;
}
