//! The template's `Schedule` events: the function is invoked every period with EventBridge's
//! scheduled-event payload (or the event's `Input`).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::functions::LocalFunction;
use crate::spec::Schedule;

/// EventBridge's "Scheduled Event" payload.
pub fn scheduled_event(schedule: &Schedule, region: &str, account_id: &str, rule: &str) -> Value {
    if let Some(input) = &schedule.input {
        return input.clone();
    }
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": notify::time::now_rfc3339(),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{account_id}:rule/{rule}")],
        "detail": {},
    })
}

/// Runs until aborted; the first invocation comes one period after start, as with a new rule.
pub async fn run(function: Arc<LocalFunction>, schedule: Schedule, region: String, account_id: String) {
    let rule = format!("{}-{}", function.name, schedule.event_name);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let event = scheduled_event(&schedule, &region, &account_id, &rule);
        match function.invoke(event).await {
            Ok(output) => {
                tracing::info!(function = %function.logical_id, schedule = %schedule.event_name, output = %output, "scheduled run finished")
            }
            Err(error) => {
                tracing::error!(function = %function.logical_id, schedule = %schedule.event_name, error = %error, "scheduled run failed")
            }
        }
    }
}
