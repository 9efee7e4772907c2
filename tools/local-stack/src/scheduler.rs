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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use lambda_runtime::LambdaEvent;
    use notify::function::Function;

    use super::*;

    #[derive(Clone, Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<Value>>>,
    }

    impl Function for Recorder {
        type Event = Value;
        type Output = Value;

        async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
            self.events.lock().unwrap().push(event.payload);
            Ok(Value::Null)
        }
    }

    fn function(recorder: &Recorder) -> Arc<LocalFunction> {
        Arc::new(LocalFunction {
            logical_id: "Sweep".into(),
            name: "s-Sweep".into(),
            arn: "arn:aws:lambda:us-east-1:123456789012:function:s-Sweep".into(),
            timeout: Duration::from_secs(1),
            handler: Arc::new(recorder.clone()),
        })
    }

    #[tokio::test]
    async fn a_schedule_invokes_its_function_every_period_with_a_scheduled_event() {
        let recorder = Recorder::default();
        let schedule = Schedule { event_name: "EveryMinute".into(), every: Duration::from_millis(50), input: None };
        let task = tokio::spawn(run(function(&recorder), schedule, "us-east-1".into(), "123456789012".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while recorder.events.lock().unwrap().len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "three runs within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let events = recorder.events.lock().unwrap();
        assert_eq!(events[0]["detail-type"], "Scheduled Event");
        assert_eq!(events[0]["source"], "aws.events");
        assert_eq!(events[0]["resources"][0], "arn:aws:events:us-east-1:123456789012:rule/s-Sweep-EveryMinute");
    }

    #[test]
    fn an_input_replaces_the_scheduled_event() {
        let schedule = Schedule {
            event_name: "E".into(),
            every: Duration::from_secs(60),
            input: Some(json!({"action": "sweep"})),
        };
        assert_eq!(scheduled_event(&schedule, "us-east-1", "1", "r"), json!({"action": "sweep"}));
    }
}
