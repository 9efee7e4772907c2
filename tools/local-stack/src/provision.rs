//! Creating the template's queues (with their redrive policies), tables (keys, indexes, TTL)
//! and topics in the emulator, or in any AWS-compatible endpoint, through the SDK.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Map, Value};

use crate::resolve::{Physical, Resolver};
use crate::spec::{FunctionSpec, StackSpec, TableSpec, number, queue_attributes};
use crate::template::Template;
use crate::{Clients, StackError};

/// What a deployment created: physical resources by logical id, and each function's resolved
/// environment.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
    pub spec: StackSpec,
    pub resources: BTreeMap<String, Physical>,
    pub function_environments: BTreeMap<String, HashMap<String, String>>,
    /// The template's Outputs that resolve locally (ones naming resources that exist only in
    /// AWS are left out).
    pub outputs: BTreeMap<String, String>,
}

impl Deployed {
    pub fn queue(&self, logical_id: &str) -> Option<(&str, &str)> {
        match self.resources.get(logical_id)? {
            Physical::Queue { url, arn, .. } => Some((url, arn)),
            _ => None,
        }
    }

    pub fn table(&self, logical_id: &str) -> Option<&str> {
        match self.resources.get(logical_id)? {
            Physical::Table { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The stack's secrets: name → ARN.
    pub fn secrets(&self) -> BTreeMap<String, String> {
        self.resources
            .values()
            .filter_map(|physical| match physical {
                Physical::Secret { name, arn } => Some((name.clone(), arn.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A physical name like CloudFormation's: the stack name and logical id, within `limit`.
fn physical_name(stack_name: &str, logical_id: &str, limit: usize) -> String {
    let mut name = format!("{stack_name}-{logical_id}");
    name.truncate(limit);
    name
}

fn aws_error(action: String, error: impl std::error::Error + 'static) -> StackError {
    StackError::Aws { action, message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string() }
}

pub async fn deploy(
    clients: &Clients,
    template: &Template,
    stack_name: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<Deployed, StackError> {
    let region = clients.region.clone();
    let mut resolver = Resolver::new(template, parameters, &region, stack_name)?;
    let spec = StackSpec::read(template, |resource| resolver.is_active(resource))?;
    if !spec.unknown_kinds.is_empty() {
        tracing::warn!(resources = ?spec.unknown_kinds, "resources of these types are not created locally");
    }

    for queue in &spec.queues {
        let properties = resolver.resolve(&Value::Object(queue.properties.clone()))?;
        let properties = properties.as_object().cloned().unwrap_or_default();
        let fifo = properties.get("FifoQueue").is_some_and(|v| v == true || v == "true");
        let name = match properties.get("QueueName").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None if fifo => format!("{}.fifo", physical_name(stack_name, &queue.logical_id, 75)),
            None => physical_name(stack_name, &queue.logical_id, 80),
        };
        let mut create = clients.sqs.create_queue().queue_name(&name);
        for (attribute, value) in queue_attributes(&properties) {
            create = create.attributes(QueueAttributeName::from(attribute.as_str()), value);
        }
        let created =
            create.send().await.map_err(|error| aws_error(format!("creating queue {}", queue.logical_id), error))?;
        let url = created.queue_url.unwrap_or_default();
        let arn = queue_arn(clients, &url).await?;
        if let Some(account) = arn.split(':').nth(4) {
            resolver.account_id = account.to_string();
        }
        resolver.resources.insert(queue.logical_id.clone(), Physical::Queue { url, arn, name });
    }
    for queue in &spec.queues {
        let Some(redrive) = &queue.redrive else { continue };
        let Some(Physical::Queue { arn: dead_letter_arn, .. }) = resolver.resources.get(&redrive.dead_letter_queue)
        else {
            unreachable!("StackSpec::read checked that every dead-letter queue is a queue");
        };
        let policy =
            serde_json::json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": redrive.max_receive_count});
        let Some(Physical::Queue { url, .. }) = resolver.resources.get(&queue.logical_id) else {
            unreachable!("created above")
        };
        clients
            .sqs
            .set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .map_err(|error| aws_error(format!("setting the redrive policy of {}", queue.logical_id), error))?;
    }

    for table in &spec.tables {
        let physical = create_table(clients, &resolver, stack_name, table).await?;
        resolver.resources.insert(table.logical_id.clone(), physical);
    }

    for topic in &spec.topics {
        let properties = resolver.resolve(&Value::Object(topic.properties.clone()))?;
        let name = properties
            .get("TopicName")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| physical_name(stack_name, &topic.logical_id, 256));
        let created = clients
            .sns
            .create_topic()
            .name(&name)
            .send()
            .await
            .map_err(|error| aws_error(format!("creating topic {}", topic.logical_id), error))?;
        resolver
            .resources
            .insert(topic.logical_id.clone(), Physical::Topic { arn: created.topic_arn.unwrap_or_default(), name });
    }

    for configuration_set in &spec.configuration_sets {
        let properties = resolver.resolve(&Value::Object(configuration_set.properties.clone()))?;
        let name = properties
            .get("Name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| physical_name(stack_name, &configuration_set.logical_id, 64));
        let created = clients.sesv2.create_configuration_set().configuration_set_name(&name).send().await;
        // A redeploy keeps the set. The emulator names the error as SES v1 did.
        if let Err(error) = created
            && !error.as_service_error().is_some_and(|e| {
                e.is_already_exists_exception() || e.meta().code() == Some("ConfigurationSetAlreadyExistsException")
            })
        {
            return Err(aws_error(format!("creating configuration set {}", configuration_set.logical_id), error));
        }
        resolver.resources.insert(configuration_set.logical_id.clone(), Physical::Local { id: name });
    }

    for secret in &spec.secrets {
        let physical = create_secret(clients, &resolver, stack_name, &secret.logical_id, &secret.properties).await?;
        resolver.resources.insert(secret.logical_id.clone(), physical);
    }

    // Named as CloudFormation names them (`<stack>-<logical id>`), as the IAM layer does.
    for role in &spec.roles {
        let name = format!("{stack_name}-{}", role.logical_id);
        let arn = format!("arn:aws:iam::{}:role/{name}", resolver.account_id);
        resolver.resources.insert(role.logical_id.clone(), Physical::Role { name, arn });
    }
    for group in &spec.schedule_groups {
        let name = physical_name(stack_name, &group.logical_id, 64);
        // A stack started again against the same endpoint keeps its group and its schedules.
        // Looked up first: the emulator's CreateScheduleGroup replaces an existing group (and
        // drops its schedules) where AWS answers ConflictException.
        let existing = clients.scheduler.get_schedule_group().name(&name).send().await;
        let arn = match existing {
            Ok(group) => group.arn.unwrap_or_default(),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                clients
                    .scheduler
                    .create_schedule_group()
                    .name(&name)
                    .send()
                    .await
                    .map_err(|error| aws_error(format!("creating schedule group {}", group.logical_id), error))?
                    .schedule_group_arn
            }
            Err(error) => return Err(aws_error(format!("reading schedule group {}", group.logical_id), error)),
        };
        resolver.resources.insert(group.logical_id.clone(), Physical::ScheduleGroup { name, arn });
    }

    // Only SNS → SQS subscriptions have a local effect (email ones need a person to confirm).
    for subscription in &spec.subscriptions {
        let properties = resolver.resolve(&Value::Object(subscription.properties.clone()))?;
        let text = |name: &str| properties.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        if text("Protocol") != "sqs" {
            continue;
        }
        let raw = properties.get("RawMessageDelivery").is_some_and(|v| v == true || v == "true");
        clients
            .sns
            .subscribe()
            .topic_arn(text("TopicArn"))
            .protocol("sqs")
            .endpoint(text("Endpoint"))
            .attributes("RawMessageDelivery", raw.to_string())
            .send()
            .await
            .map_err(|error| aws_error(format!("creating subscription {}", subscription.logical_id), error))?;
    }

    create_event_resources(clients, &spec, &mut resolver, stack_name).await?;

    for (logical_id, _) in template.of_kind("AWS::Serverless::HttpApi") {
        resolver.resources.insert(logical_id.clone(), Physical::Local { id: "local".into() });
    }
    for function in &spec.functions {
        let name = physical_name(stack_name, &function.logical_id, 64);
        let arn = format!("arn:aws:lambda:{}:{}:function:{name}", resolver.region, resolver.account_id);
        resolver.resources.insert(function.logical_id.clone(), Physical::Function { name, arn });
    }
    let mut function_environments = BTreeMap::new();
    for function in &spec.functions {
        function_environments.insert(function.logical_id.clone(), environment(&resolver, function)?);
    }

    let mut outputs = BTreeMap::new();
    for (name, output) in &template.outputs {
        match output.get("Value").map(|value| resolver.resolve_string(value)) {
            Some(Ok(value)) => {
                outputs.insert(name.clone(), value);
            }
            Some(Err(error)) => tracing::debug!(output = %name, error = %error, "output not available locally"),
            None => {}
        }
    }

    Ok(Deployed {
        outputs,
        stack_name: stack_name.to_string(),
        region,
        account_id: resolver.account_id.clone(),
        spec,
        resources: resolver.resources,
        function_environments,
    })
}

/// EventBridge buses, then the rules on them (with their targets: the emulator delivers to SQS
/// ones) and archives. A stack started again on the same endpoint keeps its buses and archives;
/// rules and targets are upserts.
async fn create_event_resources(
    clients: &Clients,
    spec: &StackSpec,
    resolver: &mut Resolver<'_>,
    stack_name: &str,
) -> Result<(), StackError> {
    let exists = |code: Option<&str>| code == Some("ResourceAlreadyExistsException");
    for bus in &spec.event_buses {
        let properties = resolver.resolve(&Value::Object(bus.properties.clone()))?;
        let name = text_or(&properties, "Name", || physical_name(stack_name, &bus.logical_id, 256));
        let created = clients.events.create_event_bus().name(&name).send().await;
        if let Err(error) = created
            && !exists(error.as_service_error().and_then(|e| e.meta().code()))
        {
            return Err(aws_error(format!("creating event bus {}", bus.logical_id), error));
        }
        let arn = format!("arn:aws:events:{}:{}:event-bus/{name}", resolver.region, resolver.account_id);
        resolver.resources.insert(bus.logical_id.clone(), Physical::Events { name, arn });
    }
    for rule in &spec.event_rules {
        let properties = resolver.resolve(&Value::Object(rule.properties.clone()))?;
        let name = text_or(&properties, "Name", || physical_name(stack_name, &rule.logical_id, 64));
        let bus = text_or(&properties, "EventBusName", || "default".into());
        let pattern = properties.get("EventPattern").map(Value::to_string);
        let put = clients
            .events
            .put_rule()
            .name(&name)
            .event_bus_name(&bus)
            .set_event_pattern(pattern)
            .state(aws_sdk_eventbridge::types::RuleState::from(
                properties.get("State").and_then(Value::as_str).unwrap_or("ENABLED"),
            ))
            .send()
            .await
            .map_err(|error| aws_error(format!("creating rule {}", rule.logical_id), error))?;
        for target in properties.get("Targets").and_then(Value::as_array).cloned().unwrap_or_default() {
            let field = |key: &str| target.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            let target = aws_sdk_eventbridge::types::Target::builder()
                .id(field("Id"))
                .arn(field("Arn"))
                .build()
                .map_err(|error| StackError::Template(format!("{}: bad target: {error}", rule.logical_id)))?;
            clients
                .events
                .put_targets()
                .rule(&name)
                .event_bus_name(&bus)
                .targets(target)
                .send()
                .await
                .map_err(|error| aws_error(format!("adding a target to rule {}", rule.logical_id), error))?;
        }
        let arn = put.rule_arn.unwrap_or_default();
        resolver.resources.insert(rule.logical_id.clone(), Physical::Events { name, arn });
    }
    for archive in &spec.event_archives {
        let properties = resolver.resolve(&Value::Object(archive.properties.clone()))?;
        let name = text_or(&properties, "ArchiveName", || physical_name(stack_name, &archive.logical_id, 48));
        let created = clients
            .events
            .create_archive()
            .archive_name(&name)
            .event_source_arn(text_or(&properties, "SourceArn", String::new))
            .set_event_pattern(properties.get("EventPattern").map(Value::to_string))
            .set_retention_days(properties.get("RetentionDays").and_then(number).map(|days| days as i32))
            .send()
            .await;
        if let Err(error) = created
            && !exists(error.as_service_error().and_then(|e| e.meta().code()))
        {
            return Err(aws_error(format!("creating archive {}", archive.logical_id), error));
        }
        resolver.resources.insert(archive.logical_id.clone(), Physical::Local { id: name });
    }
    Ok(())
}

/// A string property, or `default()`.
fn text_or(properties: &Value, key: &str, default: impl FnOnce() -> String) -> String {
    properties.get(key).and_then(Value::as_str).map(str::to_string).unwrap_or_else(default)
}

fn environment(resolver: &Resolver<'_>, function: &FunctionSpec) -> Result<HashMap<String, String>, StackError> {
    let mut variables = HashMap::new();
    for (name, value) in &function.environment {
        let resolved = resolver.resolve(value).map_err(|error| {
            StackError::Template(format!("{} environment variable {name}: {}", function.logical_id, error.detail()))
        })?;
        match resolved {
            Value::Null => {}
            Value::String(text) => {
                variables.insert(name.clone(), text);
            }
            other => {
                variables.insert(name.clone(), other.to_string());
            }
        }
    }
    Ok(variables)
}

async fn queue_arn(clients: &Clients, url: &str) -> Result<String, StackError> {
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|error| aws_error(format!("reading the ARN of {url}"), error))?;
    attributes
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| StackError::Aws { action: format!("reading the ARN of {url}"), message: "no QueueArn".into() })
}

fn key_schema(value: Option<&Value>) -> Result<Vec<KeySchemaElement>, StackError> {
    value
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|key| {
            KeySchemaElement::builder()
                .attribute_name(key.get("AttributeName").and_then(Value::as_str).unwrap_or_default())
                .key_type(KeyType::from(key.get("KeyType").and_then(Value::as_str).unwrap_or_default()))
                .build()
                .map_err(|error| StackError::Template(format!("bad KeySchema: {error}")))
        })
        .collect()
}

async fn create_table(
    clients: &Clients,
    resolver: &Resolver<'_>,
    stack_name: &str,
    table: &TableSpec,
) -> Result<Physical, StackError> {
    let resolved = resolver.resolve(&Value::Object(table.properties.clone()))?;
    let properties: Map<String, Value> = resolved.as_object().cloned().unwrap_or_default();
    let name = properties
        .get("TableName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| physical_name(stack_name, &table.logical_id, 255));
    let definitions = properties
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|definition| {
            AttributeDefinition::builder()
                .attribute_name(definition.get("AttributeName").and_then(Value::as_str).unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    definition.get("AttributeType").and_then(Value::as_str).unwrap_or_default(),
                ))
                .build()
                .map_err(|error| {
                    StackError::Template(format!("{}: bad AttributeDefinitions: {error}", table.logical_id))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut indexes = Vec::new();
    for index in properties.get("GlobalSecondaryIndexes").and_then(Value::as_array).cloned().unwrap_or_default() {
        let projection = index.get("Projection").cloned().unwrap_or(Value::Null);
        let non_key: Option<Vec<String>> = projection
            .get("NonKeyAttributes")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_string).collect());
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(index.get("IndexName").and_then(Value::as_str).unwrap_or_default())
                .set_key_schema(Some(key_schema(index.get("KeySchema"))?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            projection.get("ProjectionType").and_then(Value::as_str).unwrap_or("ALL"),
                        ))
                        .set_non_key_attributes(non_key)
                        .build(),
                )
                .build()
                .map_err(|error| {
                    StackError::Template(format!("{}: bad GlobalSecondaryIndexes: {error}", table.logical_id))
                })?,
        );
    }
    let created = clients
        .dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(key_schema(properties.get("KeySchema"))?))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Re-running against a persistent endpoint (LocalStack, a dev account) keeps the table.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(error) => return Err(aws_error(format!("creating table {}", table.logical_id), error)),
    }
    let arn = wait_until_active(clients, &name).await?;
    if let Some(ttl) = properties.get("TimeToLiveSpecification")
        && ttl.get("Enabled").is_some_and(|enabled| enabled == true || enabled == "true")
    {
        let attribute = ttl.get("AttributeName").and_then(Value::as_str).unwrap_or_default();
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder().attribute_name(attribute).enabled(true).build().map_err(
                    |error| StackError::Template(format!("{}: bad TimeToLiveSpecification: {error}", table.logical_id)),
                )?,
            )
            .send()
            .await
            .map_err(|error| aws_error(format!("enabling TTL on {}", table.logical_id), error))?;
    }
    let stream_arn = match properties.get("StreamSpecification").and_then(|spec| spec.get("StreamViewType")) {
        None => None,
        Some(view) => {
            let view = StreamViewType::from(view.as_str().unwrap_or_default());
            let described = clients
                .dynamodb
                .describe_table()
                .table_name(&name)
                .send()
                .await
                .map_err(|error| aws_error(format!("reading table {}", table.logical_id), error))?;
            let existing = described.table.and_then(|table| table.latest_stream_arn);
            match existing {
                // A stack started again on the same endpoint keeps the table and its stream.
                Some(arn) => Some(arn),
                None => clients
                    .dynamodb
                    .update_table()
                    .table_name(&name)
                    .stream_specification(
                        StreamSpecification::builder().stream_enabled(true).stream_view_type(view).build().map_err(
                            |error| {
                                StackError::Template(format!("{}: bad StreamSpecification: {error}", table.logical_id))
                            },
                        )?,
                    )
                    .send()
                    .await
                    .map_err(|error| aws_error(format!("enabling the stream of {}", table.logical_id), error))?
                    .table_description
                    .and_then(|table| table.latest_stream_arn),
            }
        }
    };
    Ok(Physical::Table { name, arn, stream_arn })
}

/// A secret with the value the template gives it, or one generated as its
/// `GenerateSecretString` asks (by Secrets Manager's own GetRandomPassword, which is what
/// CloudFormation uses).
async fn create_secret(
    clients: &Clients,
    resolver: &Resolver<'_>,
    stack_name: &str,
    logical_id: &str,
    properties: &Map<String, Value>,
) -> Result<Physical, StackError> {
    let properties = resolver.resolve(&Value::Object(properties.clone()))?;
    let name = properties
        .get("Name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| physical_name(stack_name, logical_id, 512));
    let value = match (properties.get("SecretString").and_then(Value::as_str), properties.get("GenerateSecretString")) {
        (Some(value), _) => value.to_string(),
        (None, Some(generate)) => {
            let flag = |key: &str| generate.get(key).map(|value| value == true || value == "true");
            let text = |key: &str| generate.get(key).and_then(Value::as_str).map(str::to_string);
            let generated = clients
                .secrets
                .get_random_password()
                .set_password_length(generate.get("PasswordLength").and_then(crate::spec::number).map(|n| n as i64))
                .set_exclude_characters(text("ExcludeCharacters"))
                .set_exclude_numbers(flag("ExcludeNumbers"))
                .set_exclude_punctuation(flag("ExcludePunctuation"))
                .set_exclude_uppercase(flag("ExcludeUppercase"))
                .set_exclude_lowercase(flag("ExcludeLowercase"))
                .set_include_space(flag("IncludeSpace"))
                .set_require_each_included_type(flag("RequireEachIncludedType"))
                .send()
                .await
                .map_err(|error| aws_error(format!("generating the value of secret {logical_id}"), error))?;
            generated.random_password.unwrap_or_default()
        }
        (None, None) => {
            return Err(StackError::Template(format!(
                "{logical_id}: a secret needs SecretString or GenerateSecretString"
            )));
        }
    };
    let created = clients.secrets.create_secret().name(&name).secret_string(value).send().await;
    let arn = match created {
        Ok(created) => created.arn.unwrap_or_default(),
        // Re-running against a persistent endpoint keeps the secret and its value.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => clients
            .secrets
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .map_err(|error| aws_error(format!("describing secret {logical_id}"), error))?
            .arn
            .unwrap_or_default(),
        Err(error) => return Err(aws_error(format!("creating secret {logical_id}"), error)),
    };
    Ok(Physical::Secret { name, arn })
}

/// Tables are usable once ACTIVE (at once in the emulator, seconds in AWS).
async fn wait_until_active(clients: &Clients, name: &str) -> Result<String, StackError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let described = clients
            .dynamodb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|error| aws_error(format!("describing table {name}"), error))?;
        let table = described.table.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
        if table.table_status == Some(TableStatus::Active) {
            return Ok(table.table_arn.unwrap_or_default());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StackError::Aws {
                action: format!("creating table {name}"),
                message: "not ACTIVE after 120 s".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
