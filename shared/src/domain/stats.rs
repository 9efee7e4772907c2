//! Delivery statistics: which counters exist, the query callers make (`GET /v1/stats`,
//! `notifyctl stats`) and the report built from the summed counters.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::FieldError;
use super::channel::Channel;
use super::notification::SkipReason;
use super::template::TemplateName;

/// The longest range one query may cover (the counters are hourly: at most 744 items per channel).
pub const MAX_RANGE_SECONDS: i64 = 31 * 24 * 3600;
/// The range when `from` is not given.
pub const DEFAULT_RANGE_SECONDS: i64 = 24 * 3600;

pub const ACCEPTED: &str = "accepted";
pub const OPENED: &str = "opened";
/// Deliveries the caller cancelled before they were sent.
pub const CANCELLED: &str = "cancelled";
/// Deliveries clicked at least once (what the click rate counts).
pub const CLICKED: &str = "clicked";
/// Every click.
pub const CLICKS: &str = "clicks";
/// Sent deliveries whose notification the app reported converted.
pub const CONVERTED: &str = "converted";

/// The counter of deliveries sent through `provider` (`sent` counts them all).
pub fn sent_via_counter(provider: &str) -> String {
    format!("{SENT_VIA}{provider}")
}

const SENT_VIA: &str = "sent_via_";

/// The counter of deliveries skipped for `reason`.
pub fn skipped_counter(reason: SkipReason) -> String {
    format!("skipped_{}", reason.as_str())
}

/// A checked stats query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    pub template: Option<TemplateName>,
    pub channel: Option<Channel>,
    /// Epoch seconds; counted by whole UTC hours.
    pub from: i64,
    pub to: i64,
}

impl StatsQuery {
    /// From the query parameters (`template`, `channel`, `from`, `to`: RFC 3339); `to`
    /// defaults to now and `from` to a day before `to`.
    pub fn parse(
        template: Option<&str>,
        channel: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        now: i64,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut field = |name: &str, message: String| errors.push(FieldError::new(name, message));
        let template = template.and_then(|t| TemplateName::parse(t).map_err(|m| field("template", m)).ok());
        let channel = channel.and_then(|c| c.parse::<Channel>().map_err(|m| field("channel", m)).ok());
        let mut time = |name: &str, value: Option<&str>| {
            value.and_then(|v| {
                crate::time::parse_rfc3339_epoch(v)
                    .ok_or_else(|| field(name, "must be an RFC 3339 timestamp such as 2026-11-22T05:00:00Z".into()))
                    .ok()
            })
        };
        let to_time = time("to", to);
        let from_time = time("from", from);
        let to = to_time.unwrap_or(now);
        let from = from_time.unwrap_or(to - DEFAULT_RANGE_SECONDS);
        if from > to {
            errors.push(FieldError::new("from", "must not be after to"));
        } else if to - from > MAX_RANGE_SECONDS {
            errors.push(FieldError::new("from", "the range may cover at most 31 days"));
        }
        if errors.is_empty() { Ok(Self { template, channel, from, to }) } else { Err(errors) }
    }

    pub fn channels(&self) -> Vec<Channel> {
        self.channel.map_or_else(|| Channel::ALL.to_vec(), |channel| vec![channel])
    }

    /// The report of the counters summed over the query's hours, per channel. Each rate is a
    /// share of what was sent on the channel it is about (null when none was): delivery, opens
    /// and clicks of the email sent, push opens (reported by the app) of the push sent,
    /// conversions of everything sent.
    pub fn report(&self, by_channel: &BTreeMap<Channel, BTreeMap<String, u64>>) -> Value {
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for counters in by_channel.values() {
            for (name, n) in counters {
                *totals.entry(name.clone()).or_insert(0) += n;
            }
        }
        let count = |name: &str| totals.get(name).copied().unwrap_or(0);
        let on = |channel: Channel, name: &str| {
            by_channel.get(&channel).and_then(|counters| counters.get(name)).copied().unwrap_or(0)
        };
        let by_prefix = |prefix: &str| -> BTreeMap<String, u64> {
            totals.iter().filter_map(|(name, n)| Some((name.strip_prefix(prefix)?.to_string(), *n))).collect()
        };
        let skipped = by_prefix("skipped_");
        let rate = |n: u64, of: u64| (of > 0).then(|| ((n as f64 / of as f64) * 10_000.0).round() / 10_000.0);
        let email_sent = on(Channel::Email, "sent");
        let sent = count("sent");
        json!({
            "template": self.template,
            "channel": self.channel,
            "from": crate::time::rfc3339(time::OffsetDateTime::from_unix_timestamp(self.from).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
            "to": crate::time::rfc3339(time::OffsetDateTime::from_unix_timestamp(self.to).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
            "counts": {
                "accepted": count(ACCEPTED),
                "sent": sent,
                "sent_by_provider": by_prefix(SENT_VIA),
                "delivered": count("delivered"),
                "failed": count("failed"),
                "bounced": count("bounced"),
                "complained": count("complained"),
                "skipped": skipped,
                "cancelled": count(CANCELLED),
                "opened": count(OPENED),
                "clicked": count(CLICKED),
                "clicks": count(CLICKS),
                "converted": count(CONVERTED),
            },
            "rates": {
                "delivery_rate": rate(count("delivered"), email_sent),
                "open_rate": rate(on(Channel::Email, OPENED), email_sent),
                "push_open_rate": rate(on(Channel::Push, OPENED), on(Channel::Push, "sent")),
                "click_rate": rate(count(CLICKED), email_sent),
                "conversion_rate": rate(count(CONVERTED), sent),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_default_to_the_last_day_and_refuse_bad_fields() {
        let query = StatsQuery::parse(Some("welcome"), None, None, None, 100_000).unwrap();
        assert_eq!((query.from, query.to, query.channels().len()), (100_000 - DEFAULT_RANGE_SECONDS, 100_000, 3));
        let errors = StatsQuery::parse(Some("Bad Name"), Some("fax"), Some("yesterday"), None, 100_000).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["template", "channel", "from"]);
        let backwards = StatsQuery::parse(None, None, Some("2026-11-22T06:00:00Z"), Some("2026-11-22T05:00:00Z"), 0);
        assert_eq!(backwards.unwrap_err()[0].field, "from");
    }

    #[test]
    fn rates_are_shares_of_sent_and_skips_are_by_reason() {
        let query = StatsQuery::parse(None, Some("email"), None, None, 100_000).unwrap();
        let email = BTreeMap::from([
            ("accepted".to_string(), 5),
            ("sent".to_string(), 4),
            ("delivered".to_string(), 3),
            ("opened".to_string(), 2),
            ("clicked".to_string(), 1),
            ("clicks".to_string(), 3),
            (skipped_counter(SkipReason::Suppressed), 1),
            (sent_via_counter("ses"), 4),
            ("converted".to_string(), 1),
        ]);
        let report = query.report(&BTreeMap::from([(Channel::Email, email)]));
        assert_eq!(report["counts"]["skipped"], json!({"suppressed": 1}));
        assert_eq!(report["counts"]["sent_by_provider"], json!({"ses": 4}));
        assert_eq!(
            report["rates"],
            json!({"delivery_rate": 0.75, "open_rate": 0.5, "push_open_rate": null, "click_rate": 0.25, "conversion_rate": 0.25})
        );
        let nothing_sent = StatsQuery::parse(None, None, None, None, 0).unwrap().report(&BTreeMap::new());
        assert_eq!(nothing_sent["rates"]["open_rate"], Value::Null);
        assert_eq!(nothing_sent["rates"]["conversion_rate"], Value::Null);
    }

    #[test]
    fn each_open_rate_is_its_channels_and_conversions_a_share_of_everything_sent() {
        let query = StatsQuery::parse(None, None, None, None, 100_000).unwrap();
        let counters = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(name, n)| (name.to_string(), *n)).collect()
        };
        let report = query.report(&BTreeMap::from([
            (Channel::Email, counters(&[("sent", 2), ("opened", 1), ("clicked", 1), ("converted", 1)])),
            (Channel::Push, counters(&[("sent", 4), ("opened", 2)])),
            (Channel::Sms, counters(&[("sent", 4), ("converted", 1)])),
        ]));
        assert_eq!(report["counts"]["opened"], 3);
        assert_eq!(report["rates"]["open_rate"], 0.5, "1 open of 2 email sent");
        assert_eq!(report["rates"]["push_open_rate"], 0.5, "2 opens of 4 pushes sent");
        assert_eq!(report["rates"]["click_rate"], 0.5);
        assert_eq!(report["rates"]["conversion_rate"], 0.2, "2 of 10 sent");
    }
}
