//! SMS through its providers, end to end: the stack sends through SNS (the emulator, behind the
//! provider account) and Twilio (the local Twilio, written from Twilio's API reference), by
//! route, with every function's role enforced. Routing by calling code, failover on an outage,
//! a destination one provider does not serve, the rule that a timeout never hands a message to
//! another provider, and Twilio's signed receipts.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use local_stack::twilio::Fault;
use notify::domain::channel::Channel;
use notify::provider::twilio::{SIGNATURE_HEADER, signature};
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, unique};
use support::{endpoint, eventually, project_template_text, recorded_sms};

fn string(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

const KOREA: &str = "+821012345678";
const US: &str = "+12015550123";

/// A stack whose SMS go by `routes`, retrying after a second.
async fn stack(routes: &str) -> Api {
    let parameters = BTreeMap::from([
        ("SmsRoutes".to_string(), routes.to_string()),
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        ("RetryMaxSeconds".to_string(), "2".to_string()),
    ]);
    let api = Api::start_from(&project_template_text(), &endpoint(), parameters).await;
    assert!(api.stack.twilio.is_some(), "the local stack sends through its local Twilio");
    api
}

/// Sends an SMS with a unique text to a new user at `phone`; its notification id and text.
async fn send_to(api: &Api, phone: &str) -> (String, String) {
    let (user, template, text) = (unique("u"), unique("t"), unique("text"));
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": phone}))).await;
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template, "params": {"text": text}});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    (id, text)
}

/// The messages with `text` that Twilio and SNS took.
async fn taken(api: &Api, text: &str) -> (usize, usize) {
    let twilio = api.stack.twilio.as_ref().unwrap().messages();
    let by_twilio = twilio.iter().filter(|message| message["body"] == text).count();
    let by_sns = recorded_sms().await.iter().filter(|sms| sms["message"] == text).count();
    (by_twilio, by_sns)
}

async fn delivery_when(api: &Api, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    api.wait_for_notification(id, what, |view| done(&view["deliveries"][0])).await["deliveries"][0].clone()
}

/// Posts a Twilio status callback for `id`'s SMS, signed with `token`.
async fn callback(api: &Api, id: &str, params: &[(&str, &str)], token: &str) -> u16 {
    let url = format!("{}/v1/receipts/twilio?notification_id={id}&delivery_id=sms", api.stack.api_url);
    let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let answer = reqwest::Client::new()
        .post(&url)
        .header(SIGNATURE_HEADER, signature(token, &url, params.iter().copied()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    answer.status().as_u16()
}

#[tokio::test]
async fn each_number_goes_by_its_route_and_twilios_signed_receipts_record_the_delivery() {
    let api = stack("+82=twilio,sns;*=sns").await;
    let (korean, korean_text) = send_to(&api, KOREA).await;
    let (american, american_text) = send_to(&api, US).await;

    let delivered = delivery_when(&api, &korean, "delivered by Twilio's receipt", |d| d["status"] == "delivered").await;
    assert_eq!(delivered["provider"], "twilio");
    let sid = delivered["provider_message_id"].as_str().unwrap().to_string();
    assert!(sid.starts_with("SM"), "{delivered}");
    let sent = delivery_when(&api, &american, "sent by SNS", |d| d["status"] == "sent").await;
    assert_eq!(sent["provider"], "sns");
    assert_eq!(taken(&api, &korean_text).await, (1, 0));
    assert_eq!(taken(&api, &american_text).await, (0, 1));
    api.wait_for_stats("channel=sms", "SMS counted by provider", |counts| {
        counts["sent_by_provider"] == json!({"sns": 1, "twilio": 1})
    })
    .await;
    let twilio = api.stack.twilio.as_ref().unwrap();
    let answered: Vec<u16> = twilio.callbacks().iter().filter(|c| c.message_sid == sid).map(|c| c.answered).collect();
    assert_eq!(answered, [204, 204], "sent, then delivered");

    // A forged callback, and a replay of the genuine one: refused, and nothing changes.
    let token = twilio.account().auth_token.clone();
    let undelivered = [("MessageSid", sid.as_str()), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")];
    assert_eq!(callback(&api, &korean, &undelivered, "not-the-token").await, 403);
    let replay = [("MessageSid", sid.as_str()), ("MessageStatus", "delivered")];
    assert_eq!(callback(&api, &korean, &replay, &token).await, 403);
    // A genuine receipt for a delivery that did not go through Twilio changes nothing either.
    assert_eq!(callback(&api, &american, &replay, &token).await, 403);
    assert_eq!(api.notification(&korean).await["deliveries"][0]["status"], "delivered");
    assert_eq!(api.notification(&american).await["deliveries"][0]["status"], "sent");
    assert_eq!(api.stack.denials(), [], "every call the functions made is granted");
}

#[tokio::test]
async fn an_sns_outage_fails_over_to_twilio_and_a_destination_twilio_does_not_serve_goes_to_sns() {
    let api = stack("*=sns,twilio").await;
    api.stack.providers.set_down(Channel::Sms, true);
    let (outage, outage_text) = send_to(&api, US).await;
    let sent = delivery_when(&api, &outage, "sent after failing over", |d| d["status"] == "delivered").await;
    assert_eq!((sent["provider"].clone(), sent["attempts"].clone()), (json!("twilio"), json!(2)));
    assert_eq!(taken(&api, &outage_text).await, (1, 0));
    assert!(api.stack.providers.sends(Channel::Sms).refused >= 1);
    api.stack.providers.set_down(Channel::Sms, false);

    // Twilio may not send to Korea (21408): SNS takes it in the same attempt.
    let routed = stack("+82=twilio,sns;*=sns").await;
    routed.stack.twilio.as_ref().unwrap().refuse("+82", Some(21408));
    let (korean, korean_text) = send_to(&routed, KOREA).await;
    let sent = delivery_when(&routed, &korean, "sent by SNS", |d| d["status"] == "sent").await;
    assert_eq!((sent["provider"].clone(), sent["attempts"].clone()), (json!("sns"), json!(1)));
    assert_eq!(taken(&routed, &korean_text).await, (0, 1));
    assert_eq!(api.stack.denials(), []);
    assert_eq!(routed.stack.denials(), []);
}

#[tokio::test]
async fn a_twilio_timeout_never_hands_the_message_to_sns() {
    let api = stack("*=twilio,sns").await;
    let twilio = api.stack.twilio.as_ref().unwrap();
    // Twilio takes the message and never answers: the function gives up waiting.
    twilio.fail_next([Fault::TimeoutAfterRequest]);
    let (id, text) = send_to(&api, US).await;
    let delivery = delivery_when(&api, &id, "finished", |d| d["status"] == "delivered").await;
    assert_eq!(delivery["provider"], "twilio");
    // The attempt gave up waiting (Twilio's failure is counted in its health, fleet-wide); its
    // receipt had told the stack the message went out, so nothing is sent again, by anyone.
    let table = api.stack.deployed.table("RateLimitsTable").unwrap().to_string();
    eventually(Duration::from_secs(30), "the timed-out call counted against Twilio", || async {
        let health =
            api.clients.dynamodb.get_item().table_name(&table).key("key", string("provider-health/sms/twilio"));
        let item = health.send().await.unwrap().item?;
        (item.get("failures")? == &AttributeValue::N("1".into())).then_some(())
    })
    .await;
    assert_eq!(taken(&api, &text).await, (1, 0));

    // An internal error (500) may follow a message Twilio created: the retry goes to Twilio
    // again, never to SNS, though SNS is next on the route.
    twilio.fail_next([Fault::ServerError]);
    let (id, text) = send_to(&api, US).await;
    let delivery = delivery_when(&api, &id, "sent on the retry", |d| d["status"] == "delivered").await;
    assert_eq!((delivery["provider"].clone(), delivery["attempts"].clone()), (json!("twilio"), json!(2)));
    assert_eq!(taken(&api, &text).await, (1, 0));
    assert_eq!(api.stack.denials(), []);
}
