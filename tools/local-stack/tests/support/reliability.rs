//! The reliability scenarios of issue 7, each reporting a figure (how many cases were tried,
//! how many held). The tests run them at a size CI affords and assert that every case held;
//! `benches/reliability.rs` (scripts/reliability.sh) runs them at full size and prints the
//! figures BENCHMARKS.md records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use local_stack::demo::{self, DemoApp};
use local_stack::functions::Registry;
use local_stack::template::Template;
use local_stack::{Clients, LocalStack};
use notify::domain::app::Scope;
use notify::domain::channel::Channel;
use notify::domain::lifecycle::TimelineKind;
use notify::domain::notification::{DeliveryStatus, NotificationRecord};
use notify::store::apps::AppStore;
use notify::store::rate_limits::record_key;
use notify::store::send_timeline::timeline_key;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::api::{Api, OPENAPI, every_channel_template, ios_token, unique};
use super::fault_proxy::FaultProxy;
use super::{emulator_state, queue_is_empty};

/// One scenario's result.
#[derive(Debug)]
pub struct Figure {
    pub name: String,
    pub tried: usize,
    pub held: usize,
    /// What did not hold, one line per case.
    pub failures: Vec<String>,
    /// What else was measured (faults injected, time taken, …).
    pub notes: Vec<String>,
}

impl Figure {
    fn new(name: &str) -> Self {
        Self { name: name.into(), tried: 0, held: 0, failures: Vec::new(), notes: Vec::new() }
    }

    fn check(&mut self, held: bool, case: impl FnOnce() -> String) {
        self.tried += 1;
        if held {
            self.held += 1;
        } else {
            self.failures.push(case());
        }
    }

    pub fn assert_held(&self) {
        self.print();
        assert!(
            self.failures.is_empty() && self.tried > 0,
            "{}: {} of {} held: {:#?}",
            self.name,
            self.held,
            self.tried,
            self.failures
        );
    }

    pub fn print(&self) {
        println!("| {} | {} | {} | {} |", self.name, self.tried, self.held, self.notes.join("; "));
        for failure in self.failures.iter().take(20) {
            println!("|   ✗ {failure} | | | |");
        }
    }
}

/// The scope each route needs: the API's documented contract (README, "Apps and scopes").
fn scope_of(method: &str, path: &str) -> Scope {
    match (method, path) {
        (_, p) if p.starts_with("/v1/users") => Scope::Users,
        (_, p) if p.starts_with("/v1/templates") => Scope::Templates,
        ("POST" | "DELETE", p) if p.starts_with("/v1/notifications") => Scope::Send,
        _ => Scope::Status,
    }
}

/// A request each secured operation accepts from a caller with every scope, so that only the
/// credentials can make it fail.
fn valid_request(method: &str, template: &str, user: &str, notification: &str) -> (String, Option<Value>) {
    let path = template
        .replace("{user_id}", user)
        .replace("{token}", &ios_token())
        .replace("{name}", demo::DEMO_TEMPLATE)
        .replace("{id}", notification);
    let send =
        json!({"user_id": user, "template": demo::DEMO_TEMPLATE, "params": {"name": "Ada"}, "channels": ["sms"]});
    let body = match (method, template) {
        ("PUT", "/v1/users/{user_id}") => Some(json!({"phone": "+12015550123"})),
        ("POST", "/v1/users/{user_id}/devices") => Some(json!({"platform": "ios", "token": ios_token()})),
        ("PUT", "/v1/users/{user_id}/preferences") => Some(json!({"email": true})),
        ("PUT", "/v1/templates/{name}") => Some(json!({
            "default_locale": "en",
            "locales": {"en": {"sms": {"body": "Hi {{ name }}, welcome to notify!"}}}
        })),
        ("POST", "/v1/notifications") => Some(send),
        ("POST", "/v1/notifications/batch") => Some(json!({"notifications": [send]})),
        ("POST", "/v1/notifications/cancel") => Some(json!({"cancellation_key": "nothing-to-cancel"})),
        ("POST", "/v1/notifications/{id}/events") => Some(json!({"type": "converted"})),
        _ => None,
    };
    let path = if template == "/v1/stats" { format!("{path}?template={}", demo::DEMO_TEMPLATE) } else { path };
    (path, body)
}

/// Every secured operation of the served OpenAPI document, called with every kind of bad
/// credentials: none, a malformed header, an unknown key, a wrong secret, a disabled app, a
/// secret revoked by rotation, and an app lacking the route's scope. None may get a 2xx; the
/// same requests with good credentials must (else the matrix would prove nothing).
pub async fn auth_matrix(api: &Api) -> Figure {
    let mut figure = Figure::new("auth matrix: bad credentials never get a 2xx");
    let apps = AppStore::new(api.clients.dynamodb.clone(), demo::tables(&api.stack.deployed).unwrap().apps);
    let all_scopes: BTreeSet<Scope> = Scope::ALL.into_iter().collect();
    let create =
        |name: &'static str, scopes: BTreeSet<Scope>| demo::create_app(&api.clients, &api.stack.deployed, name, scopes);

    let disabled = create("disabled", all_scopes.clone()).await.unwrap();
    let mut record = apps.get(&disabled.app_key).await.unwrap().unwrap();
    record.disabled = true;
    apps.update(&record).await.unwrap();
    let rotated = create("rotated", all_scopes.clone()).await.unwrap();
    let mut record = apps.get(&rotated.app_key).await.unwrap().unwrap();
    record.rotate("2026-01-02T00:00:00Z");
    record.rotate("2026-01-03T00:00:00Z");
    apps.update(&record).await.unwrap();
    let mut lacking: BTreeMap<Scope, DemoApp> = BTreeMap::new();
    for scope in Scope::ALL {
        let others = all_scopes.iter().copied().filter(|other| *other != scope).collect();
        lacking.insert(scope, create("lacking", others).await.unwrap());
    }

    let user = unique("u");
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
    let sent = api
        .call(
            Method::POST,
            "/v1/notifications",
            Some(json!({"user_id": user, "template": demo::DEMO_TEMPLATE, "params": {"name": "Ada"}})),
        )
        .await;
    let notification = sent.body["id"].as_str().unwrap().to_string();

    let openapi: Value = serde_json::from_str(OPENAPI).unwrap();
    let good = (api.app.app_key.clone(), api.app.app_secret.clone());
    for (template, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            // Operations with `security: []` are public on purpose (links in messages).
            if operation.get("security").is_some_and(|security| security == &json!([])) {
                continue;
            }
            let method_name = method.to_uppercase();
            let method = Method::from_bytes(method_name.as_bytes()).unwrap();
            let lacking_scope = &lacking[&scope_of(&method_name, template)];
            let cases = [
                ("no credentials", None, None),
                ("malformed header", None, Some("Basic !!!")),
                ("unknown key", Some(("ak_unknown".into(), good.1.clone())), None),
                ("wrong secret", Some((good.0.clone(), "sk_wrong".into())), None),
                ("disabled app", Some((disabled.app_key.clone(), disabled.app_secret.clone())), None),
                ("revoked secret", Some((rotated.app_key.clone(), rotated.app_secret.clone())), None),
                ("missing scope", Some((lacking_scope.app_key.clone(), lacking_scope.app_secret.clone())), None),
            ];
            for (kind, credentials, header) in cases {
                let (path, body) = valid_request(&method_name, template, &user, &notification);
                let headers: Vec<(&str, &str)> = header.map(|h| ("authorization", h)).into_iter().collect();
                let credentials = credentials.as_ref().map(|(k, s)| (k.as_str(), s.as_str()));
                let reply = api.call_as(credentials, method.clone(), &path, body, &headers).await;
                let expected = if kind == "missing scope" { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
                figure.check(reply.status == expected, || {
                    format!("{method_name} {template} with {kind}: {} (wanted {expected})", reply.status)
                });
            }
            // The user again, as an earlier DELETE may have erased it.
            api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
            let (path, body) = valid_request(&method_name, template, &user, &notification);
            let reply = api.call(method.clone(), &path, body).await;
            // A cancel of the notification, sent by now, has nothing left to cancel: a 409 is past
            // authentication as much as a 200 is.
            let cancelled_too_late = method_name == "DELETE" && reply.status == StatusCode::CONFLICT;
            figure.check(reply.status.is_success() || cancelled_too_late, || {
                format!("{method_name} {template} with good credentials: {} {}", reply.status, reply.body)
            });
        }
    }
    figure.notes.push("each secured operation × 7 kinds of bad credentials, plus the good request".into());
    figure
}

/// `count` identical requests at once with one Idempotency-Key: one notification, one log
/// record, one SMS.
pub async fn concurrent_duplicates(api: &Api, count: usize) -> Figure {
    let mut figure = Figure::new(&format!("{count} concurrent identical requests, one Idempotency-Key"));
    let user = unique("u");
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": "+12015550123"}))).await;
    let text = unique("dup");
    let template = unique("t");
    let content =
        json!({"default_locale": "en", "transactional": true, "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template, "params": {"text": text}});
    let key = unique("key");
    let replies = futures::future::join_all((0..count).map(|_| api.send_with_key(&body, &key))).await;
    let ids: BTreeSet<String> =
        replies.iter().filter_map(|reply| reply.body["id"].as_str().map(str::to_string)).collect();
    for reply in &replies {
        figure.check(reply.status == StatusCode::ACCEPTED, || format!("answered {} {}", reply.status, reply.body));
    }
    figure.check(ids.len() == 1, || format!("{} notification ids", ids.len()));
    let originals = replies.iter().filter(|reply| reply.headers.get("idempotent-replayed").is_none()).count();
    figure.check(originals == 1, || format!("{originals} answers were not marked as replays"));

    let table = demo::tables(&api.stack.deployed).unwrap().notifications;
    let records =
        scan(&api.clients, &table).await.iter().filter(|item| item["user_id"].as_s().unwrap() == &user).count();
    figure.check(records == 1, || format!("{records} log records"));
    // The template is transactional: its lane's queue.
    let queue = api.stack.deployed.queue("SmsTransactionalQueue").unwrap().0.to_string();
    super::eventually(Duration::from_secs(60), "the SMS queue to drain", || async {
        queue_is_empty(&api.clients.sqs, &queue).await.then_some(())
    })
    .await;
    let sends = super::recorded_sms().await.iter().filter(|sms| sms["message"] == text.as_str()).count();
    figure.check(sends == 1, || format!("{sends} SMS sent"));
    figure
}

/// The template with every queue's visibility timeout at `seconds` (unprocessed messages come
/// back, and poison reaches its DLQ, in seconds instead of minutes).
pub fn with_visibility_timeout(template_text: &str, seconds: u32) -> String {
    assert!(template_text.contains("VisibilityTimeout: 180"), "template.yaml's queues changed: update this edit");
    template_text.replace("VisibilityTimeout: 180", &format!("VisibilityTimeout: {seconds}"))
}

/// The kinds of poison `channel`'s queue can receive. The last two are well-formed messages
/// of that channel's shape naming a delivery the log does not have: a channel no notification
/// has on `logged` (a notification that exists), and a notification that does not exist.
pub fn poison_messages(channel: &str, logged: &str) -> Vec<(&'static str, String)> {
    let content = match channel {
        "sms" => json!({"to": "+12015550123", "body": "b"}),
        "email" => json!({"to": "poison@example.com", "subject": "s", "html": "<p>h</p>", "text": "t"}),
        _ => json!({"platform": "ios", "token": ios_token(), "title": "t", "body": "b"}),
    };
    let valid_shape = |notification_id: &str, delivery_id: &str| {
        let mut message = json!({"notification_id": notification_id, "delivery_id": delivery_id, "user_id": "u",
                                 "template": "t", "transactional": false, "channel": channel});
        message.as_object_mut().unwrap().extend(content.as_object().unwrap().clone());
        message.to_string()
    };
    vec![
        ("not JSON", "not json {".to_string()),
        ("wrong schema", format!(r#"{{"channel":"{channel}","hello":1}}"#)),
        ("huge (250 KB)", json!({"padding": "x".repeat(250 * 1024)}).to_string()),
        ("unknown channel", valid_shape(logged, "fax")),
        ("unknown notification", valid_shape(&unique("n"), channel)),
    ]
}

/// Poison of every kind on every channel queue, in one batch with a good notification: each
/// poison is moved to the channel's DLQ on its own (the dispatcher parks it at once); the good
/// message is sent.
pub async fn poison(api: &Api) -> Figure {
    let mut figure = Figure::new("poison messages: reported alone, parked in the DLQ, batch not blocked");
    let (user, template) = api.user_and_template_on_every_channel().await;
    let order = unique("o");

    let body = json!({"user_id": user, "template": template, "params": {"order": order}});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    let mut parked = Vec::new();
    for (channel, queue, dlq) in [
        ("sms", "SmsQueue", "SmsDeadLetterQueue"),
        ("email", "EmailQueue", "EmailDeadLetterQueue"),
        ("push", "PushQueue", "PushDeadLetterQueue"),
    ] {
        let url = api.stack.deployed.queue(queue).unwrap().0.to_string();
        let dlq_url = api.stack.deployed.queue(dlq).unwrap().0.to_string();
        let mut sent = Vec::new();
        for (kind, body) in poison_messages(channel, &id) {
            api.clients.sqs.send_message().queue_url(&url).message_body(&body).send().await.unwrap();
            sent.push((kind, body));
        }
        parked.push((queue, dlq_url, sent));
    }
    let done = api.wait_for_notification(&id, "the good notification", |view| view["status"] == "completed").await;
    for delivery in done["deliveries"].as_array().unwrap() {
        figure.check(delivery["status"] == "sent", || {
            format!("the good {} delivery ended {}", delivery["channel"], delivery["status"])
        });
    }

    for (queue, dlq_url, sent) in parked {
        let wanted: BTreeSet<&str> = sent.iter().map(|(_, body)| body.as_str()).collect();
        let found = dead_letters(&api.clients, &dlq_url, &wanted).await;
        for (kind, body) in &sent {
            figure.check(found.contains(body), || format!("{queue}: the {kind} poison did not reach the DLQ"));
        }
    }
    figure.notes.push(format!("{} kinds × 3 channel queues", poison_messages("sms", &id).len()));
    figure
}

/// The bodies among `wanted` that reach the DLQ within a deadline (read without deleting).
async fn dead_letters(clients: &Clients, dlq_url: &str, wanted: &BTreeSet<&str>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while found.len() < wanted.len() && tokio::time::Instant::now() < deadline {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            if let Some(body) = message.body().filter(|body| wanted.contains(body)) {
                found.insert(body.to_string());
            }
        }
    }
    found
}

/// The pipeline run: how big, how hostile.
pub struct PipelineRun {
    pub notifications: usize,
    pub users: usize,
    pub restarts: usize,
    /// Share of provider sends failed: half throttled (they wait), half with the provider's
    /// internal error (they spend the retry budget).
    pub provider_faults: f64,
    /// Share of SQS and DynamoDB requests failed (half refused, half applied with the answer lost).
    pub infrastructure_faults: f64,
    /// How long after the last acceptance every delivery must have its outcome.
    pub settle_within: Duration,
}

/// The channels the notifications ask for, in turn (the users have one phone, one address, an
/// iOS and an Android device).
const CHANNELS: [&str; 3] = ["sms", "email", "push"];

/// Every fourth notification is scheduled a few seconds after it is sent; every eighth (of
/// those) 30 s after, with the run's cancellation key, and the key is cancelled once every
/// notification is accepted: some of them are taken back, the rest were sent already.
fn schedule_of(index: usize, now_ms: i64, key: &str) -> Value {
    match index % 8 {
        1 => json!({"send_at": notify::time::rfc3339_millis(now_ms + 30_000), "cancellation_key": key}),
        5 => json!({"send_at": notify::time::rfc3339_millis(now_ms + 2_000 + (index as i64 % 10) * 1_000)}),
        _ => json!({}),
    }
}

/// `run.notifications` notifications across every channel through the whole stack while a
/// share of provider sends, SQS and DynamoDB requests fail, and the stack is killed (every task
/// aborted mid-flight) and restarted `run.restarts` times. The client retries refused requests
/// with the same Idempotency-Key, as callers should. Every accepted notification must end with
/// an outcome for each delivery; the emulator must hold exactly one provider send per `sent`
/// delivery and none for the others.
pub async fn pipeline_under_faults(endpoint: &str, run: PipelineRun) -> Vec<Figure> {
    let started = std::time::Instant::now();
    let proxy = Arc::new(FaultProxy::start(endpoint, 0.0).await);
    let direct = Clients::new(&super::sdk_for(endpoint).await);
    let stack_sdk = super::sdk_for(&proxy.url).await;
    let template_text = with_visibility_timeout(&super::project_template_text(), 40);
    let template = Template::parse(&template_text).unwrap();
    let stack_name = super::unique_stack_name();
    // Each user gets about a seventh of the notifications on each channel: the highest limits
    // let every one through, so the rate limiter runs under the faults without skipping any.
    let given = BTreeMap::from([
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        ("RetryMaxSeconds".to_string(), "4".to_string()),
        ("SmsRateLimitPerHour".to_string(), "100".to_string()),
        ("EmailRateLimitPerHour".to_string(), "100".to_string()),
        ("PushRateLimitPerHour".to_string(), "100".to_string()),
    ]);
    let parameters = local_stack::local_parameters(&direct, &template, &stack_name, &given).await.unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let start = || async {
        let options = local_stack::StackOptions {
            stack_name: stack_name.clone(),
            parameters: parameters.clone(),
            api_address: SocketAddr::from(([127, 0, 0, 1], port)),
            registry: Registry::project(),
            quotas: Default::default(),
            twilio: None,
        };
        LocalStack::start(&stack_sdk, &template, options).await.unwrap()
    };
    let stack = start().await;
    let deployed = stack.deployed.clone();
    let app = demo::seed(&direct, &deployed).await.unwrap();
    let api_url = stack.api_url.clone();
    let stack = Arc::new(Mutex::new(Some(stack)));
    let http = reqwest::Client::new();
    let call = |method: Method, path: String, body: Value, key: Option<String>| {
        let mut request = http
            .request(method, format!("{api_url}{path}"))
            .basic_auth(&app.app_key, Some(&app.app_secret))
            .json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };

    // Users and the template (rate-limited, not transactional), before any fault.
    let template_name = unique("t");
    let mut content = every_channel_template();
    content["transactional"] = json!(false);
    assert!(
        call(Method::PUT, format!("/v1/templates/{template_name}"), content, None).await.unwrap().status().is_success()
    );
    let users: Vec<String> = futures::stream::iter(0..run.users)
        .map(|_| async {
            let user = unique("u");
            let contacts = json!({"phone": "+12015550123", "email": format!("{user}@example.com")});
            assert!(
                call(Method::PUT, format!("/v1/users/{user}"), contacts, None).await.unwrap().status().is_success()
            );
            for (platform, token) in [("ios", ios_token()), ("android", format!("fcm:{}", ios_token()))] {
                let device = json!({"platform": platform, "token": token});
                let reply = call(Method::POST, format!("/v1/users/{user}/devices"), device, None).await.unwrap();
                assert!(reply.status().is_success());
            }
            user
        })
        .buffer_unordered(8)
        .collect()
        .await;

    proxy.set_share(run.provider_faults / 2.0);
    proxy.set_failure_share(run.provider_faults / 2.0);
    proxy.set_infrastructure_share(run.infrastructure_faults);
    let run_tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let order_of = |index: usize| format!("rel{run_tag}n{index:05}");
    let cancellation_key = format!("rel{run_tag}-campaign");
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let submit = futures::stream::iter(0..run.notifications)
        .map(|index| {
            let channel = CHANNELS[index % CHANNELS.len()];
            let mut body = json!({"user_id": users[index % users.len()], "template": template_name,
                              "params": {"order": order_of(index)}, "channels": [channel]});
            let schedule = schedule_of(index, notify::time::now_epoch_millis(), &cancellation_key);
            body.as_object_mut().unwrap().extend(schedule.as_object().unwrap().clone());
            let key = format!("{run_tag}-{index}");
            let (accepted, refused, call) = (&accepted, &refused, &call);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                loop {
                    match call(Method::POST, "/v1/notifications".into(), body.clone(), Some(key.clone())).await {
                        Ok(reply) if reply.status() == StatusCode::ACCEPTED => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let id = reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
                            return (index, id);
                        }
                        Ok(reply) => assert!(
                            reply.status().is_server_error() || reply.status() == 429,
                            "refused for good: {}",
                            reply.status()
                        ),
                        Err(_) => {} // the stack is down: try again
                    }
                    refused.fetch_add(1, Ordering::SeqCst);
                    assert!(tokio::time::Instant::now() < deadline, "notification {index} never accepted");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<(usize, String)>>();
    let chaos = async {
        for restart in 1..=run.restarts {
            let at = run.notifications * restart / (run.restarts + 1);
            while accepted.load(Ordering::SeqCst) < at {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let running = stack.lock().await.take().unwrap();
            running.stop().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Provisioning is deployment, not the run: no faults while the stack comes back.
            proxy.set_infrastructure_share(0.0);
            let restarted = start().await;
            proxy.set_infrastructure_share(run.infrastructure_faults);
            *stack.lock().await = Some(restarted);
        }
    };
    // The bus is down for the middle half of the submissions (every PutEvents refused): sends
    // must not wait for it, and no event may be lost.
    let bus_outage = async {
        for (share, refused) in [(1, u32::MAX), (3, 0)] {
            while accepted.load(Ordering::SeqCst) < run.notifications * share / 4 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            proxy.refuse_next(PUT_EVENTS, refused);
        }
    };
    let (ids, (), ()) = tokio::join!(submit, chaos, bus_outage);
    let submitted_in = started.elapsed();

    // The campaign is called off: every call until one completes, retried as callers do.
    let mut cancelled_ids: BTreeSet<String> = BTreeSet::new();
    let cancel_deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let body = json!({"cancellation_key": cancellation_key});
        let reply = call(Method::POST, "/v1/notifications/cancel".into(), body, None).await;
        if let Ok(reply) = reply
            && reply.status() == StatusCode::OK
        {
            let answer: Value = reply.json().await.unwrap();
            let listed = answer["notifications"].as_array().unwrap().iter().filter_map(Value::as_str);
            cancelled_ids.extend(listed.map(str::to_string));
            if answer["complete"] == true {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < cancel_deadline, "the campaign's cancel never completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Wait until every accepted notification has an outcome for every delivery. A delivery
    // that exhausted its receives waits in its DLQ, which pages on-call; they redrive it (as
    // `notifyctl dlq redrive` does, through the retry function) once nothing else is in flight.
    let mine: BTreeSet<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let table = demo::tables(&deployed).unwrap().notifications;
    let deadline = tokio::time::Instant::now() + run.settle_within;
    let mut redriven = 0;
    let records = loop {
        let records = scan_records(&direct, &table, &mine).await;
        let open = records.values().filter(|record| !record.finished()).count();
        if (open == 0 && records.len() == mine.len()) || tokio::time::Instant::now() > deadline {
            break records;
        }
        if open > 0
            && let Some(running) = stack.lock().await.as_ref()
        {
            redriven += on_call_redrive(running, &direct).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    proxy.set_share(0.0);
    proxy.set_failure_share(0.0);
    proxy.set_infrastructure_share(0.0);
    let settled_in = started.elapsed();
    // Late duplicates would come from messages still in flight: let the queues drain first.
    for queue in ["SmsQueue", "EmailQueue", "PushQueue"] {
        let url = deployed.queue(queue).unwrap().0.to_string();
        super::eventually(Duration::from_secs(300), "the channel queues to drain", || async {
            queue_is_empty(&direct.sqs, &url).await.then_some(())
        })
        .await;
    }
    // Sends are counted now, after the drain: compare them with the records as they are now.
    let final_records = scan_records(&direct, &table, &mine).await;
    let events =
        events_of_the_records(&direct, &deployed, &final_records, proxy.targeted_faults.load(Ordering::SeqCst)).await;
    if let Some(running) = stack.lock().await.take() {
        running.stop().await;
    }

    let sends = provider_sends(&emulator_state().await, &format!("rel{run_tag}n"));
    let mut outcomes = Figure::new(&format!(
        "{} notifications, faults on {:.0}% of provider sends and {:.0}% of SQS/DynamoDB requests, {} restarts: every accepted one ends with an outcome",
        run.notifications,
        run.provider_faults * 100.0,
        run.infrastructure_faults * 100.0,
        run.restarts
    ));
    let mut exactly_once = Figure::new("… and each sent delivery is one provider send, the others none");
    let mut scheduled =
        Figure::new("… scheduled ones are sent no earlier than due, and the campaign's cancelled ones never");
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, id) in &ids {
        let record = records.get(id.as_str());
        outcomes.check(record.is_some_and(|r| !r.deliveries.is_empty() && r.finished()), || {
            format!("notification {index} ({id}) at the deadline: {}", record.map_or("not logged".into(), describe))
        });
        let Some(record) = final_records.get(id.as_str()) else { continue };
        // Per destination: a push notification has a delivery per device.
        let mut expected: BTreeMap<String, usize> = BTreeMap::new();
        for delivery in record.deliveries.values() {
            *statuses.entry(delivery.status.as_str()).or_default() += 1;
            let destination = destination_of_target(delivery.channel, &delivery.target);
            *expected.entry(destination).or_default() += usize::from(delivery.status == DeliveryStatus::Sent);
        }
        let recorded: BTreeMap<String, usize> = sends
            .range((*index, String::new())..(*index + 1, String::new()))
            .map(|((_, destination), count)| (destination.clone(), *count))
            .collect();
        expected.retain(|_, count| *count > 0);
        if let Some(due) = record.send_at.as_deref().and_then(notify::time::parse_rfc3339_millis) {
            let sent = record.events.iter().filter(|event| event.kind == TimelineKind::Sent);
            let early = sent.filter(|event| notify::time::parse_rfc3339_millis(&event.at).is_none_or(|at| at < due));
            scheduled.check(early.count() == 0, || {
                format!("notification {index} ({id}) sent before its send_at: {}", describe(record))
            });
        }
        // Reported cancelled by the call that completed, or by an earlier one whose answer a
        // fault took (the log says so): never sent.
        if cancelled_ids.contains(id) || was_cancelled(record) {
            scheduled.check(recorded.is_empty(), || {
                format!("notification {index} ({id}) cancelled, yet sent: {recorded:?}")
            });
        }
        exactly_once.check(recorded == expected, || {
            format!(
                "notification {index} ({id}): sent deliveries by destination {expected:?}, provider sends {recorded:?}"
            )
        });
    }
    outcomes.notes.push(format!(
        "{} accepted after {} refused attempts (stack down or a fault); deliveries by status: {statuses:?}",
        ids.len(),
        refused.load(Ordering::SeqCst)
    ));
    outcomes.notes.push(format!(
        "faults injected: {} provider throttles, {} provider internal errors, {} SQS/DynamoDB failures; submitted in {:.0} s, settled in {:.0} s",
        proxy.throttled.load(Ordering::SeqCst),
        proxy.failed_sends.load(Ordering::SeqCst),
        proxy.infrastructure_faults.load(Ordering::SeqCst),
        submitted_in.as_secs_f64(),
        settled_in.as_secs_f64()
    ));
    outcomes.notes.push(format!("on-call redrove {redriven} messages parked in the DLQs"));
    exactly_once.notes.push(format!("{} provider sends counted in the emulator", sends.values().sum::<usize>()));
    let scheduled_count = final_records.values().filter(|record| record.send_at.is_some()).count();
    let cancelled_count = final_records.values().filter(|record| was_cancelled(record)).count();
    scheduled.notes.push(format!(
        "{scheduled_count} scheduled; {cancelled_count} cancelled by the campaign's key once every notification was accepted ({} named by the call that completed; the others by earlier calls whose answers a fault took)",
        cancelled_ids.len()
    ));
    let rate_limits = deployed.table("RateLimitsTable").unwrap();
    vec![
        outcomes,
        exactly_once,
        scheduled,
        rate_limits_count_the_sent(&direct, rate_limits, &final_records).await,
        events,
    ]
}

/// What only a PutEvents request body names: the bus outage refuses exactly those.
const PUT_EVENTS: &str = "\"EventBusName\"";

/// Every event the records committed reaches the events queue (by id, at least once), and no
/// other event of these notifications does: read until all have come or 5 minutes passed.
async fn events_of_the_records(
    direct: &Clients,
    deployed: &local_stack::provision::Deployed,
    records: &BTreeMap<String, NotificationRecord>,
    refused_puts: u64,
) -> Figure {
    let expected: BTreeSet<String> = records
        .values()
        .flat_map(|record| notify::domain::event_stream::changes(None, record))
        .map(|event| event.id)
        .collect();
    let queue = deployed.queue("NotificationEventsQueue").expect("the local stack enables the events queue").0;
    let (mut seen, mut unexpected, mut read) = (BTreeSet::new(), Vec::new(), 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while seen.len() < expected.len() && tokio::time::Instant::now() < deadline {
        let received = direct
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let mut handles = Vec::new();
        for message in received.messages.unwrap_or_default() {
            let envelope: Value = serde_json::from_str(message.body().unwrap_or_default()).unwrap();
            let detail = &envelope["detail"];
            let id = detail["id"].as_str().unwrap_or_default().to_string();
            read += 1;
            if expected.contains(&id) {
                seen.insert(id);
            } else if records.contains_key(detail["notification_id"].as_str().unwrap_or_default()) {
                unexpected.push(id);
            }
            handles.extend(message.receipt_handle);
        }
        notify::queue::delete_messages(&direct.sqs, queue, &handles).await.unwrap();
    }
    let mut figure = Figure::new(&format!(
        "… and every event the records committed is published, none other, through a bus outage of the middle half ({refused_puts} PutEvents refused)"
    ));
    for id in &expected {
        figure.check(seen.contains(id), || format!("event {id} never published"));
    }
    for id in &unexpected {
        figure.check(false, || format!("event {id} published, yet no record committed it"));
    }
    figure.notes.push(format!(
        "{} events expected from {} records, {} messages read (a restart reads the stream again from its start: duplicates)",
        expected.len(),
        records.len(),
        read
    ));
    figure
}

/// Each user's rate-limit record on each channel (the table is this run's own) names exactly
/// the notifications with a sent delivery on it, each once: no fault, retry or restart counted
/// one twice, lost a count, or counted one that was not sent.
async fn rate_limits_count_the_sent(
    clients: &Clients,
    table: &str,
    records: &BTreeMap<String, NotificationRecord>,
) -> Figure {
    let mut figure = Figure::new("… and the users' rate-limit records count each sent notification once, nothing else");
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records.values() {
        for delivery in record.deliveries.values().filter(|delivery| delivery.status == DeliveryStatus::Sent) {
            let key = record_key(&record.user_id, delivery.channel);
            expected.entry(key).or_default().insert(record.id.to_string());
        }
    }
    // The table also holds each channel's send timeline.
    let timelines: BTreeSet<String> = Channel::ALL.into_iter().map(timeline_key).collect();
    let counted: BTreeMap<String, BTreeSet<String>> = scan(clients, table)
        .await
        .into_iter()
        .filter(|item| !timelines.contains(item["key"].as_s().unwrap()))
        .map(|item| (item["key"].as_s().unwrap().clone(), item["sends"].as_m().unwrap().keys().cloned().collect()))
        .collect();
    let keys: BTreeSet<&String> = expected.keys().chain(counted.keys()).collect();
    for key in &keys {
        figure.check(expected.get(*key) == counted.get(*key), || {
            format!("{key}: sent {:?}, counted {:?}", expected.get(*key), counted.get(*key))
        });
    }
    figure.notes.push(format!("{} users × channels", keys.len()));
    figure
}

/// What on-call does when a DLQ pages and the channel queues are quiet (nothing queued, in
/// flight or waiting out a backoff): redrive every channel whose DLQ holds messages, with the
/// retry function. Returns how many messages went back (a redrive that fails is tried on a
/// later look).
async fn on_call_redrive(stack: &LocalStack, direct: &Clients) -> usize {
    let queues = [("sms", "SmsQueue"), ("email", "EmailQueue"), ("push", "PushQueue")];
    for (_, queue) in queues {
        if !queue_is_empty(&direct.sqs, stack.deployed.queue(queue).unwrap().0).await {
            return 0;
        }
    }
    let retry = stack.function("RetryFunction").unwrap();
    let mut redriven = 0;
    for (channel, queue) in queues {
        let dlq = stack.deployed.queue(&queue.replace("Queue", "DeadLetterQueue")).unwrap().0.to_string();
        if queue_is_empty(&direct.sqs, &dlq).await {
            continue;
        }
        if let Ok(report) = retry.invoke(json!({"action": "redrive", "channel": channel})).await {
            redriven += report["redriven"].as_u64().unwrap_or(0) as usize;
        }
    }
    redriven
}

/// What a failure line shows of a record: each delivery's status, attempts and last error, and
/// when the recovery sweep looks at it next.
fn describe(record: &NotificationRecord) -> String {
    let deliveries: Vec<String> = record
        .deliveries
        .iter()
        .map(|(id, d)| {
            let error = d.error.as_ref().map_or(String::new(), |e| format!(", last error {}", e.code));
            format!("{id} {} after {} attempts{error}", d.status.as_str(), d.attempts)
        })
        .collect();
    let sweep =
        record.sweep_at.map_or("none".into(), |at| format!("{} s from now", at - notify::time::now_epoch_seconds()));
    format!("{}; next sweep look: {sweep}", deliveries.join("; "))
}

/// Every item of `table`, read straight from the emulator.
async fn scan(clients: &Clients, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    let pages = clients.dynamodb.scan().table_name(table).into_paginator().items().send();
    pages.collect::<Vec<_>>().await.into_iter().map(|item| item.unwrap()).collect()
}

/// The log records among `ids`, read straight from the emulator.
async fn scan_records(clients: &Clients, table: &str, ids: &BTreeSet<&str>) -> BTreeMap<String, NotificationRecord> {
    scan(clients, table)
        .await
        .into_iter()
        .filter_map(|item| serde_dynamo::from_item::<_, NotificationRecord>(item).ok())
        .filter(|record| ids.contains(record.id.as_str()))
        .map(|record| (record.id.to_string(), record))
        .collect()
}

/// Where a delivery goes, as [`provider_sends`] names it: the channel, and for push the
/// device (the token's tail, which is what a push delivery's target shows).
fn destination_of_target(channel: Channel, target: &str) -> String {
    match channel {
        Channel::Push => format!("push:{}", target.rsplit('…').next().unwrap_or(target)),
        other => other.as_str().to_string(),
    }
}

/// Provider sends in the emulator (SMS, SES messages, push to platform endpoints) per
/// notification index and destination, found by `marker` followed by the five-digit index in
/// their text.
fn provider_sends(state: &Value, marker: &str) -> BTreeMap<(usize, String), usize> {
    let mut texts: Vec<(String, String)> = Vec::new();
    texts.extend(state["sns"]["SMS"].as_array().into_iter().flatten().map(|sms| ("sms".into(), sms.to_string())));
    for kind in ["RawMessage", "Message"] {
        texts.extend(
            state["ses"][kind].as_array().into_iter().flatten().map(|email| ("email".into(), email.to_string())),
        );
    }
    for endpoint in state["sns"]["PlatformEndpoint"].as_array().into_iter().flatten() {
        let token = endpoint["token"].as_str().unwrap_or_default();
        let destination = format!("push:{}", &token[token.len().saturating_sub(8)..]);
        texts.extend(
            endpoint["messages"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, message)| (destination.clone(), message.to_string())),
        );
    }
    let mut sends = BTreeMap::new();
    for (destination, text) in texts {
        // One send names its notification once or more (subject, html, text): count it once.
        let indexes: BTreeSet<usize> = text
            .match_indices(marker)
            .filter_map(|(at, _)| text.get(at + marker.len()..at + marker.len() + 5)?.parse().ok())
            .collect();
        for index in indexes {
            *sends.entry((index, destination.clone())).or_default() += 1;
        }
    }
    sends
}

/// Whether the log says a delivery of `record` was cancelled.
fn was_cancelled(record: &NotificationRecord) -> bool {
    record.deliveries.values().any(|delivery| delivery.status == DeliveryStatus::Cancelled)
}

/// The SMS failover run (issue 21): `notifications` SMS across six calling codes, routed
/// `+82=twilio,sns;*=sns,twilio`, while SNS refuses every send for `outage` from the start (then
/// recovers) and Twilio takes one send in `twilio_timeout_every` and never answers it.
pub struct FailoverRun {
    pub notifications: usize,
    /// How long the notifications take to be accepted (in batches of 10, evenly spread).
    pub accept_over: Duration,
    pub outage: Duration,
    /// How long a failing provider stays out of rotation (60 s in a deployment).
    pub cool_down: Duration,
    pub twilio_timeout_every: u64,
    /// How long after SNS recovers every delivery must have its outcome.
    pub settle_within: Duration,
}

/// Numbers in six countries (valid mobile numbers of each plan).
const SIX_COUNTRIES: [&str; 6] =
    ["+12015550123", "+447911123456", "+4915123456789", "+33612345678", "+819012345678", "+821012345678"];

/// When things first happened in a failover run, from the outage's start.
#[derive(Default)]
struct Firsts {
    sns_refusal: Option<Duration>,
    twilio_send: Option<Duration>,
    sns_send_after_recovery: Option<Duration>,
}

/// Brings SNS back (once), noting how many sends it had accepted until then.
fn recover(api: &Api, recovered: &std::sync::Mutex<Option<u64>>) {
    let mut recovered = recovered.lock().unwrap();
    if recovered.is_none() {
        *recovered = Some(api.stack.providers.sends(Channel::Sms).accepted);
        api.stack.providers.set_down(Channel::Sms, false);
    }
}

/// Runs [`FailoverRun`]: every message must be sent exactly once, by one provider (counted in
/// the emulator's SNS and the local Twilio), none lost, and every Twilio send must have its
/// receipt recorded; the notes give each provider's share, the failover time (first SNS refusal
/// → first Twilio send) and when traffic came back to SNS.
pub async fn sms_failover(endpoint: &str, run: FailoverRun) -> Vec<Figure> {
    let parameters = BTreeMap::from([
        ("SmsRoutes".to_string(), "+82=twilio,sns;*=sns,twilio".to_string()),
        ("RetryBaseSeconds".to_string(), "1".to_string()),
        ("RetryMaxSeconds".to_string(), "4".to_string()),
        ("SmsRateLimitPerHour".to_string(), "100".to_string()),
    ]);
    let template_text = super::project_template_text().replacen(
        "          SMS_ROUTES: !Ref SmsRoutes\n",
        &format!(
            "          SMS_ROUTES: !Ref SmsRoutes\n          PROVIDER_COOL_DOWN_SECONDS: \"{}\"\n",
            run.cool_down.as_secs()
        ),
        1,
    );
    assert!(template_text.contains("PROVIDER_COOL_DOWN_SECONDS"), "the edit applied");
    let api = Api::start_from(&template_text, endpoint, parameters).await;
    let twilio = api.stack.twilio.as_ref().expect("the local stack's Twilio");
    twilio.fail_every(Some((run.twilio_timeout_every, local_stack::twilio::Fault::TimeoutAfterRequest)));
    let template = unique("t");
    let content = json!({"default_locale": "en", "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    // Ten users per country, so no user nears the hourly limit.
    let mut users = Vec::new();
    for phone in SIX_COUNTRIES {
        for _ in 0..10 {
            let user = unique("u");
            let stored = api.call(Method::PUT, &format!("/v1/users/{user}"), Some(json!({"phone": phone}))).await;
            assert!(stored.status.is_success(), "{phone}: {}", stored.body);
            users.push(user);
        }
    }
    let run_id = unique("f");

    let outage_start = std::time::Instant::now();
    api.stack.providers.set_down(Channel::Sms, true);
    let firsts = Arc::new(std::sync::Mutex::new(Firsts::default()));
    // SNS's accepted sends when it recovered.
    let recovered = Arc::new(std::sync::Mutex::new(None::<u64>));
    let watcher = {
        let (firsts, recovered, providers) = (firsts.clone(), recovered.clone(), api.stack.providers.clone());
        let twilio_messages = {
            let url = format!("{}/2010-04-01/Accounts/{}/Messages.json?PageSize=1", twilio.url, twilio.account().sid);
            (url, twilio.account().sid.clone(), twilio.account().auth_token.clone())
        };
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let sends = providers.sends(Channel::Sms);
                let since = outage_start.elapsed();
                let recovered_at = *recovered.lock().unwrap();
                let twilio_unseen = {
                    let mut seen = firsts.lock().unwrap();
                    if sends.refused > 0 && seen.sns_refusal.is_none() {
                        seen.sns_refusal = Some(since);
                    }
                    if let Some(accepted_then) = recovered_at
                        && sends.accepted > accepted_then
                        && seen.sns_send_after_recovery.is_none()
                    {
                        seen.sns_send_after_recovery = Some(since);
                    }
                    seen.twilio_send.is_none()
                };
                if twilio_unseen {
                    let (url, sid, token) = &twilio_messages;
                    let listed: Value =
                        http.get(url).basic_auth(sid, Some(token)).send().await.unwrap().json().await.unwrap();
                    if !listed["messages"].as_array().unwrap().is_empty() {
                        firsts.lock().unwrap().twilio_send = Some(since);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Accepted in batches of 10, spread over `accept_over`; SNS recovers on the way.
    let mut ids = Vec::new();
    let texts: Vec<String> = (0..run.notifications).map(|index| format!("{run_id}-{index}")).collect();
    let batches = texts.len().div_ceil(10);
    for (batch, chunk) in texts.chunks(10).enumerate() {
        let due = run.accept_over.mul_f64(batch as f64 / batches as f64);
        tokio::time::sleep(due.saturating_sub(outage_start.elapsed())).await;
        if api.stack.providers.sends(Channel::Sms).refused > 0 && outage_start.elapsed() >= run.outage {
            recover(&api, &recovered);
        }
        let items: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(offset, text)| {
                let user = &users[(batch * 10 + offset) % users.len()];
                json!({"user_id": user, "template": template, "params": {"text": text}, "idempotency_key": text})
            })
            .collect();
        let reply = api.call(Method::POST, "/v1/notifications/batch", Some(json!({"notifications": items}))).await;
        for result in reply.body["results"].as_array().unwrap() {
            assert_eq!(result["status"], 202, "{result}");
            ids.push(result["body"]["id"].as_str().unwrap().to_string());
        }
    }
    tokio::time::sleep(run.outage.saturating_sub(outage_start.elapsed())).await;
    recover(&api, &recovered);

    let log = notify::store::notifications::NotificationStore::new(
        api.clients.dynamodb.clone(),
        api.stack.deployed.table("NotificationsTable").unwrap().to_string(),
    );
    let deadline = tokio::time::Instant::now() + run.settle_within;
    while !super::outcomes_final(&log, &ids).await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settled = outage_start.elapsed();
    watcher.abort();

    let by_twilio: HashMap<String, usize> = twilio.messages().iter().fold(HashMap::new(), |mut counts, message| {
        *counts.entry(message["body"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        counts
    });
    let by_sns: HashMap<String, usize> = super::recorded_sms().await.iter().fold(HashMap::new(), |mut counts, sms| {
        *counts.entry(sms["message"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        counts
    });
    let mut once = Figure::new("SMS failover: each message sent once, by one provider, none lost");
    let mut receipts = Figure::new("SMS failover: every Twilio send has its receipt recorded");
    let (mut through_sns, mut through_twilio) = (0, 0);
    for (id, text) in ids.iter().zip(&texts) {
        let record = log.get(&id.as_str().into()).await.unwrap().expect("logged");
        let delivery = record.deliveries.values().next().expect("one SMS delivery");
        let (twilio_sends, sns_sends) =
            (by_twilio.get(text).copied().unwrap_or(0), by_sns.get(text).copied().unwrap_or(0));
        once.check(twilio_sends + sns_sends == 1 && delivery.status.is_final(), || {
            format!(
                "{id}: {:?} through {:?}; Twilio sent it {twilio_sends}, SNS {sns_sends}",
                delivery.status, delivery.provider
            )
        });
        match delivery.provider.as_deref() {
            Some("twilio") => {
                through_twilio += 1;
                receipts.check(delivery.status == DeliveryStatus::Delivered, || {
                    format!("{id}: {:?} though Twilio sent it", delivery.status)
                });
            }
            _ => through_sns += 1,
        }
    }
    let firsts = std::mem::take(&mut *firsts.lock().unwrap());
    let seconds = |at: Option<Duration>| at.map_or("never".to_string(), |at| format!("{:.1} s", at.as_secs_f64()));
    let failover = match (firsts.sns_refusal, firsts.twilio_send) {
        (Some(refused), Some(sent)) => format!("{:.1} s", sent.saturating_sub(refused).as_secs_f64()),
        _ => "n/a".into(),
    };
    let sends = api.stack.providers.sends(Channel::Sms);
    once.notes = vec![
        format!("{} SMS, 6 calling codes, accepted over {:.0} s", run.notifications, run.accept_over.as_secs_f64()),
        format!("sent through SNS {through_sns}, through Twilio {through_twilio}"),
        format!("SNS down for {:.0} s: {} sends refused", run.outage.as_secs_f64(), sends.refused),
        format!("failover (first SNS refusal → first Twilio send) {failover}"),
        format!(
            "SNS back at {} (recovered at {:.0} s; a failing provider is out of rotation {:.0} s at a time)",
            seconds(firsts.sns_send_after_recovery),
            run.outage.as_secs_f64(),
            run.cool_down.as_secs_f64()
        ),
        format!(
            "Twilio timed out on {} of {} sends",
            twilio.messages().len() as u64 / run.twilio_timeout_every,
            twilio.messages().len()
        ),
        format!("all settled {:.0} s after the outage began", settled.as_secs_f64()),
    ];
    receipts.notes = vec![format!("{through_twilio} sent through Twilio")];
    assert_eq!(api.stack.denials(), [], "every call the functions made is granted");
    api.stack.stop().await;
    vec![once, receipts]
}
