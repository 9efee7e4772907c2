//! The SMS providers' shared state in the rate-limits table (their keys have a `/` or a `-`, so
//! they meet no user's record):
//! - `sms-routes`: the routes on-call set (`notifyctl routes set`), which override the
//!   template's `SmsRoutes`: `routes` (as `SmsRoutes` spells them), `changed_by`, `changed_at`
//!   and `history` (every change before, newest last). Dispatchers read it every
//!   [`ROUTES_TTL`], so a change takes effect within a minute.
//! - `provider-health/sms/<provider>`: a provider's recent failures, fleet-wide. `failures`
//!   counts its consecutive failures (on its side: see
//!   [`FailureClass::is_providers_fault`](crate::error::FailureClass::is_providers_fault))
//!   since `window_start_ms`; at [`HealthPolicy::threshold`] within the window it is out of
//!   rotation until `out_until_ms` (routes try it last), then `probing`: back in, and one more
//!   failure takes it out again, one success clears it. Instances read it every
//!   [`HEALTH_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::sms_route::{SmsProvider, SmsRoutes};
use crate::error::DependencyError;

pub const ROUTES_KEY: &str = "sms-routes";
pub const ROUTES_TTL: Duration = Duration::from_secs(30);
pub const HEALTH_TTL: Duration = Duration::from_secs(5);

fn health_key(provider: SmsProvider) -> String {
    format!("provider-health/sms/{provider}")
}

/// A change of the routes, as the item keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesChange {
    pub routes: String,
    pub changed_by: String,
    pub changed_at: String,
}

/// The routes item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoutes {
    #[serde(flatten)]
    pub current: RoutesChange,
    #[serde(default)]
    pub history: Vec<RoutesChange>,
}

pub struct RoutesStore {
    client: Client,
    table: String,
}

impl RoutesStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The routes on-call set, if any.
    pub async fn get(&self) -> Result<Option<StoredRoutes>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", string(ROUTES_KEY))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Sets `routes` (already parsed: never an invalid one), keeping the change before in the
    /// history.
    pub async fn set(&self, routes: &SmsRoutes, changed_by: &str) -> Result<RoutesChange, DependencyError> {
        let change = RoutesChange {
            routes: routes.to_string(),
            changed_by: changed_by.to_string(),
            changed_at: crate::time::now_rfc3339(),
        };
        let before = self.get().await?;
        let mut history = before.as_ref().map(|stored| stored.history.clone()).unwrap_or_default();
        history.extend(before.map(|stored| stored.current));
        let stored = StoredRoutes { current: change.clone(), history };
        let mut item = to_item("PutItem", &stored)?;
        item.insert("key".into(), string(ROUTES_KEY));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "PutItem", error, &[]))?;
        Ok(change)
    }
}

/// The routes a dispatcher sends by: on-call's if set, else the template's.
pub struct RouteBook {
    store: RoutesStore,
    default: SmsRoutes,
    cached: Mutex<Option<(Instant, SmsRoutes)>>,
}

impl RouteBook {
    pub fn new(store: RoutesStore, default: SmsRoutes) -> Self {
        Self { store, default, cached: Mutex::new(None) }
    }

    /// The routes now (read again every [`ROUTES_TTL`]; while the item cannot be read or
    /// holds routes this version cannot parse, the last ones read, else the template's).
    pub async fn current(&self) -> SmsRoutes {
        let cached = self.cached.lock().expect("routes lock").clone();
        if let Some((read_at, routes)) = &cached
            && read_at.elapsed() < ROUTES_TTL
        {
            return routes.clone();
        }
        let fallback = cached.map_or_else(|| self.default.clone(), |(_, routes)| routes);
        let routes = match self.store.get().await {
            Ok(None) => self.default.clone(),
            Ok(Some(stored)) => match stored.current.routes.parse::<SmsRoutes>() {
                Ok(routes) => {
                    if routes != fallback {
                        tracing::info!(routes = %routes, changed_by = %stored.current.changed_by, changed_at = %stored.current.changed_at, "SMS routes set by on-call");
                    }
                    routes
                }
                Err(problem) => {
                    tracing::error!(routes = %stored.current.routes, problem, "the stored SMS routes do not parse; keeping the routes in hand");
                    fallback
                }
            },
            Err(error) => {
                tracing::warn!(error = %error, "the SMS routes could not be read; keeping the routes in hand");
                fallback
            }
        };
        *self.cached.lock().expect("routes lock") = Some((Instant::now(), routes.clone()));
        routes
    }
}

/// When a provider leaves rotation, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures within `window` that take a provider out.
    pub threshold: u32,
    pub window: Duration,
    pub cool_down: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self { threshold: 5, window: Duration::from_secs(60), cool_down: Duration::from_secs(60) }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub window_start_ms: i64,
    #[serde(default)]
    pub out_until_ms: i64,
    #[serde(default)]
    pub probing: bool,
}

impl Health {
    pub fn in_rotation(&self, now_ms: i64) -> bool {
        self.out_until_ms <= now_ms
    }
}

/// The SMS providers' health, fleet-wide.
pub struct ProviderHealth {
    client: Client,
    table: String,
    policy: HealthPolicy,
    cached: Mutex<HashMap<SmsProvider, (Instant, Health)>>,
}

impl ProviderHealth {
    pub fn new(client: Client, table: String, policy: HealthPolicy) -> Self {
        Self { client, table, policy, cached: Mutex::new(HashMap::new()) }
    }

    /// `provider`'s health as this instance last read it (within [`HEALTH_TTL`]); a provider
    /// whose health cannot be read counts as in rotation.
    pub async fn of(&self, provider: SmsProvider) -> Health {
        let cached = self.cached.lock().expect("health lock").get(&provider).copied();
        if let Some((read_at, health)) = cached
            && read_at.elapsed() < HEALTH_TTL
        {
            return health;
        }
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", string(&health_key(provider)))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))
            .and_then(|output| output.item.map(|item| from_item::<Health>("GetItem", item)).transpose());
        let health = match read {
            Ok(health) => health.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(%provider, error = %error, "the provider's health could not be read; counted as in rotation");
                cached.map(|(_, health)| health).unwrap_or_default()
            }
        };
        self.remember(provider, health);
        health
    }

    fn remember(&self, provider: SmsProvider, health: Health) {
        self.cached.lock().expect("health lock").insert(provider, (Instant::now(), health));
    }

    /// Records a call's outcome: a failure on the provider's side counts (and may take it out of
    /// rotation); a success clears the count, written only when this instance saw one.
    pub async fn observe(&self, provider: SmsProvider, failed: bool, now_ms: i64) -> Result<(), DependencyError> {
        let seen = self.cached.lock().expect("health lock").get(&provider).map(|(_, health)| *health);
        if !failed {
            if seen.is_some_and(|health| health.failures > 0 || health.probing) {
                let cleared = self
                    .update(provider)
                    .update_expression("SET failures = :zero, probing = :no")
                    .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                    .expression_attribute_values(":no", AttributeValue::Bool(false));
                self.send(provider, cleared).await?;
            }
            return Ok(());
        }
        let window_floor = now_ms - self.policy.window.as_millis() as i64;
        // Within the window: one more; else the first of a new window.
        let counted = self
            .update(provider)
            .update_expression("ADD failures :one")
            .condition_expression("window_start_ms >= :floor")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":floor", AttributeValue::N(window_floor.to_string()));
        let health = match self.send(provider, counted).await {
            Ok(health) => health,
            Err(error) if error.code == "ConditionalCheckFailedException" => {
                let first = self
                    .update(provider)
                    .update_expression("SET failures = :one, window_start_ms = :now")
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()));
                self.send(provider, first).await?
            }
            Err(error) => return Err(error),
        };
        let tripped = health.in_rotation(now_ms) && (health.failures >= self.policy.threshold || health.probing);
        if tripped {
            let until = now_ms + self.policy.cool_down.as_millis() as i64;
            // Once, fleet-wide: the instance whose write finds it still in rotation.
            let out = self
                .update(provider)
                .update_expression("SET out_until_ms = :until, probing = :yes, failures = :zero")
                .condition_expression("attribute_not_exists(out_until_ms) OR out_until_ms <= :now")
                .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()));
            match self.send(provider, out).await {
                Ok(_) => {
                    crate::metrics::provider_out_of_rotation(provider.as_str());
                    tracing::error!(%provider, failures = health.failures, until_ms = until, probing = health.probing, "SMS provider out of rotation: its routes fail over to the next provider (RUNBOOK.md#provider-down)");
                }
                Err(error) if error.code == "ConditionalCheckFailedException" => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn update(
        &self,
        provider: SmsProvider,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("key", string(&health_key(provider)))
            .return_values(ReturnValue::AllNew)
    }

    /// Sends `update` and remembers the health it left.
    async fn send(
        &self,
        provider: SmsProvider,
        update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Health, DependencyError> {
        let output = update.send().await.map_err(|error| classify("dynamodb", "UpdateItem", error, &[]))?;
        let health: Health = from_item("UpdateItem", output.attributes.unwrap_or_default())?;
        self.remember(provider, health);
        Ok(health)
    }
}
