//! Every function can do in AWS what it does here: each function's AWS requests are authorized
//! against its own role as SAM builds it from template.yaml (`local_stack::iam`). One tour
//! drives every route and every function's paths with enforcement on and fails on any denial;
//! the other tests show the enforcement bites: a removed grant fails its path with AccessDenied,
//! and a grant on one resource does not reach another, answered in each service's wire format.

mod support;

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use local_stack::iam::policy::{Decision, Permission};
use local_stack::iam::{Denial, function_access_key_id};
use local_stack::resolve::Physical;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, Reply, every_delivery_sent, hard_bounce, ios_token, unique};
use support::fault_proxy::FaultProxy;
use support::{emulator_state, endpoint, eventually, project_template_text};

fn no_denials(api: &Api) {
    let denials = api.stack.denials();
    assert!(denials.is_empty(), "the functions' roles refused {} requests: {denials:#?}", denials.len());
}

async fn template(api: &Api, transactional: bool, tracking: bool) -> String {
    let name = unique("t");
    let content = json!({"default_locale": "en", "transactional": transactional, "tracking": tracking, "locales": {"en": {
        "push": {"title": "Hi", "body": "Order {{ order }}"},
        "sms": {"body": "Order {{ order }}"},
        "email": {"subject": "Order {{ order }}", "html": "<p><a href=\"https://shop.example.com/{{ order }}\">Order</a></p>", "text": "Order {{ order }}"}
    }}});
    let stored = api.call(Method::PUT, &format!("/v1/templates/{name}"), Some(content)).await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(api.call(Method::GET, &format!("/v1/templates/{name}"), None).await.status, 200);
    name
}

async fn send(api: &Api, user: &str, template: &str, channels: &[&str]) -> String {
    let body = json!({"user_id": user, "template": template, "params": {"order": unique("o")}, "channels": channels});
    let reply = api.call(Method::POST, "/v1/notifications", Some(body)).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_string()
}

/// Polls the notification until every delivery has ended; a denial on the way fails at once.
async fn completed(api: &Api, id: &str) -> Value {
    api.wait_for_notification(id, "every delivery to end", |view| {
        no_denials(api);
        view["status"] == "completed"
    })
    .await
}

fn statuses(view: &Value) -> Vec<String> {
    view["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap().to_string()).collect()
}

async fn invoke_retry(api: &Api, request: Value) -> Value {
    api.stack.function("RetryFunction").unwrap().invoke(request).await.unwrap()
}

#[tokio::test]
async fn every_route_and_function_path_runs_within_its_role() {
    // Between the stack and the emulator, to make SQS refuse an enqueue (the sweep's path).
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let parameters = BTreeMap::from([("SmsRateLimitPerHour".to_string(), "1".to_string())]);
    let api = Api::start_with(&proxy.url, parameters).await;
    let bulk = template(&api, false, true).await;
    let otp = template(&api, true, false).await;

    // Users, devices and preferences.
    let user = unique("u");
    let address = format!("{}@example.com", unique("ada"));
    let contacts = json!({"phone": "+12015550123", "email": address, "locale": "en"});
    assert_eq!(api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await.status, 201);
    let token = ios_token();
    for device in [json!({"platform": "ios", "token": token}), json!({"platform": "android", "token": ios_token()})] {
        let registered = api.call(Method::POST, &format!("/v1/users/{user}/devices"), Some(device)).await;
        assert_eq!(registered.status, 201, "{}", registered.body);
    }
    let spare = ios_token();
    api.call(Method::POST, &format!("/v1/users/{user}/devices"), Some(json!({"platform": "android", "token": spare})))
        .await;
    assert_eq!(api.call(Method::DELETE, &format!("/v1/users/{user}/devices/{spare}"), None).await.status, 204);
    assert_eq!(api.call(Method::GET, &format!("/v1/users/{user}"), None).await.status, 200);
    let preferences =
        api.call(Method::PUT, &format!("/v1/users/{user}/preferences"), Some(json!({"push": true}))).await;
    assert_eq!(preferences.status, 200, "{}", preferences.body);
    assert_eq!(api.call(Method::GET, &format!("/v1/users/{user}/preferences"), None).await.status, 200);
    let leaving = unique("u");
    api.call(Method::PUT, &format!("/v1/users/{leaving}"), Some(json!({"phone": "+12015550124"}))).await;
    assert_eq!(api.call(Method::DELETE, &format!("/v1/users/{leaving}"), None).await.status, 204);
    assert_eq!(api.call(Method::GET, "/v1/openapi.json", None).await.status, 200);

    // A rate-limited send on every channel (push to both platforms), then the rate limit's skip.
    let first = send(&api, &user, &bulk, &["push", "sms", "email"]).await;
    let view = completed(&api, &first).await;
    assert!(every_delivery_sent(&view), "{view}");
    let limited = send(&api, &user, &bulk, &["sms"]).await;
    assert_eq!(completed(&api, &limited).await["deliveries"][0]["reason"], "rate_limited");
    // Transactional sends pass the rate limit; a batch is one request.
    let batch = json!({"notifications": [
        {"idempotency_key": unique("k"), "user_id": user, "template": otp, "params": {"order": "1"}, "channels": ["sms"]},
        {"idempotency_key": unique("k"), "user_id": user, "template": otp, "params": {"order": "2"}, "channels": ["email"]}]});
    let sent = api.call(Method::POST, "/v1/notifications/batch", Some(batch)).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    for item in sent.body["results"].as_array().unwrap() {
        let id = item["body"]["id"].as_str().unwrap_or_else(|| panic!("a batch item is accepted: {item}"));
        let view = completed(&api, id).await;
        assert!(every_delivery_sent(&view), "{view}");
    }

    // Cancelling: by id (nothing left: it was sent) and by key (a Query of the key's index).
    let cancelled = api.call(Method::DELETE, &format!("/v1/notifications/{first}"), None).await;
    assert_eq!(cancelled.status, 409, "{}", cancelled.body);
    let by_key = json!({"cancellation_key": unique("k")});
    let by_key = api.call(Method::POST, "/v1/notifications/cancel", Some(by_key)).await;
    assert_eq!(by_key.status, 200, "{}", by_key.body);

    // Tracking: a click and an open of the email; the one-click unsubscribe link's form and POST.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (clicks, _) = api.tracking_links(&first, "c").await;
    let (pixels, content) = api.tracking_links(&first, "o").await;
    assert_eq!(http.get(&clicks[0]).send().await.unwrap().status(), 302);
    assert_eq!(http.get(&pixels[0]).send().await.unwrap().status(), 200);
    assert!(content.contains("Order"), "{content}");
    let unsubscribe = api.unsubscribe_path(&first).await;
    assert_eq!(api.call_as(None, Method::GET, &unsubscribe, None, &[]).await.status, 200);

    // SES feedback on the email: delivered, then a bounce of another send (which suppresses).
    api.publish_ses_event(
        &first,
        &address,
        "Delivery",
        json!({"timestamp": "2026-11-22T10:00:01.000Z", "recipients": [address]}),
    )
    .await;
    api.wait_for_notification(&first, "the email to be delivered", |view| {
        view["deliveries"].as_array().unwrap().iter().any(|d| d["status"] == "delivered")
    })
    .await;
    let bounced = send(&api, &user, &otp, &["email"]).await;
    completed(&api, &bounced).await;
    api.publish_ses_event(&bounced, &address, "Bounce", hard_bounce(&address)).await;
    api.wait_for_notification(&bounced, "the bounce to be recorded", |view| statuses(view) == ["bounced"]).await;
    let suppressed = send(&api, &user, &otp, &["email"]).await;
    let view = completed(&api, &suppressed).await;
    assert!(view.to_string().contains("suppressed"), "{view}");
    let unsubscribed = api
        .call_as(None, Method::POST, &unsubscribe, None, &[("content-type", "application/x-www-form-urlencoded")])
        .await;
    assert_eq!(unsubscribed.status, 200);

    // Device retirement: the platform disables the iOS endpoint; the next push retires it.
    let endpoint_arn = emulator_state().await["sns"]["PlatformEndpoint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|endpoint| endpoint["token"] == token.as_str())
        .unwrap()["arn"]
        .as_str()
        .unwrap()
        .to_string();
    api.clients
        .sns
        .set_endpoint_attributes()
        .endpoint_arn(endpoint_arn)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let retiring = send(&api, &user, &otp, &["push"]).await;
    let view = completed(&api, &retiring).await;
    assert!(view["deliveries"].to_string().contains("EndpointDisabled"), "{view}");
    let devices = api.call(Method::GET, &format!("/v1/users/{user}"), None).await.body["devices"].clone();
    assert!(devices.as_array().unwrap().iter().any(|device| device["active"] == false), "{devices}");

    // The sweep: SQS refuses every try of an enqueue; the retry function enqueues it later.
    proxy.refuse_next(r#""MessageBody""#, 3);
    let stranded = send(&api, &user, &otp, &["sms"]).await;
    let table = local_stack::demo::tables(&api.stack.deployed).unwrap().notifications;
    api.clients
        .dynamodb
        .update_item()
        .table_name(table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(stranded.clone()))
        .update_expression("SET sweep_at = :now")
        .expression_attribute_values(
            ":now",
            aws_sdk_dynamodb::types::AttributeValue::N(notify::time::now_epoch_seconds().to_string()),
        )
        .send()
        .await
        .unwrap();
    let report = invoke_retry(&api, json!({"action": "sweep"})).await;
    assert_eq!(report["requeued"], 1, "{report}");
    assert!(every_delivery_sent(&completed(&api, &stranded).await));

    // A redrive of the SMS DLQ, holding a copy of a finished delivery.
    let dlq = api.stack.deployed.queue("SmsDeadLetterQueue").unwrap().0.to_string();
    let copy = json!({"notification_id": stranded, "delivery_id": "sms", "user_id": user, "template": otp, "transactional": true, "channel": "sms", "to": "+12015550123", "body": "Order"});
    api.clients.sqs.send_message().queue_url(&dlq).message_body(copy.to_string()).send().await.unwrap();
    let report = invoke_retry(&api, json!({"action": "redrive", "channel": "sms"})).await;
    assert_eq!(report["already_finished"], 1, "{report}");

    // Parking: a message no dispatcher can read is moved to its channel's DLQ by the dispatcher.
    let lanes = [
        ("PushQueue", "PushDeadLetterQueue"),
        ("SmsTransactionalQueue", "SmsDeadLetterQueue"),
        ("EmailQueue", "EmailDeadLetterQueue"),
    ];
    for (queue, dlq) in lanes {
        let (queue, dlq) = (api.stack.deployed.queue(queue).unwrap().0, api.stack.deployed.queue(dlq).unwrap().0);
        let poison = unique("poison");
        api.clients.sqs.send_message().queue_url(queue).message_body(&poison).send().await.unwrap();
        eventually(std::time::Duration::from_secs(30), "the poison message in the DLQ", || async {
            let received =
                api.clients.sqs.receive_message().queue_url(dlq).max_number_of_messages(10).send().await.unwrap();
            received.messages().iter().any(|message| message.body() == Some(poison.as_str())).then_some(())
        })
        .await;
    }

    // Reading: a notification, and stats.
    assert_eq!(api.call(Method::GET, &format!("/v1/notifications/{first}"), None).await.status, 200);
    let stats: Reply = api.call(Method::GET, "/v1/stats?channel=sms", None).await;
    assert_eq!(stats.status, 200, "{}", stats.body);

    no_denials(&api);
    api.stack.stop().await;
}

/// The project's template with `grant` (an action list and its resource, as template.yaml
/// writes it) narrowed to `narrowed` wherever `count` functions have it.
fn template_narrowing(grant: &str, narrowed: &str, count: usize) -> String {
    let text = project_template_text();
    assert_eq!(text.matches(grant).count(), count, "the grant is in template.yaml as expected");
    text.replace(grant, narrowed)
}

/// An SMS sent through a stack of `template_text` whose SMS dispatcher is denied `action` on
/// `table`: recorded as an access denial on the delivery, kept in the queue, and the denial
/// named in the local IAM's log.
async fn an_sms_is_denied_and_kept(template_text: &str, action: &str, table: &str) {
    let api = Api::start_from(template_text, &endpoint(), BTreeMap::new()).await;
    let bulk = template(&api, false, false).await;
    let user = unique("u");
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
    let id = send(&api, &user, &bulk, &["sms"]).await;

    let delivery = api
        .wait_for_notification(&id, "the delivery to record the denial", |view| {
            view["deliveries"][0]["error"]["code"] == "AccessDeniedException"
        })
        .await["deliveries"][0]
        .clone();
    assert_eq!(delivery["status"], "queued", "retried, not dropped: {delivery}");
    assert_eq!(delivery["error"]["class"], "access_denied", "{delivery}");
    let Some(Physical::Table { arn, .. }) = api.stack.deployed.resources.get(table) else { panic!() };
    let denials = api.stack.denials();
    assert!(
        denials.iter().any(|denial| denial.principal == "DispatchSmsFunction"
            && denial.permission.as_ref().is_some_and(|p| p.action == action && &p.resource == arn)),
        "{denials:#?}"
    );
    api.stack.stop().await;
}

#[tokio::test]
async fn without_the_rate_limit_read_grant_a_rate_limited_send_is_denied_and_kept() {
    let text = template_narrowing(
        "Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem]\n              Resource: !GetAtt RateLimitsTable.Arn",
        "Action: [dynamodb:PutItem, dynamodb:UpdateItem]\n              Resource: !GetAtt RateLimitsTable.Arn",
        3,
    );
    an_sms_is_denied_and_kept(&text, "dynamodb:GetItem", "RateLimitsTable").await;
}

/// The batch's one read of its users goes through IAM as `BatchGetItem`, its own action: a role
/// granting `GetItem` alone is denied, and the denial is the delivery's, not hidden.
#[tokio::test]
async fn without_the_batch_read_grant_the_users_read_is_denied_and_the_send_kept() {
    let text = template_narrowing(
        "Action: [dynamodb:BatchGetItem, dynamodb:GetItem]\n              Resource: !GetAtt UsersTable.Arn",
        "Action: dynamodb:GetItem\n              Resource: !GetAtt UsersTable.Arn",
        2,
    );
    an_sms_is_denied_and_kept(&text, "dynamodb:BatchGetItem", "UsersTable").await;
}

/// An SDK configuration signed as one of the stack's functions, behind its authorizer.
async fn signed_as(api: &Api, function: &str) -> SdkConfig {
    let credentials = Credentials::new(function_access_key_id(function), "local-stack", None, None, "test");
    support::sdk()
        .await
        .to_builder()
        .endpoint_url(&api.stack.authorizer.as_ref().unwrap().url)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build()
}

fn code<E: aws_sdk_sqs::error::ProvideErrorMetadata>(error: &E) -> String {
    error.code().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_grant_on_one_resource_does_not_reach_another_and_denials_speak_each_services_protocol() {
    let api = Api::start().await;
    let sms = signed_as(&api, "DispatchSmsFunction").await;
    let table = |id: &str| api.stack.deployed.table(id).unwrap().to_string();
    let dynamodb = aws_sdk_dynamodb::Client::new(&sms);
    let key = |name: &str| (name.to_string(), aws_sdk_dynamodb::types::AttributeValue::S("x".into()));

    // It may read the users table, not the apps table.
    let (name, value) = key("pk");
    let users =
        dynamodb.get_item().table_name(table("UsersTable")).key(name, value).key("sk", key("sk").1).send().await;
    assert!(users.is_ok(), "{users:?}");
    let apps = dynamodb.get_item().table_name(table("AppsTable")).key("app_key", key("app_key").1).send().await;
    assert_eq!(code(&apps.unwrap_err().into_service_error()), "AccessDeniedException");

    // It may take messages off its own queue, not send to the email queue.
    let sqs = aws_sdk_sqs::Client::new(&sms);
    let own = sqs.receive_message().queue_url(api.stack.deployed.queue("SmsQueue").unwrap().0).send().await;
    assert!(own.is_ok(), "{own:?}");
    let other =
        sqs.send_message().queue_url(api.stack.deployed.queue("EmailQueue").unwrap().0).message_body("x").send().await;
    assert_eq!(code(&other.unwrap_err().into_service_error()), "AccessDenied");

    // It may text a phone number, not publish to a topic.
    let sns = aws_sdk_sns::Client::new(&sms);
    let Some(Physical::Topic { arn: topic, .. }) = api.stack.deployed.resources.get("AlertTopic") else { panic!() };
    let published = sns.publish().topic_arn(topic).message("x").send().await;
    assert_eq!(code(&published.unwrap_err().into_service_error()), "AuthorizationError");

    // The email dispatcher may send from the configured identity only.
    let email = signed_as(&api, "DispatchEmailFunction").await;
    let ses = aws_sdk_sesv2::Client::new(&email);
    let message = |from: &str| {
        let raw = aws_sdk_sesv2::types::RawMessage::builder()
            .data(aws_sdk_sesv2::primitives::Blob::new(format!(
                "From: {from}\r\nTo: a@example.com\r\nSubject: x\r\n\r\nx"
            )))
            .build()
            .unwrap();
        ses.send_email()
            .from_email_address(from)
            .destination(aws_sdk_sesv2::types::Destination::builder().to_addresses("a@example.com").build())
            .content(aws_sdk_sesv2::types::EmailContent::builder().raw(raw).build())
            .send()
    };
    let configured = api.stack.deployed.function_environments["DispatchEmailFunction"]["EMAIL_FROM_ADDRESS"].clone();
    assert!(message(&configured).await.is_ok());
    let spoofed = message("ceo@elsewhere.example.com").await;
    assert_eq!(code(&spoofed.unwrap_err().into_service_error()), "AccessDeniedException");

    let refused: Vec<(String, String)> = api
        .stack
        .denials()
        .iter()
        .map(|Denial { principal, permission, .. }| (principal.clone(), permission.clone().unwrap().action))
        .collect();
    let expected = [
        ("DispatchSmsFunction", "dynamodb:GetItem"),
        ("DispatchSmsFunction", "sqs:SendMessage"),
        ("DispatchSmsFunction", "sns:Publish"),
        ("DispatchEmailFunction", "ses:SendRawEmail"),
    ];
    assert_eq!(refused, expected.map(|(p, a)| (p.to_string(), a.to_string())));
    api.stack.stop().await;
}

#[tokio::test]
async fn an_access_key_no_function_or_operator_owns_is_refused() {
    let api = Api::start().await;
    let credentials = Credentials::new("AKIASTRANGER", "x", None, None, "test");
    let config = support::sdk()
        .await
        .to_builder()
        .endpoint_url(&api.stack.authorizer.as_ref().unwrap().url)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build();
    let listed = aws_sdk_sqs::Client::new(&config).list_queues().send().await;
    assert!(listed.is_err(), "{listed:?}");
    let operator = aws_sdk_sqs::Client::new(
        &config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                notify::outputs::LOCAL_ADMIN_ACCESS_KEY_ID,
                "x",
                None,
                None,
                "test",
            )))
            .build(),
    );
    eventually(std::time::Duration::from_secs(5), "the operator to list queues", || async {
        operator.list_queues().send().await.ok()
    })
    .await;
    api.stack.stop().await;
}

#[tokio::test]
async fn the_roles_grant_what_the_functions_do_and_no_more() {
    let api = Api::start().await;
    let authorizer = api.stack.authorizer.as_ref().unwrap();
    let allowed = |function: &str, action: &str, resource: &str| {
        matches!(authorizer.decide(function, &Permission::new(action, resource)), Some(Decision::Allowed { .. }))
    };
    let arn = |logical_id: &str| match api.stack.deployed.resources.get(logical_id) {
        Some(Physical::Table { arn, .. }) => arn.clone(),
        other => panic!("{logical_id} is {other:?}"),
    };
    let functions: Vec<String> = api.stack.deployed.spec.functions.iter().map(|f| f.logical_id.clone()).collect();
    let tables: Vec<String> = api.stack.deployed.spec.tables.iter().map(|t| t.logical_id.clone()).collect();
    for function in &functions {
        for table in &tables {
            assert!(!allowed(function, "dynamodb:Scan", &arn(table)), "{function} may scan {table}: nothing scans");
        }
    }
    // The dispatchers only read users; the intake only reads suppressions; retry only its index.
    let users = arn("UsersTable");
    assert!(!allowed("DispatchSmsFunction", "dynamodb:PutItem", &users));
    assert!(!allowed("DispatchPushFunction", "dynamodb:DeleteItem", &users));
    assert!(!allowed("IntakeFunction", "dynamodb:PutItem", &arn("SuppressionsTable")));
    let notifications = arn("NotificationsTable");
    assert!(allowed("RetryFunction", "dynamodb:Query", &format!("{notifications}/index/pending")));
    assert!(!allowed("RetryFunction", "dynamodb:Query", &notifications));
    // Push reaches the endpoints of the stack's own platform applications only.
    let apns =
        api.stack.deployed.function_environments["DispatchPushFunction"]["APNS_PLATFORM_APPLICATION_ARN"].clone();
    let own_endpoint = format!("{}/1234", apns.replacen(":app/", ":endpoint/", 1));
    assert!(allowed("DispatchPushFunction", "sns:Publish", &own_endpoint), "{own_endpoint}");
    let foreign = own_endpoint.replacen(&format!("{}-apns", api.stack.deployed.stack_name), "another-app", 1);
    assert!(!allowed("DispatchPushFunction", "sns:Publish", &foreign), "{foreign}");
    api.stack.stop().await;
}
