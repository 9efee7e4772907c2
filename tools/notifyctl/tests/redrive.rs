//! On-call after a provider outage, end to end: a delivery that keeps failing is parked in the
//! DLQ with its last error; `notifyctl dlq list` groups it by that error; once the fault is
//! gone, `notifyctl dlq redrive` (through the Lambda API, to the retry function) delivers it
//! exactly once and its timeline shows the redrive.

#[path = "../../local-stack/tests/support/mod.rs"]
mod stack;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use stack::api::{Api, every_delivery_sent};
use stack::fault_proxy::FaultProxy;
use stack::{endpoint, eventually, recorded_sms};
use support::{notifyctl, write_outputs};

#[tokio::test]
async fn a_parked_delivery_is_listed_by_its_error_and_redriven_with_the_cli_exactly_once() {
    // Every SMS send fails with SNS's internal error; retries come back after 1 s.
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    proxy.set_failure_share(1.0);
    let parameters = BTreeMap::from([
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        ("RetryMaxSeconds".to_string(), "1".to_string()),
    ]);
    let api = Api::start_with(&proxy.url, parameters).await;
    let (outputs, directory) = write_outputs(&api.stack, &endpoint());
    let (id, text) = api.send_sms().await;

    eventually(Duration::from_secs(90), "the message in the SMS DLQ", || async {
        (api.queue_depth("SmsDeadLetterQueue").await == 1).then_some(())
    })
    .await;
    let parked = api.notification(&id).await["deliveries"][0].clone();
    assert_eq!((parked["status"].clone(), parked["attempts"].clone()), (json!("parked"), json!(8)), "the retry budget");
    // SNS's internal error may follow a publish it carried out: ambiguous, and pinned to SNS.
    let error = json!({"class": "ambiguous", "code": "InternalError", "message": "Internal Error", "provider": "sns"});
    assert_eq!(parked["error"], error);
    let groups = notifyctl(&outputs, &["dlq", "list", "--channel", "sms"]).await;
    let group = &groups.as_array().unwrap()[0];
    assert_eq!(
        (group["class"].clone(), group["code"].clone(), group["count"].clone()),
        (json!("ambiguous"), json!("InternalError"), json!(1)),
        "{groups}"
    );

    // The fault is fixed. On-call counts first, then redrives.
    proxy.set_failure_share(0.0);
    let counted = notifyctl(&outputs, &["dlq", "redrive", "--channel", "sms", "--dry-run"]).await;
    assert_eq!((counted[0]["dead_letters"].clone(), counted[0]["redriven"].clone()), (json!(1), json!(0)));
    assert_eq!(api.queue_depth("SmsDeadLetterQueue").await, 1, "a dry run moves nothing");
    let redriven = notifyctl(&outputs, &["dlq", "redrive", "--channel", "sms"]).await;
    assert_eq!(
        redriven,
        json!([{"channel": "sms", "dry_run": false, "dead_letters": 1, "redriven": 1, "already_finished": 0, "left_in_dlq": 0}])
    );
    let delivered = api.wait_for_notification(&id, "the delivery to be sent", every_delivery_sent).await;
    let events: Vec<&str> =
        delivered["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events.iter().filter(|e| **e == "redriven").count(), 1, "{events:?}");
    assert_eq!(events.last(), Some(&"sent"));
    assert_eq!(recorded_sms().await.iter().filter(|sms| sms["message"] == text.as_str()).count(), 1);

    // Redriving every channel again finds nothing to do.
    let again = notifyctl(&outputs, &["dlq", "redrive"]).await;
    let moved: u64 = again.as_array().unwrap().iter().map(|report| report["redriven"].as_u64().unwrap()).sum();
    assert_eq!((again.as_array().unwrap().len(), moved), (3, 0), "{again}");
    api.stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}
