//! The recovery function (the event stream's publisher, also built from this crate, is in
//! [`events`]), two jobs:
//! - `{"action": "sweep"}` (every minute, from template.yaml's schedule): re-enqueues deliveries
//!   whose messages may be gone (see `notify::sweep`);
//! - `{"action": "redrive", "channel": "sms", "max": 500, "dry_run": false}` (on demand): redrives
//!   the channel's DLQ (see `notify::redrive`) once the fault that filled it is fixed.

pub mod events;

use aws_config::SdkConfig;
use lambda_runtime::{Error, LambdaEvent};
use notify::config::{ConfigError, EnvSource, Settings};
use notify::domain::channel::Channel;
use notify::queue::{ChannelDeadLetterQueues, ChannelQueues, DeadLetterQueue, Enqueuer};
use notify::redrive::{Redrive, RedriveReport};
use notify::store::notifications::NotificationStore;
use notify::sweep::{Sweep, SweepReport};
use serde::{Deserialize, Serialize};

/// Most messages one redrive handles when `max` is not given.
pub const DEFAULT_MAX: usize = 500;
/// Most records one sweep looks at when `max` is not given: bounded work per run.
pub const DEFAULT_SWEEP_MAX: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Redrive {
        channel: Channel,
        #[serde(default)]
        max: Option<usize>,
        #[serde(default)]
        dry_run: bool,
    },
    Sweep {
        #[serde(default)]
        max: Option<usize>,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Redrive(RedriveReport),
    Sweep(SweepReport),
}

pub struct Retry {
    sqs: aws_sdk_sqs::Client,
    queues: ChannelQueues,
    dead_letter_queues: ChannelDeadLetterQueues,
    redrive: Redrive,
    sweep: Sweep,
}

impl Retry {
    /// Settings: the channel queues and DLQs, and `NOTIFICATIONS_TABLE`.
    pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(env);
        let queues = ChannelQueues::load(&mut settings);
        let dead_letter_queues = ChannelDeadLetterQueues::load(&mut settings);
        let notifications =
            NotificationStore::new(aws_sdk_dynamodb::Client::new(sdk), settings.required("NOTIFICATIONS_TABLE"));
        settings.finish()?;
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Ok(Self {
            sweep: Sweep::new(notifications.clone(), Enqueuer::new(sqs.clone(), queues.clone())),
            redrive: Redrive::new(notifications),
            sqs,
            queues,
            dead_letter_queues,
        })
    }
}

impl notify::function::Function for Retry {
    type Event = Request;
    type Output = Report;

    async fn handle(&self, event: LambdaEvent<Request>) -> Result<Report, Error> {
        match event.payload {
            Request::Redrive { channel, max, dry_run } => {
                let dead_letters = DeadLetterQueue::new(
                    self.sqs.clone(),
                    self.dead_letter_queues.url(channel).to_string(),
                    self.queues.lanes(channel).clone(),
                );
                let report = self.redrive.run(channel, &dead_letters, max.unwrap_or(DEFAULT_MAX), dry_run).await?;
                tracing::info!(report = ?report, "redrive finished");
                Ok(Report::Redrive(report))
            }
            Request::Sweep { max } => {
                let report =
                    self.sweep.run(notify::time::now_epoch_seconds(), max.unwrap_or(DEFAULT_SWEEP_MAX)).await?;
                tracing::info!(report = ?report, "sweep finished");
                Ok(Report::Sweep(report))
            }
        }
    }
}
