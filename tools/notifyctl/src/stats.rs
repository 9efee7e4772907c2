//! `notifyctl stats`: delivery counts and rates, as `GET /v1/stats` answers them, for every app
//! of the stack or one.

use aws_config::SdkConfig;
use notify::domain::stats::StatsQuery;
use notify::outputs::Outputs;
use notify::store::apps::AppStore;
use notify::store::stats::StatsStore;

use crate::CliError;
use crate::output::{Align, Table};

/// The query's options.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
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
}

pub async fn run(sdk: &SdkConfig, outputs: &Outputs, args: StatsArgs, json: bool) -> Result<(), CliError> {
    let StatsArgs { app, template, channel, from, to } = args;
    let now = notify::time::now_epoch_seconds();
    let query = StatsQuery::parse(template.as_deref(), channel.as_deref(), from.as_deref(), to.as_deref(), now)
        .map_err(|errors| {
            let problems: Vec<String> = errors.iter().map(|e| format!("--{} {}", e.field, e.message)).collect();
            CliError::InvalidQuery(problems.join("; "))
        })?;
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
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
    print_stats(&stats.report(&apps, &query).await?, json);
    Ok(())
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
    let mut table = Table::new(&[("COUNT", Align::Left), ("", Align::Right), ("RATE", Align::Left)]);
    for (name, shown_rate) in [
        ("accepted", None),
        ("sent", None),
        ("delivered", Some("delivery_rate")),
        ("failed", None),
        ("bounced", None),
        ("complained", None),
        ("cancelled", None),
        ("opened", Some("open_rate")),
        ("clicked", Some("click_rate")),
        ("clicks", None),
        ("converted", Some("conversion_rate")),
    ] {
        let shown = shown_rate.map(rate).unwrap_or_default();
        table.row(vec![name.into(), counts[name].as_u64().unwrap_or(0).to_string(), shown]);
    }
    for (reason, n) in counts["skipped"].as_object().into_iter().flatten() {
        table.row(vec![format!("skipped {reason}"), n.as_u64().unwrap_or(0).to_string(), String::new()]);
    }
    table.print();
}
