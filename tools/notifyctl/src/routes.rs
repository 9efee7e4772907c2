//! `notifyctl routes`: which SMS providers serve which numbers. `show` prints the routes in force
//! (on-call's, else the template's `SmsRoutes`) and the changes before; `set` checks new routes
//! as the SMS function would (and against the providers this stack has credentials for), then
//! stores them with who set them. Dispatchers read them within 30 s; no redeploy.

use aws_config::SdkConfig;
use notify::aws::classify;
use notify::domain::sms_route::SmsRoutes;
use notify::outputs::Outputs;
use notify::store::sms_providers::{ROUTES_TTL, RoutesStore, StoredRoutes};
use serde::Serialize;

use crate::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum RoutesCommand {
    /// The SMS routes in force, and the changes before.
    Show,
    /// Sets the SMS routes, e.g. '+82=twilio,sns;*=sns,twilio' (the longest matching prefix
    /// wins; '*' takes every other number).
    Set { routes: String },
}

#[derive(Debug, Serialize)]
struct Shown {
    /// `stored` (set by on-call) or `template` (the SmsRoutes parameter).
    source: &'static str,
    routes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<StoredRoutes>,
}

pub async fn run(sdk: &SdkConfig, outputs: &Outputs, command: RoutesCommand, json: bool) -> Result<(), CliError> {
    let store = RoutesStore::new(aws_sdk_dynamodb::Client::new(sdk), outputs.get("RateLimitsTableName")?.to_string());
    match command {
        RoutesCommand::Show => {
            let stored = store.get().await?;
            let shown = match &stored {
                Some(stored) => {
                    Shown { source: "stored", routes: stored.current.routes.clone(), stored: Some(stored.clone()) }
                }
                None => Shown { source: "template", routes: outputs.get("SmsRoutes")?.to_string(), stored: None },
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&shown).expect("serializable"));
                return Ok(());
            }
            println!("SMS routes ({}): {}", shown.source, shown.routes);
            if let Some(stored) = &shown.stored {
                println!("  set by {} at {}", stored.current.changed_by, stored.current.changed_at);
                for change in stored.history.iter().rev() {
                    println!("  before: {}  (by {} at {})", change.routes, change.changed_by, change.changed_at);
                }
            }
            Ok(())
        }
        RoutesCommand::Set { routes } => {
            let parsed: SmsRoutes =
                routes.parse().map_err(|problem| CliError::InvalidRoutes(format!("{routes:?}: {problem}")))?;
            let available = outputs.get("SmsProviders")?;
            if let Some(missing) = parsed
                .providers()
                .into_iter()
                .find(|provider| !available.split(',').any(|name| name == provider.as_str()))
            {
                return Err(CliError::InvalidRoutes(format!(
                    "{routes:?} names {missing}, which this stack has no credentials for (its SMS providers: {available})"
                )));
            }
            let caller = caller(sdk).await?;
            let change = store.set(&parsed, &caller).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&change).expect("serializable"));
            } else {
                println!(
                    "SMS routes set to {} by {}; every SMS function uses them within {} s.",
                    change.routes,
                    change.changed_by,
                    ROUTES_TTL.as_secs()
                );
            }
            Ok(())
        }
    }
}

/// Who is making the change: the caller's ARN, as AWS authenticated it.
async fn caller(sdk: &SdkConfig) -> Result<String, CliError> {
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|error| classify("sts", "GetCallerIdentity", error, &[]))?;
    Ok(identity.arn.unwrap_or_else(|| "an unknown caller".into()))
}
