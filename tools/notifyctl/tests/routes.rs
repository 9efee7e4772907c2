//! On-call changes the SMS routes without a redeploy: `notifyctl routes set` refuses routes the
//! SMS function could not use, naming why; stores valid ones with who set them; the running
//! SMS function sends by them within a minute; `notifyctl routes show` tells what is in force.

#[path = "../../local-stack/tests/support/mod.rs"]
mod stack;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use stack::api::{Api, unique};
use stack::{endpoint, eventually};
use support::{notifyctl, try_notifyctl, write_outputs};

const KOREA: &str = "+821012345678";

#[tokio::test]
async fn on_call_reroutes_a_country_to_twilio_and_the_running_stack_follows_within_a_minute() {
    let api = Api::start_with(&endpoint(), BTreeMap::new()).await;
    let (outputs, _directory) = write_outputs(&api.stack, &endpoint());
    let shown = notifyctl(&outputs, &["routes", "show"]).await;
    assert_eq!((shown["source"].clone(), shown["routes"].clone()), (json!("template"), json!("*=sns")));

    for (routes, reason) in [
        ("+82=pigeon;*=sns", "unknown SMS provider \"pigeon\""),
        ("+82=twilio", "no default route"),
        ("82=twilio;*=sns", "is not a calling code prefix"),
    ] {
        let (succeeded, _, stderr) = try_notifyctl(&outputs, &["routes", "set", routes]).await;
        assert!(!succeeded && stderr.contains(reason), "{routes}: {stderr}");
    }
    assert_eq!(notifyctl(&outputs, &["routes", "show"]).await["source"], "template", "nothing refused was stored");

    // A Korean user's SMS goes through SNS; the SMS function has read the routes.
    let (user, template) = (unique("u"), unique("t"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": KOREA}))).await;
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let send = || async {
        let body = json!({"user_id": user, "template": template, "params": {"text": unique("text")}});
        let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
        let view = api
            .wait_for_notification(&id, "sent", |view| {
                view["deliveries"][0]["status"] != "queued" && view["deliveries"][0]["status"] != "sending"
            })
            .await;
        view["deliveries"][0]["provider"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(send().await, "sns");

    let change = notifyctl(&outputs, &["routes", "set", "+82=twilio,sns;*=sns"]).await;
    assert_eq!(change["routes"], "+82=twilio,sns;*=sns");
    let who = change["changed_by"].as_str().unwrap().to_string();
    assert!(who.starts_with("arn:aws:"), "the caller's ARN: {who}");
    eventually(Duration::from_secs(60), "an SMS to Korea through Twilio", || async {
        (send().await == "twilio").then_some(())
    })
    .await;
    let shown = notifyctl(&outputs, &["routes", "show"]).await;
    assert_eq!((shown["source"].clone(), shown["routes"].clone()), (json!("stored"), json!("+82=twilio,sns;*=sns")));
    assert_eq!(shown["stored"]["changed_by"], who);

    // A second change keeps the first in the history.
    notifyctl(&outputs, &["routes", "set", "*=sns"]).await;
    let shown = notifyctl(&outputs, &["routes", "show"]).await;
    assert_eq!(shown["stored"]["history"][0]["routes"], "+82=twilio,sns;*=sns");
    assert_eq!(api.stack.denials(), [], "every call the functions made is granted");
}
