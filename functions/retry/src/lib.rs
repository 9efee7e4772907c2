//! The recovery function. Invoked on demand with
//! `{"action": "redrive", "channel": "sms", "max": 500, "dry_run": false}`, it redrives the
//! channel's DLQ (see `notify::redrive`) once the fault that filled it is fixed.

use aws_config::SdkConfig;
use lambda_runtime::{Error, LambdaEvent};
use notify::config::{ConfigError, EnvSource, Settings};
use notify::domain::channel::Channel;
use notify::queue::{ChannelDeadLetterQueues, ChannelQueues};
use notify::redrive::{Redrive, RedriveReport};
use notify::store::notifications::NotificationStore;
use serde::Deserialize;

/// Most messages one redrive handles when `max` is not given.
pub const DEFAULT_MAX: usize = 500;

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
}

pub struct Retry {
    queues: ChannelQueues,
    dead_letter_queues: ChannelDeadLetterQueues,
    redrive: Redrive,
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
        Ok(Self { queues, dead_letter_queues, redrive: Redrive::new(aws_sdk_sqs::Client::new(sdk), notifications) })
    }
}

impl notify::function::Function for Retry {
    type Event = Request;
    type Output = RedriveReport;

    async fn handle(&self, event: LambdaEvent<Request>) -> Result<RedriveReport, Error> {
        match event.payload {
            Request::Redrive { channel, max, dry_run } => {
                let (dead_letters, queue) = (self.dead_letter_queues.url(channel), self.queues.url(channel));
                let report =
                    self.redrive.run(channel, dead_letters, queue, max.unwrap_or(DEFAULT_MAX), dry_run).await?;
                tracing::info!(report = ?report, "redrive finished");
                Ok(report)
            }
        }
    }
}
