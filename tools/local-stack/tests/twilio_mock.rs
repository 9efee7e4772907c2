//! The local Twilio answers as Twilio's Programmable Messaging API reference says it does: the
//! SMS path through Twilio is only as real as this mock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use local_stack::twilio::{Callback, Fault, TwilioAccount, TwilioMock};
use notify::provider::twilio::{SIGNATURE_HEADER, verify};
use serde_json::Value;

const FROM: &str = "+15005550006";

async fn mock() -> TwilioMock {
    TwilioMock::start(TwilioAccount::generate(), Duration::from_secs(2)).await.unwrap()
}

fn messages_url(mock: &TwilioMock) -> String {
    format!("{}/2010-04-01/Accounts/{}/Messages.json", mock.url, mock.account().sid)
}

/// Create Message with the account's credentials and `form`; the status and the JSON answer.
async fn create(mock: &TwilioMock, form: &[(&str, &str)]) -> (u16, Value) {
    let account = mock.account();
    let answer = reqwest::Client::new()
        .post(messages_url(mock))
        .basic_auth(&account.sid, Some(&account.auth_token))
        .form(form)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

async fn get(mock: &TwilioMock, url: &str) -> (u16, Value) {
    let account = mock.account();
    let answer =
        reqwest::Client::new().get(url).basic_auth(&account.sid, Some(&account.auth_token)).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

fn assert_error(answer: &(u16, Value), status: u16, code: u64) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert_eq!(answer.1["status"], status);
    assert_eq!(answer.1["more_info"], format!("https://www.twilio.com/docs/errors/{code}"));
    assert!(answer.1["message"].as_str().is_some_and(|message| !message.is_empty()));
}

#[tokio::test]
async fn a_created_message_is_answered_as_twilio_does_and_listed() {
    let mock = mock().await;
    let (status, message) =
        create(&mock, &[("To", "+14155550123"), ("From", FROM), ("Body", "Your code is 123456")]).await;
    assert_eq!(status, 201, "{message}");
    let sid = message["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(message["account_sid"], mock.account().sid.as_str());
    assert_eq!(message["status"], "queued");
    assert_eq!(message["direction"], "outbound-api");
    assert_eq!(message["to"], "+14155550123");
    assert_eq!(message["from"], FROM);
    assert_eq!(message["body"], "Your code is 123456");
    assert_eq!(message["api_version"], "2010-04-01");
    assert!(message["date_created"].as_str().unwrap().ends_with("+0000"), "RFC 2822: {}", message["date_created"]);
    assert_eq!(message["uri"], format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", mock.account().sid));

    let (status, fetched) = get(&mock, &format!("{}{}", mock.url, message["uri"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["sid"], sid);
    create(&mock, &[("To", "+447700900123"), ("MessagingServiceSid", "MG0123"), ("Body", "two")]).await;
    let (status, page) = get(&mock, &messages_url(&mock)).await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = page["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["two", "Your code is 123456"], "newest first");
    assert_eq!(page["page"], 0);
    assert!(page["next_page_uri"].is_null());
    let (_, filtered) = get(&mock, &format!("{}?To=%2B447700900123&PageSize=1", messages_url(&mock))).await;
    assert_eq!(filtered["messages"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["messages"][0]["messaging_service_sid"], "MG0123");
    let (_, first) = get(&mock, &format!("{}?PageSize=1", messages_url(&mock))).await;
    assert_eq!(
        first["next_page_uri"],
        format!("/2010-04-01/Accounts/{}/Messages.json?PageSize=1&Page=1", mock.account().sid)
    );
}

#[tokio::test]
async fn bad_credentials_and_bad_messages_get_twilios_errors() {
    let mock = mock().await;
    let wrong = reqwest::Client::new()
        .post(messages_url(&mock))
        .basic_auth(&mock.account().sid, Some("not-the-token"))
        .form(&[("To", "+14155550123"), ("From", FROM), ("Body", "hi")])
        .send()
        .await
        .unwrap();
    assert_error(&(wrong.status().as_u16(), wrong.json().await.unwrap()), 401, 20003);
    assert_error(&create(&mock, &[("From", FROM), ("Body", "hi")]).await, 400, 21604);
    assert_error(&create(&mock, &[("To", "4155550123"), ("From", FROM), ("Body", "hi")]).await, 400, 21211);
    assert_error(&create(&mock, &[("To", "+14155550123"), ("Body", "hi")]).await, 400, 21603);
    assert_error(&create(&mock, &[("To", "+14155550123"), ("From", FROM)]).await, 400, 21602);
    let long = "x".repeat(1601);
    assert_error(&create(&mock, &[("To", "+14155550123"), ("From", FROM), ("Body", &long)]).await, 400, 21617);
    assert!(mock.messages().is_empty(), "nothing refused was created");
}

#[tokio::test]
async fn injected_faults_answer_in_order_and_refusals_by_destination() {
    let mock = mock().await;
    let send = |to: &'static str| {
        let mock = &mock;
        async move { create(mock, &[("To", to), ("From", FROM), ("Body", "hi")]).await }
    };
    mock.refuse("+82", Some(21408));
    mock.refuse("+8210", Some(21614));
    mock.refuse("+14155550100", Some(21610));
    assert_error(&send("+821112345678").await, 400, 21408);
    assert_error(&send("+821012345678").await, 400, 21614);
    assert_error(&send("+14155550100").await, 400, 21610);
    mock.refuse("+82", None);
    assert_eq!(send("+821112345678").await.0, 201);

    mock.fail_next([Fault::ServerError, Fault::Unavailable, Fault::TooManyRequests]);
    assert_error(&send("+14155550123").await, 500, 20500);
    assert_error(&send("+14155550123").await, 503, 20503);
    assert_error(&send("+14155550123").await, 429, 20429);
    assert_eq!(send("+14155550123").await.0, 201);

    mock.fail_every(Some((3, Fault::ServerError)));
    let statuses = [send("+14155550123").await.0, send("+14155550123").await.0, send("+14155550123").await.0];
    assert_eq!(statuses.iter().filter(|status| **status == 500).count(), 1, "{statuses:?}");
    mock.fail_every(None);
    assert_eq!(mock.messages().len(), 4);
}

#[tokio::test]
async fn a_timeout_after_the_request_creates_the_message_and_never_answers_in_time() {
    let mock = mock().await;
    mock.fail_next([Fault::TimeoutAfterRequest]);
    let account = mock.account();
    let answer = reqwest::Client::new()
        .post(messages_url(&mock))
        .basic_auth(&account.sid, Some(&account.auth_token))
        .form(&[("To", "+14155550123"), ("From", FROM), ("Body", "did it go?")])
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(answer.is_err_and(|error| error.is_timeout()));
    let messages = mock.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["body"], "did it go?");
}

/// A callback URL recording what it receives.
async fn receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, BTreeMap<String, String>)>>>) {
    type Received = Arc<Mutex<Vec<(HeaderMap, BTreeMap<String, String>)>>>;
    async fn receive(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let form = form_urlencoded::parse(&body).into_owned().collect();
        received.lock().unwrap().push((headers, form));
        StatusCode::NO_CONTENT
    }
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/receipts/twilio?app=a", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(receive).with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn status_callbacks_are_signed_as_twilio_signs_them() {
    let mock = mock().await;
    let (url, received) = receiver().await;
    mock.unreachable("+14155550199");
    let (_, delivered) =
        create(&mock, &[("To", "+14155550123"), ("From", FROM), ("Body", "one"), ("StatusCallback", &url)]).await;
    let (_, undelivered) =
        create(&mock, &[("To", "+14155550199"), ("From", FROM), ("Body", "two"), ("StatusCallback", &url)]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.callbacks().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "callbacks: {:?}", mock.callbacks());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses = |sid: &Value| -> Vec<String> {
        mock.callbacks().iter().filter(|c| c.message_sid == sid.as_str().unwrap()).map(|c| c.status.clone()).collect()
    };
    assert_eq!(statuses(&delivered["sid"]), ["sent", "delivered"]);
    assert_eq!(statuses(&undelivered["sid"]), ["sent", "undelivered"]);
    assert!(mock.callbacks().iter().all(|Callback { answered, .. }| *answered == 204));
    for (headers, form) in received.lock().unwrap().iter() {
        let signature = headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
        let params = form.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        assert!(verify(&mock.account().auth_token, &url, params.clone(), signature), "{form:?}");
        assert!(!verify("another-token", &url, params, signature));
        assert_eq!(form["AccountSid"], mock.account().sid);
        assert_eq!(form["MessageStatus"], form["SmsStatus"]);
        assert_eq!(
            form.get("ErrorCode").map(String::as_str),
            (form["MessageStatus"] == "undelivered").then_some("30003")
        );
    }
    let stored = mock.messages();
    assert_eq!(stored[1]["status"], "undelivered");
    assert_eq!(stored[1]["error_code"], 30003);
}
