//! The resources the local stack creates or runs, read from a [`Template`]: queues, tables,
//! topics, functions and their events. Anything the template references that does not exist
//! (a queue behind an event, a DLQ behind a redrive policy) is an error naming both ends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::StackError;
use crate::template::{Resource, Template};

pub const QUEUE: &str = "AWS::SQS::Queue";
pub const TABLE: &str = "AWS::DynamoDB::Table";
pub const TOPIC: &str = "AWS::SNS::Topic";
pub const SUBSCRIPTION: &str = "AWS::SNS::Subscription";
pub const CONFIGURATION_SET: &str = "AWS::SES::ConfigurationSet";
pub const SECRET: &str = "AWS::SecretsManager::Secret";
pub const FUNCTION: &str = "AWS::Serverless::Function";
pub const ROLE: &str = "AWS::IAM::Role";
pub const EVENT_BUS: &str = "AWS::Events::EventBus";
pub const EVENT_RULE: &str = "AWS::Events::Rule";
pub const EVENT_ARCHIVE: &str = "AWS::Events::Archive";
pub const SCHEDULE_GROUP: &str = "AWS::Scheduler::ScheduleGroup";

/// Resource types that exist only in AWS: alarms are never evaluated by the emulator, log
/// groups have no local effect, resource policies are not enforced by it, it emits no SES events
/// (tests publish real-shaped ones to the topic), and the HTTP API is served by the local API
/// server from the functions' `HttpApi` events.
pub const NOT_EMULATED: &[&str] = &[
    "AWS::Serverless::HttpApi",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::Logs::LogGroup",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SES::ConfigurationSetEventDestination",
];

#[derive(Clone, Debug, PartialEq)]
pub struct QueueSpec {
    pub logical_id: String,
    /// Properties as written (may hold intrinsics), without `RedrivePolicy`.
    pub properties: Map<String, Value>,
    pub redrive: Option<Redrive>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redrive {
    /// Logical id of the dead-letter queue.
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableSpec {
    pub logical_id: String,
    pub properties: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
/// A resource created from its properties alone (topics, subscriptions, configuration sets,
/// secrets).
pub struct ResourceSpec {
    pub logical_id: String,
    pub properties: Map<String, Value>,
}

impl ResourceSpec {
    fn of(logical_id: &str, resource: &Resource) -> Self {
        Self { logical_id: logical_id.to_string(), properties: resource.properties.clone() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`) that implements the function.
    pub binary: String,
    pub timeout: Duration,
    /// `Environment.Variables` as written (may hold intrinsics).
    pub environment: Map<String, Value>,
    pub http_routes: Vec<HttpRoute>,
    pub sqs_mappings: Vec<SqsMapping>,
    pub stream_mappings: Vec<StreamMapping>,
    pub schedules: Vec<Schedule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// `POST`, or `ANY`.
    pub method: String,
    /// `/v1/users/{user_id}`.
    pub path: String,
}

impl HttpRoute {
    /// API Gateway's route key: `POST /v1/notifications`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How an event-source mapping batches: up to `size` records within `window`, and whether the
/// function reports the ones it failed (`ReportBatchItemFailures`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batching {
    pub size: u32,
    pub window: Duration,
    pub report_batch_item_failures: bool,
}

impl Batching {
    /// From a mapping's properties, with Lambda's defaults: `default_size`, no window.
    fn read(properties: &Value, default_size: u64) -> Self {
        let response_types = properties.get("FunctionResponseTypes").and_then(Value::as_array);
        Self {
            size: properties.get("BatchSize").and_then(number).unwrap_or(default_size) as u32,
            window: Duration::from_secs(properties.get("MaximumBatchingWindowInSeconds").and_then(number).unwrap_or(0)),
            report_batch_item_failures: response_types
                .is_some_and(|types| types.iter().any(|kind| kind == "ReportBatchItemFailures")),
        }
    }
}

/// An SQS event-source mapping, with Lambda's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsMapping {
    pub event_name: String,
    pub queue: String,
    pub batching: Batching,
    pub maximum_concurrency: Option<u32>,
}

/// A DynamoDB stream event-source mapping, with Lambda's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMapping {
    pub event_name: String,
    /// The table whose stream it reads.
    pub table: String,
    pub batching: Batching,
    /// `TRIM_HORIZON` (the oldest record kept) or `LATEST`.
    pub starting_position: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub event_name: String,
    pub every: Duration,
    /// The event sent to the function (`Input`), or the default scheduled-event shape.
    pub input: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackSpec {
    pub queues: Vec<QueueSpec>,
    pub tables: Vec<TableSpec>,
    pub topics: Vec<ResourceSpec>,
    pub subscriptions: Vec<ResourceSpec>,
    pub configuration_sets: Vec<ResourceSpec>,
    pub secrets: Vec<ResourceSpec>,
    /// Roles other than the functions' (SAM makes those): only named locally, their policies
    /// enforced by the IAM layer.
    pub roles: Vec<ResourceSpec>,
    pub schedule_groups: Vec<ResourceSpec>,
    pub event_buses: Vec<ResourceSpec>,
    pub event_rules: Vec<ResourceSpec>,
    pub event_archives: Vec<ResourceSpec>,
    pub functions: Vec<FunctionSpec>,
    /// Resource types in the template that this stack neither creates nor knows to skip.
    pub unknown_kinds: Vec<String>,
}

impl StackSpec {
    /// Reads the specs of the resources whose `Condition` holds (see `active`).
    pub fn read(
        template: &Template,
        active: impl Fn(&Resource) -> Result<bool, StackError>,
    ) -> Result<Self, StackError> {
        let mut spec = StackSpec::default();
        for (logical_id, resource) in &template.resources {
            if !active(resource)? {
                continue;
            }
            match resource.kind.as_str() {
                QUEUE => spec.queues.push(queue(logical_id, resource)?),
                TABLE => spec
                    .tables
                    .push(TableSpec { logical_id: logical_id.clone(), properties: resource.properties.clone() }),
                TOPIC => spec.topics.push(ResourceSpec::of(logical_id, resource)),
                SUBSCRIPTION => spec.subscriptions.push(ResourceSpec::of(logical_id, resource)),
                CONFIGURATION_SET => spec.configuration_sets.push(ResourceSpec::of(logical_id, resource)),
                SECRET => spec.secrets.push(ResourceSpec::of(logical_id, resource)),
                ROLE => spec.roles.push(ResourceSpec::of(logical_id, resource)),
                SCHEDULE_GROUP => spec.schedule_groups.push(ResourceSpec::of(logical_id, resource)),
                EVENT_BUS => spec.event_buses.push(ResourceSpec::of(logical_id, resource)),
                EVENT_RULE => spec.event_rules.push(ResourceSpec::of(logical_id, resource)),
                EVENT_ARCHIVE => spec.event_archives.push(ResourceSpec::of(logical_id, resource)),
                FUNCTION => spec.functions.push(function(logical_id, resource)?),
                kind if NOT_EMULATED.contains(&kind) => {}
                kind => spec.unknown_kinds.push(format!("{logical_id} ({kind})")),
            }
        }
        spec.check_references()?;
        Ok(spec)
    }

    fn check_references(&self) -> Result<(), StackError> {
        let is_queue = |id: &str| self.queues.iter().any(|queue| queue.logical_id == id);
        let is_table = |id: &str| self.tables.iter().any(|table| table.logical_id == id);
        for queue in &self.queues {
            if let Some(redrive) = &queue.redrive
                && !is_queue(&redrive.dead_letter_queue)
            {
                return Err(StackError::Template(format!(
                    "{}: RedrivePolicy names dead-letter queue {}, which is not a queue in the template",
                    queue.logical_id, redrive.dead_letter_queue
                )));
            }
        }
        for function in &self.functions {
            for mapping in &function.sqs_mappings {
                if !is_queue(&mapping.queue) {
                    return Err(StackError::Template(format!(
                        "{} event {}: queue {} is not a queue in the template",
                        function.logical_id, mapping.event_name, mapping.queue
                    )));
                }
            }
            for mapping in &function.stream_mappings {
                if !is_table(&mapping.table) {
                    return Err(StackError::Template(format!(
                        "{} event {}: stream of {}, which is not a table in the template",
                        function.logical_id, mapping.event_name, mapping.table
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn queue(&self, logical_id: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|queue| queue.logical_id == logical_id)
    }

    pub fn function(&self, logical_id: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|function| function.logical_id == logical_id)
    }
}

/// The logical id in `!GetAtt X.Arn` / `!Ref X`.
fn referenced_resource(value: &Value) -> Option<String> {
    if let Some(get_att) = value.get("Fn::GetAtt").and_then(Value::as_array) {
        return get_att.first().and_then(Value::as_str).map(str::to_string);
    }
    value.get("Ref").and_then(Value::as_str).map(str::to_string)
}

fn queue(logical_id: &str, resource: &Resource) -> Result<QueueSpec, StackError> {
    let mut properties = resource.properties.clone();
    let redrive = match properties.remove("RedrivePolicy") {
        None => None,
        Some(policy) => {
            let dead_letter_queue =
                policy.get("deadLetterTargetArn").and_then(referenced_resource).ok_or_else(|| {
                    StackError::Template(format!(
                        "{logical_id}: RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn"
                    ))
                })?;
            let max_receive_count = policy.get("maxReceiveCount").and_then(number).ok_or_else(|| {
                StackError::Template(format!("{logical_id}: RedrivePolicy.maxReceiveCount must be a number"))
            })?;
            Some(Redrive { dead_letter_queue, max_receive_count: max_receive_count as u32 })
        }
    };
    Ok(QueueSpec { logical_id: logical_id.to_string(), properties, redrive })
}

/// A number written as a number or a numeric string (YAML allows both).
pub fn number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

fn function(logical_id: &str, resource: &Resource) -> Result<FunctionSpec, StackError> {
    let problem = |message: String| StackError::Template(format!("{logical_id}: {message}"));
    let binary = resource
        .metadata
        .get("BuildProperties")
        .and_then(|properties| properties.get("Binary"))
        .and_then(Value::as_str)
        .ok_or_else(|| problem("Metadata.BuildProperties.Binary names no cargo binary".into()))?
        .to_string();
    // Lambda's default timeout is 3 s.
    let timeout = Duration::from_secs(resource.properties.get("Timeout").and_then(number).unwrap_or(3));
    let environment = resource
        .properties
        .get("Environment")
        .and_then(|environment| environment.get("Variables"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut spec = FunctionSpec {
        logical_id: logical_id.to_string(),
        binary,
        timeout,
        environment,
        http_routes: Vec::new(),
        sqs_mappings: Vec::new(),
        stream_mappings: Vec::new(),
        schedules: Vec::new(),
    };
    let events = resource.properties.get("Events").and_then(Value::as_object).cloned().unwrap_or_default();
    for (event_name, event) in events {
        let kind = event.get("Type").and_then(Value::as_str).unwrap_or_default();
        let properties = event.get("Properties").cloned().unwrap_or(Value::Null);
        let text = |key: &str| properties.get(key).and_then(Value::as_str).map(str::to_string);
        match kind {
            "HttpApi" => spec.http_routes.push(HttpRoute {
                method: text("Method").map(|m| m.to_uppercase()).unwrap_or_else(|| "ANY".into()),
                path: text("Path").unwrap_or_else(|| "/{proxy+}".into()),
            }),
            // SAM's `Enabled: false` creates the mapping without polling: none here.
            "SQS" if properties.get("Enabled").is_some_and(|enabled| enabled == false || enabled == "false") => {}
            "SQS" => {
                let queue = properties
                    .get("Queue")
                    .and_then(referenced_resource)
                    .ok_or_else(|| problem(format!("event {event_name}: Queue must be !GetAtt <Queue>.Arn")))?;
                spec.sqs_mappings.push(SqsMapping {
                    event_name: event_name.clone(),
                    queue,
                    batching: Batching::read(&properties, 10),
                    maximum_concurrency: properties
                        .get("ScalingConfig")
                        .and_then(|scaling| scaling.get("MaximumConcurrency"))
                        .and_then(number)
                        .map(|n| n as u32),
                });
            }
            "DynamoDB" => {
                let table = properties
                    .get("Stream")
                    .and_then(referenced_resource)
                    .ok_or_else(|| problem(format!("event {event_name}: Stream must be !GetAtt <Table>.StreamArn")))?;
                spec.stream_mappings.push(StreamMapping {
                    event_name: event_name.clone(),
                    table,
                    batching: Batching::read(&properties, 100),
                    starting_position: text("StartingPosition").unwrap_or_else(|| "LATEST".into()),
                });
            }
            "Schedule" | "ScheduleV2" => {
                let expression = text("Schedule")
                    .or_else(|| text("ScheduleExpression"))
                    .ok_or_else(|| problem(format!("event {event_name}: no schedule expression")))?;
                let every =
                    parse_rate(&expression).map_err(|reason| problem(format!("event {event_name}: {reason}")))?;
                let input = match properties.get("Input") {
                    None => None,
                    Some(Value::String(json)) => Some(
                        serde_json::from_str(json)
                            .map_err(|error| problem(format!("event {event_name}: Input is not JSON: {error}")))?,
                    ),
                    Some(other) => Some(other.clone()),
                };
                spec.schedules.push(Schedule { event_name: event_name.clone(), every, input });
            }
            other => return Err(problem(format!("event {event_name}: type {other:?} is not emulated locally"))),
        }
    }
    Ok(spec)
}

/// `rate(5 minutes)` → 5 min. Cron expressions are not run locally: the error says so rather
/// than silently never running the function.
pub fn parse_rate(expression: &str) -> Result<Duration, String> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("schedule {expression:?}: only rate(...) expressions run locally"))?;
    let (amount, unit) =
        inner.trim().split_once(' ').ok_or_else(|| format!("schedule {expression:?} is not rate(N unit)"))?;
    let amount: u64 = amount.parse().map_err(|_| format!("schedule {expression:?}: {amount:?} is not a number"))?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => return Err(format!("schedule {expression:?}: unknown unit {other:?}")),
    };
    Ok(Duration::from_secs(amount * seconds))
}

/// Queue properties → SQS attribute names and string values; `BTreeMap` for a stable order.
pub fn queue_attributes(resolved: &Map<String, Value>) -> BTreeMap<String, String> {
    const ATTRIBUTES: &[&str] = &[
        "DelaySeconds",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "VisibilityTimeout",
        "FifoQueue",
        "ContentBasedDeduplication",
        "SqsManagedSseEnabled",
    ];
    ATTRIBUTES
        .iter()
        .filter_map(|name| {
            let value = resolved.get(*name)?;
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Some((name.to_string(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_crons_are_refused() {
        assert_eq!(parse_rate("rate(1 minute)").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_rate("rate(2 hours)").unwrap(), Duration::from_secs(7200));
        assert!(parse_rate("cron(0 12 * * ? *)").unwrap_err().contains("only rate"));
    }

    #[test]
    fn an_event_on_a_missing_queue_is_named() {
        let template = Template::parse(
            "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Metadata: {BuildProperties: {Binary: f}}\n    Properties:\n      Events:\n        Q:\n          Type: SQS\n          Properties: {Queue: !GetAtt Gone.Arn}\n",
        )
        .unwrap();
        let error = StackSpec::read(&template, |_| Ok(true)).unwrap_err();
        assert_eq!(error.to_string(), "template.yaml: F event Q: queue Gone is not a queue in the template");
    }

    #[test]
    fn a_function_without_a_binary_is_named() {
        let template =
            Template::parse("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties: {}\n").unwrap();
        let error = StackSpec::read(&template, |_| Ok(true)).unwrap_err();
        assert!(error.to_string().contains("F: Metadata.BuildProperties.Binary"), "{error}");
    }
}
