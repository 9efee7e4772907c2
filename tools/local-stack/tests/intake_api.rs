//! The intake API through the local stack: every route, its errors, idempotency, and agreement
//! with the served OpenAPI document (every response body is validated against it).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use local_stack::demo;
use notify::domain::app::Scope;
use notify::store::notifications::NotificationStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::api::{Api, OPENAPI, Reply, check_against_openapi, fields, ios_token, unique};
use support::{eventually, recorded_sms};

#[test]
#[should_panic(expected = "violates openapi.json")]
fn the_openapi_check_rejects_a_body_outside_the_schema() {
    let openapi: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    let reply = Reply { status: StatusCode::OK, headers, body: json!({"user_id": "u", "surprise": true}) };
    check_against_openapi(&openapi, &Method::GET, "/v1/users/u", &reply);
}

#[tokio::test]
async fn the_served_openapi_document_matches_the_routes() {
    let api = Api::start().await;
    let reply = api.call_as(None, Method::GET, "/v1/openapi.json", None, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["openapi"], "3.1.0");
    let documented: BTreeSet<String> = reply.body["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| *key != "parameters")
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let served: BTreeSet<String> = intake::ROUTES.iter().map(|route| route.to_string()).collect();
    assert_eq!(documented, served);
    api.stack.stop().await;
}

#[tokio::test]
async fn users_are_created_replaced_read_and_erased() {
    let api = Api::start().await;
    let user = format!("/v1/users/{}", unique("u"));
    let created = api.call(Method::PUT, &user, Some(json!({"email": "ada@example.com", "phone": "+1 (201) 555-0123", "locale": "pt-BR", "timezone": "Europe/Lisbon"}))).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["phone"], "+12015550123");
    assert_eq!(created.body["preferences"], json!({"push": true, "sms": true, "email": true}));

    api.call(Method::PUT, &format!("{user}/preferences"), Some(json!({"sms": false}))).await;
    let replaced = api.call(Method::PUT, &user, Some(json!({"email": "ada@example.org"}))).await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body["email"], "ada@example.org");
    assert!(replaced.body.get("phone").is_none(), "a replace drops what it does not give");
    assert_eq!(replaced.body["preferences"]["sms"], false, "preferences are kept");

    let invalid = api
        .call(
            Method::PUT,
            &user,
            Some(json!({"email": "nope", "phone": "12", "locale": "no such tag!", "timezone": "Mars/Base"})),
        )
        .await;
    assert_eq!(invalid.status, 422);
    assert_eq!(fields(&invalid), vec!["email", "phone", "locale", "timezone"]);
    let unknown_field = api.call(Method::PUT, &user, Some(json!({"fax": "1"}))).await;
    assert_eq!(unknown_field.status, 422);
    let bad_id = api.call(Method::GET, "/v1/users/has%20space", None).await;
    assert_eq!(bad_id.status, 422);

    assert_eq!(api.call(Method::GET, &user, None).await.body["email"], "ada@example.org");
    assert_eq!(api.call(Method::DELETE, &user, None).await.status, 204);
    assert_eq!(api.call(Method::GET, &user, None).await.status, 404);
    assert_eq!(api.call(Method::DELETE, &user, None).await.status, 204, "deleting twice is fine");
    api.stack.stop().await;
}

#[tokio::test]
async fn devices_register_idempotently_move_between_users_and_are_bounded() {
    let api = Api::start().await;
    let (first, second) = (format!("/v1/users/{}", unique("u")), format!("/v1/users/{}", unique("u")));
    for user in [&first, &second] {
        api.call(Method::PUT, user, Some(json!({}))).await;
    }
    let token = ios_token();
    let device = json!({"platform": "ios", "token": token});
    assert_eq!(api.call(Method::POST, &format!("{first}/devices"), Some(device.clone())).await.status, 201);
    assert_eq!(api.call(Method::POST, &format!("{first}/devices"), Some(device.clone())).await.status, 200);
    assert_eq!(api.call(Method::POST, "/v1/users/nobody-here/devices", Some(device.clone())).await.status, 404);
    let invalid =
        api.call(Method::POST, &format!("{first}/devices"), Some(json!({"platform": "ios", "token": "xyz"}))).await;
    assert_eq!((invalid.status.as_u16(), fields(&invalid)), (422, vec!["token".to_string()]));
    let bad_platform =
        api.call(Method::POST, &format!("{first}/devices"), Some(json!({"platform": "windows", "token": token}))).await;
    assert_eq!(bad_platform.status, 422);

    // The token moves to the second user.
    assert_eq!(api.call(Method::POST, &format!("{second}/devices"), Some(device.clone())).await.status, 201);
    assert_eq!(api.call(Method::GET, &first, None).await.body["devices"], json!([]));
    assert_eq!(api.call(Method::GET, &second, None).await.body["devices"][0]["token"], token.as_str());

    assert_eq!(api.call(Method::DELETE, &format!("{second}/devices/{token}"), None).await.status, 204);
    assert_eq!(api.call(Method::GET, &second, None).await.body["devices"], json!([]));

    for _ in 0..10 {
        let added = api
            .call(Method::POST, &format!("{first}/devices"), Some(json!({"platform": "ios", "token": ios_token()})))
            .await;
        assert_eq!(added.status, 201);
    }
    let eleventh = api
        .call(
            Method::POST,
            &format!("{first}/devices"),
            Some(json!({"platform": "android", "token": format!("fcm:{}", ios_token())})),
        )
        .await;
    assert_eq!(eleventh.status, 409);
    api.stack.stop().await;
}

#[tokio::test]
async fn preferences_default_to_opted_in_and_update_partially() {
    let api = Api::start().await;
    let user = format!("/v1/users/{}", unique("u"));
    assert_eq!(api.call(Method::GET, &format!("{user}/preferences"), None).await.status, 404);
    api.call(Method::PUT, &user, Some(json!({"phone": "+12015550123"}))).await;
    let defaults = api.call(Method::GET, &format!("{user}/preferences"), None).await;
    assert_eq!(defaults.body, json!({"push": true, "sms": true, "email": true}));
    let updated = api.call(Method::PUT, &format!("{user}/preferences"), Some(json!({"email": false}))).await;
    assert_eq!(updated.body, json!({"push": true, "sms": true, "email": false}));
    assert_eq!(api.call(Method::PUT, &format!("{user}/preferences"), Some(json!({}))).await.status, 422);
    assert_eq!(api.call(Method::PUT, &format!("{user}/preferences"), Some(json!({"sms": "no"}))).await.status, 422);
    assert_eq!(
        api.call(Method::PUT, "/v1/users/nobody-here/preferences", Some(json!({"sms": false}))).await.status,
        404
    );
    api.stack.stop().await;
}

#[tokio::test]
async fn templates_are_stored_checked_and_read() {
    let api = Api::start().await;
    let path = format!("/v1/templates/{}", unique("t"));
    let template =
        json!({"default_locale": "en", "transactional": true, "locales": {"en": {"sms": {"body": "Code {{ code }}"}}}});
    let created = api.call(Method::PUT, &path, Some(template.clone())).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["transactional"], true);
    assert_eq!(api.call(Method::PUT, &path, Some(template)).await.status, 200);
    assert_eq!(api.call(Method::GET, &path, None).await.body["locales"]["en"]["sms"]["body"], "Code {{ code }}");
    assert_eq!(api.call(Method::GET, "/v1/templates/no-such-template", None).await.status, 404);

    let broken = json!({"default_locale": "en", "locales": {"en": {"email": {"subject": "s", "html": "<p>\n{% if x %}", "text": "t"}}}});
    let reply = api.call(Method::PUT, &path, Some(broken)).await;
    assert_eq!(reply.status, 422);
    assert_eq!(fields(&reply), vec!["locales.en.email.html"]);
    assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains("line 2"), "{}", reply.body);
    api.stack.stop().await;
}

/// A user reachable by SMS only, with a template for SMS and email; returns (user id, template).
async fn sms_user(api: &Api) -> (String, String) {
    let (user, template) = (unique("u"), unique("t"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
    let content = json!({"default_locale": "en", "locales": {"en": {
        "sms": {"body": "Order {{ order }} for {{ name }}"},
        "email": {"subject": "s", "html": "h", "text": "t"}
    }}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    (user, template)
}

#[tokio::test]
async fn sending_reports_skipped_channels_and_missing_parameters() {
    let api = Api::start().await;
    let (user, template) = sms_user(&api).await;
    let send = |body: Value| api.call(Method::POST, "/v1/notifications", Some(body));

    let accepted = send(json!({"user_id": user, "template": template, "params": {"order": "1", "name": "Ada"}})).await;
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.body["deliveries"], json!([{"channel": "sms", "target": "+12015550123", "status": "queued"}]));
    assert_eq!(
        accepted.body["skipped"],
        json!([{"channel": "push", "reason": "no_content"}, {"channel": "email", "reason": "no_contact"}])
    );

    let missing = send(json!({"user_id": user, "template": template, "params": {}})).await;
    assert_eq!(
        (missing.status.as_u16(), fields(&missing)),
        (422, vec!["params.name".to_string(), "params.order".to_string()])
    );
    let unknown_user = send(json!({"user_id": unique("nobody"), "template": template})).await;
    assert_eq!((unknown_user.status.as_u16(), fields(&unknown_user)), (422, vec!["user_id".to_string()]));
    let unknown_template = send(json!({"user_id": user, "template": unique("none")})).await;
    assert_eq!((unknown_template.status.as_u16(), fields(&unknown_template)), (422, vec!["template".to_string()]));
    let long_sms =
        send(json!({"user_id": user, "template": template, "params": {"order": "9".repeat(1600), "name": "A"}})).await;
    assert_eq!((long_sms.status.as_u16(), fields(&long_sms)), (422, vec!["params".to_string()]));
    api.call(Method::PUT, &format!("/v1/users/{user}/preferences"), Some(json!({"sms": false}))).await;
    let opted_out = send(
        json!({"user_id": user, "template": template, "params": {"order": "1", "name": "Ada"}, "channels": ["sms"]}),
    )
    .await;
    assert_eq!(opted_out.body["deliveries"], json!([]));
    assert_eq!(opted_out.body["skipped"], json!([{"channel": "sms", "reason": "opted_out"}]));
    let too_many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("p{i}"), json!(i))).collect();
    assert_eq!(send(json!({"user_id": user, "template": template, "params": too_many})).await.status, 422);

    let malformed = api
        .call_as(
            Some((&api.app.app_key, &api.app.app_secret)),
            Method::POST,
            "/v1/notifications",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(malformed.status, 400);
    let huge = json!({"user_id": user, "template": template, "params": {"name": "x".repeat(300 * 1024)}});
    assert_eq!(send(huge).await.status, 413);
    let bad_key = api
        .call_as(
            Some((&api.app.app_key, &api.app.app_secret)),
            Method::POST,
            "/v1/notifications",
            Some(json!({})),
            &[("idempotency-key", &"k".repeat(256))],
        )
        .await;
    assert_eq!(bad_key.status, 422);
    api.stack.stop().await;
}

/// Polls until the stack's SMS queue is drained (every message handled or gone).
async fn sms_queue_drained(api: &Api) {
    let url = api.stack.deployed.queue("SmsQueue").unwrap().0.to_string();
    eventually(Duration::from_secs(30), "the SMS queue to drain", || async {
        support::queue_is_empty(&api.clients.sqs, &url).await.then_some(())
    })
    .await;
}

async fn sms_count(text: &str) -> usize {
    recorded_sms().await.iter().filter(|sms| sms["message"] == text).count()
}

#[tokio::test]
async fn an_idempotency_key_replays_the_original_and_refuses_another_body() {
    let api = Api::start().await;
    let (user, template) = sms_user(&api).await;
    let order = unique("order");
    let body = json!({"user_id": user, "template": template, "params": {"order": order, "name": "Ada"}});
    let key = unique("key");
    let first = api.send_with_key(&body, &key).await;
    assert_eq!(first.status, 202);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = api.send_with_key(&body, &key).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    let mut other = body.clone();
    other["params"]["name"] = json!("Bob");
    let reused = api.send_with_key(&other, &key).await;
    assert_eq!((reused.status.as_u16(), fields(&reused)), (422, vec!["Idempotency-Key".to_string()]));

    sms_queue_drained(&api).await;
    assert_eq!(sms_count(&format!("Order {order} for Ada")).await, 1, "one send for the key");
    api.stack.stop().await;
}

#[tokio::test]
async fn a_batch_answers_per_item_and_replays_per_key() {
    let api = Api::start().await;
    let (user, template) = sms_user(&api).await;
    let item = |key: &str, name: &str| json!({"idempotency_key": key, "user_id": user, "template": template, "params": {"order": "7", "name": name}});
    let (first_key, second_key) = (unique("k"), unique("k"));
    let batch = json!({"notifications": [
        item(&first_key, "Ada"),
        item(&second_key, "Bob"),
        {"user_id": user, "template": template},
        {"idempotency_key": unique("k"), "user_id": user, "template": template, "params": {}},
    ]});
    let reply = api.call(Method::POST, "/v1/notifications/batch", Some(batch.clone())).await;
    assert_eq!(reply.status, 200);
    let statuses: Vec<u64> =
        reply.body["results"].as_array().unwrap().iter().map(|result| result["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![202, 202, 422, 422]);
    assert_eq!(reply.body["results"][2]["body"]["errors"][0]["field"], "idempotency_key");

    let again = api
        .call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": [item(&first_key, "Ada")]})))
        .await;
    assert_eq!(again.body["results"][0]["replayed"], true);
    assert_eq!(again.body["results"][0]["body"]["id"], reply.body["results"][0]["body"]["id"]);

    let empty = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": []}))).await;
    assert_eq!(empty.status, 422);
    let too_many = json!({"notifications": (0..101).map(|i| item(&format!("k{i}"), "x")).collect::<Vec<_>>()});
    assert_eq!(api.call(Method::POST, "/v1/notifications/batch", Some(too_many)).await.status, 422);
    api.stack.stop().await;
}

#[tokio::test]
async fn a_notification_shows_its_deliveries_and_timeline_to_its_app_only() {
    let api = Api::start().await;
    let (user, template) = sms_user(&api).await;
    let accepted = api
        .call(
            Method::POST,
            "/v1/notifications",
            Some(json!({"user_id": user, "template": template, "params": {"order": "1", "name": "A"}})),
        )
        .await;
    let id = accepted.body["id"].as_str().unwrap();
    let status = api.call(Method::GET, &format!("/v1/notifications/{id}"), None).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.body["user_id"], user.as_str());
    assert_eq!(status.body["deliveries"][0]["channel"], "sms");
    assert_eq!(status.body["events"][0]["type"], "accepted");

    let other =
        demo::create_app(&api.clients, &api.stack.deployed, "other", Scope::ALL.into_iter().collect()).await.unwrap();
    let as_other = api
        .call_as(Some((&other.app_key, &other.app_secret)), Method::GET, &format!("/v1/notifications/{id}"), None, &[])
        .await;
    assert_eq!(as_other.status, 404);
    assert_eq!(api.call(Method::GET, "/v1/notifications/not-a-uuid", None).await.status, 404);
    let record =
        NotificationStore::new(api.clients.dynamodb.clone(), demo::tables(&api.stack.deployed).unwrap().notifications)
            .get(&id.into())
            .await
            .unwrap();
    assert!(record.is_some());
    api.stack.stop().await;
}
