//! The reliability scenarios of issue 7 at the size CI affords (scripts/reliability.sh runs
//! them at full size): every case of each must hold.

mod support;

use std::time::Duration;

use support::api::Api;
use support::reliability::{self, PipelineRun};

#[tokio::test]
async fn the_auth_matrix_never_lets_a_bad_caller_through() {
    let api = Api::start().await;
    reliability::auth_matrix(&api).await.assert_held();
    api.stack.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_notification_and_one_send() {
    let api = Api::start().await;
    reliability::concurrent_duplicates(&api, 50).await.assert_held();
    api.stack.stop().await;
}

#[tokio::test]
async fn poison_of_every_kind_reaches_the_dlq_without_blocking_its_batch() {
    let api = Api::start().await;
    reliability::poison(&api).await.assert_held();
    api.stack.stop().await;
}

#[tokio::test]
async fn under_faults_and_a_restart_every_accepted_notification_ends_once() {
    // Lighter than the full run: at 20% faults everywhere, even 60 notifications and one
    // restart took about 12 minutes, most of it messages waiting out visibility timeouts and
    // leases (BENCHMARKS.md).
    let run = PipelineRun {
        notifications: 40,
        users: 10,
        restarts: 1,
        provider_faults: 0.2,
        infrastructure_faults: 0.05,
        settle_within: Duration::from_secs(1200),
    };
    for figure in reliability::pipeline_under_faults(&support::endpoint(), run).await {
        figure.assert_held();
    }
}

#[tokio::test]
async fn sms_fails_over_during_an_sns_outage_and_no_message_is_sent_by_both_providers() {
    // Smaller than the full run (1,000 SMS, a one-minute outage: BENCHMARKS.md).
    let run = reliability::FailoverRun {
        notifications: 60,
        accept_over: Duration::from_secs(25),
        outage: Duration::from_secs(10),
        cool_down: Duration::from_secs(5),
        twilio_timeout_every: 20,
        settle_within: Duration::from_secs(300),
    };
    for figure in reliability::sms_failover(&support::endpoint(), run).await {
        figure.assert_held();
    }
}
