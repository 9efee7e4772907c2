//! A client of the local stack's HTTP API that checks every response against the served
//! OpenAPI document.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures::StreamExt;
use local_stack::demo::{self, DemoApp};
use local_stack::iam::{Traffic, TrafficKey};
use local_stack::provider_account::Quotas;
use local_stack::{Clients, LocalStack};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const OPENAPI: &str = include_str!("../../../../functions/intake/openapi.json");

pub struct Api {
    pub stack: LocalStack,
    pub clients: Clients,
    pub app: DemoApp,
    http: reqwest::Client,
    openapi: Value,
    started: Started,
}

/// What the stack was started with, to start it again.
struct Started {
    sdk: aws_config::SdkConfig,
    template: local_stack::template::Template,
    parameters: BTreeMap<String, String>,
    quotas: Quotas,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    /// What the authorizer has passed on to the emulator so far, per caller and operation.
    pub fn traffic(&self) -> BTreeMap<TrafficKey, Traffic> {
        self.stack.authorizer.as_ref().map(|authorizer| authorizer.traffic()).unwrap_or_default()
    }

    /// The project's stack with its demo data, against the test emulator.
    pub async fn start() -> Self {
        Self::start_with(&super::endpoint(), BTreeMap::new()).await
    }

    /// The project's stack against `endpoint`, with template parameters.
    pub async fn start_with(endpoint: &str, parameters: BTreeMap<String, String>) -> Self {
        Self::start_from(&super::project_template_text(), endpoint, parameters).await
    }

    /// A stack from `template_text` (the project's template, edited) against `endpoint`.
    pub async fn start_from(template_text: &str, endpoint: &str, parameters: BTreeMap<String, String>) -> Self {
        Self::start_in_account(template_text, endpoint, parameters, Quotas::default()).await
    }

    /// A stack from `template_text` against `endpoint`, in an account with these provider quotas.
    pub async fn start_in_account(
        template_text: &str,
        endpoint: &str,
        parameters: BTreeMap<String, String>,
        quotas: Quotas,
    ) -> Self {
        let sdk = super::sdk_for(endpoint).await;
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        let template = local_stack::template::Template::parse(template_text).unwrap();
        let name = super::unique_stack_name();
        let (stack, clients) =
            local_stack::start_project(&sdk, &template, &name, &parameters, address, quotas).await.unwrap();
        let app = demo::seed(&clients, &stack.deployed).await.expect("demo data is seeded");
        let started = Started { sdk, template, parameters, quotas };
        Self {
            stack,
            clients,
            app,
            http: reqwest::Client::new(),
            openapi: serde_json::from_str(OPENAPI).unwrap(),
            started,
        }
    }

    /// Stops the stack's functions, pollers and servers and starts them again against the same
    /// emulator and resources (what lives there, queued messages and schedules, stays).
    pub async fn restart(self) -> Self {
        let Api { stack, app, http, openapi, started, .. } = self;
        let name = stack.deployed.stack_name.clone();
        stack.stop().await;
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        let (stack, clients) = local_stack::start_project(
            &started.sdk,
            &started.template,
            &name,
            &started.parameters,
            address,
            started.quotas,
        )
        .await
        .unwrap();
        Self { stack, clients, app, http, openapi, started }
    }

    pub async fn call_as(
        &self,
        credentials: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.stack.api_url));
        if let Some((key, secret)) = credentials {
            request = request.basic_auth(key, Some(secret));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        let reply = Reply { status, headers, body };
        check_against_openapi(&self.openapi, &method, path, &reply);
        reply
    }

    /// A form POST with no credentials, as a browser sends it, redirects not followed
    /// (checked against openapi.json like every call).
    pub async fn post_form(&self, path: &str, form: &str) -> Reply {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = http
            .post(format!("{}{path}", self.stack.api_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        let reply = Reply { status, headers, body: if text.is_empty() { Value::Null } else { Value::String(text) } };
        check_against_openapi(&self.openapi, &Method::POST, path, &reply);
        reply
    }

    /// `POST /v1/notifications` with an Idempotency-Key.
    pub async fn send_with_key(&self, body: &Value, key: &str) -> Reply {
        let credentials = Some((self.app.app_key.as_str(), self.app.app_secret.as_str()));
        self.call_as(credentials, Method::POST, "/v1/notifications", Some(body.clone()), &[("idempotency-key", key)])
            .await
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_as(Some((&self.app.app_key, &self.app.app_secret)), method, path, body, &[]).await
    }

    /// `GET /v1/notifications/{id}`: the notification's view.
    pub async fn notification(&self, id: &str) -> Value {
        self.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.body
    }

    /// Polls the notification's view until `done` holds for it; returns that view.
    pub async fn wait_for_notification(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        // Long enough for a delivery that waits out a visibility timeout or two.
        super::eventually(std::time::Duration::from_secs(120), what, || async {
            let view = self.notification(id).await;
            done(&view).then_some(view)
        })
        .await
    }

    /// Polls `GET /v1/stats?{query}` until `done` holds for its counts; returns the report. A
    /// dispatcher writes its counters after its batch, so they trail the notification's view.
    pub async fn wait_for_stats(&self, query: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        super::eventually(std::time::Duration::from_secs(30), what, || async {
            let report = self.call(Method::GET, &format!("/v1/stats?{query}"), None).await.body;
            done(&report["counts"]).then_some(report)
        })
        .await
    }

    /// A user reachable on every channel (phone, email, an iOS device) and a template from
    /// [`every_channel_template`]; returns the user's id and the template's name.
    pub async fn user_and_template_on_every_channel(&self) -> (String, String) {
        let user = unique("u");
        let contacts = json!({"phone": "+12015550123", "email": format!("{user}@example.com")});
        self.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await;
        let device = json!({"platform": "ios", "token": ios_token()});
        self.call(Method::POST, &format!("/v1/users/{user}/devices"), Some(device)).await;
        let template = unique("t");
        self.call(Method::PUT, &format!("/v1/templates/{template}"), Some(every_channel_template())).await;
        (user, template)
    }

    /// `count` new users, each with a phone number; returns their ids.
    pub async fn users_with_phone(&self, count: usize) -> Vec<String> {
        self.users_with(count, &json!({"phone": "+12015550123"})).await
    }

    /// `count` new users with these contacts; returns their ids.
    pub async fn users_with(&self, count: usize, contacts: &Value) -> Vec<String> {
        futures::stream::iter(0..count)
            .map(|_| async {
                let user = unique("u");
                self.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts.clone())).await;
                user
            })
            .buffer_unordered(8)
            .collect()
            .await
    }

    /// A new user, an SMS template and a notification to the user; returns its id and text.
    pub async fn send_sms(&self) -> (String, String) {
        let (user, template, text) = (unique("u"), unique("t"), unique("text"));
        self.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
        let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
        self.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
        let body = json!({"user_id": user, "template": template, "params": {"text": text}});
        let id =
            self.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
        (id, text)
    }

    /// Publishes an SES event-publishing record about notification `id`'s email (sent by the demo
    /// app) to the stack's email events topic, as SES does (the emulator emits none itself),
    /// with the tags the email function sends with.
    pub async fn publish_ses_event(&self, id: &str, address: &str, event_type: &str, detail: Value) {
        let Some(local_stack::resolve::Physical::Topic { arn, .. }) =
            self.stack.deployed.resources.get("EmailEventsTopic")
        else {
            panic!("the template has an EmailEventsTopic")
        };
        let record = self.call(Method::GET, &format!("/v1/notifications/{id}"), None).await.body;
        let template = record["template"].as_str().unwrap_or_default().to_string();
        let mut event = json!({
            "eventType": event_type,
            "mail": {
                "timestamp": "2026-11-22T10:00:00.000Z",
                "source": "notifications@example.com",
                "sendingAccountId": "123456789012",
                "messageId": unique("ses"),
                "destination": [address],
                "headersTruncated": false,
                "tags": {"ses:configuration-set": ["notify"], "notification_id": [id], "delivery_id": ["email"], "template": [template], "app": [self.app.app_key]}
            }
        });
        event[event_type.to_ascii_lowercase()] = detail;
        self.clients.sns.publish().topic_arn(arn).message(event.to_string()).send().await.unwrap();
    }

    /// A new user with an email address, a template with tracking on whose email is `html`, and
    /// a notification to the user, sent; returns its id.
    pub async fn tracked_email_sent(&self, html: &str) -> String {
        let (user, template) = (unique("u"), unique("t"));
        let address = format!("{}@example.com", unique("ada"));
        self.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"email": address}))).await;
        let content = json!({"default_locale": "en", "tracking": true, "locales": {"en": {"email": {
            "subject": "Hi", "html": html, "text": "Hi"}}}});
        self.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
        let body = json!({"user_id": user, "template": template});
        let id =
            self.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
        self.wait_for_notification(&id, "the email to be sent", every_delivery_sent).await;
        id
    }

    /// Notification `id`'s email as SES received it (the emulator's record of the raw message).
    pub async fn raw_email(&self, id: &str) -> String {
        let state = super::emulator_state().await;
        let header = format!("X-Notification-Id: {id}");
        state["ses"]["RawMessage"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|message| message["raw_data"].as_str())
            .find(|raw| raw.lines().any(|line| line.trim_end() == header))
            .expect("the email reached SES")
            .to_string()
    }

    /// The path of notification `id`'s one-click unsubscribe link (its `List-Unsubscribe`).
    pub async fn unsubscribe_path(&self, id: &str) -> String {
        let raw = self.raw_email(id).await;
        let link =
            raw.lines().find_map(|line| line.strip_prefix("List-Unsubscribe: <")).expect("a List-Unsubscribe header");
        link.trim_end_matches('>').trim_start_matches(&self.stack.api_url).to_string()
    }

    /// Notification `id`'s email as SES received it: (html, text).
    pub async fn email_parts(&self, id: &str) -> (String, String) {
        let raw = self.raw_email(id).await;
        let email = mail_parser::MessageParser::default().parse(raw.as_bytes()).expect("SES got a MIME message");
        (email.body_html(0).unwrap().into_owned(), email.body_text(0).unwrap().into_owned())
    }

    /// The tracking links (`/t/c/` or `/t/o/`, by `kind`) in notification `id`'s email as SES
    /// received it, html first, then text; and that content.
    pub async fn tracking_links(&self, id: &str, kind: &str) -> (Vec<String>, String) {
        let raw = self.raw_email(id).await;
        let email = mail_parser::MessageParser::default().parse(raw.as_bytes()).expect("SES got a MIME message");
        let content = format!("{} {}", email.body_html(0).unwrap(), email.body_text(0).unwrap());
        let marker = format!("{}/t/{kind}/", self.stack.api_url);
        let links = content
            .split(&marker)
            .skip(1)
            .map(|rest| format!("{marker}{}", rest.split(['"', ' ', '\r', '\n', '<']).next().unwrap()))
            .collect();
        (links, content)
    }

    /// Messages in a queue of the stack (approximately, as SQS counts).
    pub async fn queue_depth(&self, logical_id: &str) -> u64 {
        let url = self.stack.deployed.queue(logical_id).unwrap().0.to_string();
        let attributes = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        attributes.values().next().unwrap().parse().unwrap()
    }
}

/// Every response must be documented for its operation, with a body its schema accepts.
pub fn check_against_openapi(openapi: &Value, method: &Method, path: &str, reply: &Reply) {
    let path = path.split('?').next().unwrap();
    let (template, operation) = openapi["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find_map(|(template, item)| {
            matches(template, path).then(|| (template.clone(), item[method.as_str().to_lowercase()].clone()))
        })
        .unwrap_or_else(|| panic!("{method} {path} is not in openapi.json"));
    assert!(!operation.is_null(), "{method} {template} is not in openapi.json");
    let documented = &operation["responses"][reply.status.as_str()];
    assert!(
        !documented.is_null(),
        "{method} {template} answered {} which openapi.json does not document: {}",
        reply.status,
        reply.body
    );
    let Some(content) = documented["content"].as_object() else {
        assert!(reply.body.is_null(), "{method} {template} {}: undocumented body {}", reply.status, reply.body);
        return;
    };
    let content_type = reply.headers["content-type"].to_str().unwrap();
    let schema = &content.get(content_type).unwrap_or_else(|| {
        panic!("{method} {template} {}: content type {content_type} is not documented", reply.status)
    })["schema"];
    let mut document = json!({"components": openapi["components"]});
    for (key, value) in schema.as_object().unwrap() {
        document[key] = value.clone();
    }
    let validator = jsonschema::validator_for(&document).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&reply.body).map(|error| format!("{} at {}", error, error.instance_path())).collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {}: body {} violates openapi.json: {errors:?}",
        reply.status,
        reply.body
    );
}

/// Whether an OpenAPI path template (`/v1/users/{user_id}`) matches a concrete path.
pub fn matches(template: &str, path: &str) -> bool {
    let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template.iter().zip(&path).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// Template content for push, SMS and email, with the `order` parameter in every part;
/// transactional, so no rate limit stands between a test and its sends.
pub fn every_channel_template() -> Value {
    json!({"default_locale": "en", "transactional": true, "locales": {"en": {
        "push": {"title": "Order", "body": "{{ order }}"},
        "sms": {"body": "{{ order }}"},
        "email": {"subject": "{{ order }}", "html": "<p>{{ order }}</p>", "text": "{{ order }}"}
    }}})
}

/// Whether every delivery of a notification's view is sent.
pub fn every_delivery_sent(view: &Value) -> bool {
    view["deliveries"]
        .as_array()
        .is_some_and(|deliveries| !deliveries.is_empty() && deliveries.iter().all(|d| d["status"] == "sent"))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn fields(reply: &Reply) -> Vec<String> {
    reply.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|error| error["field"].as_str().unwrap().to_string())
        .collect()
}

pub fn ios_token() -> String {
    uuid::Uuid::new_v4().simple().to_string().repeat(2)
}

/// The `bounce` object of an SES hard bounce of `address`.
pub fn hard_bounce(address: &str) -> Value {
    json!({"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}], "timestamp": "2026-11-22T10:00:01.000Z", "feedbackId": "f-1"})
}
