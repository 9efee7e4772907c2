//! `POST /v1/notifications`: validate, load the user and template, render every channel, log
//! the notification with one conditional write (which is also the idempotency check), enqueue
//! one message per delivery, answer 202.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::http::HeaderValue;
use notify::domain::FieldError;
use notify::domain::app::AppRecord;
use notify::domain::channel::Channel;
use notify::domain::delivery::{DeliveryMessage, OutboundContent, PushContent};
use notify::domain::lifecycle::TimelineKind;
use notify::domain::notification::{
    self, CancellationKey, DeliveryId, DeliveryRecord, NotificationId, NotificationRecord, RETENTION_SECONDS,
    SkipReason, TimelineEvent,
};
use notify::domain::plan::{Plan, plan};
use notify::domain::preference_center::{PREFERENCES_URL_PARAM, with_preferences_link};
use notify::domain::send_rate::Lane;
use notify::domain::template::{RenderError, Template, TemplateName};
use notify::domain::tracking::{LinkTracker, Tracked};
use notify::domain::user::UserId;
use notify::error::DependencyError;
use notify::queue::Outgoing;
use notify::store::notifications::Logged;
use serde_json::{Map, Value, json};

use crate::pages::Language;
use crate::problem::{ApiError, json_response};
use crate::{Intake, request};

/// At most this many template parameters per notification.
pub const MAX_PARAMS: usize = 64;
/// At most this many bytes per string parameter value.
pub const MAX_PARAM_BYTES: usize = 4096;
/// Idempotency keys are 1–255 characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A validated send request.
#[derive(Debug)]
pub struct SendRequest {
    pub user_id: UserId,
    pub template: TemplateName,
    pub params: Map<String, Value>,
    pub channels: Option<Vec<Channel>>,
    pub cancellation_key: Option<CancellationKey>,
    /// When to send (epoch ms), if later than now.
    pub send_at: Option<i64>,
}

/// How far ahead `send_at` may be.
pub const MAX_SCHEDULE_AHEAD_SECONDS: i64 = 30 * 24 * 3600;

/// `send_at`: an RFC 3339 time with its offset, at most 30 days ahead; one in the past means
/// now (`None`).
fn send_at(raw: &Value, now_ms: i64) -> Result<Option<i64>, String> {
    let invalid = "must be an RFC 3339 time with an offset, such as 2026-12-24T09:00:00+01:00";
    let at = raw.as_str().and_then(notify::time::parse_rfc3339_millis).ok_or(invalid)?;
    if at > now_ms + MAX_SCHEDULE_AHEAD_SECONDS * 1000 {
        return Err("must be at most 30 days ahead".into());
    }
    Ok((at > now_ms).then_some(at))
}

impl SendRequest {
    /// Reads and validates every field, reporting all problems at once.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::Malformed("the body must be a JSON object".into()));
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !["user_id", "template", "params", "channels", "cancellation_key", "send_at"].contains(&key.as_str()) {
                errors.push(FieldError::new(key, "is not a known field"));
            }
        }
        let user_id = required_string(object, "user_id", &mut errors).and_then(|raw| {
            UserId::parse(raw).map_err(|message| errors.push(FieldError::new("user_id", message))).ok()
        });
        let template = required_string(object, "template", &mut errors).and_then(|raw| {
            TemplateName::parse(raw).map_err(|message| errors.push(FieldError::new("template", message))).ok()
        });
        let params = match object.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(params)) => {
                if params.len() > MAX_PARAMS {
                    errors.push(FieldError::new("params", format!("must have at most {MAX_PARAMS} keys")));
                }
                for (name, value) in params {
                    if value.as_str().is_some_and(|text| text.len() > MAX_PARAM_BYTES) {
                        errors.push(FieldError::new(
                            format!("params.{name}"),
                            format!("must be at most {MAX_PARAM_BYTES} bytes"),
                        ));
                    }
                }
                params.clone()
            }
            Some(_) => {
                errors.push(FieldError::new("params", "must be an object"));
                Map::new()
            }
        };
        let channels = match object.get("channels") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut channels = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item.as_str().map(str::parse::<Channel>) {
                        Some(Ok(channel)) => channels.push(channel),
                        Some(Err(message)) => errors.push(FieldError::new(format!("channels[{index}]"), message)),
                        None => errors.push(FieldError::new(format!("channels[{index}]"), "must be a string")),
                    }
                }
                Some(channels)
            }
            Some(_) => {
                errors.push(FieldError::new("channels", "must be a non-empty array of push, sms, email"));
                None
            }
        };
        let cancellation_key = match object.get("cancellation_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(raw)) => CancellationKey::parse(raw)
                .map_err(|message| errors.push(FieldError::new("cancellation_key", message)))
                .ok(),
            Some(_) => {
                errors.push(FieldError::new("cancellation_key", "must be a string of 1 to 255 characters"));
                None
            }
        };
        let send_at = match object.get("send_at") {
            None | Some(Value::Null) => None,
            Some(raw) => send_at(raw, notify::time::now_epoch_millis())
                .map_err(|message| errors.push(FieldError::new("send_at", message)))
                .ok()
                .flatten(),
        };
        match (user_id, template) {
            (Some(user_id), Some(template)) if errors.is_empty() => {
                Ok(Self { user_id, template, params, channels, cancellation_key, send_at })
            }
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

fn required_string<'a>(object: &'a Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<&'a str> {
    match object.get(field) {
        Some(Value::String(value)) => Some(value),
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
    }
}

/// The `Idempotency-Key` header, if given.
pub fn idempotency_key(
    request: &aws_lambda_events::apigw::ApiGatewayV2httpRequest,
) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::invalid("Idempotency-Key", format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters")));
    }
    Ok(Some(key.to_string()))
}

/// Most notifications in one batch request.
pub const MAX_BATCH: usize = 100;
/// Largest queue message (SQS allows 256 KiB; the rest is headroom for attributes).
pub const MAX_MESSAGE_BYTES: usize = 240 * 1024;
/// Largest sum of one notification's messages, which its record stores if SQS refuses them
/// (DynamoDB items hold 400 KB; the rest of the record needs room too).
pub const MAX_OUTBOX_BYTES: usize = 340 * 1024;
/// How long an intake request can run (its Lambda timeout): a replay after this knows the
/// original request has ended, one way or another.
const INTAKE_TIMEOUT_SECONDS: i64 = 10;

/// A notification ready to be logged: its record and its queue messages.
pub struct Prepared {
    pub record: NotificationRecord,
    pub outgoing: Vec<Outgoing>,
}

/// What logging a prepared notification came to.
enum Submission {
    Accepted(Box<NotificationRecord>),
    Replayed(Box<NotificationRecord>),
}

impl Intake {
    /// Validates one request, loads its user and template, renders every channel and builds
    /// the log record (nothing is written yet).
    async fn prepare(
        &self,
        app: &AppRecord,
        link_base: &str,
        idempotency_key: Option<String>,
        json: &Value,
    ) -> Result<Prepared, ApiError> {
        let request = SendRequest::parse(json)?;
        let user_id = request.user_id.clone();
        let profile = self
            .user_cache
            .get_or_load(&user_id, self.users.get(&user_id))
            .await?
            .ok_or_else(|| ApiError::invalid("user_id", "no such user; create it with PUT /v1/users/{user_id}"))?;
        let template_name = request.template.clone();
        let template = self
            .template_cache
            .get_or_load(&template_name, self.templates.get(&template_name))
            .await?
            .ok_or_else(|| ApiError::invalid("template", "no such template"))?;
        let preferences_url = self.preferences_url(link_base, &user_id).await?;
        let mut params = request.params.clone();
        params.insert(PREFERENCES_URL_PARAM.into(), Value::String(preferences_url.clone()));
        let mut plan =
            plan(&profile, &template, request.channels.as_deref(), &params).map_err(|error| match error {
                RenderError::MissingParams(names) => ApiError::Validation(
                    names
                        .into_iter()
                        .map(|name| FieldError::new(format!("params.{name}"), "is required by the template"))
                        .collect(),
                ),
                RenderError::TooLarge(message) => ApiError::invalid("params", message),
                other => ApiError::invalid("template", other.to_string()),
            })?;
        // Looked up only when the plan emails: the dispatcher checks again at send time (a
        // bounce may come in between); this spares the queue and the send for known ones.
        if let Some(address) = plan.email_address() {
            let key = address.as_str().to_ascii_lowercase();
            let load = async { Ok::<_, ApiError>(self.suppressions.get(&key).await?.is_some()) };
            if self.suppression_cache.get_or_load(&key, load).await? {
                plan.skip(Channel::Email, SkipReason::Suppressed);
            }
        }

        let language = Language::for_locale(profile.locale.as_ref().map(|locale| locale.as_str()));
        for (_, content) in &mut plan.deliveries {
            if let OutboundContent::Email(email) = content {
                *email = with_preferences_link(email.clone(), &preferences_url, language.text("email_footer"));
            }
        }
        let tracker = LinkTracker::new(self.link_keys.signer().await?);
        assemble(&tracker, app, link_base, idempotency_key, &request, &template, plan, json)
    }

    /// Writes the log record: the one conditional put that is also the idempotency check.
    async fn log(&self, prepared: &Prepared) -> Result<Submission, ApiError> {
        match self.notifications.create(&prepared.record, notify::time::now_epoch_seconds()).await? {
            Logged::Created => Ok(Submission::Accepted(Box::new(prepared.record.clone()))),
            Logged::Duplicate(existing) if existing.request_hash == prepared.record.request_hash => {
                Ok(Submission::Replayed(existing))
            }
            Logged::Duplicate(_) => {
                Err(ApiError::invalid("Idempotency-Key", "was already used with a different request body"))
            }
        }
    }

    /// Prepares and logs one request. Returns the outcome and what to enqueue: a new
    /// notification's messages, or for a replay the deliveries still queued and never attempted
    /// once the original request must have ended (it may have died between its log write and its
    /// enqueue). A replay answers the original even if the user or template changed since.
    async fn accept(
        &self,
        app: &AppRecord,
        link_base: &str,
        idempotency_key: Option<String>,
        json: &Value,
    ) -> Result<(Submission, Vec<Outgoing>), ApiError> {
        let prepared = match self.prepare(app, link_base, idempotency_key.clone(), json).await {
            Ok(prepared) => prepared,
            Err(error @ ApiError::Validation(_)) => {
                let Some(key) = &idempotency_key else { return Err(error) };
                let id = notification::notification_id(&app.app_key, Some(key));
                let hash = notification::request_hash(json.to_string().as_bytes());
                return match self.notifications.get(&id).await? {
                    Some(existing)
                        if existing.request_hash == hash && existing.expires_at > notify::time::now_epoch_seconds() =>
                    {
                        let unsent = self.unsent(&existing, &[]).await?;
                        Ok((Submission::Replayed(Box::new(existing)), unsent))
                    }
                    _ => Err(error),
                };
            }
            Err(error) => return Err(error),
        };
        match self.log(&prepared).await? {
            Submission::Accepted(record) => Ok((Submission::Accepted(record), prepared.outgoing)),
            Submission::Replayed(record) => {
                let unsent = self.unsent(&record, &rendered_again(&record, &prepared)).await?;
                Ok((Submission::Replayed(record), unsent))
            }
        }
    }

    /// Loads each distinct user and template of a batch once, before its items run
    /// concurrently and would all miss the cache together.
    async fn warm_caches(&self, items: &[BatchItem]) {
        let field = |name: &str| -> BTreeSet<String> {
            items.iter().filter_map(|item| item.as_ref().ok()?.1.get(name)?.as_str().map(str::to_string)).collect()
        };
        let users = field("user_id").into_iter().filter_map(|id| UserId::parse(&id).ok());
        let templates = field("template").into_iter().filter_map(|name| TemplateName::parse(&name).ok());
        let user_loads = futures::future::join_all(users.map(|id| async move {
            let _ = self.user_cache.get_or_load(&id, self.users.get(&id)).await;
        }));
        let template_loads = futures::future::join_all(templates.map(|name| async move {
            let _ = self.template_cache.get_or_load(&name, self.templates.get(&name)).await;
        }));
        futures::future::join(user_loads, template_loads).await;
    }

    /// What a replay of `record` enqueues: the deliveries whose messages may be gone (see
    /// `NotificationRecord::stranded`), once the original request must have ended (it may have
    /// died between its log write and its enqueue). Their messages are the ones the record
    /// stores (SQS refused them) or else `rendered_again` by this replay. Before the original
    /// has ended, it may still be enqueueing them, or may have failed to and answered an error
    /// (why the caller retries): the record goes into the sweep's index with those messages,
    /// due after that time, so either way they go out.
    async fn unsent(
        &self,
        record: &NotificationRecord,
        rendered_again: &[Outgoing],
    ) -> Result<Vec<Outgoing>, ApiError> {
        let stranded: Vec<_> = record.stranded(notify::time::now_epoch_millis()).collect();
        let mut messages = Outgoing::from_outbox(&record.id, stranded.iter().copied());
        messages.extend(
            rendered_again
                .iter()
                .filter(|message| {
                    stranded.iter().any(|(id, delivery)| **id == message.delivery_id && delivery.message.is_none())
                })
                .cloned(),
        );
        if messages.len() < stranded.len() {
            // Not rendered again (the user, template or contact changed since): if the original
            // did enqueue it, as is usual, it still goes out; if not, nothing here can send it.
            tracing::warn!(notification_id = %record.id, stranded = stranded.len(), messages = messages.len(), "a replay cannot rebuild every unattempted delivery's message");
        }
        let ended =
            notify::time::parse_rfc3339_epoch(&record.created_at).map(|created| created + INTAKE_TIMEOUT_SECONDS);
        match ended {
            Some(ended) if !messages.is_empty() && notify::time::now_epoch_seconds() <= ended => {
                if record.sweep_at.is_none() {
                    let due = ended + notification::FIRST_SWEEP_AFTER_SECONDS;
                    self.notifications.mark_for_sweep(&record.id, due, &messages).await?;
                }
                Ok(Vec::new())
            }
            _ => Ok(messages),
        }
    }

    /// Enqueues the messages of notifications just logged. A notification some of whose
    /// messages SQS did not take is put in the recovery sweep's index with those messages (a
    /// second write, made only then), which enqueues them again, so it is still accepted.
    /// Returns the notifications that could not be put there either: they must not be answered
    /// 202 (the caller's retry with its Idempotency-Key re-enqueues them).
    async fn enqueue(&self, outgoing: &[Outgoing]) -> BTreeMap<NotificationId, DependencyError> {
        let mut refused: BTreeMap<NotificationId, Vec<Outgoing>> = BTreeMap::new();
        for failure in self.enqueuer.enqueue(outgoing).await {
            let message = failure.message;
            tracing::error!(notification_id = %message.notification_id, delivery_id = %message.delivery_id, error = %failure.error, "enqueue failed; left for the recovery sweep");
            refused.entry(message.notification_id.clone()).or_default().push(message);
        }
        let due = notify::time::now_epoch_seconds() + notification::FIRST_SWEEP_AFTER_SECONDS;
        let marks = futures::future::join_all(refused.into_iter().map(|(id, messages)| async move {
            let marked = self.notifications.mark_for_sweep(&id, due, &messages).await;
            (id, marked)
        }))
        .await;
        marks
            .into_iter()
            .filter_map(|(id, marked)| {
                let error = marked.err()?;
                tracing::error!(notification_id = %id, error = %error, "neither enqueued nor left for the sweep; answering an error");
                Some((id, error))
            })
            .collect()
    }

    pub(crate) async fn send(
        &self,
        app: &AppRecord,
        link_base: &str,
        idempotency_key: Option<String>,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let json = request::json(body)?;
        let (outcome, outgoing) = self.accept(app, link_base, idempotency_key, &json).await?;
        if let Some((_, error)) = self.enqueue(&outgoing).await.pop_first() {
            return Err(error.into());
        }
        if let Submission::Accepted(record) = &outcome {
            tracing::info!(notification_id = %record.id, deliveries = record.deliveries.len(), "accepted");
            self.count_accepted(record);
        }
        let (record, replayed) = match &outcome {
            Submission::Accepted(record) => (record, false),
            Submission::Replayed(record) => (record, true),
        };
        let mut response = json_response(202, "application/json", &accepted_body(record));
        if replayed {
            response.headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    /// `POST /v1/notifications/batch`: every item is prepared and logged on its own (one
    /// conditional put each: DynamoDB bills per write, not per request) and every accepted
    /// message goes out in shared SendMessageBatch calls (SQS bills per request).
    pub(crate) async fn send_batch(
        &self,
        app: &AppRecord,
        link_base: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let envelope = request::json(body)?;
        let items = batch_items(&envelope)?;
        self.warm_caches(&items).await;
        let results = futures::future::join_all(items.into_iter().map(|item| async move {
            let (key, item) = item?;
            self.accept(app, link_base, Some(key), &item).await
        }))
        .await;
        let outgoing: Vec<Outgoing> = results
            .iter()
            .filter_map(|result| result.as_ref().ok())
            .flat_map(|(_, outgoing)| outgoing.iter().cloned())
            .collect();
        let unqueued = self.enqueue(&outgoing).await;
        let results: Vec<Value> = results
            .into_iter()
            .map(|result| match result {
                Ok((Submission::Accepted(record) | Submission::Replayed(record), _))
                    if unqueued.contains_key(&record.id) =>
                {
                    let (status, problem) = ApiError::from(unqueued[&record.id].clone()).problem();
                    json!({"status": status, "replayed": false, "body": problem})
                }
                Ok((Submission::Accepted(record), _)) => {
                    self.count_accepted(&record);
                    json!({"status": 202, "replayed": false, "body": accepted_body(&record)})
                }
                Ok((Submission::Replayed(record), _)) => {
                    json!({"status": 202, "replayed": true, "body": accepted_body(&record)})
                }
                Err(error) => {
                    let (status, problem) = error.problem();
                    json!({"status": status, "replayed": false, "body": problem})
                }
            })
            .collect();
        Ok(json_response(200, "application/json", &json!({ "results": results })))
    }
}

/// One batch item: its idempotency key and the rest of it, or why it is unusable.
pub(crate) type BatchItem = Result<(String, Value), ApiError>;

/// The batch's items, each with its idempotency key split off, or a per-item error.
pub(crate) fn batch_items(envelope: &Value) -> Result<Vec<BatchItem>, ApiError> {
    let object = envelope.as_object().ok_or_else(|| ApiError::Malformed("the body must be a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|key| *key != "notifications") {
        return Err(ApiError::invalid(unknown, "is not a known field"));
    }
    let items = object
        .get("notifications")
        .and_then(Value::as_array)
        .filter(|items| (1..=MAX_BATCH).contains(&items.len()))
        .ok_or_else(|| {
            ApiError::invalid("notifications", format!("must be an array of 1 to {MAX_BATCH} notifications"))
        })?;
    Ok(items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            let key = item.as_object_mut().and_then(|object| object.remove("idempotency_key"));
            match key {
                Some(Value::String(key)) if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()) => Ok((key, item)),
                _ => Err(ApiError::invalid(
                    "idempotency_key",
                    format!("is required: a string of 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                )),
            }
        })
        .collect())
}

/// A replay's own messages for the deliveries of `record` it renders for the same target: the
/// original's messages, as far as the user and template are unchanged since.
fn rendered_again(record: &NotificationRecord, replay: &Prepared) -> Vec<Outgoing> {
    let target =
        |of: &NotificationRecord, delivery_id: &DeliveryId| of.deliveries.get(delivery_id).map(|d| d.target.clone());
    replay
        .outgoing
        .iter()
        .filter(|message| {
            let original = target(record, &message.delivery_id);
            original.is_some() && original == target(&replay.record, &message.delivery_id)
        })
        .cloned()
        .collect()
}

/// The 202 answer, derived from the record alone so a replay answers exactly the same.
fn accepted_body(record: &NotificationRecord) -> Value {
    let deliveries: Vec<Value> = record
        .deliveries
        .values()
        .map(|delivery| {
            let status = if record.send_at.is_some() { "scheduled" } else { "queued" };
            json!({"channel": delivery.channel, "target": delivery.target, "status": status})
        })
        .collect();
    let mut body = json!({
        "id": record.id,
        "status": if record.send_at.is_some() { "scheduled" } else { "accepted" },
        "deliveries": deliveries,
        "skipped": record.skipped,
    });
    if let Some(send_at) = &record.send_at {
        body["send_at"] = json!(send_at);
    }
    body
}

/// The intake's own work on one notification between loading what it needs (user, template,
/// suppression) and logging it: tracking links, the queue messages and the log record. No I/O,
/// so the CPU benchmark measures this code itself.
// Each argument is one thing the notification is made of; a struct to carry them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    tracker: &LinkTracker,
    app: &AppRecord,
    link_base: &str,
    idempotency_key: Option<String>,
    request: &SendRequest,
    template: &Template,
    plan: Plan,
    json: &Value,
) -> Result<Prepared, ApiError> {
    let id = notification::notification_id(&app.app_key, idempotency_key.as_deref());
    let now = notify::time::now_rfc3339();
    let now_epoch = notify::time::now_epoch_seconds();
    let mut deliveries = BTreeMap::new();
    let mut outgoing = Vec::new();
    for (delivery_id, content) in plan.deliveries {
        let delivery_id = DeliveryId::from(delivery_id);
        let tracked = |channel| Tracked {
            app_key: app.app_key.clone(),
            notification_id: id.clone(),
            delivery_id: delivery_id.clone(),
            channel,
            template: request.template.to_string(),
            url: None,
        };
        let content = match content {
            OutboundContent::Email(email) if template.tracking => {
                OutboundContent::Email(tracker.track_email(email, &tracked(Channel::Email), link_base))
            }
            // Every push carries its open token: an open is reported by the app, not tracked.
            OutboundContent::Push(push) => OutboundContent::Push(PushContent {
                open_token: Some(tracker.push_open_token(&tracked(Channel::Push))),
                ..push
            }),
            other => other,
        };
        let channel = content.channel();
        let target = content.target();
        let message = DeliveryMessage {
            notification_id: id.clone(),
            delivery_id: delivery_id.clone(),
            user_id: request.user_id.clone(),
            app_key: app.app_key.clone(),
            template: request.template.clone(),
            transactional: template.transactional,
            quiet_hours: !template.transactional && (channel != Channel::Email || template.quiet_hours),
            deliver_after: request.send_at,
            content,
        };
        let body = serde_json::to_string(&message).expect("delivery messages serialize");
        let lane = Lane::of(template.transactional);
        outgoing.push(Outgoing {
            notification_id: id.clone(),
            delivery_id: delivery_id.clone(),
            channel,
            lane,
            deliver_after: request.send_at,
            body,
        });
        deliveries.insert(delivery_id, DeliveryRecord::queued(channel, target, &now, request.send_at));
    }
    // SQS takes 256 KiB per message and DynamoDB 400 KB per item (a record whose enqueue
    // fails stores its messages for the sweep): refuse here what could never be enqueued or
    // kept.
    if let Some(large) = outgoing.iter().find(|message| message.body.len() > MAX_MESSAGE_BYTES) {
        let message = format!(
            "the rendered {} message is {} bytes; at most {MAX_MESSAGE_BYTES}",
            large.channel,
            large.body.len()
        );
        return Err(ApiError::invalid("params", message));
    }
    let total: usize = outgoing.iter().map(|message| message.body.len()).sum();
    if total > MAX_OUTBOX_BYTES {
        return Err(ApiError::invalid(
            "params",
            format!("the rendered messages total {total} bytes; at most {MAX_OUTBOX_BYTES}"),
        ));
    }
    let record = NotificationRecord {
        id: id.clone(),
        app_key: app.app_key.clone(),
        idempotency_key,
        // Canonical JSON (sorted keys), so formatting does not make a body "different".
        request_hash: notification::request_hash(json.to_string().as_bytes()),
        user_id: request.user_id.to_string(),
        template: request.template.to_string(),
        created_at: now.clone(),
        // Kept for the retention period after it is due.
        expires_at: request.send_at.map_or(now_epoch, |at| at / 1000) + RETENTION_SECONDS,
        // Joins the sweep's index only if its enqueue fails (`enqueue`).
        sweep_shard: None,
        sweep_at: None,
        cancel_scope: request.cancellation_key.as_ref().map(|key| key.scope_of(&app.app_key, &id)),
        cancellation_key: request.cancellation_key.clone(),
        send_at: request.send_at.map(notify::time::rfc3339_millis),
        conversion: None,
        deliveries,
        skipped: plan.skipped,
        events: [TimelineKind::Accepted]
            .into_iter()
            .chain(request.send_at.map(|_| TimelineKind::Scheduled))
            .map(|kind| TimelineEvent { at: now.clone(), kind, channel: None, delivery: None })
            .collect(),
    };
    Ok(Prepared { record, outgoing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_errors(error: ApiError) -> Vec<(String, String)> {
        match error {
            ApiError::Validation(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
            other => panic!("validation error expected, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_parses() {
        let request = SendRequest::parse(
            &json!({"user_id": "u-1", "template": "welcome", "params": {"name": "Ada"}, "channels": ["sms"]}),
        )
        .unwrap();
        assert_eq!(request.user_id.as_str(), "u-1");
        assert_eq!(request.channels, Some(vec![Channel::Sms]));
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = field_errors(
            SendRequest::parse(&json!({"template": "Bad Name", "channels": ["fax"], "extra": 1})).unwrap_err(),
        );
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, vec!["extra", "user_id", "template", "channels[0]"]);
    }

    #[test]
    fn parameter_limits_are_enforced() {
        let many: Map<String, Value> = (0..=MAX_PARAMS).map(|i| (format!("p{i}"), json!(i))).collect();
        let errors =
            field_errors(SendRequest::parse(&json!({"user_id": "u", "template": "t", "params": many})).unwrap_err());
        assert_eq!(errors[0].0, "params");
        let huge = "x".repeat(MAX_PARAM_BYTES + 1);
        let errors = field_errors(
            SendRequest::parse(&json!({"user_id": "u", "template": "t", "params": {"big": huge}})).unwrap_err(),
        );
        assert_eq!(errors[0].0, "params.big");
    }

    #[test]
    fn a_non_object_body_is_malformed() {
        assert!(matches!(SendRequest::parse(&json!([1])), Err(ApiError::Malformed(_))));
    }
}
