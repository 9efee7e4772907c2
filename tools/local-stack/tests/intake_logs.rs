//! The intake's log lines, as CloudWatch gets them: each line of a request names its route, API
//! Gateway's request id (what the access log calls requestId, so the two join) and, once the
//! caller is authenticated, its app key. (Its own test binary: it installs the process's log
//! subscriber.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::Value;
use support::api::Api;

/// Log lines, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn parsed(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

#[tokio::test]
async fn every_intake_line_of_a_request_names_its_route_request_id_and_app() {
    let lines = Lines::default();
    let writer = lines.clone();
    notify::telemetry::init_writing_to(move || writer.clone());
    let api = Api::start().await;
    let (id, _) = api.send_sms().await;
    assert_eq!(api.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.status, 200);

    let accepted = lines
        .parsed()
        .into_iter()
        .find(|line| line["message"] == "accepted" && line["notification_id"] == id.as_str())
        .expect("the intake logs each accepted notification");
    let span = &accepted["span"];
    assert_eq!(span["route"], "POST /v1/notifications", "{accepted}");
    assert_eq!(span["app_key"], api.app.app_key.as_str(), "{accepted}");
    assert!(span["api_request_id"].as_str().is_some_and(|id| !id.is_empty()), "{accepted}");
    api.stack.stop().await;
}
