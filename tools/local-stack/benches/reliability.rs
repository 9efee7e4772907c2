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

/// Scenarios named on the command line run alone (`scripts/reliability.sh sms-failover`):
/// `core` (auth matrix, duplicates, poison), `pipeline`, `sms-failover`; none named, all of them.
fn runs(scenario: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with("--")).collect();
    named.is_empty() || named.iter().any(|name| name == scenario)
}

#[tokio::main]
async fn main() {
    println!("# Reliability suite ({})\n", notify::time::now_rfc3339());
    println!("| scenario | tried | held | notes |\n|---|---:|---:|---|");
    let mut held = true;
    if runs("core") {
        core(&mut held).await;
    }
    if runs("pipeline") {
        pipeline(&mut held).await;
    }
    if runs("sms-failover") {
        sms_failover(&mut held).await;
    }
    if !held {
        std::process::exit(1);
    }
}

async fn core(held: &mut bool) {
    let api = Api::start().await;
    report(reliability::auth_matrix(&api).await, held);
    report(reliability::concurrent_duplicates(&api, 50).await, held);
    report(reliability::poison(&api).await, held);
    api.stack.stop().await;
}

async fn pipeline(held: &mut bool) {
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
        report(figure, held);
    }
}

async fn sms_failover(held: &mut bool) {
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
        report(figure, held);
    }
}
