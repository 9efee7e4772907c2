//! `notifyctl queues`: per channel and lane, what is waiting and whether it will drain: the
//! queue's depth (SQS), the age of the oldest message being sent, the send rate now (the slots
//! of the channel's send timeline that fell due over a short sample) against the channel's rate,
//! and the drain estimate (depth ÷ rate).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use notify::aws::classify;
use notify::domain::channel::Channel;
use notify::domain::send_rate::Lane;
use notify::outputs::Outputs;
use notify::store::send_timeline::{Flow, LaneFlow, SendTimelineStore};
use serde::Serialize;

use crate::CliError;
use crate::output::{Align, Table};

#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// Seconds over which the send rate is measured.
    #[arg(long, default_value_t = 5)]
    sample: u64,
}

/// A lane takes no slots for this long: nothing is being sent from it.
const STALLED_AFTER_MS: i64 = 60_000;

/// One lane, as on-call reads it.
#[derive(Debug, PartialEq, Serialize)]
pub struct LaneReport {
    pub channel: Channel,
    pub lane: Lane,
    /// Messages waiting to be received.
    pub waiting: u64,
    /// Received and being worked on (or waiting out a retry's backoff).
    pub in_flight: u64,
    /// Sends per second over the sample.
    pub sending_per_second: f64,
    /// The channel's send rate (all dispatchers together), as its last take used it.
    pub quota_per_second: Option<f64>,
    /// How old the oldest message the dispatchers took slots for last was, then (seconds).
    pub oldest_seconds: Option<f64>,
    /// Seconds since the lane last took a slot, while messages wait and it takes none.
    pub stalled_seconds: Option<f64>,
    /// Seconds until what waits is sent at the current rate (`None`: never, at rate 0).
    pub drain_seconds: Option<f64>,
}

/// Sends per second from `lane` between two reads of its channel's timeline, each with the time
/// it was read (µs): the slots that fell due between them, not the slots taken (a take reserves
/// a whole batch's slots at once, seconds ahead).
pub fn sending_per_second(lane: Lane, (before, before_us): (&Flow, i64), (after, after_us): (&Flow, i64)) -> f64 {
    let due = after.due_by(lane, after_us) - before.due_by(lane, before_us);
    due.max(0.0) / ((after_us - before_us) as f64 / 1e6).max(0.001)
}

impl LaneReport {
    /// From the queue's counts, the lane's flow as last read (at `now_ms`) and its send rate.
    pub fn new(
        (channel, lane): (Channel, Lane),
        (waiting, in_flight): (u64, u64),
        after: &LaneFlow,
        quota_per_second: Option<f64>,
        sending_per_second: f64,
        now_ms: i64,
    ) -> Self {
        let pending = waiting + in_flight;
        let since_take = after.at_ms.map(|at| now_ms - at);
        let stalled = pending > 0 && since_take.is_none_or(|since| since > STALLED_AFTER_MS);
        let oldest_seconds = match (after.oldest_enqueued_ms, after.at_ms) {
            (Some(oldest), Some(at)) if pending > 0 && !stalled => Some((at - oldest).max(0) as f64 / 1000.0),
            _ => None,
        };
        let drain_seconds = match pending {
            0 => Some(0.0),
            _ if sending_per_second > 0.0 => Some(pending as f64 / sending_per_second),
            _ => None,
        };
        Self {
            channel,
            lane,
            waiting,
            in_flight,
            sending_per_second,
            quota_per_second,
            oldest_seconds,
            stalled_seconds: stalled.then(|| since_take.map_or(f64::INFINITY, |since| since as f64 / 1000.0)),
            drain_seconds,
        }
    }
}

/// The queue output of a channel's lane.
fn queue_output(channel: Channel, lane: Lane) -> String {
    let name = channel.to_string();
    let capitalized = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
    match lane {
        Lane::Bulk => format!("{capitalized}QueueUrl"),
        Lane::Transactional => format!("{capitalized}TransactionalQueueUrl"),
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(u64, u64), CliError> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|error| classify("sqs", "GetQueueAttributes", error, &[]))?
        .attributes
        .unwrap_or_default();
    let count = |name: QueueAttributeName| attributes.get(&name).and_then(|count| count.parse().ok()).unwrap_or(0u64);
    Ok((
        count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

pub async fn run(sdk: &SdkConfig, outputs: &Outputs, args: QueuesArgs, json: bool) -> Result<(), CliError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let table = outputs.get("RateLimitsTableName")?;
    let timelines: Vec<(Channel, SendTimelineStore)> = Channel::ALL
        .into_iter()
        .map(|channel| (channel, SendTimelineStore::new(dynamodb.clone(), table, channel)))
        .collect();
    let mut before = Vec::new();
    for (_, timeline) in &timelines {
        before.push((timeline.flow().await?, notify::time::now_epoch_micros()));
    }
    tokio::time::sleep(Duration::from_secs(args.sample.max(1))).await;
    let mut reports = Vec::new();
    for ((channel, timeline), (before, before_us)) in timelines.iter().zip(&before) {
        let after: Flow = timeline.flow().await?;
        let after_us = notify::time::now_epoch_micros();
        for lane in [Lane::Transactional, Lane::Bulk] {
            let counts = depth(&sqs, outputs.get(&queue_output(*channel, lane))?).await?;
            let rate = sending_per_second(lane, (before, *before_us), (&after, after_us));
            reports.push(LaneReport::new(
                (*channel, lane),
                counts,
                &after.lanes[&lane],
                after.rate,
                rate,
                after_us / 1000,
            ));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports).expect("reports serialize"));
        return Ok(());
    }
    let mut table = Table::new(&[
        ("CHANNEL", Align::Left),
        ("LANE", Align::Left),
        ("WAITING", Align::Right),
        ("IN FLIGHT", Align::Right),
        ("OLDEST", Align::Right),
        ("SENDING", Align::Right),
        ("QUOTA", Align::Right),
        ("DRAINS IN", Align::Left),
    ]);
    for report in &reports {
        let oldest = match (report.oldest_seconds, report.stalled_seconds) {
            (Some(seconds), _) => duration(seconds),
            (None, Some(stalled)) => format!("nothing sent for {}", duration(stalled)),
            (None, None) => "-".into(),
        };
        let drains = match report.drain_seconds {
            Some(0.0) => "-".into(),
            Some(seconds) => duration(seconds),
            None => "never at this rate (nothing sent)".into(),
        };
        table.row(vec![
            report.channel.to_string(),
            report.lane.to_string(),
            report.waiting.to_string(),
            report.in_flight.to_string(),
            oldest,
            format!("{:.1}/s", report.sending_per_second),
            report.quota_per_second.map_or("-".into(), |quota| format!("{quota}/s")),
            drains,
        ]);
    }
    table.print();
    Ok(())
}

/// `42s`, `7m05s`, `3h20m`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "ever".into();
    }
    let seconds = seconds.round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const NOW: i64 = 1_000_000;

    fn flow(slots: u64, at_ms: Option<i64>, oldest: Option<i64>) -> LaneFlow {
        LaneFlow { slots, at_ms, oldest_enqueued_ms: oldest }
    }

    fn report(counts: (u64, u64), after: LaneFlow, sending_per_second: f64) -> LaneReport {
        LaneReport::new((Channel::Email, Lane::Bulk), counts, &after, Some(14.0), sending_per_second, NOW)
    }

    fn timeline(bulk_slots: u64, next_us: i64, rate: f64) -> Flow {
        let lanes =
            BTreeMap::from([(Lane::Bulk, flow(bulk_slots, None, None)), (Lane::Transactional, flow(7, None, None))]);
        Flow { next_us: Some(next_us), rate: Some(rate), lanes }
    }

    #[test]
    fn the_rate_counts_slots_falling_due_not_slots_taken_in_bursts() {
        // At 2/s a batch of 10 reserves 5 s ahead; 3 s later no take has happened, 6 sends have.
        let start = 1_000_000_000;
        let taken = timeline(100, start + 5_000_000, 2.0);
        let bulk = sending_per_second(Lane::Bulk, (&taken, start), (&taken, start + 3_000_000));
        assert!((bulk - 2.0).abs() < 1e-9, "{bulk}");
        // The next batch's take 3 s later again: still 2/s, not 20 in an instant.
        let next = timeline(110, start + 10_000_000, 2.0);
        let later = sending_per_second(Lane::Bulk, (&taken, start + 3_000_000), (&next, start + 6_000_000));
        assert!((later - 2.0).abs() < 1e-9, "{later}");
        assert_eq!(sending_per_second(Lane::Transactional, (&taken, start), (&next, start + 6_000_000)), 0.0);
    }

    #[test]
    fn a_backlog_sending_at_its_rate_drains_in_depth_over_rate() {
        let report = report((680, 20), flow(170, Some(NOW - 200), Some(NOW - 60_200)), 14.0);
        assert_eq!(report.drain_seconds, Some(50.0));
        assert_eq!((report.oldest_seconds, report.stalled_seconds), (Some(60.0), None));
        assert_eq!(duration(report.drain_seconds.unwrap()), "50s");
    }

    #[test]
    fn messages_waiting_with_no_slot_taken_for_a_minute_is_a_stall() {
        let stalled = report((30, 0), flow(100, Some(NOW - 90_000), Some(1)), 0.0);
        assert_eq!(stalled.drain_seconds, None, "never, at rate 0");
        assert_eq!((stalled.oldest_seconds, stalled.stalled_seconds), (None, Some(90.0)));
        let never = report((1, 0), LaneFlow::default(), 0.0);
        assert_eq!(never.stalled_seconds, Some(f64::INFINITY), "a lane that never sent");
    }

    #[test]
    fn an_empty_lane_has_nothing_to_drain() {
        let report = report((0, 0), flow(5, Some(NOW - 1_000), Some(NOW - 2_000)), 0.0);
        assert_eq!((report.drain_seconds, report.oldest_seconds, report.stalled_seconds), (Some(0.0), None, None));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(
            (duration(42.4), duration(425.0), duration(12_000.0)),
            ("42s".into(), "7m05s".into(), "3h20m".into())
        );
    }
}
