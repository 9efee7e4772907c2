//! Sending at the channel's rate (`domain::send_rate`): each dispatcher instance takes the send
//! slots of a batch's records from the shared timeline in one write, hands them out to the
//! records as they get to their send, and keeps what a record did not use for the next one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::domain::send_rate::{Lane, SendRate, Slots};
use crate::error::DependencyError;
use crate::ports::{FlowMark, SendTimeline};

/// The records of one batch that may still ask for a slot, per lane: how many slots the first
/// of them takes for all. Each record settles its part once, by taking a slot or by finishing
/// without one ([`Need`]).
#[derive(Debug)]
pub struct BatchDemand {
    lanes: [Demand; 2],
}

#[derive(Debug)]
struct Demand {
    lane: Lane,
    pending: AtomicU32,
    oldest_enqueued_ms: Option<i64>,
}

impl Demand {
    fn settle(&self) {
        let _ = self.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| pending.checked_sub(1));
    }
}

impl BatchDemand {
    /// A batch of `records` (Lambda never mixes two queues, so two lanes, in one batch; each
    /// record says its lane when it is read).
    pub fn new(records: usize, oldest_enqueued_ms: Option<i64>) -> Self {
        let demand = |lane| Demand { lane, pending: AtomicU32::new(records as u32), oldest_enqueued_ms };
        Self { lanes: [demand(Lane::Transactional), demand(Lane::Bulk)] }
    }

    /// One record's part in `lane`, settled when it is dropped if no slot was taken with it.
    pub fn need(&self, lane: Lane) -> Need<'_> {
        self.lanes[1 - index(lane)].settle();
        Need { demand: &self.lanes[index(lane)], settled: false }
    }

    /// A record that will ask for no slot (unreadable).
    pub fn settle(&self) {
        self.lanes.iter().for_each(Demand::settle);
    }
}

/// One record's part of a [`Demand`].
#[derive(Debug)]
pub struct Need<'a> {
    demand: &'a Demand,
    settled: bool,
}

impl Need<'_> {
    pub fn lane(&self) -> Lane {
        self.demand.lane
    }
}

impl Drop for Need<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.demand.settle();
        }
    }
}

/// The lateness a slot is kept for whatever the rate (`Pacer::stale_after_us`).
const LATENESS_KEPT_US: i64 = 100_000;

/// A channel's pacing in one dispatcher instance, over the shared timeline `T`.
pub struct Pacer<T> {
    timeline: T,
    rate: SendRate,
    /// Slots taken and not yet used, per lane, earliest first.
    unused: [tokio::sync::Mutex<VecDeque<i64>>; 2],
}

fn index(lane: Lane) -> usize {
    match lane {
        Lane::Transactional => 0,
        Lane::Bulk => 1,
    }
}

impl<T: SendTimeline> Pacer<T> {
    pub fn new(timeline: T, rate: SendRate) -> Self {
        Self { timeline, rate, unused: Default::default() }
    }

    pub fn rate(&self) -> SendRate {
        self.rate
    }

    pub fn timeline(&self) -> &T {
        &self.timeline
    }

    /// The send slot (epoch µs) of the record whose part is `need`: an unused one of this
    /// instance's, or the first of the slots taken now for every record of its batch still to
    /// ask. A slot further in the past than [`Pacer::stale_after_us`] is dropped: the timeline
    /// has moved on, and sending in it now would go over the rate (several such sends at once
    /// are a burst the provider throttles). `now` (epoch µs) is read once the lane's slots are
    /// this record's to use: another record may have held them through a slow take.
    pub async fn slot(&self, need: &mut Need<'_>, now: impl Fn() -> i64) -> Result<i64, DependencyError> {
        let lane = need.lane();
        let mut unused = self.unused[index(lane)].lock().await;
        self.drop_stale(&mut unused, now());
        if unused.is_empty() {
            let count = need.demand.pending.load(Ordering::SeqCst).max(1);
            let mark =
                FlowMark { lane, slots: count, rate: self.rate, oldest_enqueued_ms: need.demand.oldest_enqueued_ms };
            let now_us = now();
            let first_free = self.timeline.take(Slots::span_us(count, self.rate), now_us, mark).await?;
            unused.extend(Slots::taken(lane, count, first_free, now_us, self.rate).times_us());
            // A take slower than a gap returns slots already past; the latest is kept, so the
            // take serves at least this record.
            let latest = *unused.back().expect("a slot was just taken");
            self.drop_stale(&mut unused, now().min(latest + self.rate.gap_us()));
        }
        if !need.settled {
            need.settled = true;
            need.demand.settle();
        }
        Ok(unused.pop_front().expect("a slot is left"))
    }

    /// How late a slot may still be used: one gap, and at least [`LATENESS_KEPT_US`]. At a high
    /// rate a gap is microseconds, while a batch's records reach their sends milliseconds apart:
    /// each would find the slots taken for it already stale and take its own, one timeline
    /// write per send. The burst a tenth of a second allows is at most a tenth of a second's
    /// sends (the slots are the timeline's, each used once), within what providers' per-second
    /// quotas take; at 10 sends a second or fewer a gap is that long anyway.
    fn stale_after_us(&self) -> i64 {
        self.rate.gap_us().max(LATENESS_KEPT_US)
    }

    /// Drops the slots more than [`Pacer::stale_after_us`] before `now_us`.
    fn drop_stale(&self, unused: &mut VecDeque<i64>, now_us: i64) {
        let stale_before = now_us - self.stale_after_us();
        while unused.front().is_some_and(|slot| *slot < stale_before) {
            unused.pop_front();
        }
    }

    /// A slot this invocation could not use (after its deadline), kept for the next.
    pub async fn give_back(&self, lane: Lane, slot: i64) {
        let mut unused = self.unused[index(lane)].lock().await;
        let at = unused.partition_point(|other| *other < slot);
        unused.insert(at, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTimeline;

    fn pacer(per_second: f64) -> Pacer<MemoryTimeline> {
        Pacer::new(MemoryTimeline::default(), SendRate::new(per_second).unwrap())
    }

    #[tokio::test]
    async fn a_batch_takes_its_slots_in_one_write_and_spaces_them_at_the_rate() {
        let pacer = pacer(10.0);
        let demand = BatchDemand::new(3, Some(5));
        let mut slots = Vec::new();
        for _ in 0..3 {
            slots.push(pacer.slot(&mut demand.need(Lane::Bulk), || 1_000_000).await.unwrap());
        }
        assert_eq!(slots, vec![1_000_000, 1_100_000, 1_200_000]);
        let mark = FlowMark { lane: Lane::Bulk, slots: 3, rate: pacer.rate(), oldest_enqueued_ms: Some(5) };
        assert_eq!(pacer.timeline.takes(), vec![mark]);
    }

    #[tokio::test]
    async fn records_that_finish_without_a_slot_are_not_counted_in_the_take() {
        let pacer = pacer(10.0);
        let demand = BatchDemand::new(4, None);
        drop(demand.need(Lane::Bulk));
        demand.settle();
        pacer.slot(&mut demand.need(Lane::Bulk), || 0).await.unwrap();
        assert_eq!(pacer.timeline.takes()[0].slots, 2);
    }

    #[tokio::test]
    async fn two_instances_share_the_timeline_and_bulk_queues_behind_it() {
        let timeline = MemoryTimeline::default();
        let rate = SendRate::new(5.0).unwrap();
        let (one, two) = (Pacer::new(timeline.clone(), rate), Pacer::new(timeline, rate));
        let batch = BatchDemand::new(2, None);
        let first = [
            one.slot(&mut batch.need(Lane::Bulk), || 0).await.unwrap(),
            one.slot(&mut batch.need(Lane::Bulk), || 0).await.unwrap(),
        ];
        let second = two.slot(&mut BatchDemand::new(1, None).need(Lane::Bulk), || 0).await.unwrap();
        assert_eq!((first, second), ([0, 200_000], 400_000), "after the two slots of the first instance");
        let transactional = two.slot(&mut BatchDemand::new(1, None).need(Lane::Transactional), || 10).await.unwrap();
        assert_eq!(transactional, 10, "ahead of the bulk slots");
        let bulk = one.slot(&mut BatchDemand::new(1, None).need(Lane::Bulk), || 20).await.unwrap();
        assert_eq!(bulk, 800_000, "the bulk lane gave the transactional send its slot");
    }

    #[tokio::test]
    async fn slots_a_slow_take_returns_already_past_are_dropped_but_the_latest() {
        let pacer = pacer(10.0);
        let demand = BatchDemand::new(5, None);
        // The take is asked at 0 and answers a second later.
        let reads = std::sync::atomic::AtomicU32::new(0);
        let clock = || if reads.fetch_add(1, Ordering::SeqCst) < 2 { 0 } else { 1_000_000 };
        assert_eq!(pacer.slot(&mut demand.need(Lane::Bulk), clock).await.unwrap(), 400_000, "the latest of 5");
        let next = pacer.slot(&mut demand.need(Lane::Bulk), || 1_000_000).await.unwrap();
        assert_eq!(next, 1_000_000, "a new take for the records left");
        assert_eq!(pacer.timeline.takes().iter().map(|mark| mark.slots).collect::<Vec<_>>(), vec![5, 4]);
    }

    #[tokio::test]
    async fn at_a_high_rate_a_batch_shares_one_take_while_its_slots_are_a_tenth_of_a_second_late() {
        let pacer = pacer(1000.0);
        let demand = BatchDemand::new(3, None);
        let first = pacer.slot(&mut demand.need(Lane::Bulk), || 0).await.unwrap();
        // The others reach their send 20 and 90 ms later: their slots (1 and 2 ms) are late.
        let second = pacer.slot(&mut demand.need(Lane::Bulk), || 20_000).await.unwrap();
        let third = pacer.slot(&mut demand.need(Lane::Bulk), || 90_000).await.unwrap();
        assert_eq!([first, second, third], [0, 1_000, 2_000]);
        assert_eq!(pacer.timeline.takes().len(), 1, "one write for the batch");
        // More than a tenth of a second late (201 ms at 302), a slot is dropped: a new take.
        let demand = BatchDemand::new(2, None);
        pacer.slot(&mut demand.need(Lane::Bulk), || 200_000).await.unwrap();
        let late = pacer.slot(&mut demand.need(Lane::Bulk), || 302_000).await.unwrap();
        assert_eq!(late, 302_000);
        assert_eq!(pacer.timeline.takes().len(), 3);
    }

    #[tokio::test]
    async fn stale_slots_are_dropped_and_given_back_ones_reused() {
        let pacer = pacer(10.0);
        let demand = BatchDemand::new(3, None);
        let first = pacer.slot(&mut demand.need(Lane::Bulk), || 0).await.unwrap();
        pacer.give_back(Lane::Bulk, first).await;
        assert_eq!(pacer.slot(&mut demand.need(Lane::Bulk), || 0).await.unwrap(), first);
        // The third slot (200 ms) is long past a second later: a new take.
        let late = pacer.slot(&mut BatchDemand::new(1, None).need(Lane::Bulk), || 1_000_000).await.unwrap();
        assert_eq!(late, 1_000_000);
        assert_eq!(pacer.timeline.takes().len(), 2);
    }
}
