//! The recovery function. Invoked on demand with
//! `{"action": "redrive", "channel": "sms", "max": 500, "dry_run": false}`, it moves messages
//! from the channel's DLQ back to its queue (after the fault that put them there is fixed).

use aws_config::SdkConfig;
use lambda_runtime::{Error, LambdaEvent};
use notify::config::{ConfigError, EnvSource, Settings};
use notify::domain::channel::Channel;
use notify::queue::{ChannelDeadLetterQueues, ChannelQueues, Redriver};
use serde::{Deserialize, Serialize};

/// Most messages one redrive moves when `max` is not given.
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

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveReport {
    pub channel: Channel,
    pub dry_run: bool,
    /// Messages in the DLQ before the redrive (approximate, as SQS counts).
    pub dead_letters: u64,
    pub moved: usize,
}

pub struct Retry {
    queues: ChannelQueues,
    dead_letter_queues: ChannelDeadLetterQueues,
    redriver: Redriver,
}

impl Retry {
    pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(env);
        let queues = ChannelQueues::load(&mut settings);
        let dead_letter_queues = ChannelDeadLetterQueues::load(&mut settings);
        settings.finish()?;
        Ok(Self { queues, dead_letter_queues, redriver: Redriver::new(aws_sdk_sqs::Client::new(sdk)) })
    }

    pub async fn redrive(&self, channel: Channel, max: usize, dry_run: bool) -> Result<RedriveReport, Error> {
        let dead_letter_url = self.dead_letter_queues.url(channel);
        let dead_letters = self.redriver.depth(dead_letter_url).await?;
        let moved =
            if dry_run { 0 } else { self.redriver.redrive(dead_letter_url, self.queues.url(channel), max).await? };
        tracing::info!(channel = %channel, dead_letters, moved, dry_run, "redrive finished");
        Ok(RedriveReport { channel, dry_run, dead_letters, moved })
    }
}

impl notify::function::Function for Retry {
    type Event = Request;
    type Output = RedriveReport;

    async fn handle(&self, event: LambdaEvent<Request>) -> Result<RedriveReport, Error> {
        match event.payload {
            Request::Redrive { channel, max, dry_run } => {
                self.redrive(channel, max.unwrap_or(DEFAULT_MAX), dry_run).await
            }
        }
    }
}
