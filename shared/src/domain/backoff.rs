//! How long a delivery waits after a transient failure: exponential in the receive count, with
//! "equal jitter" (half fixed, half random) so retries of a burst spread out but never come
//! back sooner than half the step. With the defaults (base 15 s, cap 900 s) the waits after
//! receives 1, 2, 3, … are 7.5–15 s, 15–30 s, 30–60 s, 1–2 min, 2–4 min, 4–8 min, 7.5–15 min, …;
//! the queue's maxReceiveCount (8) ends the series in the DLQ after about 15–30 minutes.

use std::time::Duration;

use rand::Rng;

/// SQS refuses visibility timeouts over 12 hours.
const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The step for the `receive_count`-th receive (1-based), before jitter.
    pub fn step(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.cap).min(SQS_MAX_VISIBILITY)
    }

    /// The wait before the next receive: between half the step and the step.
    pub fn delay(&self, receive_count: u32, rng: &mut impl Rng) -> Duration {
        let step = self.step(receive_count);
        let half = step / 2;
        half + Duration::from_millis(rng.random_range(0..=half.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Backoff = Backoff { base: Duration::from_secs(15), cap: Duration::from_secs(900) };

    #[test]
    fn steps_double_until_the_cap() {
        let steps: Vec<u64> = (1..=9).map(|n| DEFAULT.step(n).as_secs()).collect();
        assert_eq!(steps, vec![15, 30, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(DEFAULT.step(1_000), Duration::from_secs(900));
    }

    #[test]
    fn delays_stay_between_half_the_step_and_the_step() {
        let mut rng = rand::rng();
        for receive_count in 1..=10 {
            let step = DEFAULT.step(receive_count);
            for _ in 0..100 {
                let delay = DEFAULT.delay(receive_count, &mut rng);
                assert!(delay >= step / 2 && delay <= step, "{delay:?} for step {step:?}");
            }
        }
    }
}
