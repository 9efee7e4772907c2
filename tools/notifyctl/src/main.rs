//! `notifyctl`: the admin CLI. Apps (the services that call the API) are managed here, against
//! the apps table, never through the public API; on-call reads notifications and DLQs and
//! redrives through the retry function; users are bulk-imported from CSV.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{Parser, Subcommand};
use notify::domain::app::{AppRecord, Scope};
use notify::domain::channel::Channel;
use notify::domain::notification::NotificationRecord;
use notify::domain::stats::StatsQuery;
use notify::outputs::Outputs;
use notify::redrive::RedriveReport;
use notify::store::apps::AppStore;
use notify::store::notifications::NotificationStore;
use notify::store::stats::StatsStore;
use notify::store::users::UserStore;
use notify::user_import::{ImportError, ImportRow};
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
    /// Users: bulk import.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Delivery counts and rates, as `GET /v1/stats` answers them.
    Stats {
        /// One app (default: every app of the stack).
        #[arg(long)]
        app: Option<String>,
        /// One template (default: every template).
        #[arg(long)]
        template: Option<String>,
        /// One channel (default: every channel).
        #[arg(long)]
        channel: Option<String>,
        /// Start, RFC 3339 (default: a day before --to); counted by whole UTC hours.
        #[arg(long)]
        from: Option<String>,
        /// End, RFC 3339 (default: now).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Imports users from a CSV file with a header row. Columns: user_id (required), email,
    /// phone, locale, timezone, devices ("ios:<token> android:<token>"), push_opt_in,
    /// sms_opt_in, email_opt_in (true/false; empty leaves the preference as it is). Contacts
    /// are replaced as `PUT /v1/users/{id}` does. Bad rows are reported and written nowhere;
    /// good rows are kept, so a fixed file can be imported again. Exits 1 if any row was
    /// rejected.
    Import {
        file: PathBuf,
        /// Rows written at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
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
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("{path}: {message}")]
    ImportFile { path: String, message: String },
    #[error("{0} rows were rejected (see the report); the other rows were imported")]
    RowsRejected(usize),
    #[error("invoking {function}: {message}")]
    Invoke { function: String, message: String },
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
        // A local stack's endpoint, where notifyctl signs as the stack's operator.
        Some(endpoint) if std::env::var_os("AWS_ENDPOINT_URL").is_none() => {
            loader
                .endpoint_url(endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                    notify::outputs::LOCAL_ADMIN_ACCESS_KEY_ID,
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
        Command::Stats { app, template, channel, from, to } => {
            let now = notify::time::now_epoch_seconds();
            let query = StatsQuery::parse(template.as_deref(), channel.as_deref(), from.as_deref(), to.as_deref(), now)
                .map_err(|errors| {
                    let problems: Vec<String> = errors.iter().map(|e| format!("--{} {}", e.field, e.message)).collect();
                    CliError::InvalidQuery(problems.join("; "))
                })?;
            let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
            // Counters are kept per app; the operator sees every app's, or one's.
            let apps = match app {
                Some(app) => vec![app],
                None => AppStore::new(dynamodb.clone(), outputs.get("AppsTableName")?)
                    .list()
                    .await?
                    .into_iter()
                    .map(|app| app.app_key)
                    .collect(),
            };
            let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
            let stats = StatsStore::new(dynamodb, outputs.get("StatsTableName")?);
            print_stats(&stats.report(&apps, &query).await?, cli.json);
            Ok(())
        }
        Command::Users(UsersCommand::Import { file, concurrency }) => {
            let users = UserStore::new(aws_sdk_dynamodb::Client::new(&sdk), outputs.get("UsersTableName")?);
            import_users(&users, &file, concurrency.max(1), cli.json).await
        }
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
struct RetryFunction {
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

/// One reason a row of an import file was rejected.
#[derive(serde::Serialize)]
struct Rejection {
    line: u64,
    user_id: Option<String>,
    field: String,
    reason: String,
}

async fn import_users(
    users: &UserStore,
    file: &std::path::Path,
    concurrency: usize,
    json: bool,
) -> Result<(), CliError> {
    use futures::StreamExt;
    let unreadable =
        |error: csv::Error| CliError::ImportFile { path: file.display().to_string(), message: error.to_string() };
    let open = || csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(file).map_err(unreadable);
    // A first pass counts the rows for the progress bar.
    let rows = open()?.records().count();
    let mut reader = open()?;
    let header = reader.headers().map_err(unreadable)?.clone();
    notify::user_import::check_columns(header.iter())
        .map_err(|message| CliError::ImportFile { path: file.display().to_string(), message })?;
    let user_id_column = header.iter().position(|column| column == "user_id");

    let bar = indicatif::ProgressBar::new(rows as u64).with_style(
        indicatif::ProgressStyle::with_template("import [{bar:30}] {pos}/{len} rows ({per_sec}, {eta} left)")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let now = notify::time::now_rfc3339();
    let checked = reader.into_records().map(|record| match record {
        Err(error) => {
            let line = error.position().map(|p| p.line()).unwrap_or_default();
            (line, None, Err(vec![notify::domain::FieldError::new("row", error.to_string())]))
        }
        Ok(record) => {
            let line = record.position().map(|p| p.line()).unwrap_or_default();
            let user_id = user_id_column.and_then(|column| record.get(column)).map(str::to_string);
            let row = record
                .deserialize::<ImportRow>(Some(&header))
                .map_err(|error| vec![notify::domain::FieldError::new("row", error.to_string())])
                .and_then(ImportRow::check);
            (line, user_id, row)
        }
    });
    let mut written = futures::stream::iter(checked)
        .map(|(line, user_id, row)| {
            let now = &now;
            async move {
                let errors = match row {
                    Err(errors) => errors,
                    Ok(user) => match notify::user_import::apply(users, &user, now).await {
                        Ok(()) => vec![],
                        Err(ImportError::Refused(error)) => vec![error],
                        // The SDK already retried; the import is idempotent, so the row can be re-run.
                        Err(ImportError::Dependency(error)) => {
                            vec![notify::domain::FieldError::new("-", format!("{error} (import the row again)"))]
                        }
                    },
                };
                (line, user_id, errors)
            }
        })
        .buffer_unordered(concurrency);
    let (mut imported, mut rejected_rows, mut rejections) = (0, 0, Vec::new());
    while let Some((line, user_id, errors)) = written.next().await {
        bar.inc(1);
        if errors.is_empty() {
            imported += 1;
            continue;
        }
        rejected_rows += 1;
        rejections.extend(errors.into_iter().map(|error| Rejection {
            line,
            user_id: user_id.clone(),
            field: error.field,
            reason: error.message,
        }));
    }
    bar.finish_and_clear();
    rejections.sort_by_key(|rejection| rejection.line);

    if json {
        println!("{}", json!({"imported": imported, "rejected_rows": rejected_rows, "rejections": rejections}));
    } else {
        println!("imported {imported} users; rejected {rejected_rows} rows");
        if !rejections.is_empty() {
            println!();
            println!("{:>6}  {:<24} {:<14} REASON", "LINE", "USER ID", "FIELD");
            for rejection in &rejections {
                let user_id = rejection.user_id.as_deref().unwrap_or("-");
                println!("{:>6}  {:<24} {:<14} {}", rejection.line, user_id, rejection.field, rejection.reason);
            }
        }
    }
    if rejected_rows > 0 { Err(CliError::RowsRejected(rejected_rows)) } else { Ok(()) }
}

fn print_stats(report: &serde_json::Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    let or_all = |value: &serde_json::Value| value.as_str().unwrap_or("all").to_string();
    println!(
        "template {}, channel {}, {} to {} (whole UTC hours)",
        or_all(&report["template"]),
        or_all(&report["channel"]),
        report["from"].as_str().unwrap_or_default(),
        report["to"].as_str().unwrap_or_default()
    );
    println!();
    let (counts, rates) = (&report["counts"], &report["rates"]);
    let rate = |name: &str| match rates[name].as_f64() {
        Some(rate) => format!("{:.1}%", rate * 100.0),
        None => "-".into(),
    };
    println!("{:<12} {:>10}  RATE", "COUNT", "");
    for (name, shown_rate) in [
        ("accepted", None),
        ("sent", None),
        ("delivered", Some("delivery_rate")),
        ("failed", None),
        ("bounced", None),
        ("complained", None),
        ("opened", Some("open_rate")),
        ("clicked", Some("click_rate")),
        ("clicks", None),
    ] {
        let shown = shown_rate.map(rate).unwrap_or_default();
        println!("{name:<12} {:>10}  {shown}", counts[name].as_u64().unwrap_or(0));
    }
    for (reason, n) in counts["skipped"].as_object().into_iter().flatten() {
        println!("{:<12} {:>10}", format!("skipped {reason}"), n.as_u64().unwrap_or(0));
    }
}
