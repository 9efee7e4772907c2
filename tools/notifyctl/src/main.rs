//! `notifyctl`: the admin CLI. Apps (the services that call the API) are managed here, against
//! the apps table, never through the public API; on-call reads notifications and DLQs and
//! redrives through the retry function; users are bulk-imported from CSV.

mod apps;
mod import;
mod oncall;
mod output;
mod queues;
mod routes;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{Parser, Subcommand};
use notify::outputs::Outputs;
use notify::store::notifications::NotificationStore;
use notify::store::users::UserStore;

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
    Apps(apps::AppsCommand),
    /// A notification's deliveries and timeline.
    Status { notification_id: String },
    /// Dead-letter queues: what was given up on, and why.
    #[command(subcommand)]
    Dlq(oncall::DlqCommand),
    /// Users: bulk import.
    #[command(subcommand)]
    Users(import::UsersCommand),
    /// Delivery counts and rates, as `GET /v1/stats` answers them.
    Stats(stats::StatsArgs),
    /// Per channel and lane: messages waiting, the oldest's age, the send rate against the
    /// quota, and when the backlog drains.
    Queues(queues::QueuesArgs),
    /// SMS routes: which providers serve which numbers, in order.
    #[command(subcommand)]
    Routes(routes::RoutesCommand),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
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
    #[error("invalid routes {0}")]
    InvalidRoutes(String),
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
        Command::Apps(command) => apps::run(&sdk, &outputs, command, cli.json).await,
        Command::Status { notification_id } => {
            let notifications =
                NotificationStore::new(aws_sdk_dynamodb::Client::new(&sdk), outputs.get("NotificationsTableName")?);
            let record = notifications
                .get(&notification_id.as_str().into())
                .await?
                .ok_or(CliError::NoSuchNotification(notification_id))?;
            oncall::print_status(&record, cli.json);
            Ok(())
        }
        Command::Dlq(command) => oncall::dlq(&sdk, &outputs, command, cli.json).await,
        Command::Stats(args) => stats::run(&sdk, &outputs, args, cli.json).await,
        Command::Queues(args) => queues::run(&sdk, &outputs, args, cli.json).await,
        Command::Routes(command) => routes::run(&sdk, &outputs, command, cli.json).await,
        Command::Users(import::UsersCommand::Import { file, concurrency }) => {
            let users = UserStore::new(aws_sdk_dynamodb::Client::new(&sdk), outputs.get("UsersTableName")?);
            import::import_users(&users, &file, concurrency.max(1), cli.json).await
        }
    }
}
