//! Stats end to end: for a template used only here, `GET /v1/stats` counts exactly what the
//! test did: accepted deliveries and intake skips, sends, SES delivery and bounce feedback,
//! opens (first only) and clicks, per channel and overall, with the rates.

mod support;

use std::time::Duration;

use notify::domain::app::Scope;
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

    let expected_email = json!({"accepted": 2, "sent": 2, "sent_by_provider": {"ses": 2}, "delivered": 1, "failed": 0, "bounced": 1, "complained": 0, "skipped": {}, "cancelled": 0, "opened": 1, "clicked": 1, "clicks": 2, "converted": 0});
    let stats = |query: String| {
        let api = &api;
        async move { api.call(Method::GET, &format!("/v1/stats?{query}"), None).await.body }
    };
    let email = api
        .wait_for_stats(&format!("template={template}&channel=email"), "the feedback in the stats", |counts| {
            *counts == expected_email
        })
        .await;
    assert_eq!(
        email["rates"],
        json!({"delivery_rate": 0.5, "open_rate": 0.5, "push_open_rate": null, "click_rate": 0.5, "conversion_rate": 0.0})
    );
    let sms = api
        .wait_for_stats(&format!("template={template}&channel=sms"), "the SMS sends in the stats", |counts| {
            counts["sent"] == 1
        })
        .await;
    assert_eq!(
        sms["counts"],
        json!({"accepted": 2, "sent": 1, "sent_by_provider": {"sns": 1}, "delivered": 0, "failed": 0, "bounced": 0, "complained": 0, "skipped": {"no_contact": 1}, "cancelled": 0, "opened": 0, "clicked": 0, "clicks": 0, "converted": 0})
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

#[tokio::test]
async fn an_app_sees_the_counts_of_its_own_notifications_only() {
    let api = Api::start().await;
    let scopes = std::collections::BTreeSet::from([Scope::Send, Scope::Status]);
    let other = local_stack::demo::create_app(&api.clients, &api.stack.deployed, "other", scopes).await.unwrap();
    let other_credentials = Some((other.app_key.as_str(), other.app_secret.as_str()));
    // Users and templates are the deployment's, shared by its apps.
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "hello"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let user = unique("u");
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;

    // The demo app sends twice, the other app once, with the same template to the same user.
    let body = json!({"user_id": user, "template": template});
    let mut ids = Vec::new();
    for credentials in [None, None, other_credentials] {
        let sent = match credentials {
            None => api.call(Method::POST, "/v1/notifications", Some(body.clone())).await,
            Some(credentials) => {
                api.call_as(Some(credentials), Method::POST, "/v1/notifications", Some(body.clone()), &[]).await
            }
        };
        assert_eq!(sent.status, 202, "{}", sent.body);
        ids.push(sent.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids[..2] {
        api.wait_for_notification(id, "the SMS to be sent", every_delivery_sent).await;
    }
    let path = format!("/v1/notifications/{}", ids[2]);
    eventually(Duration::from_secs(60), "the other app's SMS to be sent", || async {
        let view = api.call_as(other_credentials, Method::GET, &path, None, &[]).await.body;
        every_delivery_sent(&view).then_some(())
    })
    .await;

    let query = format!("/v1/stats?template={template}&channel=sms");
    let (own_key, own_secret) = (api.app.app_key.clone(), api.app.app_secret.clone());
    let counts = |(key, secret): (String, String)| {
        let (api, query) = (&api, &query);
        async move { api.call_as(Some((&key, &secret)), Method::GET, query, None, &[]).await.body["counts"].clone() }
    };
    let mine = eventually(Duration::from_secs(30), "the demo app's sends in its stats", || async {
        let counts = counts((own_key.clone(), own_secret.clone())).await;
        (counts["sent"] == 2).then_some(counts)
    })
    .await;
    assert_eq!(mine["accepted"], 2, "{mine}");
    let theirs = eventually(Duration::from_secs(30), "the other app's send in its stats", || async {
        let counts = counts((other.app_key.clone(), other.app_secret.clone())).await;
        (counts["sent"] == 1).then_some(counts)
    })
    .await;
    assert_eq!(theirs["accepted"], 1, "{theirs}");
    // And another app's notification is not the demo app's to read.
    let foreign = api.call(Method::GET, &format!("/v1/notifications/{}", ids[2]), None).await;
    assert_eq!(foreign.status, 404);
    api.stack.stop().await;
}
