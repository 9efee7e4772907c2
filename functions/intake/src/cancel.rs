//! `DELETE /v1/notifications/{id}` and `POST /v1/notifications/cancel` (scope `send`): a caller
//! takes back deliveries that have not started sending (`notify::cancel`).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::cancel::{Cancelled, CancelledNow, cancel_by_key, cancel_notification};
use notify::domain::FieldError;
use notify::domain::app::AppRecord;
use notify::domain::notification::CancellationKey;
use notify::domain::stats::CANCELLED;
use notify::domain::user::UserId;
use notify::store::stats::Counted;
use serde_json::{Value, json};

use crate::Intake;

/// The part of the invocation a cancel by key leaves for the cancels already started and the
/// answer: a slow table answers `complete: false` rather than timing out into a 5xx.
const ANSWER_RESERVE: std::time::Duration = std::time::Duration::from_secs(4);
use crate::problem::{ApiError, json_response};
use crate::request::{not_found, notification_id};

impl Intake {
    pub(crate) async fn cancel_notification(
        &self,
        app: &AppRecord,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let id = notification_id(request)?;
        match cancel_notification(&self.notifications, &app.app_key, &id).await? {
            Cancelled::Now(now) => {
                self.count_cancelled(&now);
                Ok(json_response(200, "application/json", &now.record.view()))
            }
            Cancelled::NothingLeft(record) => {
                let statuses: Vec<String> = record
                    .deliveries
                    .iter()
                    .map(|(delivery_id, delivery)| format!("{delivery_id} is {}", delivery.status.as_str()))
                    .collect();
                let statuses = if statuses.is_empty() { "it has no deliveries".into() } else { statuses.join(", ") };
                Err(ApiError::Conflict(format!("nothing left to cancel: {statuses}")))
            }
            Cancelled::NotFound => Err(not_found(id.as_str())),
        }
    }

    pub(crate) async fn cancel_by_key(
        &self,
        app: &AppRecord,
        body: &[u8],
        deadline_ms: i64,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (key, user_id) = CancelRequest::parse(body)?;
        let stop_at_ms = deadline_ms - ANSWER_RESERVE.as_millis() as i64;
        let user_id = user_id.as_ref().map(UserId::as_str);
        let report = cancel_by_key(&self.notifications, &app.app_key, &key, user_id, stop_at_ms).await?;
        for now in &report.notifications {
            self.count_cancelled(now);
        }
        let ids: Vec<&str> = report.notifications.iter().map(|now| now.record.id.as_str()).collect();
        let body = json!({"cancelled": report.deliveries, "notifications": ids, "complete": report.complete});
        Ok(json_response(200, "application/json", &body))
    }

    fn count_cancelled(&self, now: &CancelledNow) {
        let counted = Counted { app_key: &now.record.app_key, template: &now.record.template };
        for (_, channel) in &now.deliveries {
            self.stats.count(counted, *channel, CANCELLED);
        }
    }
}

/// `{"cancellation_key": "…", "user_id": "…"}`, `user_id` optional.
struct CancelRequest;

impl CancelRequest {
    fn parse(body: &[u8]) -> Result<(CancellationKey, Option<UserId>), ApiError> {
        let json = crate::request::json(body)?;
        let Some(object) = json.as_object() else {
            return Err(ApiError::Malformed("the body must be a JSON object".into()));
        };
        let mut errors = Vec::new();
        for field in object.keys().filter(|field| !["cancellation_key", "user_id"].contains(&field.as_str())) {
            errors.push(FieldError::new(field, "is not a known field"));
        }
        let key = match object.get("cancellation_key") {
            Some(Value::String(raw)) => CancellationKey::parse(raw)
                .map_err(|message| errors.push(FieldError::new("cancellation_key", message)))
                .ok(),
            _ => {
                errors.push(FieldError::new("cancellation_key", "is required: a string of 1 to 255 characters"));
                None
            }
        };
        let user_id = match object.get("user_id") {
            None => None,
            Some(Value::String(raw)) => {
                UserId::parse(raw).map_err(|message| errors.push(FieldError::new("user_id", message))).ok()
            }
            Some(_) => {
                errors.push(FieldError::new("user_id", "must be a string"));
                None
            }
        };
        match key {
            Some(key) if errors.is_empty() => Ok((key, user_id)),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}
