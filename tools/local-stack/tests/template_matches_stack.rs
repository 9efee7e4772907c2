//! The local stack derives everything from template.yaml: these tests read the template on
//! their own (plain YAML, no local-stack code) and check what the emulator and the stack hold.

mod support;
#[path = "support/template_yaml.rs"]
mod template_yaml;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sqs::types::QueueAttributeName;
use local_stack::template::Template;
use serde_norway::Value as Yaml;
use support::{project_template_text, start_project_stack};
use template_yaml::{parse as yaml, resources as resources_of};

/// The logical id inside `!GetAtt X.Arn` (a tagged scalar in plain YAML).
fn get_att_target(value: &Yaml) -> String {
    match value {
        Yaml::Tagged(tagged) => tagged.value.as_str().unwrap().split('.').next().unwrap().to_string(),
        other => panic!("expected !GetAtt, got {other:?}"),
    }
}

async fn queue_attributes(clients: &local_stack::Clients, stack: &str, logical_id: &str) -> BTreeMap<String, String> {
    let url = clients
        .sqs
        .get_queue_url()
        .queue_name(format!("{stack}-{logical_id}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes =
        clients.sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::All).send().await;
    attributes
        .unwrap()
        .attributes
        .unwrap()
        .into_iter()
        .map(|(name, value)| (name.as_str().to_string(), value))
        .collect()
}

/// Checks the emulator and the running stack against the template text.
async fn assert_stack_matches(template_text: &str) {
    let root = yaml(template_text);
    let template = Template::parse(template_text).unwrap();
    let (stack, clients) = start_project_stack(&template).await.unwrap();
    let name = stack.deployed.stack_name.clone();

    for (logical_id, queue) in resources_of(&root, "AWS::SQS::Queue") {
        let actual = queue_attributes(&clients, &name, &logical_id).await;
        let properties = &queue["Properties"];
        for attribute in ["VisibilityTimeout", "MessageRetentionPeriod"] {
            if let Some(expected) = properties[attribute].as_u64() {
                assert_eq!(actual[attribute], expected.to_string(), "{logical_id}.{attribute}");
            }
        }
        match properties.get("RedrivePolicy") {
            None => {
                assert!(!actual.contains_key("RedrivePolicy"), "{logical_id} has no redrive policy in the template")
            }
            Some(policy) => {
                let redrive: serde_json::Value = serde_json::from_str(&actual["RedrivePolicy"]).unwrap();
                let dead_letter = get_att_target(&policy["deadLetterTargetArn"]);
                let dead_letter_arn = &queue_attributes(&clients, &name, &dead_letter).await["QueueArn"];
                assert_eq!(redrive["deadLetterTargetArn"], dead_letter_arn.as_str(), "{logical_id} dead-letter queue");
                assert_eq!(
                    redrive["maxReceiveCount"].as_u64(),
                    policy["maxReceiveCount"].as_u64(),
                    "{logical_id} maxReceiveCount"
                );
            }
        }
    }

    for (logical_id, table) in resources_of(&root, "AWS::DynamoDB::Table") {
        let table_name = format!("{name}-{logical_id}");
        let described = clients.dynamodb.describe_table().table_name(&table_name).send().await.unwrap().table.unwrap();
        let keys: BTreeSet<(String, String)> = described
            .key_schema()
            .iter()
            .map(|key| (key.attribute_name().to_string(), key.key_type().as_str().to_string()))
            .collect();
        let expected: BTreeSet<(String, String)> = table["Properties"]["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|key| {
                (key["AttributeName"].as_str().unwrap().to_string(), key["KeyType"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(keys, expected, "{logical_id} key schema");
        let indexes: BTreeSet<String> = described
            .global_secondary_indexes()
            .iter()
            .filter_map(|index| index.index_name().map(str::to_string))
            .collect();
        let expected_indexes: BTreeSet<String> = table["Properties"]
            .get("GlobalSecondaryIndexes")
            .and_then(Yaml::as_sequence)
            .map(|indexes| indexes.iter().map(|index| index["IndexName"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(indexes, expected_indexes, "{logical_id} indexes");
        let ttl = clients.dynamodb.describe_time_to_live().table_name(&table_name).send().await.unwrap();
        let ttl_attribute = ttl.time_to_live_description.and_then(|description| description.attribute_name);
        let expected_ttl = table["Properties"]
            .get("TimeToLiveSpecification")
            .map(|ttl| ttl["AttributeName"].as_str().unwrap().to_string());
        assert_eq!(ttl_attribute, expected_ttl, "{logical_id} TTL attribute");
    }

    // ListTopics answers 100 a page; the shared emulator holds every test's stacks.
    let mut topics = Vec::new();
    let mut pages = clients.sns.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        topics.extend(page.unwrap().topics.unwrap_or_default());
    }
    for (logical_id, _) in resources_of(&root, "AWS::SNS::Topic") {
        let wanted = format!(":{name}-{logical_id}");
        assert!(
            topics.iter().any(|topic| topic.topic_arn().unwrap_or_default().ends_with(&wanted)),
            "topic {logical_id}"
        );
    }

    // Event-source mappings and routes: what the running stack polls and serves.
    let mut expected_mappings = BTreeSet::new();
    let mut expected_routes = BTreeSet::new();
    for (logical_id, function) in resources_of(&root, "AWS::Serverless::Function") {
        for (_, event) in function["Properties"].get("Events").and_then(Yaml::as_mapping).into_iter().flatten() {
            let properties = &event["Properties"];
            match event["Type"].as_str().unwrap() {
                "SQS" => {
                    expected_mappings.insert((
                        logical_id.clone(),
                        get_att_target(&properties["Queue"]),
                        properties["BatchSize"].as_u64().unwrap_or(10),
                        properties["MaximumBatchingWindowInSeconds"].as_u64().unwrap_or(0),
                        properties["FunctionResponseTypes"]
                            .as_sequence()
                            .is_some_and(|types| types.iter().any(|t| t == "ReportBatchItemFailures")),
                    ));
                }
                "HttpApi" => {
                    expected_routes.insert(format!(
                        "{} {}",
                        properties["Method"].as_str().unwrap(),
                        properties["Path"].as_str().unwrap()
                    ));
                }
                _ => {}
            }
        }
    }
    let mut mappings = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for function in &stack.deployed.spec.functions {
        for mapping in &function.sqs_mappings {
            mappings.insert((
                function.logical_id.clone(),
                mapping.queue.clone(),
                u64::from(mapping.batching.size),
                mapping.batching.window.as_secs(),
                mapping.batching.report_batch_item_failures,
            ));
        }
        routes.extend(function.http_routes.iter().map(|route| route.route_key()));
    }
    assert_eq!(mappings, expected_mappings);
    assert_eq!(routes, expected_routes);
    stack.stop().await;
}

#[tokio::test]
async fn the_stack_holds_exactly_what_the_template_declares() {
    assert_stack_matches(&project_template_text()).await;
}

#[tokio::test]
async fn the_stack_follows_a_changed_template() {
    let changed = project_template_text()
        .replacen("maxReceiveCount: 50", "maxReceiveCount: 3", 1)
        .replace("VisibilityTimeout: 180", "VisibilityTimeout: 95")
        .replace(
            "  # ---------------------------------------------------------------- tables",
            "  ExtraQueue:\n    Type: AWS::SQS::Queue\n    Properties:\n      VisibilityTimeout: 42\n\n  # ---------------------------------------------------------------- tables",
        )
        .replace("      BatchSize: 10\n            MaximumBatchingWindowInSeconds: 1", "      BatchSize: 7\n            MaximumBatchingWindowInSeconds: 2");
    assert!(changed.contains("ExtraQueue") && changed.contains("maxReceiveCount: 3"), "the edits applied");
    assert_stack_matches(&changed).await;
}

#[tokio::test]
async fn the_intake_route_set_equals_the_template_route_set() {
    let template = Template::parse(&project_template_text()).unwrap();
    let spec = local_stack::spec::StackSpec::read(&template, |_| Ok(true)).unwrap();
    let declared: BTreeSet<String> = spec
        .functions
        .iter()
        .filter(|function| function.binary == "intake")
        .flat_map(|function| function.http_routes.iter().map(|route| route.route_key()))
        .collect();
    let served: BTreeSet<String> = intake::ROUTES.iter().map(|route| route.to_string()).collect();
    assert_eq!(declared, served);
}
