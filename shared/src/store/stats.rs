//! The stats table: counters per app, template, channel and UTC hour, maintained as events
//! happen (no scans). Key `scope` = `<app key>#<template>#<channel>` (and `<app key>#*#<channel>`
//! for all the app's templates), sort key `hour` = `2026-11-22T05`; each counter is a number
//! attribute (`sent`, `delivered`, `skipped_rate_limited`, …). An app reads its own counters
//! only. Functions tally in memory and write once per request or batch: one `ADD` UpdateItem per
//! scope and hour touched.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::string;
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::error::DependencyError;
use crate::ports::{Counters, Engaged, Engagement};

/// The scope of every template.
pub const ALL_TEMPLATES: &str = "*";

/// Counters waiting to be written.
#[derive(Debug, Default)]
pub struct Tally {
    counts: BTreeMap<(String, String, Channel, String), BTreeMap<String, u64>>,
}

/// Whose counter: the app that sent the notification, and its template.
#[derive(Clone, Copy, Debug)]
pub struct Counted<'a> {
    pub app_key: &'a str,
    pub template: &'a str,
}

impl Tally {
    /// Counts `n` of `counter` for the app's template on `channel`, in the current hour.
    pub fn add(&mut self, counted: Counted<'_>, channel: Channel, counter: &str, n: u64) {
        let hour = crate::time::hour_bucket(crate::time::now_epoch_seconds());
        *self
            .counts
            .entry((counted.app_key.to_string(), counted.template.to_string(), channel, hour))
            .or_default()
            .entry(counter.to_string())
            .or_default() += n;
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[derive(Clone)]
pub struct StatsStore {
    client: Client,
    table: String,
}

impl StatsStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Writes a tally: for each app, template, channel and hour, its scope and the app's
    /// all-templates scope, concurrently.
    pub async fn write(&self, tally: Tally) -> Result<(), DependencyError> {
        // The all-templates scope gets one write per app, channel and hour, however many templates.
        let mut scoped: BTreeMap<(String, Channel, String), BTreeMap<String, u64>> = BTreeMap::new();
        for ((app_key, template, channel, hour), counters) in tally.counts {
            for template in [template.as_str(), ALL_TEMPLATES] {
                let scope = format!("{app_key}#{template}");
                let sums = scoped.entry((scope, channel, hour.clone())).or_default();
                for (counter, n) in &counters {
                    *sums.entry(counter.clone()).or_insert(0) += n;
                }
            }
        }
        let mut updates = Vec::new();
        for ((scope, channel, hour), counters) in &scoped {
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let mut adds = Vec::new();
            for (index, (counter, n)) in counters.iter().enumerate() {
                names.insert(format!("#c{index}"), counter.clone());
                values.insert(format!(":v{index}"), AttributeValue::N(n.to_string()));
                adds.push(format!("#c{index} :v{index}"));
            }
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("scope", string(&format!("{scope}#{channel}")))
                .key("hour", string(hour))
                .update_expression(format!("ADD {}", adds.join(", ")))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values));
            updates.push(
                async move { update.send().await.map_err(|error| classify("dynamodb", "UpdateItem", error, &[])) },
            );
        }
        futures::future::try_join_all(updates).await?;
        Ok(())
    }

    /// Sums the counters of an app's `template` (or all its templates) on `channel` over the
    /// hours `from_hour..=to_hour`.
    pub async fn sum(
        &self,
        app_key: &str,
        template: Option<&str>,
        channel: Channel,
        from_hour: &str,
        to_hour: &str,
    ) -> Result<BTreeMap<String, u64>, DependencyError> {
        let scope = format!("{app_key}#{}#{channel}", template.unwrap_or(ALL_TEMPLATES));
        let mut totals = BTreeMap::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#scope = :scope AND #hour BETWEEN :from AND :to")
            .expression_attribute_names("#scope", "scope")
            .expression_attribute_names("#hour", "hour")
            .expression_attribute_values(":scope", string(&scope))
            .expression_attribute_values(":from", string(from_hour))
            .expression_attribute_values(":to", string(to_hour))
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| classify("dynamodb", "Query", error, &[]))?;
            for (name, value) in item {
                if let AttributeValue::N(number) = value {
                    *totals.entry(name).or_default() += number.parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(totals)
    }

    /// The report of a query: the counters of `apps` summed over its channels and hours.
    pub async fn report(
        &self,
        apps: &[&str],
        query: &crate::domain::stats::StatsQuery,
    ) -> Result<serde_json::Value, DependencyError> {
        let (from, to) = (crate::time::hour_bucket(query.from), crate::time::hour_bucket(query.to));
        let template = query.template.as_ref().map(|t| t.as_str());
        let scopes: Vec<(&str, Channel)> =
            apps.iter().flat_map(|app| query.channels().into_iter().map(move |channel| (*app, channel))).collect();
        let sums = futures::future::try_join_all(
            scopes.iter().map(|(app, channel)| self.sum(app, template, *channel, &from, &to)),
        )
        .await?;
        let mut by_channel: BTreeMap<Channel, BTreeMap<String, u64>> = BTreeMap::new();
        for ((_, channel), sum) in scopes.into_iter().zip(sums) {
            let counters = by_channel.entry(channel).or_default();
            for (counter, n) in sum {
                *counters.entry(counter).or_insert(0) += n;
            }
        }
        Ok(query.report(&by_channel))
    }
}

impl Counters for StatsStore {
    async fn write(&self, tally: Tally) -> Result<(), DependencyError> {
        StatsStore::write(self, tally).await
    }
}

/// Counts events as they happen and writes them in one go (at the end of a request or batch) to
/// its [`Counters`]. Stats are best effort: a failed write is logged and its counts are dropped,
/// never retried into a double count.
pub struct StatsRecorder<C = StatsStore> {
    counters: C,
    pending: std::sync::Mutex<Tally>,
}

impl<C: Counters> StatsRecorder<C> {
    pub fn new(counters: C) -> Self {
        Self { counters, pending: Default::default() }
    }

    pub fn count(&self, counted: Counted<'_>, channel: Channel, counter: &str) {
        self.pending.lock().expect("stats lock").add(counted, channel, counter, 1);
    }

    /// Counts an open or click as the rates do (a delivery's first open, its first click, and
    /// every click), with its EMF metric.
    pub fn count_engagement(&self, counted: Counted<'_>, channel: Channel, engagement: Engagement, engaged: Engaged) {
        let Engaged::Recorded { first } = engaged else { return };
        use crate::domain::stats::{CLICKED, CLICKS, OPENED};
        match engagement {
            Engagement::Open => {
                self.count(counted, channel, OPENED);
                crate::metrics::delivery(channel, crate::metrics::DeliveryMetric::Opened);
            }
            Engagement::Click => {
                self.count(counted, channel, CLICKS);
                if first {
                    self.count(counted, channel, CLICKED);
                    crate::metrics::delivery(channel, crate::metrics::DeliveryMetric::Clicked);
                }
            }
        }
    }

    pub async fn flush(&self) {
        let tally = std::mem::take(&mut *self.pending.lock().expect("stats lock"));
        if tally.is_empty() {
            return;
        }
        if let Err(error) = self.counters.write(tally).await {
            tracing::warn!(error = %error, "stats counters not written");
        }
    }
}

impl StatsRecorder {
    pub async fn report(
        &self,
        apps: &[&str],
        query: &crate::domain::stats::StatsQuery,
    ) -> Result<serde_json::Value, DependencyError> {
        self.counters.report(apps, query).await
    }
}
