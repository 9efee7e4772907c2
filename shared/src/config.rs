//! The one configuration loader. Functions read named settings from an [`EnvSource`]: the
//! process environment in Lambda, or the variables the local stack resolved from template.yaml.
//! Every problem is collected, so a bad deployment fails at init with one message naming all
//! missing or invalid variables.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use crate::domain::quiet_hours::{QuietHours, QuietHoursPolicy};
use crate::domain::user::TimeZoneName;

/// Where settings come from.
pub trait EnvSource: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (what Lambda sets from the template's `Environment.Variables`).
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|value| !value.is_empty()).cloned()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Reads settings and remembers every problem until [`Settings::finish`].
pub struct Settings<'a> {
    source: &'a dyn EnvSource,
    problems: Vec<String>,
}

impl<'a> Settings<'a> {
    pub fn new(source: &'a dyn EnvSource) -> Self {
        Self { source, problems: Vec::new() }
    }

    /// A setting that must be present; when absent the problem is recorded and "" returned.
    pub fn required(&mut self, name: &str) -> String {
        self.source.var(name).unwrap_or_else(|| {
            self.problems.push(format!("missing environment variable {name}"));
            String::new()
        })
    }

    pub fn optional(&mut self, name: &str) -> Option<String> {
        self.source.var(name)
    }

    /// Records a problem with a setting, for `finish` to report.
    pub fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// A setting parsed with `FromStr`, falling back to `default` when absent.
    pub fn parsed_or<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.source.var(name) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|error| {
                self.problems.push(format!("environment variable {name}={raw:?} is invalid: {error}"));
                default
            }),
        }
    }

    /// A setting that must be present, parsed with `FromStr`: `None` (the problem recorded) when
    /// absent or invalid.
    pub fn parsed_required<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.required(name);
        if raw.is_empty() {
            return None;
        }
        raw.parse()
            .map_err(|error| self.problems.push(format!("environment variable {name}={raw:?} is invalid: {error}")))
            .ok()
    }

    /// An optional setting checked by `parse`: unset or blank (a template parameter left empty)
    /// is `None`, an invalid value a recorded problem.
    pub fn optional_parsed<T>(&mut self, name: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.optional(name).filter(|raw| !raw.trim().is_empty())?;
        parse(raw.trim())
            .map_err(|problem| self.problem(format!("environment variable {name}={raw:?} is invalid: {problem}")))
            .ok()
    }

    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() { Ok(()) } else { Err(ConfigError { problems: self.problems }) }
    }
}

/// Names of the DynamoDB tables (physical names, from the template's `!Ref`s).
#[derive(Clone, Debug)]
pub struct Tables {
    pub apps: String,
    pub users: String,
    pub templates: String,
    pub notifications: String,
    pub suppressions: String,
    pub stats: String,
}

impl Tables {
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            apps: settings.required("APPS_TABLE"),
            users: settings.required("USERS_TABLE"),
            templates: settings.required("TEMPLATES_TABLE"),
            notifications: settings.required("NOTIFICATIONS_TABLE"),
            suppressions: settings.required("SUPPRESSIONS_TABLE"),
            stats: settings.required("STATS_TABLE"),
        }
    }
}

impl QuietHoursPolicy {
    /// `DEFAULT_TIME_ZONE` and `DEFAULT_QUIET_HOURS` (`22:00-08:00`), both optional.
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            default_zone: settings.optional_parsed("DEFAULT_TIME_ZONE", TimeZoneName::parse),
            default_window: settings.optional_parsed("DEFAULT_QUIET_HOURS", QuietHours::parse_range),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let env = source(&[("APPS_TABLE", "apps"), ("USERS_TABLE", "")]);
        let mut settings = Settings::new(&env);
        Tables::load(&mut settings);
        let error = settings.finish().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: missing environment variable USERS_TABLE; \
             missing environment variable TEMPLATES_TABLE; missing environment variable NOTIFICATIONS_TABLE; \
             missing environment variable SUPPRESSIONS_TABLE; missing environment variable STATS_TABLE"
        );
    }

    #[test]
    fn invalid_values_name_the_variable_and_value() {
        let env = source(&[("BATCH_CONCURRENCY", "many")]);
        let mut settings = Settings::new(&env);
        assert_eq!(settings.parsed_or("BATCH_CONCURRENCY", 4usize), 4);
        let message = settings.finish().unwrap_err().to_string();
        assert!(message.contains("BATCH_CONCURRENCY=\"many\" is invalid"), "{message}");
    }

    #[test]
    fn complete_settings_load() {
        let env = source(&[
            ("APPS_TABLE", "a"),
            ("USERS_TABLE", "u"),
            ("TEMPLATES_TABLE", "t"),
            ("NOTIFICATIONS_TABLE", "n"),
            ("SUPPRESSIONS_TABLE", "s"),
            ("STATS_TABLE", "st"),
        ]);
        let mut settings = Settings::new(&env);
        let tables = Tables::load(&mut settings);
        settings.finish().unwrap();
        assert_eq!(tables.notifications, "n");
    }
}
