//! EventBridge Scheduler's one-time schedules, fired locally: the emulator stores `at(...)`
//! schedules and never runs them. Every second this reads the stack's schedule groups,
//! and sends each due schedule's input to its target queue, signing as the schedule's role
//! (so the role's own policy is enforced, as AWS does), then deletes the schedule (its
//! `ActionAfterCompletion` is DELETE). The schedules live in the emulator: a restarted stack
//! picks up those still waiting.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use time::PrimitiveDateTime;
use time::macros::format_description;

/// A schedule as read once: when it fires, and what it sends where, as whom.
#[derive(Clone, Debug)]
struct Due {
    at_epoch_seconds: i64,
    queue_arn: String,
    role_arn: String,
    input: String,
}

/// What firing needs: the admin client (to read and delete schedules), a client signing as each
/// role schedules name, and each queue's URL by ARN.
pub struct Firing {
    pub scheduler: aws_sdk_scheduler::Client,
    pub groups: Vec<String>,
    pub senders: BTreeMap<String, aws_sdk_sqs::Client>,
    pub queue_urls: BTreeMap<String, String>,
}

/// Runs until aborted.
pub async fn run(firing: Firing) {
    let mut known: BTreeMap<(String, String), Due> = BTreeMap::new();
    // Once a second: the precision of the scheduler's own one-time schedules, and one request a
    // second per stack on an emulator that the tests' stacks share.
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for group in &firing.groups {
            if let Err(error) = firing.fire_due(group, &mut known).await {
                tracing::warn!(group = %group, error = %error, "could not read the schedules");
            }
        }
    }
}

impl Firing {
    async fn fire_due(&self, group: &str, known: &mut BTreeMap<(String, String), Due>) -> Result<(), String> {
        let mut names = Vec::new();
        let mut pages = self.scheduler.list_schedules().group_name(group).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| DisplayErrorContext(error).to_string())?;
            names.extend(page.schedules.into_iter().filter_map(|summary| summary.name));
        }
        known.retain(|(known_group, name), _| known_group != group || names.contains(name));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for name in names {
            let key = (group.to_string(), name.clone());
            if !known.contains_key(&key) {
                match self.read(group, &name).await {
                    Ok(due) => {
                        tracing::info!(schedule = %name, at = due.at_epoch_seconds, queue = %due.queue_arn, "a schedule waits");
                        known.insert(key.clone(), due);
                    }
                    Err(error) => {
                        tracing::error!(schedule = %name, error = %error, "a schedule the local stack cannot fire");
                        continue;
                    }
                }
            }
            let due = &known[&key];
            if due.at_epoch_seconds > now {
                continue;
            }
            if let Err(error) = self.send(due).await {
                // AWS retries for the target's maximum event age; so does this, every tick.
                tracing::error!(schedule = %name, queue = %due.queue_arn, error = %error, "a due schedule could not send its message");
                continue;
            }
            self.scheduler
                .delete_schedule()
                .group_name(group)
                .name(&name)
                .send()
                .await
                .map_err(|error| DisplayErrorContext(error).to_string())?;
            tracing::info!(schedule = %name, "a schedule fired");
            known.remove(&key);
        }
        Ok(())
    }

    async fn read(&self, group: &str, name: &str) -> Result<Due, String> {
        let schedule = self
            .scheduler
            .get_schedule()
            .group_name(group)
            .name(name)
            .send()
            .await
            .map_err(|error| DisplayErrorContext(error).to_string())?;
        let expression = schedule.schedule_expression.unwrap_or_default();
        if schedule.schedule_expression_timezone.as_deref().is_some_and(|zone| zone != "UTC") {
            return Err(format!("only UTC one-time schedules are fired locally, not {expression}"));
        }
        let at = expression
            .strip_prefix("at(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| format!("{expression} is not a one-time at(...) schedule"))?;
        let at_epoch_seconds =
            PrimitiveDateTime::parse(at, format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
                .map_err(|error| format!("{expression}: {error}"))?
                .assume_utc()
                .unix_timestamp();
        let target = schedule.target.ok_or("the schedule has no target")?;
        Ok(Due {
            at_epoch_seconds,
            queue_arn: target.arn,
            role_arn: target.role_arn,
            input: target.input.ok_or("the schedule's target has no input")?,
        })
    }

    async fn send(&self, due: &Due) -> Result<(), String> {
        let sqs =
            self.senders.get(&due.role_arn).ok_or_else(|| format!("{} is not a role of the stack", due.role_arn))?;
        let url = self
            .queue_urls
            .get(&due.queue_arn)
            .ok_or_else(|| format!("{} is not a queue of the stack", due.queue_arn))?;
        sqs.send_message()
            .queue_url(url)
            .message_body(&due.input)
            .send()
            .await
            .map_err(|error| DisplayErrorContext(error).to_string())?;
        Ok(())
    }
}
