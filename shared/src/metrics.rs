//! Metrics as CloudWatch embedded-metric-format (EMF) lines on stdout: CloudWatch Logs turns
//! them into metrics, with no CloudWatch API call on the hot path. Namespace `notify`;
//! dimension `Channel`; counters `Sent`, `Failed`, `Skipped`, `Retried`, `Parked` (one per
//! delivery outcome or failed attempt), `Waited` (an attempt that waited for the channel's send
//! rate through the queue), `Throttled` (a provider's throttling answer), `Delivered`, `Bounced`, `Complained` (email feedback), `Accepted` (per delivery or
//! skipped channel at intake), `Opened`, `Clicked` (first open / first click of a delivery) and
//! the `ProviderLatency` histogram (milliseconds). `Sent` is also counted per lane (dimensions
//! `Channel`, `Lane`): the send rate the backlog alarms divide the queue depth by. The stats
//! table counts the same events.
//! `ProviderCalls` and `ProviderFailures` (dimensions `Channel`, `Provider`) count each call to
//! a provider and those that failed for the provider's sake (an error on its side, a timeout,
//! its refusal of our credentials): a provider's failure rate, alarmed per provider.
//! `EventsPublished`, `EventsParked` and `EventPublishFailures` (no dimension) count the event
//! stream's work (`event_stream`).
//! `AccessDenied` (no dimension) counts the AWS calls a function's role refused: a
//! configuration error, alarmed at the first.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_cloudwatch_embedded::Collector;

use crate::domain::channel::Channel;
use crate::domain::send_rate::Lane;

pub const NAMESPACE: &str = "notify";

static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// The process's collector, installed as the `metrics` recorder on first use.
fn collector() -> Option<&'static Collector> {
    *COLLECTOR.get_or_init(|| metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).init().ok())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMetric {
    Sent,
    Failed,
    Skipped,
    Retried,
    Waited,
    Throttled,
    Parked,
    Delivered,
    Bounced,
    Complained,
    Accepted,
    Opened,
    Clicked,
}

impl DeliveryMetric {
    fn name(self) -> &'static str {
        match self {
            DeliveryMetric::Sent => "Sent",
            DeliveryMetric::Failed => "Failed",
            DeliveryMetric::Skipped => "Skipped",
            DeliveryMetric::Retried => "Retried",
            DeliveryMetric::Waited => "Waited",
            DeliveryMetric::Throttled => "Throttled",
            DeliveryMetric::Parked => "Parked",
            DeliveryMetric::Delivered => "Delivered",
            DeliveryMetric::Bounced => "Bounced",
            DeliveryMetric::Complained => "Complained",
            DeliveryMetric::Accepted => "Accepted",
            DeliveryMetric::Opened => "Opened",
            DeliveryMetric::Clicked => "Clicked",
        }
    }
}

pub fn delivery(channel: Channel, metric: DeliveryMetric) {
    collector();
    metrics::counter!(metric.name(), "Channel" => channel.as_str()).increment(1);
}

/// A send the provider accepted, per channel and lane.
pub fn sent(channel: Channel, lane: Lane) {
    delivery(channel, DeliveryMetric::Sent);
    metrics::counter!("Sent", "Channel" => channel.as_str(), "Lane" => lane.as_str()).increment(1);
}

pub fn access_denied() {
    collector();
    metrics::counter!("AccessDenied").increment(1);
}

pub fn provider_latency(channel: Channel, latency: Duration) {
    collector();
    metrics::histogram!("ProviderLatency", "Channel" => channel.as_str()).record(latency.as_secs_f64() * 1000.0);
}

/// A call to `provider`, and whether it failed for the provider's sake.
pub fn provider_call(channel: Channel, provider: &str, failed: bool) {
    collector();
    let (channel, provider) = (channel.as_str(), provider.to_string());
    metrics::counter!("ProviderCalls", "Channel" => channel, "Provider" => provider.clone()).increment(1);
    if failed {
        metrics::counter!("ProviderFailures", "Channel" => channel, "Provider" => provider).increment(1);
    }
}

/// A provider taken out of rotation (fleet-wide: counted once per cool-down).
pub fn provider_out_of_rotation(provider: &str) {
    collector();
    metrics::counter!("ProviderOutOfRotation", "Provider" => provider.to_string()).increment(1);
}

/// The event stream: events put on the bus, parked in its DLQ past the retry window, and
/// failed puts (each retried or parked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventMetric {
    Published,
    Parked,
    PublishFailures,
}

pub fn events(metric: EventMetric, count: usize) {
    collector();
    let name = match metric {
        EventMetric::Published => "EventsPublished",
        EventMetric::Parked => "EventsParked",
        EventMetric::PublishFailures => "EventPublishFailures",
    };
    metrics::counter!(name).increment(count as u64);
}

/// Writes what was recorded since the last flush as EMF to `writer` (and resets it).
pub fn flush_to(writer: impl std::io::Write) {
    if let Some(collector) = collector()
        && let Err(error) = collector.flush(writer)
    {
        tracing::warn!(error = %error, "metrics could not be written");
    }
}

/// At the end of an invocation: to stdout in Lambda (its log stream feeds CloudWatch); elsewhere
/// (the local stack, tests) the figures are dropped rather than mixed into test output.
pub fn flush() {
    // The collector is the process's: in unit tests, a batch's flush would take what a metrics
    // test recorded before that test reads it.
    #[cfg(test)]
    let _flushing = tests::FLUSHING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        flush_to(std::io::stdout());
    } else {
        flush_to(std::io::sink());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by a test from its first record to its read, and by [`flush`].
    pub(super) static FLUSHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn outcomes_are_written_as_emf_with_the_channel_dimension() {
        let _flushing = FLUSHING.lock().unwrap();
        // Push: the dispatch loop's tests, running beside this one, record SMS outcomes.
        sent(Channel::Push, Lane::Bulk);
        sent(Channel::Push, Lane::Bulk);
        provider_latency(Channel::Push, Duration::from_millis(42));
        let mut written = Vec::new();
        flush_to(&mut written);
        let lines: Vec<serde_json::Value> = String::from_utf8(written)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|line| line["Channel"] == "push")
            .collect();
        let sent =
            lines.iter().find(|line| line.get("Sent").is_some() && line.get("Lane").is_none()).expect("a Sent line");
        assert_eq!(sent["Sent"], 2);
        assert_eq!(sent["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        let in_lane = lines.iter().find(|line| line.get("Lane").is_some()).expect("a Sent line per lane");
        assert_eq!(
            (in_lane["Sent"].clone(), in_lane["Lane"].clone()),
            (serde_json::json!(2), serde_json::json!("bulk"))
        );
        assert_eq!(in_lane["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["Channel", "Lane"]]));
        assert!(lines.iter().any(|line| line.get("ProviderLatency").is_some()));
    }

    #[test]
    fn access_denied_is_one_metric_with_no_dimension() {
        let _flushing = FLUSHING.lock().unwrap();
        access_denied();
        let mut written = Vec::new();
        flush_to(&mut written);
        let text = String::from_utf8(written).unwrap();
        let line: serde_json::Value = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .find(|line: &serde_json::Value| line.get("AccessDenied").is_some())
            .expect("an AccessDenied line");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([[]]));
    }
}
