//! The per-user limit of notifications on a channel: at most `limit` in any 60 minutes (a
//! rolling hour). A clock-hour counter would let twice the limit through around the turn of
//! the hour (the limit at 10:59, the limit again at 11:00), which is the "too often" a user
//! notices.

use std::collections::BTreeMap;

/// The length of the rolling window.
pub const WINDOW_SECONDS: i64 = 3600;

/// How many notifications one user may get on one channel in any 60 minutes: 1 to 100. The
/// user's record lists each one counted (about 45 bytes each), so the cap keeps it within five
/// write units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourlyLimit(u32);

impl HourlyLimit {
    pub const MAX: u32 = 100;
    pub const DEFAULT: HourlyLimit = HourlyLimit(10);

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::str::FromStr for HourlyLimit {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.parse::<u32>() {
            Ok(limit @ 1..=Self::MAX) => Ok(HourlyLimit(limit)),
            _ => Err(format!("must be a whole number from 1 to {}", Self::MAX)),
        }
    }
}

/// The notifications counted against one user's limit on one channel, by id, with when each was
/// counted (epoch seconds). Keyed by notification, so retries and a notification's several push
/// devices count once.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RecentSends(BTreeMap<String, i64>);

/// What counting one more notification comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted within the last hour already: nothing to store.
    AlreadyCounted,
    /// Within the limit: the sends to store, with this one and without those the hour left.
    Admitted(RecentSends),
    /// The limit is reached by other notifications within the last hour.
    OverLimit,
}

impl RecentSends {
    /// Counts `notification_id` at `now` against `limit` notifications per rolling hour. A
    /// notification counted more than an hour ago counts anew.
    pub fn admit(&self, notification_id: &str, now: i64, limit: HourlyLimit) -> Admission {
        let since = now - WINDOW_SECONDS;
        if self.0.get(notification_id).is_some_and(|&at| at > since) {
            return Admission::AlreadyCounted;
        }
        let mut recent: BTreeMap<String, i64> =
            self.0.iter().filter(|&(_, &at)| at > since).map(|(id, at)| (id.clone(), *at)).collect();
        if recent.len() >= limit.get() as usize {
            return Admission::OverLimit;
        }
        recent.insert(notification_id.to_string(), now);
        Admission::Admitted(RecentSends(recent))
    }

    /// When the last of these sends leaves the window: after it, the record means nothing.
    pub fn expires_at(&self) -> Option<i64> {
        self.0.values().max().map(|at| at + WINDOW_SECONDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> HourlyLimit {
        n.to_string().parse().unwrap()
    }

    fn admitted(admission: Admission) -> RecentSends {
        match admission {
            Admission::Admitted(sends) => sends,
            other => panic!("expected admitted, got {other:?}"),
        }
    }

    #[test]
    fn the_limit_holds_over_any_sixty_minutes_not_per_clock_hour() {
        let start = 10 * WINDOW_SECONDS - 60; // 09:59
        let sends = admitted(RecentSends::default().admit("a", start, limit(2)));
        let sends = admitted(sends.admit("b", start + 30, limit(2)));
        // 10:00:30, a new clock hour: still two in the last hour.
        assert_eq!(sends.admit("c", start + 90, limit(2)), Admission::OverLimit);
        // An hour after the first, it has left the window.
        assert_eq!(sends.admit("c", start + WINDOW_SECONDS - 1, limit(2)), Admission::OverLimit);
        let sends = admitted(sends.admit("c", start + WINDOW_SECONDS, limit(2)));
        assert_eq!(sends.0.keys().collect::<Vec<_>>(), ["b", "c"], "the expired send is not stored again");
        assert_eq!(sends.expires_at(), Some(start + 2 * WINDOW_SECONDS));
    }

    #[test]
    fn a_notification_counts_once_however_often_it_is_counted() {
        let sends = admitted(RecentSends::default().admit("a", 100, limit(1)));
        assert_eq!(sends.admit("a", 200, limit(1)), Admission::AlreadyCounted);
        assert_eq!(sends.admit("b", 200, limit(1)), Admission::OverLimit);
        // Counted more than an hour ago: it counts anew.
        let later = 100 + WINDOW_SECONDS;
        assert_eq!(admitted(sends.admit("a", later, limit(1))).0, BTreeMap::from([("a".to_string(), later)]));
    }

    #[test]
    fn a_limit_is_1_to_100() {
        assert_eq!("1".parse::<HourlyLimit>().map(HourlyLimit::get), Ok(1));
        assert_eq!("100".parse::<HourlyLimit>().map(HourlyLimit::get), Ok(100));
        for bad in ["0", "101", "-1", "ten", ""] {
            assert!(bad.parse::<HourlyLimit>().is_err(), "{bad}");
        }
        assert_eq!(RecentSends::default().expires_at(), None);
    }
}
