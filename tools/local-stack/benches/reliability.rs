//! The reliability suite of issue 7 at full size, printing one figure per scenario (how many
//! cases were tried, how many held) as each finishes. Run with `scripts/reliability.sh`;
//! BENCHMARKS.md records the figures. The same scenarios run smaller in `tests/reliability.rs`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::api::Api;
use support::reliability::{self, Figure, PipelineRun};

/// Prints a figure at once (a later scenario may take an hour, or fail) and keeps whether it held.
fn report(figure: Figure, held: &mut bool) {
    figure.print();
    *held &= figure.failures.is_empty();
}

#[tokio::main]
async fn main() {
    println!("# Reliability suite ({})\n", notify::time::now_rfc3339());
    println!("| scenario | tried | held | notes |\n|---|---:|---:|---|");
    let mut held = true;
    let api = Api::start().await;
    report(reliability::auth_matrix(&api).await, &mut held);
    report(reliability::concurrent_duplicates(&api, 50).await, &mut held);
    report(reliability::poison(&api).await, &mut held);
    api.stack.stop().await;

    // Recovery is paced: a notification whose enqueue failed waits for the sweep's first look
    // (a minute after acceptance), and the sweep looks at 200 records a minute; a delivery
    // parked in a DLQ waits for on-call's redrive, which the run makes once the queues are quiet.
    let run = PipelineRun {
        notifications: 2000,
        users: 100,
        restarts: 2,
        provider_faults: 0.2,
        infrastructure_faults: 0.2,
        settle_within: Duration::from_secs(3000),
    };
    for figure in reliability::pipeline_under_faults(&support::endpoint(), run).await {
        report(figure, &mut held);
    }

    // Issue 21: SNS down for a minute, Twilio timing out on 5% of its sends.
    let failover = reliability::FailoverRun {
        notifications: 1000,
        accept_over: Duration::from_secs(150),
        outage: Duration::from_secs(60),
        cool_down: Duration::from_secs(60),
        twilio_timeout_every: 20,
        settle_within: Duration::from_secs(900),
    };
    for figure in reliability::sms_failover(&support::endpoint(), failover).await {
        report(figure, &mut held);
    }
    if !held {
        std::process::exit(1);
    }
}
