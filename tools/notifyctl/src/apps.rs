//! `notifyctl apps`: the calling services and their credentials, managed against the apps
//! table, never through the public API.

use std::collections::BTreeSet;

use aws_config::SdkConfig;
use clap::Subcommand;
use notify::domain::app::{AppRecord, Scope};
use notify::outputs::Outputs;
use notify::store::apps::AppStore;
use serde_json::json;

use crate::CliError;
use crate::output::{Align, Table};

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
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

pub async fn run(sdk: &SdkConfig, outputs: &Outputs, command: AppsCommand, json: bool) -> Result<(), CliError> {
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
                let mut table = Table::new(&[
                    ("APP KEY", Align::Left),
                    ("NAME", Align::Left),
                    ("SCOPES", Align::Left),
                    ("SECRETS", Align::Right),
                    ("STATUS", Align::Left),
                    ("CREATED", Align::Left),
                ]);
                for app in &records {
                    let scopes: Vec<&str> = app.scopes.iter().map(|scope| scope.as_str()).collect();
                    let status = if app.disabled { "disabled" } else { "active" };
                    table.row(vec![
                        app.app_key.clone(),
                        app.name.clone(),
                        scopes.join(","),
                        app.secrets.len().to_string(),
                        status.into(),
                        app.created_at.clone(),
                    ]);
                }
                table.print();
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
