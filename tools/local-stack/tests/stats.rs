//! Stats end to end: for a template used only here, `GET /v1/stats` counts exactly what the
//! test did: accepted deliveries and intake skips, sends, SES delivery and bounce feedback,
//! opens (first only) and clicks, per channel and overall, with the rates.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use support::api::{Api, every_delivery_sent, hard_bounce, unique};
use support::eventually;

#[tokio::test]
async fn stats_for_a_template_count_exactly_the_events_of_its_notifications() {
    let api = Api::start().await;
    let template = unique("t");
    let content = json!({"default_locale": "en", "tracking": true, "locales": {"en": {
        "email": {"subject": "Hi", "html": "<a href=\"https://example.com/x\">x</a>", "text": "https://example.com/x"},
        "sms": {"body": "hello"}
    }}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let (ada, bob) = (unique("ada"), unique("bob"));
    let (ada_email, bob_email) = (format!("{ada}@example.com"), format!("{bob}@example.com"));
    api.call(Method::PUT, &format!("/v1/users/{ada}"), Some(json!({"email": ada_email, "phone": "+12015550123"})))
        .await;
    api.call(Method::PUT, &format!("/v1/users/{bob}"), Some(json!({"email": bob_email}))).await;

    // Ada: email and SMS; Bob: email, and SMS skipped (no number).
    let send = |user: String| {
        let body = json!({"user_id": user, "template": template});
        async { api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string() }
    };
    let (to_ada, to_bob) = (send(ada.clone()).await, send(bob.clone()).await);
    api.wait_for_notification(&to_ada, "every delivery to be sent", every_delivery_sent).await;
    api.wait_for_notification(&to_bob, "every delivery to be sent", every_delivery_sent).await;

    api.publish_ses_event(&to_ada, &ada_email, "Delivery", json!({"recipients": [ada_email]})).await;
    api.publish_ses_event(&to_bob, &bob_email, "Bounce", hard_bounce(&bob_email)).await;
    let click = api.tracking_links(&to_ada, "c").await.0.remove(0);
    let pixel = api.tracking_links(&to_ada, "o").await.0.remove(0);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for link in [&click, &click, &pixel, &pixel] {
        assert!(http.get(link).send().await.unwrap().status().as_u16() < 400);
    }

    let expected_email = json!({"accepted": 2, "sent": 2, "delivered": 1, "failed": 0, "bounced": 1, "complained": 0, "skipped": {}, "opened": 1, "clicked": 1, "clicks": 2});
    let stats = |query: String| {
        let api = &api;
        async move { api.call(Method::GET, &format!("/v1/stats?{query}"), None).await.body }
    };
    let email = eventually(Duration::from_secs(30), "the feedback in the stats", || async {
        let email = stats(format!("template={template}&channel=email")).await;
        (email["counts"] == expected_email).then_some(email)
    })
    .await;
    assert_eq!(email["rates"], json!({"delivery_rate": 0.5, "open_rate": 0.5, "click_rate": 0.5}));
    let sms = stats(format!("template={template}&channel=sms")).await;
    assert_eq!(
        sms["counts"],
        json!({"accepted": 2, "sent": 1, "delivered": 0, "failed": 0, "bounced": 0, "complained": 0, "skipped": {"no_contact": 1}, "opened": 0, "clicked": 0, "clicks": 0})
    );
    let overall = stats(format!("template={template}")).await;
    assert_eq!((overall["counts"]["accepted"].clone(), overall["counts"]["sent"].clone()), (json!(4), json!(3)));
    assert_eq!(overall["template"], template.as_str());

    // Every template together counts at least these; a bad query is refused with its fields.
    let everything = stats("channel=sms".into()).await;
    assert!(everything["counts"]["accepted"].as_u64().unwrap() >= 2);
    let refused = api.call(Method::GET, "/v1/stats?channel=fax&from=yesterday", None).await;
    assert_eq!(refused.status.as_u16(), 422);
    api.stack.stop().await;
}
