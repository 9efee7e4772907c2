//! `POST /v1/notifications`: validate, load the user and template, render every channel, log
//! the notification with one conditional write (which is also the idempotency check), enqueue
//! one message per delivery, answer 202.

use std::collections::BTreeMap;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::http::HeaderValue;
use notify::domain::FieldError;
use notify::domain::app::AppRecord;
use notify::domain::channel::Channel;
use notify::domain::delivery::DeliveryMessage;
use notify::domain::notification::{
    self, DeliveryRecord, DeliveryStatus, NotificationRecord, RETENTION_SECONDS, TimelineEvent,
};
use notify::domain::plan::plan;
use notify::domain::template::{RenderError, TemplateName};
use notify::domain::user::UserId;
use notify::queue::Outgoing;
use notify::store::notifications::Logged;
use serde_json::{Map, Value, json};

use crate::Intake;
use crate::problem::{ApiError, json_response};

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
}

impl SendRequest {
    /// Reads and validates every field, reporting all problems at once.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::Malformed("the body must be a JSON object".into()));
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !["user_id", "template", "params", "channels"].contains(&key.as_str()) {
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
        match (user_id, template) {
            (Some(user_id), Some(template)) if errors.is_empty() => Ok(Self { user_id, template, params, channels }),
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

impl Intake {
    pub(crate) async fn send(
        &self,
        app: &AppRecord,
        idempotency_key: Option<String>,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let json: Value = serde_json::from_slice(body)
            .map_err(|error| ApiError::Malformed(format!("the body is not JSON: {error}")))?;
        let request = SendRequest::parse(&json)?;
        let profile = self
            .users
            .get_profile(&request.user_id)
            .await?
            .ok_or_else(|| ApiError::invalid("user_id", "no such user; create it with PUT /v1/users/{user_id}"))?;
        let template = self
            .templates
            .get(&request.template)
            .await?
            .ok_or_else(|| ApiError::invalid("template", "no such template"))?;
        let plan =
            plan(&profile, &template, request.channels.as_deref(), &request.params).map_err(|error| match error {
                RenderError::MissingParams(names) => ApiError::Validation(
                    names
                        .into_iter()
                        .map(|name| FieldError::new(format!("params.{name}"), "is required by the template"))
                        .collect(),
                ),
                other => ApiError::invalid("template", other.to_string()),
            })?;

        let id = notification::notification_id(&app.app_key, idempotency_key.as_deref());
        let now = notify::time::now_rfc3339();
        let now_epoch = notify::time::now_epoch_seconds();
        let mut deliveries = BTreeMap::new();
        let mut outgoing = Vec::new();
        for (delivery_id, content) in plan.deliveries {
            let channel = content.channel();
            let target = content.target();
            let message = DeliveryMessage {
                notification_id: id.clone(),
                delivery_id: delivery_id.clone(),
                user_id: request.user_id.clone(),
                template: request.template.clone(),
                transactional: template.transactional,
                content,
            };
            let body = serde_json::to_string(&message).expect("delivery messages serialize");
            outgoing.push(Outgoing { key: delivery_id.clone(), channel, body: body.clone() });
            deliveries.insert(
                delivery_id,
                DeliveryRecord {
                    channel,
                    target,
                    status: DeliveryStatus::Queued,
                    attempts: 0,
                    updated_at: now.clone(),
                    message: body,
                },
            );
        }
        let record = NotificationRecord {
            id,
            app_key: app.app_key.clone(),
            idempotency_key,
            request_hash: notification::request_hash(body),
            user_id: request.user_id.to_string(),
            template: request.template.to_string(),
            created_at: now.clone(),
            expires_at: now_epoch + RETENTION_SECONDS,
            deliveries,
            skipped: plan.skipped,
            events: vec![TimelineEvent { at: now, kind: "accepted".into(), channel: None }],
        };

        match self.notifications.create(&record, now_epoch).await? {
            Logged::Created => {
                // The record is the outbox: a delivery whose message is lost here stays
                // `queued` in the log for the recovery sweep, so the notification is accepted.
                for failure in self.enqueuer.enqueue(&outgoing).await {
                    tracing::error!(notification_id = %record.id, delivery_id = %failure.key, error = %failure.error, "enqueue failed; left for the recovery sweep");
                }
                tracing::info!(notification_id = %record.id, deliveries = record.deliveries.len(), "accepted");
                Ok(accepted(&record, false))
            }
            Logged::Duplicate(existing) if existing.request_hash == record.request_hash => {
                Ok(accepted(&existing, true))
            }
            Logged::Duplicate(_) => {
                Err(ApiError::invalid("Idempotency-Key", "was already used with a different request body"))
            }
        }
    }
}

/// The 202 answer, derived from the record alone so a replay answers exactly the same.
fn accepted(record: &NotificationRecord, replayed: bool) -> ApiGatewayV2httpResponse {
    let deliveries: Vec<Value> = record
        .deliveries
        .values()
        .map(|delivery| json!({"channel": delivery.channel, "target": delivery.target, "status": "queued"}))
        .collect();
    let body = json!({
        "id": record.id,
        "status": "accepted",
        "deliveries": deliveries,
        "skipped": record.skipped,
    });
    let mut response = json_response(202, "application/json", &body);
    if replayed {
        response.headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
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
