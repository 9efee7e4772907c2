//! `notifyctl`: the admin CLI. Apps (the services that call the API) are managed here, against
//! the apps table, never through the public API.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{Parser, Subcommand};
use notify::domain::app::{AppRecord, Scope};
use notify::domain::channel::Channel;
use notify::domain::notification::NotificationRecord;
use notify::outputs::Outputs;
use notify::store::apps::AppStore;
use notify::store::notifications::NotificationStore;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(version, about = "Administers a notify deployment (local or in AWS)")]
struct Cli {
    /// The stack's outputs: `sam list stack-outputs --stack-name <stack> --output json`, or the
    /// file the local stack writes.
    #[arg(long, env = "NOTIFY_OUTPUTS", default_value = ".notify/local-outputs.json", global = true)]
    outputs: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apps: the calling services and their credentials.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// A notification's deliveries and timeline.
    Status { notification_id: String },
    /// Dead-letter queues: what was given up on, and why.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// DLQ contents grouped by channel, error class and provider code, with counts and the
    /// oldest message's age.
    List {
        #[arg(long, value_parser = parse_channel)]
        channel: Option<Channel>,
    },
    /// One DLQ message explained with its notification's deliveries and timeline.
    Show { message_id: String },
}

fn parse_channel(text: &str) -> Result<Channel, String> {
    text.parse()
}

/// Most messages read per DLQ.
const DLQ_READ_LIMIT: usize = 1000;

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Creates an app and prints its key and secret (the secret is shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: send, users, templates, status.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
    /// Lists apps (never their secrets).
    List,
    /// Issues a new secret; the previous one stays valid until the next rotation.
    Rotate { app_key: String },
    /// Refuses every request of the app from now on (within the intake's cache TTL).
    Disable { app_key: String },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Outputs(#[from] notify::outputs::OutputsError),
    #[error(transparent)]
    Aws(#[from] notify::error::DependencyError),
    #[error("there is no app {0}")]
    NoSuchApp(String),
    #[error("there is no notification {0}")]
    NoSuchNotification(String),
    #[error("no DLQ holds a message {0}")]
    NoSuchMessage(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("notifyctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn sdk_config(outputs: &Outputs) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    match outputs.local_endpoint() {
        // A local stack's emulator takes any credentials.
        Some(endpoint) if std::env::var_os("AWS_ENDPOINT_URL").is_none() => {
            loader
                .endpoint_url(endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    "testing",
                    "testing",
                    None,
                    None,
                    "notifyctl",
                ))
                .load()
                .await
        }
        _ => loader.load().await,
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let outputs = Outputs::read(&cli.outputs)?;
    let sdk = sdk_config(&outputs).await;
    match cli.command {
        Command::Apps(command) => apps(&sdk, &outputs, command, cli.json).await,
        Command::Status { notification_id } => {
            let notifications =
                NotificationStore::new(aws_sdk_dynamodb::Client::new(&sdk), outputs.get("NotificationsTableName")?);
            let record =
                notifications.get(&notification_id).await?.ok_or(CliError::NoSuchNotification(notification_id))?;
            print_status(&record, cli.json);
            Ok(())
        }
        Command::Dlq(command) => dlq(&sdk, &outputs, command, cli.json).await,
    }
}

async fn apps(sdk: &SdkConfig, outputs: &Outputs, command: AppsCommand, json: bool) -> Result<(), CliError> {
    let apps = AppStore::new(aws_sdk_dynamodb::Client::new(sdk), outputs.get("AppsTableName")?);
    let now = notify::time::now_rfc3339();
    match command {
        AppsCommand::Create { name, scopes } => {
            let (record, secret) = AppRecord::create(&name, scopes.into_iter().collect::<BTreeSet<_>>(), &now);
            apps.create(&record).await?;
            if json {
                println!(
                    "{}",
                    json!({"app_key": record.app_key, "app_secret": secret.expose(), "name": record.name, "scopes": record.scopes})
                );
            } else {
                println!("app key:    {}", record.app_key);
                println!("app secret: {}", secret.expose());
                println!("The secret is shown only now; store it in the calling service's secret store.");
            }
        }
        AppsCommand::List => {
            let records = apps.list().await?;
            if json {
                let listed: Vec<_> = records
                    .iter()
                    .map(|app| {
                        json!({
                            "app_key": app.app_key, "name": app.name, "scopes": app.scopes,
                            "active_secrets": app.secrets.len(), "disabled": app.disabled, "created_at": app.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(listed));
            } else {
                println!(
                    "{:<24} {:<20} {:<28} {:>7}  {:<8}  CREATED",
                    "APP KEY", "NAME", "SCOPES", "SECRETS", "STATUS"
                );
                for app in &records {
                    let scopes: Vec<&str> = app.scopes.iter().map(|scope| scope.as_str()).collect();
                    let status = if app.disabled { "disabled" } else { "active" };
                    println!(
                        "{:<24} {:<20} {:<28} {:>7}  {:<8}  {}",
                        app.app_key,
                        app.name,
                        scopes.join(","),
                        app.secrets.len(),
                        status,
                        app.created_at
                    );
                }
            }
        }
        AppsCommand::Rotate { app_key } => {
            let mut record = apps.get(&app_key).await?.ok_or_else(|| CliError::NoSuchApp(app_key.clone()))?;
            let secret = record.rotate(&now);
            apps.update(&record).await?;
            if json {
                println!("{}", json!({"app_key": record.app_key, "app_secret": secret.expose()}));
            } else {
                println!("new app secret: {}", secret.expose());
                println!("The previous secret stays valid until the next rotation; older ones no longer work.");
            }
        }
        AppsCommand::Disable { app_key } => {
            let mut record = apps.get(&app_key).await?.ok_or_else(|| CliError::NoSuchApp(app_key.clone()))?;
            record.disabled = true;
            apps.update(&record).await?;
            if json {
                println!("{}", json!({"app_key": record.app_key, "disabled": true}));
            } else {
                println!("app {} is disabled", record.app_key);
            }
        }
    }
    Ok(())
}

fn print_status(record: &NotificationRecord, json: bool) {
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
    println!("{:<10} {:<8} {:<24} {:<8} {:>8}  ERROR", "DELIVERY", "CHANNEL", "TARGET", "STATUS", "ATTEMPTS");
    for (id, delivery) in &record.deliveries {
        let status = serde_json::to_value(delivery.status).unwrap_or_default();
        let error =
            delivery.error.as_ref().map(|e| format!("{} {}: {}", e.class, e.code, e.message)).unwrap_or_default();
        println!(
            "{:<10} {:<8} {:<24} {:<8} {:>8}  {error}",
            id,
            delivery.channel,
            delivery.target,
            status.as_str().unwrap_or_default(),
            delivery.attempts
        );
    }
    for skipped in &record.skipped {
        let reason = serde_json::to_value(skipped.reason).unwrap_or_default();
        println!("{:<10} {:<8} {:<24} skipped ({})", "-", skipped.channel, "-", reason.as_str().unwrap_or_default());
    }
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
    delivery_id: Option<String>,
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
        let key = format!(
            "{}DeadLetterQueueUrl",
            match channel {
                Channel::Push => "Push",
                Channel::Sms => "Sms",
                Channel::Email => "Email",
            }
        );
        for message in notify::queue::peek(&sqs, outputs.get(&key)?, DLQ_READ_LIMIT).await? {
            let body = message.body.clone().unwrap_or_default();
            let reference: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            let notification_id = reference.as_ref().and_then(|r| r["notification_id"].as_str().map(str::to_string));
            let delivery_id = reference.as_ref().and_then(|r| r["delivery_id"].as_str().map(str::to_string));
            let record = match &notification_id {
                Some(id) => notifications.get(id).await?,
                None => None,
            };
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

async fn dlq(sdk: &SdkConfig, outputs: &Outputs, command: DlqCommand, json: bool) -> Result<(), CliError> {
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
                println!("{:<8} {:<10} {:<40} {:>6}  OLDEST", "CHANNEL", "CLASS", "CODE", "COUNT");
                for ((channel, class, code), (count, oldest)) in &groups {
                    println!(
                        "{:<8} {:<10} {:<40} {:>6}  {} min",
                        channel,
                        class,
                        code,
                        count,
                        (now_ms - oldest) / 60_000
                    );
                }
                println!();
                println!("Explain one: notifyctl dlq show <message-id>; redrive: see RUNBOOK.md#dead-letters");
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
