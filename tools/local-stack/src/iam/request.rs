//! Which IAM permissions an AWS request needs: its action (`dynamodb:GetItem`) on each resource
//! it touches (the table's ARN, or an index's), read from the request as AWS reads it. A
//! request this module does not know is reported as such, and the authorizer refuses it: an
//! unknown call must fail here, not pass unchecked and fail in AWS.

use std::collections::BTreeMap;

use serde_json::Value;

use super::policy::Permission;

/// The services the functions call, and how their requests name the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// AWS JSON 1.0, `X-Amz-Target: DynamoDB_20120810.<Operation>`.
    DynamoDb,
    /// AWS JSON 1.0, `X-Amz-Target: AmazonSQS.<Operation>` (query-compatible errors).
    Sqs,
    /// AWS query protocol: a form body with `Action=<Operation>`.
    Sns,
    /// REST-JSON: the operation is the method and path (`POST /v2/email/outbound-emails`).
    SesV2,
    /// AWS JSON 1.1, `X-Amz-Target: secretsmanager.<Operation>`.
    SecretsManager,
    /// REST-JSON: `POST /schedules/<name>` creates a schedule.
    Scheduler,
    /// AWS JSON 1.1, `X-Amz-Target: AWSEvents.<Operation>`.
    EventBridge,
}

impl Service {
    /// The IAM service prefix of its actions.
    pub fn prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
            Service::Sns => "sns",
            Service::SesV2 => "ses",
            Service::SecretsManager => "secretsmanager",
            Service::Scheduler => "scheduler",
            Service::EventBridge => "events",
        }
    }
}

/// A request, as the authorizer received it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `X-Amz-Target`, for the JSON protocols.
    pub target: Option<&'a str>,
    /// The service named in the SigV4 credential scope (`sns`, `ses`, …).
    pub signing_service: Option<&'a str>,
    pub body: &'a [u8],
}

/// Where the stack runs, to build ARNs from the names requests carry.
pub struct Scope {
    pub region: String,
    pub account_id: String,
    /// Secrets Manager secrets by name → ARN (a request may name a secret either way; IAM
    /// always evaluates its ARN).
    pub secrets: BTreeMap<String, String>,
}

/// What a request needs to be allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    pub service: Service,
    /// The API operation (`GetItem`, `SendMessageBatch`, `Publish`).
    pub operation: String,
    /// Every permission, each of which must be allowed.
    pub permissions: Vec<Permission>,
}

/// Why the permissions of a request are unknown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the local IAM layer does not know which permissions {0} needs")]
pub struct Unknown(pub String);

pub fn needed(request: &Request<'_>, scope: &Scope) -> Result<Needed, Unknown> {
    let unknown = || {
        Unknown(format!(
            "{} {} (target {:?}, service {:?})",
            request.method, request.path, request.target, request.signing_service
        ))
    };
    if let Some(target) = request.target {
        let (prefix, operation) = target.split_once('.').ok_or_else(unknown)?;
        let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        let (service, permissions) = match prefix {
            dynamodb if dynamodb.starts_with("DynamoDB_") => {
                (Service::DynamoDb, dynamodb_permissions(operation, &body, scope))
            }
            "AmazonSQS" => (Service::Sqs, sqs_permissions(operation, &body, scope)),
            "secretsmanager" => (Service::SecretsManager, secret_permissions(operation, &body, scope)),
            // A table's stream is read with `dynamodb:` actions on the stream's ARN.
            streams if streams.starts_with("DynamoDBStreams_") => {
                (Service::DynamoDb, stream_permissions(operation, &body))
            }
            "AWSEvents" => (Service::EventBridge, event_permissions(operation, &body, scope)),
            _ => return Err(unknown()),
        };
        let permissions = permissions.ok_or_else(unknown)?;
        return Ok(Needed { service, operation: operation.to_string(), permissions });
    }
    if request.path.starts_with("/v2/email/") {
        let (operation, permissions) = sesv2_permissions(request, scope).ok_or_else(unknown)?;
        return Ok(Needed { service: Service::SesV2, operation, permissions });
    }
    if request.signing_service == Some("scheduler") {
        let (operation, permissions) = scheduler_permissions(request, scope).ok_or_else(unknown)?;
        return Ok(Needed { service: Service::Scheduler, operation, permissions });
    }
    if request.signing_service == Some("sns") {
        let form: BTreeMap<String, String> = form_urlencoded::parse(request.body).into_owned().collect();
        let operation = form.get("Action").cloned().ok_or_else(unknown)?;
        let permissions = sns_permissions(&operation, &form).ok_or_else(unknown)?;
        return Ok(Needed { service: Service::Sns, operation, permissions });
    }
    Err(unknown())
}

fn arn(service: &str, scope: &Scope, resource: &str) -> String {
    format!("arn:aws:{service}:{}:{}:{resource}", scope.region, scope.account_id)
}

/// A table named by name or by ARN (DynamoDB takes either).
fn table_arn(name: &str, scope: &Scope) -> String {
    if name.starts_with("arn:") { name.to_string() } else { arn("dynamodb", scope, &format!("table/{name}")) }
}

fn dynamodb_permissions(operation: &str, body: &Value, scope: &Scope) -> Option<Vec<Permission>> {
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    match operation {
        // Several tables, one action.
        "BatchGetItem" | "BatchWriteItem" => {
            let tables = body.get("RequestItems")?.as_object()?;
            Some(
                tables
                    .keys()
                    .map(|table| Permission::new(format!("dynamodb:{operation}"), table_arn(table, scope)))
                    .collect(),
            )
        }
        // Each item is authorized as its own single-item action.
        "TransactWriteItems" | "TransactGetItems" => {
            let items = body.get("TransactItems")?.as_array()?;
            items
                .iter()
                .map(|item| {
                    let (kind, detail) = item.as_object()?.iter().next()?;
                    let action = match kind.as_str() {
                        "Put" => "PutItem",
                        "Update" => "UpdateItem",
                        "Delete" => "DeleteItem",
                        "ConditionCheck" => "ConditionCheckItem",
                        "Get" => "GetItem",
                        _ => return None,
                    };
                    Some(Permission::new(format!("dynamodb:{action}"), table_arn(&text(detail, "TableName")?, scope)))
                })
                .collect()
        }
        "ListTables" | "DescribeLimits" | "DescribeEndpoints" => {
            Some(vec![Permission::new(format!("dynamodb:{operation}"), "*")])
        }
        _ => {
            let table = table_arn(&text(body, "TableName")?, scope);
            let resource = match text(body, "IndexName") {
                Some(index) => format!("{table}/index/{index}"),
                None => table,
            };
            Some(vec![Permission::new(format!("dynamodb:{operation}"), resource)])
        }
    }
}

fn stream_permissions(operation: &str, body: &Value) -> Option<Vec<Permission>> {
    let text = |key: &str| body.get(key).and_then(Value::as_str);
    let resource = match operation {
        "ListStreams" => "*".to_string(),
        // An iterator is opaque in AWS; the emulator's begin with the stream's ARN.
        "GetRecords" => {
            text("ShardIterator")?.split('|').next().filter(|arn| arn.starts_with("arn:")).unwrap_or("*").into()
        }
        _ => text("StreamArn")?.to_string(),
    };
    Some(vec![Permission::new(format!("dynamodb:{operation}"), resource)])
}

/// PutEvents needs the action on every bus its entries name (the default bus when none).
fn event_permissions(operation: &str, body: &Value, scope: &Scope) -> Option<Vec<Permission>> {
    let bus_arn = |bus: Option<&str>| match bus {
        Some(arn) if arn.starts_with("arn:") => arn.to_string(),
        bus => arn("events", scope, &format!("event-bus/{}", bus.unwrap_or("default"))),
    };
    match operation {
        "PutEvents" => {
            let mut buses: Vec<String> = body
                .get("Entries")?
                .as_array()?
                .iter()
                .map(|entry| bus_arn(entry.get("EventBusName").and_then(Value::as_str)))
                .collect();
            buses.sort();
            buses.dedup();
            Some(buses.into_iter().map(|bus| Permission::new("events:PutEvents", bus)).collect())
        }
        _ => None,
    }
}

fn sqs_permissions(operation: &str, body: &Value, scope: &Scope) -> Option<Vec<Permission>> {
    // The batch operations are authorized as their single-message actions (SQS has no IAM
    // action of their own).
    let action = operation.strip_suffix("Batch").unwrap_or(operation);
    let resource = if let Some(url) = body.get("QueueUrl").and_then(Value::as_str) {
        // https://sqs.<region>.amazonaws.com/<account>/<name>, or the emulator's own host.
        let mut segments = url.trim_end_matches('/').rsplit('/');
        let (name, account) = (segments.next()?, segments.next()?);
        format!("arn:aws:sqs:{}:{account}:{name}", scope.region)
    } else if let Some(name) = body.get("QueueName").and_then(Value::as_str) {
        arn("sqs", scope, name)
    } else if operation == "ListQueues" {
        arn("sqs", scope, "*")
    } else {
        return None;
    };
    Some(vec![Permission::new(format!("sqs:{action}"), resource)])
}

fn secret_permissions(operation: &str, body: &Value, scope: &Scope) -> Option<Vec<Permission>> {
    let id = body.get("SecretId").and_then(Value::as_str)?;
    let resource = scope.secrets.get(id).cloned().unwrap_or_else(|| {
        if id.starts_with("arn:") { id.to_string() } else { arn("secretsmanager", scope, &format!("secret:{id}")) }
    });
    Some(vec![Permission::new(format!("secretsmanager:{operation}"), resource)])
}

/// Creating a schedule needs the action on the schedule (in its group) and passing its target's
/// role to the scheduler.
fn scheduler_permissions(request: &Request<'_>, scope: &Scope) -> Option<(String, Vec<Permission>)> {
    let name = request.path.strip_prefix("/schedules/")?;
    if request.method != "POST" || name.is_empty() || name.contains('/') {
        return None;
    }
    let body: Value = serde_json::from_slice(request.body).ok()?;
    let group = body.get("GroupName").and_then(Value::as_str).unwrap_or("default");
    let mut permissions =
        vec![Permission::new("scheduler:CreateSchedule", arn("scheduler", scope, &format!("schedule/{group}/{name}")))];
    if let Some(role) = body.pointer("/Target/RoleArn").and_then(Value::as_str) {
        permissions.push(Permission::new("iam:PassRole", role));
    }
    Some(("CreateSchedule".into(), permissions))
}

fn sns_permissions(operation: &str, form: &BTreeMap<String, String>) -> Option<Vec<Permission>> {
    // The ARN parameter each operation acts on, in the order SNS reads them.
    const ARN_PARAMETERS: [&str; 6] =
        ["TopicArn", "TargetArn", "EndpointArn", "PlatformApplicationArn", "SubscriptionArn", "ResourceArn"];
    let resource = ARN_PARAMETERS.iter().find_map(|name| form.get(*name)).cloned();
    let resource = match (operation, resource) {
        (_, Some(arn)) => arn,
        // A text message to a phone number has no ARN: IAM evaluates it against the number.
        ("Publish", None) => form.get("PhoneNumber")?.clone(),
        ("ListTopics" | "ListPlatformApplications" | "CheckIfPhoneNumberIsOptedOut" | "GetSMSAttributes", None) => {
            "*".to_string()
        }
        _ => return None,
    };
    Some(vec![Permission::new(format!("sns:{operation}"), resource)])
}

fn sesv2_permissions(request: &Request<'_>, scope: &Scope) -> Option<(String, Vec<Permission>)> {
    match (request.method, request.path) {
        ("POST", "/v2/email/outbound-emails") => {
            let body: Value = serde_json::from_slice(request.body).ok()?;
            // A raw MIME message is authorized as SendRawEmail, a simple one as SendEmail.
            let action = if body.pointer("/Content/Raw").is_some() { "ses:SendRawEmail" } else { "ses:SendEmail" };
            // IAM evaluates the verified identity SES sends as: the local stack verifies the
            // sender's domain, so that is the identity (a deployment may verify the address
            // instead; the template grants both).
            let from = body.get("FromEmailAddress").and_then(Value::as_str)?;
            let address = from.rsplit_once('<').map_or(from, |(_, rest)| rest.trim_end_matches('>')).trim();
            let domain = address.rsplit_once('@')?.1;
            let mut permissions = vec![Permission::new(action, arn("ses", scope, &format!("identity/{domain}")))];
            // Sending with a configuration set also needs the permission on the set.
            if let Some(set) = body.get("ConfigurationSetName").and_then(Value::as_str) {
                permissions.push(Permission::new(action, arn("ses", scope, &format!("configuration-set/{set}"))));
            }
            Some(("SendEmail".to_string(), permissions))
        }
        ("GET", "/v2/email/account") => Some(("GetAccount".to_string(), vec![Permission::new("ses:GetAccount", "*")])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            secrets: BTreeMap::from([(
                "s-Key".to_string(),
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:s-Key-AbCdEf".to_string(),
            )]),
        }
    }

    fn json(target: &str, body: Value) -> Needed {
        let body = body.to_string();
        let request =
            Request { method: "POST", path: "/", target: Some(target), signing_service: None, body: body.as_bytes() };
        needed(&request, &scope()).unwrap()
    }

    fn pairs(needed: &Needed) -> Vec<(&str, &str)> {
        needed.permissions.iter().map(|p| (p.action.as_str(), p.resource.as_str())).collect()
    }

    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/s-Users";

    #[test]
    fn dynamodb_requests_name_their_table_or_index_and_transactions_each_item() {
        let get = json("DynamoDB_20120810.GetItem", serde_json::json!({"TableName": "s-Users", "Key": {}}));
        assert_eq!(pairs(&get), [("dynamodb:GetItem", TABLE)]);
        let query = json("DynamoDB_20120810.Query", serde_json::json!({"TableName": TABLE, "IndexName": "pending"}));
        assert_eq!(pairs(&query), [("dynamodb:Query", &*format!("{TABLE}/index/pending"))]);
        let transaction = json(
            "DynamoDB_20120810.TransactWriteItems",
            serde_json::json!({"TransactItems": [
                {"Put": {"TableName": "s-Users"}}, {"ConditionCheck": {"TableName": "s-Users"}},
                {"Delete": {"TableName": "s-Users"}}, {"Update": {"TableName": "s-Users"}}]}),
        );
        let actions: Vec<&str> = pairs(&transaction).into_iter().map(|(action, _)| action).collect();
        assert_eq!(
            actions,
            ["dynamodb:PutItem", "dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"]
        );
        let batch = json("DynamoDB_20120810.BatchWriteItem", serde_json::json!({"RequestItems": {"s-Users": []}}));
        assert_eq!(pairs(&batch), [("dynamodb:BatchWriteItem", TABLE)]);
    }

    #[test]
    fn sqs_batches_are_their_single_message_actions_on_the_queue_of_the_url() {
        let queue = "arn:aws:sqs:us-east-1:123456789012:s-SmsQueue";
        let url = "http://127.0.0.1:4566/123456789012/s-SmsQueue";
        let batch = json("AmazonSQS.SendMessageBatch", serde_json::json!({"QueueUrl": url, "Entries": []}));
        assert_eq!((batch.operation.as_str(), pairs(&batch)), ("SendMessageBatch", vec![("sqs:SendMessage", queue)]));
        let delete = json("AmazonSQS.DeleteMessageBatch", serde_json::json!({"QueueUrl": url}));
        assert_eq!(pairs(&delete), [("sqs:DeleteMessage", queue)]);
    }

    #[test]
    fn secrets_are_authorized_by_arn_whether_named_by_name_or_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:s-Key-AbCdEf";
        for id in ["s-Key", arn] {
            let get = json("secretsmanager.GetSecretValue", serde_json::json!({"SecretId": id}));
            assert_eq!(pairs(&get), [("secretsmanager:GetSecretValue", arn)]);
        }
    }

    fn sns(form: &str) -> Result<Needed, Unknown> {
        let request =
            Request { method: "POST", path: "/", target: None, signing_service: Some("sns"), body: form.as_bytes() };
        needed(&request, &scope())
    }

    #[test]
    fn sns_publishes_name_their_target_or_the_phone_number() {
        let endpoint = "arn:aws:sns:us-east-1:123456789012:endpoint/APNS/app/1";
        let push = sns(&format!("Action=Publish&TargetArn={}&Message=x", endpoint.replace(':', "%3A"))).unwrap();
        assert_eq!(pairs(&push), [("sns:Publish", endpoint)]);
        let text = sns("Action=Publish&PhoneNumber=%2B12015550123&Message=x").unwrap();
        assert_eq!(pairs(&text), [("sns:Publish", "+12015550123")]);
        assert!(sns("Action=DeleteTopic").is_err(), "an operation with no resource it knows is unknown");
    }

    #[test]
    fn a_raw_email_is_sent_as_its_senders_domain_identity_with_its_configuration_set() {
        let body =
            serde_json::json!({"FromEmailAddress": "Notify <n@mail.example.com>", "ConfigurationSetName": "s-Set",
            "Content": {"Raw": {"Data": "eA=="}}})
            .to_string();
        let request = Request {
            method: "POST",
            path: "/v2/email/outbound-emails",
            target: None,
            signing_service: Some("ses"),
            body: body.as_bytes(),
        };
        let send = needed(&request, &scope()).unwrap();
        assert_eq!(
            pairs(&send),
            [
                ("ses:SendRawEmail", "arn:aws:ses:us-east-1:123456789012:identity/mail.example.com"),
                ("ses:SendRawEmail", "arn:aws:ses:us-east-1:123456789012:configuration-set/s-Set")
            ]
        );
    }

    #[test]
    fn requests_of_services_it_does_not_know_are_unknown() {
        let request = Request {
            method: "GET",
            path: "/2015-03-31/functions",
            target: None,
            signing_service: Some("lambda"),
            body: b"",
        };
        assert!(needed(&request, &scope()).unwrap_err().to_string().contains("does not know"));
    }
}
