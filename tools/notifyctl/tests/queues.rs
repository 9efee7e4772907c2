//! `notifyctl queues` on a backlog draining at its quota: what waits, at what rate, and when it
//! drains.

#[path = "../../local-stack/tests/support/mod.rs"]
mod stack;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use local_stack::provider_account::Quotas;
use notify::domain::channel::Channel;
use reqwest::Method;
use serde_json::{Value, json};
use stack::api::{Api, unique};
use stack::{endpoint, eventually, project_template_text};
use support::{notifyctl, write_outputs};

fn lane<'a>(report: &'a Value, channel: &str, lane: &str) -> &'a Value {
    report.as_array().unwrap().iter().find(|row| row["channel"] == channel && row["lane"] == lane).unwrap()
}

#[tokio::test]
async fn a_backlog_shows_its_depth_its_rate_at_the_quota_and_when_it_drains() {
    let parameters = BTreeMap::from([("SmsSendRate".to_string(), "2".to_string())]);
    let quotas = Quotas { sms: 2.0, ..Quotas::default() };
    let api = Api::start_in_account(&project_template_text(), &endpoint(), parameters, quotas).await;
    let (outputs, directory) = write_outputs(&api.stack, &endpoint());
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let users = api.users_with_phone(40).await;
    let items: Vec<Value> =
        users.iter().map(|user| json!({"idempotency_key": unique("k"), "user_id": user, "template": template, "params": {"text": "x"}})).collect();
    let reply = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": items}))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["results"].as_array().unwrap().iter().all(|result| result["status"] == 202), "{}", reply.body);
    eventually(Duration::from_secs(30), "the backlog to start draining", || async {
        (api.stack.providers.sends(Channel::Sms).accepted > 0).then_some(())
    })
    .await;

    let report = notifyctl(&outputs, &["queues", "--sample", "3"]).await;
    let sms = lane(&report, "sms", "bulk");
    let pending = sms["waiting"].as_u64().unwrap() + sms["in_flight"].as_u64().unwrap();
    assert!(pending >= 10, "{sms}");
    let rate = sms["sending_per_second"].as_f64().unwrap();
    assert!((1.0..=3.4).contains(&rate), "sending at the quota: {sms}");
    assert_eq!(sms["quota_per_second"], 2.0);
    let drain = sms["drain_seconds"].as_f64().unwrap();
    assert!((drain - pending as f64 / rate).abs() < 0.01, "{sms}");
    assert!(sms["oldest_seconds"].as_f64().unwrap() >= 0.0, "{sms}");
    let idle = lane(&report, "email", "transactional");
    assert_eq!((idle["waiting"].as_u64(), idle["drain_seconds"].as_f64()), (Some(0), Some(0.0)), "{idle}");
    assert_eq!(report.as_array().unwrap().len(), 6, "three channels, two lanes each");
    api.stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}
