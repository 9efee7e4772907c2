//! The alerting contract, read from template.yaml and RUNBOOK.md: every DLQ and every channel
//! queue has its alarm (an age alarm, or for a bulk lane its backlog's drain time), every
//! function its errors and throttles alarms, every alarm notifies the alert topic and names a
//! runbook section that exists.

#[path = "support/template_yaml.rs"]
mod template_yaml;

use std::collections::BTreeSet;

use serde_norway::Value as Yaml;
use template_yaml::project as template;

fn runbook() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../RUNBOOK.md")).unwrap()
}

/// The scalar inside a `!Ref X` or `!GetAtt X.Y` tag.
fn tagged(value: &Yaml) -> String {
    match value {
        Yaml::Tagged(tagged) => tagged.value.as_str().unwrap().to_string(),
        other => panic!("expected an intrinsic, got {other:?}"),
    }
}

/// The properties of the template's resources of one type, by logical id.
fn resources<'a>(root: &'a Yaml, kind: &str) -> Vec<(String, &'a Yaml)> {
    template_yaml::resources(root, kind).into_iter().map(|(id, resource)| (id, &resource["Properties"])).collect()
}

/// (metric, dimension target) of every single-metric alarm on a resource's metric.
fn alarmed(root: &Yaml) -> BTreeSet<(String, String)> {
    resources(root, "AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, alarm)| alarm.get("MetricName").is_some() && alarm.get("Dimensions").is_some())
        .map(|(_, alarm)| (alarm["MetricName"].as_str().unwrap().to_string(), tagged(&alarm["Dimensions"][0]["Value"])))
        .collect()
}

/// The queues whose backlog alarms watch their drain time: (queue, channel) of every alarm
/// that divides a queue's depth by its channel's bulk send rate (the `Sent` metric per lane).
fn backlog_alarmed(root: &Yaml) -> BTreeSet<(String, String)> {
    let mut watched = BTreeSet::new();
    for (_, alarm) in resources(root, "AWS::CloudWatch::Alarm") {
        let queries: Vec<&Yaml> = alarm.get("Metrics").and_then(Yaml::as_sequence).into_iter().flatten().collect();
        let metric = |name: &str| {
            queries.iter().map(|query| &query["MetricStat"]["Metric"]).find(|metric| metric["MetricName"] == name)
        };
        let (Some(depth), Some(sent)) = (metric("ApproximateNumberOfMessagesVisible"), metric("Sent")) else {
            continue;
        };
        let dimensions: Vec<(&str, &str)> = sent["Dimensions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|dimension| (dimension["Name"].as_str().unwrap(), dimension["Value"].as_str().unwrap()))
            .collect();
        assert_eq!(dimensions[1], ("Lane", "bulk"), "a backlog alarm divides by the bulk lane's sends");
        let expression = queries.iter().find_map(|query| query.get("Expression")).unwrap().as_str().unwrap();
        assert!(expression.contains("depth") && expression.contains("/ FILL(sent"), "{expression}");
        assert_eq!(tagged(&alarm["Threshold"]), "BacklogDrainAlarmMinutes");
        let queue = tagged(&depth["Dimensions"][0]["Value"]).replace(".QueueName", "");
        watched.insert((queue, dimensions[0].1.to_string()));
    }
    watched
}

#[test]
fn every_dead_letter_queue_has_a_depth_alarm_and_every_channel_queue_an_age_or_backlog_alarm() {
    let root = template();
    let alarmed = alarmed(&root);
    let queues = resources(&root, "AWS::SQS::Queue");
    let dead_letter_queues: BTreeSet<String> = queues
        .iter()
        .filter_map(|(_, queue)| {
            queue.get("RedrivePolicy").map(|policy| tagged(&policy["deadLetterTargetArn"]).replace(".Arn", ""))
        })
        .collect();
    assert!(!dead_letter_queues.is_empty());
    for dead_letter_queue in &dead_letter_queues {
        let metric = ("ApproximateNumberOfMessagesVisible".to_string(), format!("{dead_letter_queue}.QueueName"));
        assert!(alarmed.contains(&metric), "{dead_letter_queue} has no depth alarm");
    }
    let backlog_alarmed = backlog_alarmed(&root);
    for (queue, properties) in &queues {
        if properties.get("RedrivePolicy").is_some() {
            let metric = ("ApproximateAgeOfOldestMessage".to_string(), format!("{queue}.QueueName"));
            let on_backlog = backlog_alarmed.iter().any(|(watched, _)| watched == queue);
            assert!(alarmed.contains(&metric) ^ on_backlog, "{queue} has no age or backlog alarm (or both)");
        }
    }
    // Each channel's bulk lane is watched for its drain time, against its own channel's sends.
    let expected: BTreeSet<(String, String)> = notify::domain::channel::Channel::ALL
        .iter()
        .map(|channel| {
            let name = channel.to_string();
            (format!("{}{}Queue", name[..1].to_uppercase(), &name[1..]), name)
        })
        .collect();
    assert_eq!(backlog_alarmed, expected);
    for (_, alarm) in resources(&root, "AWS::CloudWatch::Alarm") {
        if alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" {
            assert_eq!(
                (alarm["Threshold"].as_u64(), alarm["ComparisonOperator"].as_str()),
                (Some(1), Some("GreaterThanOrEqualToThreshold"))
            );
        }
    }
}

#[test]
fn every_function_has_errors_and_throttles_alarms() {
    let root = template();
    let alarmed = alarmed(&root);
    for (function, _) in resources(&root, "AWS::Serverless::Function") {
        for metric in ["Errors", "Throttles"] {
            assert!(alarmed.contains(&(metric.to_string(), function.clone())), "{function} has no {metric} alarm");
        }
    }
}

#[test]
fn every_channel_has_a_permanent_failure_rate_alarm_on_its_emf_metrics() {
    let root = template();
    let mut watched = BTreeSet::new();
    for (_, alarm) in resources(&root, "AWS::CloudWatch::Alarm") {
        for query in alarm.get("Metrics").and_then(Yaml::as_sequence).into_iter().flatten() {
            let metric = &query["MetricStat"]["Metric"];
            if metric["Namespace"] == "notify" && metric["MetricName"] == "Failed" {
                assert_eq!(metric["Dimensions"][0]["Name"], "Channel");
                watched.insert(metric["Dimensions"][0]["Value"].as_str().unwrap().to_string());
            }
        }
    }
    let channels: BTreeSet<String> = notify::domain::channel::Channel::ALL.iter().map(|c| c.to_string()).collect();
    assert_eq!(watched, channels);
}

#[test]
fn every_sms_provider_has_a_failure_rate_alarm_on_its_emf_metrics() {
    let root = template();
    let mut watched = BTreeSet::new();
    for (_, alarm) in resources(&root, "AWS::CloudWatch::Alarm") {
        for query in alarm.get("Metrics").and_then(Yaml::as_sequence).into_iter().flatten() {
            let metric = &query["MetricStat"]["Metric"];
            if metric["Namespace"] == "notify" && metric["MetricName"] == "ProviderFailures" {
                // The dimensions notify::metrics::provider_call writes, in its order.
                let dimensions = metric["Dimensions"].as_sequence().unwrap();
                assert_eq!(
                    (&dimensions[0]["Name"], &dimensions[0]["Value"]),
                    (&Yaml::from("Channel"), &Yaml::from("sms"))
                );
                assert_eq!(dimensions[1]["Name"], "Provider");
                watched.insert(dimensions[1]["Value"].as_str().unwrap().to_string());
            }
        }
    }
    let providers: BTreeSet<String> =
        notify::domain::sms_route::SmsProvider::ALL.iter().map(|provider| provider.to_string()).collect();
    assert_eq!(watched, providers);
}

#[test]
fn the_first_access_denied_of_any_function_pages() {
    let root = template();
    let alarms = resources(&root, "AWS::CloudWatch::Alarm");
    let (_, alarm) = alarms
        .iter()
        .find(|(_, alarm)| alarm["Namespace"] == "notify" && alarm["MetricName"] == "AccessDenied")
        .expect("an alarm on the AccessDenied metric the functions emit");
    assert!(alarm.get("Dimensions").is_none(), "the metric has no dimension (notify::metrics::access_denied)");
    assert_eq!(
        (alarm["Statistic"].as_str(), alarm["Threshold"].as_u64(), alarm["ComparisonOperator"].as_str()),
        (Some("Sum"), Some(1), Some("GreaterThanOrEqualToThreshold"))
    );
}

#[test]
fn every_alarm_pages_the_alert_topic_and_names_an_existing_runbook_section() {
    let root = template();
    let runbook = runbook();
    let sections: BTreeSet<String> =
        runbook.lines().filter_map(|line| line.strip_prefix("## ")).map(str::to_string).collect();
    for (name, alarm) in resources(&root, "AWS::CloudWatch::Alarm") {
        let actions: Vec<String> = alarm["AlarmActions"].as_sequence().unwrap().iter().map(tagged).collect();
        assert_eq!(actions, vec!["AlertTopic"], "{name} alarm actions");
        let description = alarm["AlarmDescription"].as_str().unwrap();
        let anchor =
            description.split("RUNBOOK.md#").nth(1).unwrap_or_else(|| panic!("{name} names no runbook section"));
        assert!(sections.contains(anchor), "{name} names RUNBOOK.md#{anchor}, which has no section");
        assert!(
            runbook.contains(&format!("`{name}`")) || runbook.contains("`<Function>"),
            "RUNBOOK.md does not mention {name}"
        );
    }
}

/// The dashboard's body is JSON once its variables are filled in, and every metric it shows in
/// our namespace is one the functions emit (an EMF name in `shared/src/metrics.rs`).
#[test]
fn the_dashboard_is_json_and_shows_only_metrics_the_functions_emit() {
    let root = template();
    let (_, dashboard) = resources(&root, "AWS::CloudWatch::Dashboard").into_iter().next().expect("a dashboard");
    let Yaml::Tagged(sub) = &dashboard["DashboardBody"] else { panic!("DashboardBody is a !Sub") };
    let body = sub.value[0].as_str().unwrap();
    let mut filled = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        filled.push_str(&rest[..start]);
        filled.push('x');
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    let parsed: serde_json::Value = serde_json::from_str(&filled).expect("the dashboard body is JSON");
    let emitted = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/src/metrics.rs")).unwrap();
    for widget in parsed["widgets"].as_array().unwrap() {
        for metric in widget["properties"]["metrics"].as_array().unwrap() {
            if metric[0] == "notify" {
                let name = metric[1].as_str().unwrap();
                assert!(
                    emitted.contains(&format!("\"{name}\"")),
                    "the dashboard shows notify/{name}, which nothing emits"
                );
            }
        }
    }
}
