//! `notifyctl stats` reads the same counters as `GET /v1/stats` and reports the same figures.

#[path = "../../local-stack/tests/support/mod.rs"]
mod stack;
mod support;

use serde_json::json;
use stack::api::{Api, every_delivery_sent};
use stack::endpoint;
use support::{notifyctl, write_outputs};

#[tokio::test]
async fn the_cli_reports_what_the_api_reports() {
    let api = Api::start().await;
    let (outputs, directory) = write_outputs(&api.stack, &endpoint());
    let (id, _) = api.send_sms().await;
    let view = api.wait_for_notification(&id, "the SMS to be sent", every_delivery_sent).await;
    let template = view["template"].as_str().unwrap().to_string();
    // An explicit range, so the API and the CLI ask for the same hours.
    let now = notify::time::now_epoch_seconds();
    let at = |epoch| notify::time::rfc3339(time::OffsetDateTime::from_unix_timestamp(epoch).unwrap());
    let (from, to) = (at(now - 3600), at(now + 3600));
    let query = format!("template={template}&from={from}&to={to}");
    let from_api = api.wait_for_stats(&query, "the send in the stats", |counts| counts["sent"] == 1).await;
    assert_eq!(from_api["counts"]["accepted"], json!(1), "{from_api}");
    let from_cli = notifyctl(&outputs, &["stats", "--template", &template, "--from", &from, "--to", &to]).await;
    assert_eq!(from_cli, from_api);
    api.stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}
