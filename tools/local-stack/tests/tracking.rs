//! Open and click tracking end to end: a template that opts in sends email whose links go
//! through signed `/t/c/` redirects and whose html carries a `/t/o/` pixel; each click is
//! counted and redirected to the original URL, the first open only is counted, and a forged
//! token gets 404 and records nothing. The public routes cannot grow a record: after the first
//! click and open, any number of them leave its size as it was.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, every_delivery_sent, unique};

#[tokio::test]
async fn clicks_redirect_and_count_opens_count_once_and_forged_tokens_record_nothing() {
    let api = Api::start().await;
    let (user, template) = (unique("u"), unique("t"));
    api.call(
        Method::PUT,
        &format!("/v1/users/{user}"),
        Some(json!({"email": format!("{}@example.com", unique("ada"))})),
    )
    .await;
    let content = json!({"default_locale": "en", "tracking": true, "locales": {"en": {"email": {
        "subject": "Your order",
        "html": "<html><body><p>Hi</p><a href=\"https://shop.example.com/orders/{{ order }}?a=1&amp;b=2\">Order</a></body></html>",
        "text": "See https://shop.example.com/orders/{{ order }}?a=1&b=2"
    }}}});
    let stored = api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    assert_eq!(stored.body["tracking"], true);
    let body = json!({"user_id": user, "template": template, "params": {"order": "42"}});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    api.wait_for_notification(&id, "the email to be sent", every_delivery_sent).await;

    let (clicks, content) = api.tracking_links(&id, "c").await;
    let (pixels, _) = api.tracking_links(&id, "o").await;
    assert!(!content.contains("shop.example.com"), "no original link is left: {content}");
    assert_eq!((clicks.len(), pixels.len()), (2, 1), "html link, text link, pixel: {clicks:?} {pixels:?}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for link in [&clicks[0], &clicks[1], &clicks[0]] {
        let response = http.get(link).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 302);
        assert_eq!(response.headers()["location"], "https://shop.example.com/orders/42?a=1&b=2");
    }
    for _ in 0..2 {
        let response = http.get(&pixels[0]).send().await.unwrap();
        assert_eq!(
            (response.status().as_u16(), response.headers()["content-type"].to_str().unwrap()),
            (200, "image/gif")
        );
    }

    // A token whose target was changed, and one cut short: refused, nothing recorded.
    let token = clicks[0].rsplit('/').next().unwrap();
    let (key_id, rest) = token.split_once('.').unwrap();
    let (payload, tag) = rest.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["u"] = json!("https://evil.example.com/");
    let forged = format!("{}/t/c/{key_id}.{}.{tag}", api.stack.api_url, URL_SAFE_NO_PAD.encode(claims.to_string()));
    assert_eq!(http.get(&forged).send().await.unwrap().status().as_u16(), 404);
    let cut = &clicks[0][..clicks[0].len() - 3];
    assert_eq!(http.get(cut).send().await.unwrap().status().as_u16(), 404);

    let notification = api.notification(&id).await;
    let delivery = &notification["deliveries"][0];
    assert_eq!(delivery["clicks"], 3, "{notification}");
    assert!(delivery["opened_at"].is_string(), "{notification}");
    let events: Vec<&str> =
        notification["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "clicked").count(), 1, "the first click only: {events:?}");
    assert_eq!(events.iter().filter(|e| **e == "opened").count(), 1, "the first open only: {events:?}");
    api.stack.stop().await;
}

/// The stored record of notification `id`, as DynamoDB holds it (its size is what every later
/// write of it is billed by).
async fn stored_size(api: &Api, id: &str) -> usize {
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    let item = api
        .clients
        .dynamodb
        .get_item()
        .table_name(table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let record: Value = serde_dynamo::from_item(item).unwrap();
    record.to_string().len()
}

#[tokio::test]
async fn hundreds_of_clicks_and_opens_leave_the_record_as_large_as_the_first_ones_did() {
    let api = Api::start().await;
    let id = api.tracked_email_sent("<a href=\"https://shop.example.com/sale\">Sale</a>").await;
    let (clicks, _) = api.tracking_links(&id, "c").await;
    let (pixels, _) = api.tracking_links(&id, "o").await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    for link in [&clicks[0], &clicks[0], &pixels[0], &pixels[0]] {
        http.get(link).send().await.unwrap();
    }
    let after_the_first = stored_size(&api, &id).await;
    // A link scanner or a forwarded email: 300 more of each.
    let hits = futures::stream::iter(0..300)
        .map(|_| async {
            let clicked = http.get(&clicks[0]).send().await.unwrap().status().as_u16();
            let opened = http.get(&pixels[0]).send().await.unwrap().status().as_u16();
            (clicked, opened)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(hits.iter().all(|hit| *hit == (302, 200)), "every link keeps working");
    let after_all = stored_size(&api, &id).await;
    // Only the count's digits grow (2 → 302: two more).
    assert!(after_all <= after_the_first + 2, "the record grew from {after_the_first} to {after_all} bytes");
    let delivery = api.notification(&id).await["deliveries"][0].clone();
    assert_eq!(delivery["clicks"], 302, "every click is counted: {delivery}");
    api.stack.stop().await;
}
