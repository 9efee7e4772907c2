//! A channel's send rate, kept fleet-wide: every dispatcher instance of the channel takes its
//! send times ("slots", one per send, `1 / rate` apart) from one shared timeline, whose `next`
//! is the first slot nobody has taken. Taking `n` slots moves `next` to `max(next, now) + n`
//! slots on, in one atomic write, so however many instances run, the channel sends at most at
//! the rate (a generic cell rate algorithm, with the timeline as its theoretical arrival time).
//!
//! The two lanes take slots differently. Bulk slots start at the first free slot: a backlog
//! queues up on the timeline and drains at the rate, in order. Transactional slots start now,
//! ahead of the bulk slots already taken, and still move `next` on, so the bulk lane gives their
//! time back right after: an OTP waits for nothing but its own sending, and the channel's rate
//! over any few seconds stays the quota (a moment over it by the transactional sends, which
//! providers allow as short bursts: SES "You can exceed this quota for short bursts").

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sends per second: finite and above zero.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct SendRate(f64);

impl SendRate {
    /// The most any provider allows (SNS Publish in us-east-1: 30,000 per second).
    pub const MAX: f64 = 100_000.0;
    /// One send per second (the SES sandbox's rate).
    pub const ONE_PER_SECOND: SendRate = SendRate(1.0);

    pub fn parse(text: &str) -> Result<Self, String> {
        let rate: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of sends per second"))?;
        Self::new(rate)
    }

    pub fn new(per_second: f64) -> Result<Self, String> {
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!("{per_second} is not a send rate: it must be above 0 sends per second"));
        }
        if per_second > Self::MAX {
            return Err(format!("{per_second} sends per second is above any provider's quota ({})", Self::MAX));
        }
        Ok(Self(per_second))
    }

    pub fn per_second(self) -> f64 {
        self.0
    }

    /// The time between two slots, in microseconds (at least one).
    pub fn gap_us(self) -> i64 {
        ((1e6 / self.0).round() as i64).max(1)
    }

    /// This rate, or the provider's own quota if that is lower (and whether it was).
    pub fn capped_at(self, provider: SendRate) -> (SendRate, bool) {
        if provider.0 < self.0 { (provider, true) } else { (self, false) }
    }
}

impl fmt::Display for SendRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

impl std::str::FromStr for SendRate {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// Which of a channel's two queues a delivery travels in: transactional templates (OTPs,
/// security alerts) have their own, so a bulk backlog never stands in front of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Transactional,
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Transactional, Lane::Bulk];

    /// The lane of a template's deliveries.
    pub fn of(transactional: bool) -> Self {
        if transactional { Lane::Transactional } else { Lane::Bulk }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Transactional => "transactional",
            Lane::Bulk => "bulk",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Slots taken in one write: `count` of them, `gap_us` apart from `start_us` (epoch µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    pub start_us: i64,
    pub count: u32,
    pub gap_us: i64,
}

impl Slots {
    /// The slots `lane` gets for `count` sends taken at `now_us` from a timeline whose first
    /// free slot was `first_free_us` (at least `now_us`).
    pub fn taken(lane: Lane, count: u32, first_free_us: i64, now_us: i64, rate: SendRate) -> Self {
        let start_us = match lane {
            Lane::Bulk => first_free_us.max(now_us),
            Lane::Transactional => now_us,
        };
        Self { start_us, count, gap_us: rate.gap_us() }
    }

    /// How far the timeline moves for `count` sends.
    pub fn span_us(count: u32, rate: SendRate) -> i64 {
        i64::from(count) * rate.gap_us()
    }

    pub fn times_us(self) -> impl Iterator<Item = i64> {
        (0..i64::from(self.count)).map(move |index| self.start_us + index * self.gap_us)
    }
}

/// Where a shared timeline stands after `span_us` is taken from it at `now_us` when its first
/// free slot was `next_us` (`None`: never used): the new `next`, and the first slot taken.
pub fn advance(next_us: Option<i64>, span_us: i64, now_us: i64) -> (i64, i64) {
    let first_free = next_us.map_or(now_us, |next| next.max(now_us));
    (first_free + span_us, first_free)
}

/// How long a slot at `slot_us` is from `now_us`.
pub fn until(slot_us: i64, now_us: i64) -> Duration {
    Duration::from_micros((slot_us - now_us).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_positive_finite_number() {
        assert_eq!(SendRate::parse("14").unwrap().per_second(), 14.0);
        assert_eq!(SendRate::parse(" 0.5 ").unwrap().gap_us(), 2_000_000);
        for bad in ["0", "-1", "NaN", "inf", "fast", "", "1e9"] {
            assert!(SendRate::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn a_rate_above_the_providers_is_capped() {
        let (ours, provider) = (SendRate::new(100.0).unwrap(), SendRate::new(14.0).unwrap());
        assert_eq!(ours.capped_at(provider), (provider, true));
        assert_eq!(provider.capped_at(ours), (provider, false));
    }

    #[test]
    fn bulk_slots_queue_behind_the_timeline_and_transactional_ones_start_now() {
        let rate = SendRate::new(5.0).unwrap();
        let bulk = Slots::taken(Lane::Bulk, 3, 2_000_000, 1_000_000, rate);
        assert_eq!(bulk.times_us().collect::<Vec<_>>(), vec![2_000_000, 2_200_000, 2_400_000]);
        let transactional = Slots::taken(Lane::Transactional, 2, 2_000_000, 1_000_000, rate);
        assert_eq!(transactional.times_us().collect::<Vec<_>>(), vec![1_000_000, 1_200_000]);
    }

    #[test]
    fn the_timeline_restarts_from_now_when_idle_and_extends_when_busy() {
        assert_eq!(advance(None, 400, 1_000), (1_400, 1_000));
        assert_eq!(advance(Some(500), 400, 1_000), (1_400, 1_000), "idle: slots in the past are gone");
        assert_eq!(advance(Some(3_000), 400, 1_000), (3_400, 3_000), "busy: after the slots taken");
    }

    #[test]
    fn lanes_follow_the_templates_flag() {
        assert_eq!(Lane::of(true), Lane::Transactional);
        assert_eq!(Lane::of(false), Lane::Bulk);
        assert_eq!(serde_json::to_value(Lane::Bulk).unwrap(), "bulk");
    }
}
