//! Scheduled sends and quiet hours, end to end: a `send_at` in the future is answered
//! `scheduled` and sent once when due (never before); one in the past is sent at once; one too
//! far ahead or not a time is a 422. A wait longer than the queue's delay is kept by an
//! EventBridge Scheduler schedule, which survives a restart of the stack. Scheduled deliveries
//! are cancelled by id and by key, and a cancel racing the release either wins (never sent) or
//! answers 409. Quiet hours (across midnight, in the user's zone) hold push and SMS until they
//! end; transactional templates, and email whose template does not ask, go at once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, fields, unique};
use support::{eventually, project_template_text, recorded_sms};

/// An SMS template (`transactional` as asked) on a fresh stack's API: its name.
async fn sms_template(api: &Api, transactional: bool) -> String {
    let template = unique("t");
    let content = json!({"default_locale": "en", "transactional": transactional,
        "locales": {"en": {"sms": {"body": "{{ text }}"}}}});
    assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await.status, 201);
    template
}

/// `POST /v1/notifications` of one SMS with `text`, plus `extra` fields.
async fn send(api: &Api, user: &str, template: &str, text: &str, extra: Value) -> support::api::Reply {
    let mut body = json!({"user_id": user, "template": template, "params": {"text": text}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    api.call(Method::POST, "/v1/notifications", Some(body)).await
}

fn epoch_ms(rfc3339: &str) -> i64 {
    notify::time::parse_rfc3339_millis(rfc3339).unwrap()
}

/// `at_ms` as RFC 3339 in UTC+02:00, as a caller in that zone writes it.
fn in_plus_two(at_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at_ms / 1000).unwrap().to_offset(time::macros::offset!(+2));
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn event_types(view: &Value) -> Vec<String> {
    view["events"].as_array().unwrap().iter().map(|event| event["type"].as_str().unwrap().to_string()).collect()
}

/// When the timeline says the delivery was sent (epoch ms).
fn sent_at(view: &Value) -> i64 {
    let sent = view["events"].as_array().unwrap().iter().find(|event| event["type"] == "sent").expect("sent");
    epoch_ms(sent["at"].as_str().unwrap())
}

async fn sms_copies(text: &str) -> usize {
    recorded_sms().await.iter().filter(|sms| sms["message"] == text).count()
}

#[tokio::test]
async fn a_scheduled_notification_is_answered_scheduled_and_sent_once_when_due_never_before() {
    let api = Api::start().await;
    let template = sms_template(&api, false).await;
    let user = api.users_with_phone(1).await.remove(0);
    let due_ms = (notify::time::now_epoch_millis() / 1000 + 8) * 1000;
    let text = unique("text");
    let reply = send(&api, &user, &template, &text, json!({"send_at": in_plus_two(due_ms)})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["status"], "scheduled");
    assert_eq!(reply.body["send_at"], notify::time::rfc3339_millis(due_ms), "echoed in UTC");
    assert_eq!(reply.body["deliveries"][0]["status"], "scheduled");
    let id = reply.body["id"].as_str().unwrap().to_string();

    let waiting = api.notification(&id).await;
    assert_eq!(
        (waiting["status"].as_str(), waiting["deliveries"][0]["status"].as_str()),
        (Some("scheduled"), Some("scheduled"))
    );
    assert_eq!(waiting["deliveries"][0]["deliver_after"], notify::time::rfc3339_millis(due_ms));

    let done =
        api.wait_for_notification(&id, "the scheduled SMS to be sent", |view| view["status"] == "completed").await;
    assert_eq!(done["deliveries"][0]["status"], "sent", "{done}");
    let lateness = sent_at(&done) - due_ms;
    assert!((0..60_000).contains(&lateness), "sent {lateness} ms after due");
    assert_eq!(event_types(&done), ["accepted", "scheduled", "released", "sent"]);
    assert_eq!(sms_copies(&text).await, 1);
    api.stack.stop().await;
}

#[tokio::test]
async fn send_at_in_the_past_sends_at_once_and_too_far_ahead_or_not_a_time_is_a_422() {
    let api = Api::start().await;
    let template = sms_template(&api, false).await;
    let user = api.users_with_phone(1).await.remove(0);
    let now = notify::time::now_epoch_millis();

    let text = unique("text");
    let past = send(&api, &user, &template, &text, json!({"send_at": "2020-01-01T00:00:00Z"})).await;
    assert_eq!((past.status.as_u16(), past.body["status"].as_str()), (202, Some("accepted")), "{}", past.body);
    let id = past.body["id"].as_str().unwrap().to_string();
    api.wait_for_notification(&id, "the SMS to be sent", |view| view["status"] == "completed").await;
    assert_eq!(sms_copies(&text).await, 1);

    for bad in [json!(in_plus_two(now + 31 * 86_400_000)), json!("tomorrow"), json!("2027-01-01T09:00:00"), json!(17)] {
        let reply = send(&api, &user, &template, "x", json!({"send_at": bad})).await;
        assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
        assert_eq!(fields(&reply), ["send_at"], "{bad}");
    }
    // 30 days ahead is accepted, and cancelled here.
    let far = send(&api, &user, &template, "x", json!({"send_at": in_plus_two(now + 30 * 86_400_000 - 60_000)})).await;
    assert_eq!(far.status, 202, "{}", far.body);
    let id = far.body["id"].as_str().unwrap();
    let cancelled = api.call(Method::DELETE, &format!("/v1/notifications/{id}"), None).await;
    assert_eq!(
        (cancelled.status.as_u16(), cancelled.body["deliveries"][0]["status"].as_str()),
        (200, Some("cancelled"))
    );
    api.stack.stop().await;
}

/// The project's stack with waits longer than 2 s kept by schedules instead of queue delays.
fn short_queue_delays() -> String {
    let mut text = project_template_text();
    for anchor in [
        "          LINK_SIGNING_KEY_ARN: !Ref LinkSigningKey\n",
        "          DEAD_LETTER_QUEUE_URL: !Ref SmsDeadLetterQueue\n",
    ] {
        assert!(text.contains(anchor), "{anchor}");
        text = text.replacen(anchor, &format!("{anchor}          MAX_QUEUE_DELAY_SECONDS: \"2\"\n"), 1);
    }
    text
}

async fn schedules_waiting(api: &Api) -> usize {
    let group = api.stack.deployed.resources.values().find_map(|physical| match physical {
        local_stack::resolve::Physical::ScheduleGroup { name, .. } => Some(name.clone()),
        _ => None,
    });
    let listed = api.clients.scheduler.list_schedules().group_name(group.unwrap()).send().await.unwrap();
    listed.schedules.len()
}

#[tokio::test]
async fn a_long_wait_is_kept_by_a_schedule_that_survives_a_restart_of_the_stack() {
    let api = Api::start_from(&short_queue_delays(), &support::endpoint(), BTreeMap::new()).await;
    let template = sms_template(&api, false).await;
    let user = api.users_with_phone(1).await.remove(0);
    let due_ms = (notify::time::now_epoch_millis() / 1000 + 14) * 1000;
    let text = unique("text");
    let reply = send(&api, &user, &template, &text, json!({"send_at": in_plus_two(due_ms)})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();

    // The message comes back after the queue's 2 s, finds it is not due, and goes into a schedule.
    eventually(Duration::from_secs(20), "the wait to be kept by a schedule", || async {
        (schedules_waiting(&api).await == 1).then_some(())
    })
    .await;
    let api = api.restart().await;
    assert_eq!(api.notification(&id).await["status"], "scheduled");

    let done =
        api.wait_for_notification(&id, "the scheduled SMS to be sent", |view| view["status"] == "completed").await;
    assert_eq!(done["deliveries"][0]["status"], "sent", "{done}");
    let lateness = sent_at(&done) - due_ms;
    assert!((0..60_000).contains(&lateness), "sent {lateness} ms after due");
    assert_eq!(sms_copies(&text).await, 1);
    assert_eq!(schedules_waiting(&api).await, 0, "a fired schedule deletes itself");
    assert!(api.stack.denials().is_empty(), "{:?}", api.stack.denials());
    api.stack.stop().await;
}

#[tokio::test]
async fn scheduled_notifications_are_cancelled_by_id_and_by_key_and_a_cancel_racing_the_release_is_never_both() {
    let api = Api::start().await;
    let template = sms_template(&api, false).await;
    let users = api.users_with_phone(24).await;
    let due_ms = (notify::time::now_epoch_millis() / 1000 + 10) * 1000;
    let send_at = in_plus_two(due_ms);
    let mut sent = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let key = match index {
            0..4 => "campaign-a",
            4..8 => "campaign-b",
            _ => "race",
        };
        let text = unique("text");
        let reply = send(&api, user, &template, &text, json!({"send_at": send_at, "cancellation_key": key})).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        sent.push((reply.body["id"].as_str().unwrap().to_string(), text));
    }

    // Before due: one by id, then the rest of campaign-a by key; campaign-b is left to go.
    let by_id = api.call(Method::DELETE, &format!("/v1/notifications/{}", sent[0].0), None).await;
    assert_eq!((by_id.status.as_u16(), by_id.body["status"].as_str()), (200, Some("completed")), "{}", by_id.body);
    assert_eq!(by_id.body["deliveries"][0]["status"], "cancelled");
    let by_key =
        api.call(Method::POST, "/v1/notifications/cancel", Some(json!({"cancellation_key": "campaign-a"}))).await;
    assert_eq!((by_key.status.as_u16(), by_key.body["cancelled"].as_u64()), (200, Some(3)), "{}", by_key.body);

    // At due: every "race" notification is cancelled while the dispatcher releases them.
    let wait = Duration::from_millis((due_ms - notify::time::now_epoch_millis()).max(0) as u64);
    tokio::time::sleep(wait).await;
    let race: Vec<&(String, String)> = sent[8..].iter().collect();
    let answers = futures::future::join_all(race.iter().map(|(id, _)| {
        let path = format!("/v1/notifications/{id}");
        let api = &api;
        async move { api.call(Method::DELETE, &path, None).await }
    }))
    .await;

    let mut cancelled_in_race = 0;
    for ((id, text), answer) in race.iter().zip(&answers) {
        let view = api.wait_for_notification(id, "an outcome", |view| view["status"] == "completed").await;
        let copies = sms_copies(text).await;
        match answer.status.as_u16() {
            200 => {
                cancelled_in_race += 1;
                assert_eq!((view["deliveries"][0]["status"].as_str(), copies), (Some("cancelled"), 0), "{id}");
            }
            409 => assert_eq!((view["deliveries"][0]["status"].as_str(), copies), (Some("sent"), 1), "{id}"),
            other => panic!("{other}: {}", answer.body),
        }
    }
    for (index, (id, text)) in sent[..8].iter().enumerate() {
        let view = api.wait_for_notification(id, "an outcome", |view| view["status"] == "completed").await;
        let (status, copies) = if index < 4 { ("cancelled", 0) } else { ("sent", 1) };
        assert_eq!((view["deliveries"][0]["status"].as_str(), sms_copies(text).await), (Some(status), copies), "{id}");
    }
    eprintln!("the race: {cancelled_in_race} of {} cancelled, the rest sent", race.len());
    api.stack.stop().await;
}

/// Quiet hours that cross midnight and cover now in `zone`: from a minute after their end round
/// to their end, local time (all but one minute of the day), ending at the next minute boundary
/// at least 20 s away (so the dispatcher is sure to find itself inside them).
fn quiet_hours_now(zone: &str) -> Value {
    let zone = jiff::tz::TimeZone::get(zone).unwrap();
    let local = jiff::Timestamp::now().to_zoned(zone);
    let minutes = local.hour() as i32 * 60 + local.minute() as i32;
    let end = minutes + if local.second() < 40 { 1 } else { 2 };
    let at = |m: i32| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    json!({"start": at(end + 1), "end": at(end)})
}

#[tokio::test]
async fn quiet_hours_hold_push_and_sms_until_they_end_in_the_users_zone_but_not_transactional_or_plain_email() {
    let api = Api::start().await;
    let (bulk, otp) = (sms_template(&api, false).await, sms_template(&api, true).await);
    let emails = [false, true].map(|quiet| {
        json!({"default_locale": "en", "quiet_hours": quiet, "locales": {"en": {"email": {"subject": "s", "html": "{{ text }}", "text": "{{ text }}"}}}})
    });
    let (plain_email, quiet_email) = (unique("t"), unique("t"));
    for (name, content) in [(&plain_email, &emails[0]), (&quiet_email, &emails[1])] {
        assert_eq!(api.call(Method::PUT, &format!("/v1/templates/{name}"), Some(content.clone())).await.status, 201);
    }
    // Half past the hour in Kolkata (UTC+05:30): the window is read in the user's own zone.
    let user = unique("u");
    let contacts = json!({"phone": "+12015550123", "email": format!("{user}@example.com"), "timezone": "Asia/Kolkata"});
    assert_eq!(api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await.status.as_u16() / 100, 2);
    let path = format!("/v1/users/{user}/preferences");
    let bad = api.call(Method::PUT, &path, Some(json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}))).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(fields(&bad)[0].starts_with("quiet_hours"), "{}", bad.body);
    let window = quiet_hours_now("Asia/Kolkata");
    let set = api.call(Method::PUT, &path, Some(json!({"quiet_hours": window}))).await;
    assert_eq!((set.status.as_u16(), &set.body["quiet_hours"]), (200, &window), "{}", set.body);

    let mut ids = BTreeMap::new();
    for (name, template) in
        [("bulk sms", &bulk), ("otp", &otp), ("plain email", &plain_email), ("quiet email", &quiet_email)]
    {
        let reply = send(&api, &user, template, &unique("text"), json!({})).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        ids.insert(name, reply.body["id"].as_str().unwrap().to_string());
    }
    for name in ["otp", "plain email"] {
        let view = api.wait_for_notification(&ids[name], "sent at once", |view| view["status"] == "completed").await;
        assert_eq!(view["deliveries"][0]["status"], "sent", "{name}: {view}");
        assert!(!event_types(&view).contains(&"held_quiet_hours".to_string()), "{name}: {view}");
    }
    for name in ["bulk sms", "quiet email"] {
        let done = api
            .wait_for_notification(&ids[name], "sent when the window ends", |view| view["status"] == "completed")
            .await;
        assert_eq!(done["deliveries"][0]["status"], "sent", "{name}: {done}");
        assert_eq!(event_types(&done), ["accepted", "sending", "held_quiet_hours", "released", "sent"], "{name}");
        let until = epoch_ms(done["deliveries"][0]["deliver_after"].as_str().unwrap());
        let after_end = sent_at(&done) - until;
        assert!((0..60_000).contains(&after_end), "{name}: sent {after_end} ms after the window ended");
    }
    // Cleared, the user's own window no longer applies (and the deployment has none).
    let cleared = api.call(Method::PUT, &path, Some(json!({"quiet_hours": null}))).await;
    assert_eq!(cleared.status, 200);
    assert!(cleared.body.get("quiet_hours").is_none(), "{}", cleared.body);
    assert!(api.stack.denials().is_empty(), "{:?}", api.stack.denials());
    api.stack.stop().await;
}

#[tokio::test]
async fn a_scheduler_role_without_the_queue_is_denied_and_the_delivery_waits_for_the_fix() {
    // The scheduler's role loses the SMS queue: its schedules cannot send, as in AWS.
    let text = short_queue_delays();
    let granted = "                  - !GetAtt SmsQueue.Arn\n                  - !GetAtt SmsTransactionalQueue.Arn\n";
    assert!(text.contains(granted));
    let text = text.replacen(granted, "                  - !GetAtt SmsTransactionalQueue.Arn\n", 1);
    let api = Api::start_from(&text, &support::endpoint(), BTreeMap::new()).await;
    let template = sms_template(&api, false).await;
    let user = api.users_with_phone(1).await.remove(0);
    // Far enough ahead that the wait outlasts the queue's 2 s delay and goes into a schedule.
    let due_ms = (notify::time::now_epoch_millis() / 1000 + 15) * 1000;
    let reply = send(&api, &user, &template, &unique("text"), json!({"send_at": in_plus_two(due_ms)})).await;
    let id = reply.body["id"].as_str().unwrap().to_string();

    let denial = eventually(Duration::from_secs(45), "the scheduler role's send to be denied", || async {
        api.stack.denials().into_iter().find(|denial| denial.principal == "DeliverySchedulerRole")
    })
    .await;
    assert_eq!(denial.permission.unwrap().action, "sqs:SendMessage");
    assert_eq!(denial.operation, "SendMessage");
    // Nothing is lost: the schedule keeps trying, and the delivery stays scheduled.
    assert_eq!(schedules_waiting(&api).await, 1);
    assert_eq!(api.notification(&id).await["deliveries"][0]["status"], "scheduled");
    api.stack.stop().await;
}
