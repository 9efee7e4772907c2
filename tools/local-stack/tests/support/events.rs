//! Reading the stack's event stream as a consumer does: the events queue the template's rule
//! fills, each message an EventBridge envelope whose detail matches the published schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::api::Api;

const SCHEMA: &str = include_str!("../../../../schemas/notification-event.v1.json");

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// A consumer of the stack's events queue: every event it has read, by notification.
pub struct Consumer {
    url: String,
    pub read: BTreeMap<String, Vec<Value>>,
}

impl Consumer {
    pub fn new(api: &Api) -> Self {
        let url = api.stack.deployed.queue("NotificationEventsQueue").expect("the template has an events queue").0;
        Self { url: url.to_string(), read: BTreeMap::new() }
    }

    /// Reads what is in the queue now (each message an EventBridge envelope), checking each
    /// envelope and detail.
    pub async fn read(&mut self, api: &Api) {
        let validator = jsonschema::validator_for(&serde_json::from_str(SCHEMA).unwrap()).unwrap();
        loop {
            let received =
                api.clients.sqs.receive_message().queue_url(&self.url).max_number_of_messages(10).send().await.unwrap();
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return;
            }
            let mut handles = Vec::new();
            for message in messages {
                let envelope: Value = serde_json::from_str(message.body().unwrap()).unwrap();
                let detail = envelope["detail"].clone();
                assert_eq!(envelope["source"], "notify", "{envelope}");
                assert_eq!(envelope["detail-type"], format!("notification.{}", detail["type"].as_str().unwrap()));
                let errors: Vec<String> = validator.iter_errors(&detail).map(|error| error.to_string()).collect();
                assert!(errors.is_empty(), "{detail} does not match the schema: {errors:?}");
                let id = detail["notification_id"].as_str().unwrap().to_string();
                self.read.entry(id).or_default().push(detail);
                handles.push(message.receipt_handle.unwrap());
            }
            notify::queue::delete_messages(&api.clients.sqs, &self.url, &handles).await.unwrap();
        }
    }

    /// The types of notification `id`'s events read so far, each event once (by its id), in
    /// the order they were read.
    pub fn types(&self, id: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.read
            .get(id)
            .into_iter()
            .flatten()
            .filter(|event| seen.insert(event["id"].as_str().unwrap().to_string()))
            .map(|event| event["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Reads until notification `id`'s events are `expected` (in that order if `ordered`).
    pub async fn wait_for(&mut self, api: &Api, id: &str, expected: &[String]) {
        self.wait_until(api, id, expected, true).await;
    }

    pub async fn wait_until(&mut self, api: &Api, id: &str, expected: &[String], ordered: bool) {
        let sorted = |mut types: Vec<String>| {
            if !ordered {
                types.sort();
            }
            types
        };
        let expected = sorted(expected.to_vec());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.read(api).await;
            if sorted(self.types(id)) == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "notification {id}: read {:?}, expected {expected:?}",
                self.types(id)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
