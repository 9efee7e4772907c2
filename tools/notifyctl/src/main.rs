//! `notifyctl`: the admin CLI. Apps (the services that call the API) are managed here, against
//! the apps table, never through the public API.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use clap::{Parser, Subcommand};
use notify::domain::app::{AppRecord, Scope};
use notify::outputs::Outputs;
use notify::store::apps::AppStore;
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
}

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
    let apps = AppStore::new(aws_sdk_dynamodb::Client::new(&sdk), outputs.get("AppsTableName")?);
    let now = notify::time::now_rfc3339();
    match cli.command {
        Command::Apps(AppsCommand::Create { name, scopes }) => {
            let (record, secret) = AppRecord::create(&name, scopes.into_iter().collect::<BTreeSet<_>>(), &now);
            apps.create(&record).await?;
            if cli.json {
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
        Command::Apps(AppsCommand::List) => {
            let records = apps.list().await?;
            if cli.json {
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
        Command::Apps(AppsCommand::Rotate { app_key }) => {
            let mut record = apps.get(&app_key).await?.ok_or_else(|| CliError::NoSuchApp(app_key.clone()))?;
            let secret = record.rotate(&now);
            apps.update(&record).await?;
            if cli.json {
                println!("{}", json!({"app_key": record.app_key, "app_secret": secret.expose()}));
            } else {
                println!("new app secret: {}", secret.expose());
                println!("The previous secret stays valid until the next rotation; older ones no longer work.");
            }
        }
        Command::Apps(AppsCommand::Disable { app_key }) => {
            let mut record = apps.get(&app_key).await?.ok_or_else(|| CliError::NoSuchApp(app_key.clone()))?;
            record.disabled = true;
            apps.update(&record).await?;
            if cli.json {
                println!("{}", json!({"app_key": record.app_key, "disabled": true}));
            } else {
                println!("app {} is disabled", record.app_key);
            }
        }
    }
    Ok(())
}
