//! Wall-clock helpers: RFC 3339 timestamps for records and epoch seconds for TTL attributes.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).expect("RFC 3339 formats every OffsetDateTime")
}

pub fn now_epoch_seconds() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn now_epoch_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn now_epoch_micros() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// An epoch-millisecond instant as RFC 3339 in UTC, to the second (how `send_at` and
/// `deliver_after` are shown).
pub fn rfc3339_millis(epoch_ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(epoch_ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    rfc3339(at)
}

/// Epoch milliseconds of an RFC 3339 timestamp (with its offset: `Z` or `±hh:mm`).
pub fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Epoch seconds of an RFC 3339 timestamp.
pub fn parse_rfc3339_epoch(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(OffsetDateTime::unix_timestamp)
}

/// The UTC hour an epoch second falls in, as the stats table keys it: `2026-11-22T05`.
pub fn hour_bucket(epoch_seconds: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(epoch_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}T{:02}", at.year(), u8::from(at.month()), at.day(), at.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_sort_as_text() {
        let first = hour_bucket(parse_rfc3339_epoch("2026-11-22T05:59:59Z").unwrap());
        assert_eq!(first, "2026-11-22T05");
        assert!(first < hour_bucket(parse_rfc3339_epoch("2026-11-22T06:00:00Z").unwrap()));
        assert!(hour_bucket(parse_rfc3339_epoch("2026-09-30T23:00:00Z").unwrap()) < first);
    }
}
