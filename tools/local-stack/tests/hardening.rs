//! The deployment's hardening, read from template.yaml (what the local stack cannot show:
//! AWS applies these settings, the emulator ignores them): data kept when a table or the stack
//! goes, concurrency reserved so one function cannot starve another, public routes throttled
//! apart from sends, access logs, and no secret passing through parameters or environments.

#[path = "support/template_yaml.rs"]
mod template_yaml;

use serde_norway::{Mapping, Value as Yaml};
use template_yaml::{project as template, resources};

/// The value of `!If [condition, value, !Ref AWS::NoValue]`, or the value itself.
fn when_set(value: &Yaml) -> &Yaml {
    match value {
        Yaml::Tagged(tagged) if tagged.tag == "If" => &tagged.value[1],
        other => other,
    }
}

/// The rate-limit records live an hour: losing them resets an hour of counting, nothing more,
/// and deletion protection would stop the stack from being deleted.
const EPHEMERAL_TABLES: [&str; 1] = ["RateLimitsTable"];

#[test]
fn tables_holding_data_are_protected_from_deletion_and_kept_with_the_stack() {
    for (table, resource) in resources(&template(), "AWS::DynamoDB::Table") {
        if EPHEMERAL_TABLES.contains(&table.as_str()) {
            continue;
        }
        assert_eq!(resource["Properties"]["DeletionProtectionEnabled"].as_bool(), Some(true), "{table}");
        for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
            assert_eq!(resource[policy].as_str(), Some("Retain"), "{table} {policy}");
        }
    }
}

#[test]
fn every_function_reserves_at_least_the_concurrency_its_queues_poll_with() {
    let root = template();
    for (function, resource) in resources(&root, "AWS::Serverless::Function") {
        let properties = &resource["Properties"];
        let reserved = when_set(&properties["ReservedConcurrentExecutions"]);
        let polled: u64 = properties["Events"]
            .as_mapping()
            .unwrap()
            .values()
            .filter(|event| event["Type"] == "SQS")
            .map(|event| event["Properties"]["ScalingConfig"]["MaximumConcurrency"].as_u64().unwrap())
            .sum();
        match reserved.as_u64() {
            // Reserved below what Lambda polls with, messages come back throttled and count
            // toward the DLQ.
            Some(reserved) => assert!(reserved >= polled, "{function} reserves {reserved} but polls with {polled}"),
            None => {
                assert!(matches!(reserved, Yaml::Tagged(_)), "{function} reserves no concurrency");
                assert_eq!(polled, 0, "{function}: a queue consumer reserves a fixed concurrency");
            }
        }
    }
}

#[test]
fn public_routes_are_throttled_apart_and_every_request_is_logged() {
    let root = template();
    let (_, api) = resources(&root, "AWS::Serverless::HttpApi").into_iter().next().unwrap();
    let properties = &api["Properties"];
    let format = properties["AccessLogSettings"]["Format"].as_str().unwrap();
    let line: serde_json::Value = serde_json::from_str(format).expect("the access log format is JSON");
    for field in ["requestId", "routeKey", "status", "latencyMs", "sourceIp"] {
        assert!(line.get(field).is_some(), "the access log has no {field}");
    }
    let routes: &Mapping = properties["RouteSettings"].as_mapping().unwrap();
    // The routes anyone may call: links in emails, answered without app credentials.
    let public: Vec<&str> = intake::ROUTES
        .iter()
        .copied()
        .filter(|route| ["/t/", "/v1/unsubscribe/", "/v1/preferences/"].iter().any(|prefix| route.contains(prefix)))
        .collect();
    assert_eq!(
        public.len(),
        7,
        "tracking, pixel, push open, unsubscribe form and unsubscribe, preference center and save"
    );
    for route in public {
        let settings = &routes[route];
        for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
            assert!(!settings[limit].is_null(), "{route} has no {limit} of its own");
        }
    }
}

#[test]
fn no_secret_passes_through_a_parameter_or_an_environment() {
    let root = template();
    let parameters = root["Parameters"].as_mapping().unwrap();
    for (name, parameter) in parameters {
        assert!(parameter.get("NoEcho").is_none(), "parameter {name:?} is a secret: keep it in Secrets Manager");
    }
    for (function, resource) in resources(&root, "AWS::Serverless::Function") {
        for (name, _) in resource["Properties"]["Environment"]["Variables"].as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap();
            assert!(!name.contains("SECRET") || name.ends_with("_ARN"), "{function} has {name} in its environment");
        }
    }
}
