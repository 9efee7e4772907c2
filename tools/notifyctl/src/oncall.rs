//! On-call: a notification's deliveries and timeline, the DLQs read without taking anything out
//! of them, and the redrive through the stack's retry function.

use aws_config::SdkConfig;
use clap::Subcommand;
use notify::domain::channel::Channel;
use notify::domain::delivery::DeliveryRef;
use notify::domain::notification::{DeliveryStatus, NotificationRecord};
use notify::outputs::Outputs;
use notify::redrive::RedriveReport;
use notify::store::notifications::NotificationStore;
use serde_json::json;

use crate::CliError;
use crate::output::{Align, Table};

/// Most messages read per DLQ.
const DLQ_READ_LIMIT: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// DLQ contents grouped by channel, error class and provider code, with counts and the
    /// oldest message's age.
    List {
        #[arg(long, value_parser = parse_channel)]
        channel: Option<Channel>,
    },
    /// One DLQ message explained with its notification's deliveries and timeline.
    Show { message_id: String },
    /// Sends DLQ messages back to their channel's queue (once the fault is fixed), through the
    /// retry function: deliveries that already have an outcome are dropped, not resent.
    Redrive {
        /// One channel (default: every channel).
        #[arg(long, value_parser = parse_channel)]
        channel: Option<Channel>,
        /// Most messages per channel.
        #[arg(long, default_value_t = 500)]
        max: usize,
        /// Only count what would be redriven.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_channel(text: &str) -> Result<Channel, String> {
    text.parse()
}

pub fn print_status(record: &NotificationRecord, json: bool) {
    let view = record.view();
    if json {
        println!("{view}");
        return;
    }
    println!(
        "notification {}  {}  (user {}, template {}, accepted {})",
        record.id,
        view["status"].as_str().unwrap_or_default(),
        record.user_id,
        record.template,
        record.created_at
    );
    println!();
    let mut table = Table::new(&[
        ("DELIVERY", Align::Left),
        ("CHANNEL", Align::Left),
        ("TARGET", Align::Left),
        ("STATUS", Align::Left),
        ("PROVIDER", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("ERROR", Align::Left),
    ]);
    if let Some(send_at) = &record.send_at {
        println!("scheduled for {send_at}");
        println!();
    }
    for (id, delivery) in &record.deliveries {
        let error =
            delivery.error.as_ref().map(|e| format!("{} {}: {}", e.class, e.code, e.message)).unwrap_or_default();
        let status = match (delivery.status, delivery.deliver_after) {
            // Held or scheduled: until when.
            (DeliveryStatus::Scheduled, Some(due)) => format!("scheduled until {}", notify::time::rfc3339_millis(due)),
            (status, _) => status.as_str().into(),
        };
        table.row(vec![
            id.to_string(),
            delivery.channel.to_string(),
            delivery.target.clone(),
            status,
            // Pinned: only this provider may send it (an earlier answer left it unknown).
            match (&delivery.provider, delivery.pinned) {
                (Some(provider), true) => format!("{provider} (pinned)"),
                (Some(provider), false) => provider.clone(),
                (None, _) => "-".into(),
            },
            delivery.attempts.to_string(),
            error,
        ]);
    }
    for skipped in &record.skipped {
        let status = format!("skipped ({})", skipped.reason.as_str());
        table.row(vec![
            "-".into(),
            skipped.channel.to_string(),
            "-".into(),
            status,
            "-".into(),
            "-".into(),
            String::new(),
        ]);
    }
    table.print();
    println!();
    println!("timeline:");
    for event in &record.events {
        println!("  {}  {:<10} {}", event.at, event.kind, event.channel.map(|c| c.to_string()).unwrap_or_default());
    }
}

/// A DLQ message with what the log says about it.
struct DeadLetter {
    channel: Channel,
    message_id: String,
    sent_at_ms: i64,
    body: String,
    record: Option<NotificationRecord>,
    delivery_id: Option<notify::domain::notification::DeliveryId>,
}

impl DeadLetter {
    /// (class, provider code) of the delivery's last error, or why there is none.
    fn cause(&self) -> (String, String) {
        let delivery = self.delivery_id.as_ref().and_then(|id| self.record.as_ref()?.deliveries.get(id));
        match (delivery, &self.record) {
            (Some(delivery), _) => match &delivery.error {
                Some(error) => (error.class.to_string(), error.code.clone()),
                None => ("none".into(), "no error recorded".into()),
            },
            (None, Some(_)) => ("unknown".into(), "no such delivery".into()),
            (None, None) if self.delivery_id.is_some() => ("unknown".into(), "notification expired".into()),
            (None, None) => ("unreadable".into(), "not a delivery message".into()),
        }
    }
}

async fn dead_letters(sdk: &SdkConfig, outputs: &Outputs, channels: &[Channel]) -> Result<Vec<DeadLetter>, CliError> {
    let notifications =
        NotificationStore::new(aws_sdk_dynamodb::Client::new(sdk), outputs.get("NotificationsTableName")?);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut letters = Vec::new();
    for &channel in channels {
        let url = outputs.get(notify::outputs::dead_letter_queue_url(channel))?;
        for message in notify::queue::peek(&sqs, url, DLQ_READ_LIMIT).await? {
            let body = message.body.clone().unwrap_or_default();
            let reference = serde_json::from_str::<DeliveryRef>(&body).ok();
            let record = match &reference {
                Some(reference) => notifications.get(&reference.notification_id).await?,
                None => None,
            };
            let delivery_id = reference.map(|reference| reference.delivery_id);
            let sent_at_ms = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            letters.push(DeadLetter {
                channel,
                message_id: message.message_id.unwrap_or_default(),
                sent_at_ms,
                body,
                record,
                delivery_id,
            });
        }
    }
    Ok(letters)
}

pub async fn dlq(sdk: &SdkConfig, outputs: &Outputs, command: DlqCommand, json: bool) -> Result<(), CliError> {
    let now_ms = notify::time::now_epoch_millis();
    match command {
        DlqCommand::List { channel } => {
            let channels: Vec<Channel> = channel.map_or_else(|| Channel::ALL.to_vec(), |channel| vec![channel]);
            let letters = dead_letters(sdk, outputs, &channels).await?;
            let mut groups: std::collections::BTreeMap<(Channel, String, String), (usize, i64)> = Default::default();
            for letter in &letters {
                let (class, code) = letter.cause();
                let group = groups.entry((letter.channel, class, code)).or_insert((0, letter.sent_at_ms));
                group.0 += 1;
                group.1 = group.1.min(letter.sent_at_ms);
            }
            if json {
                let rows: Vec<_> = groups
                    .iter()
                    .map(|((channel, class, code), (count, oldest))| {
                        json!({"channel": channel, "class": class, "code": code, "count": count, "oldest_age_seconds": (now_ms - oldest) / 1000})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if groups.is_empty() {
                println!("every DLQ is empty");
            } else {
                let mut table = Table::new(&[
                    ("CHANNEL", Align::Left),
                    ("CLASS", Align::Left),
                    ("CODE", Align::Left),
                    ("COUNT", Align::Right),
                    ("OLDEST", Align::Left),
                ]);
                for ((channel, class, code), (count, oldest)) in &groups {
                    let oldest = format!("{} min", (now_ms - oldest) / 60_000);
                    table.row(vec![channel.to_string(), class.clone(), code.clone(), count.to_string(), oldest]);
                }
                table.print();
                println!();
                println!(
                    "Explain one: notifyctl dlq show <message-id>; once the cause is fixed: notifyctl dlq redrive"
                );
            }
        }
        DlqCommand::Redrive { channel, max, dry_run } => {
            let channels: Vec<Channel> = channel.map_or_else(|| Channel::ALL.to_vec(), |channel| vec![channel]);
            let retry = RetryFunction::new(sdk, outputs)?;
            let mut reports = Vec::new();
            for channel in channels {
                reports.push(redrive(&retry, channel, max, dry_run, json).await?);
            }
            if json {
                println!("{}", serde_json::Value::Array(reports.iter().map(|report| json!(report)).collect()));
            }
        }
        DlqCommand::Show { message_id } => {
            let letters = dead_letters(sdk, outputs, &Channel::ALL).await?;
            let letter = letters
                .into_iter()
                .find(|letter| letter.message_id == message_id)
                .ok_or(CliError::NoSuchMessage(message_id))?;
            let (class, code) = letter.cause();
            if json {
                let notification = letter.record.as_ref().map(NotificationRecord::view);
                println!(
                    "{}",
                    json!({"message_id": letter.message_id, "channel": letter.channel, "class": class, "code": code, "age_seconds": (now_ms - letter.sent_at_ms) / 1000, "delivery_id": letter.delivery_id, "notification": notification, "body": letter.body})
                );
            } else {
                println!(
                    "message {} on the {} DLQ for {} min: {class} {code}",
                    letter.message_id,
                    letter.channel,
                    (now_ms - letter.sent_at_ms) / 60_000
                );
                match &letter.record {
                    Some(record) => {
                        println!();
                        print_status(record, false);
                    }
                    None => println!("body: {}", letter.body),
                }
            }
        }
    }
    Ok(())
}

/// The stack's retry function, invoked through the Lambda API (the local stack serves it too).
pub struct RetryFunction {
    lambda: aws_sdk_lambda::Client,
    name: String,
}

impl RetryFunction {
    fn new(sdk: &SdkConfig, outputs: &Outputs) -> Result<Self, CliError> {
        let mut config = aws_sdk_lambda::config::Builder::from(sdk);
        if let Some(endpoint) = outputs.local_lambda_endpoint()
            && std::env::var_os("AWS_ENDPOINT_URL").is_none()
        {
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            lambda: aws_sdk_lambda::Client::from_conf(config.build()),
            name: outputs.get("RetryFunctionName")?.into(),
        })
    }

    async fn invoke(&self, request: serde_json::Value) -> Result<RedriveReport, CliError> {
        let failed = |message: String| CliError::Invoke { function: self.name.clone(), message };
        let output = self
            .lambda
            .invoke()
            .function_name(&self.name)
            .payload(aws_sdk_lambda::primitives::Blob::new(request.to_string()))
            .send()
            .await
            .map_err(|error| failed(aws_sdk_lambda::error::DisplayErrorContext(error).to_string()))?;
        let payload = output.payload.map(|payload| payload.into_inner()).unwrap_or_default();
        if let Some(kind) = output.function_error {
            return Err(failed(format!("{kind} error: {}", String::from_utf8_lossy(&payload))));
        }
        serde_json::from_slice(&payload).map_err(|error| failed(format!("unexpected answer ({error})")))
    }
}

/// Messages one invocation of the retry function redrives: small enough to finish well within
/// its timeout, and to move the progress bar.
const REDRIVE_CHUNK: usize = 50;

/// Redrives up to `max` messages of one channel's DLQ, a chunk per invocation, with a progress
/// bar (on a terminal); a dry run only counts them.
async fn redrive(
    retry: &RetryFunction,
    channel: Channel,
    max: usize,
    dry_run: bool,
    json: bool,
) -> Result<RedriveReport, CliError> {
    let counted = retry.invoke(json!({"action": "redrive", "channel": channel, "dry_run": true})).await?;
    let mut total =
        RedriveReport { channel: Some(channel), dry_run, dead_letters: counted.dead_letters, ..Default::default() };
    if !dry_run {
        let expected = (counted.dead_letters as usize).min(max) as u64;
        let bar = indicatif::ProgressBar::new(expected).with_prefix(channel.to_string()).with_style(
            indicatif::ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len} messages {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        let mut handled = 0;
        while handled < max {
            let chunk = REDRIVE_CHUNK.min(max - handled);
            let report = retry.invoke(json!({"action": "redrive", "channel": channel, "max": chunk})).await?;
            let in_chunk = report.redriven + report.already_finished + report.left_in_dlq;
            total.redriven += report.redriven;
            total.already_finished += report.already_finished;
            total.left_in_dlq += report.left_in_dlq;
            handled += in_chunk;
            // SQS counts are approximate: the bar grows when more turn up than counted.
            if handled as u64 > bar.length().unwrap_or_default() {
                bar.set_length(handled as u64);
            }
            bar.set_position(handled as u64);
            bar.set_message(format!("({} redriven)", total.redriven));
            // A short chunk means the DLQ is drained; one that moved nothing holds only
            // messages that stay for a person to read.
            if in_chunk < chunk || report.redriven + report.already_finished == 0 {
                break;
            }
        }
        bar.finish_and_clear();
    }
    if !json {
        print_redrive(&total);
    }
    Ok(total)
}

fn print_redrive(report: &RedriveReport) {
    let channel = report.channel.map(|channel| channel.to_string()).unwrap_or_default();
    if report.dry_run {
        println!("{channel}: {} messages in the DLQ; dry run, nothing moved", report.dead_letters);
        return;
    }
    println!(
        "{channel}: {} redriven, {} dropped (their delivery already had an outcome), {} left in the DLQ",
        report.redriven, report.already_finished, report.left_in_dlq
    );
    if report.left_in_dlq > 0 {
        println!(
            "  the ones left are not deliveries of the log: read them with `notifyctl dlq list --channel {channel}`"
        );
    }
}
