//! `GET /v1/notifications/{id}` (scope `status`): deliveries and timeline.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::app::AppRecord;
use notify::domain::notification::{DeliveryStatus, NotificationRecord};
use serde_json::{Value, json};

use crate::Intake;
use crate::problem::{ApiError, json_response};
use crate::request::path_parameter;

/// `completed` once every delivery has an outcome, else `accepted`.
fn status(record: &NotificationRecord) -> &'static str {
    let finished = record.deliveries.values().all(|delivery| {
        matches!(delivery.status, DeliveryStatus::Sent | DeliveryStatus::Failed | DeliveryStatus::Skipped)
    });
    if finished { "completed" } else { "accepted" }
}

pub fn notification_body(record: &NotificationRecord) -> Value {
    let deliveries: Vec<Value> = record
        .deliveries
        .values()
        .map(|delivery| {
            let mut body = json!({
                "channel": delivery.channel,
                "target": delivery.target,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "updated_at": delivery.updated_at,
            });
            if let Some(error) = &delivery.error {
                body["error"] = json!(error);
            }
            if let Some(reason) = delivery.skip_reason {
                body["reason"] = json!(reason);
            }
            if let Some(id) = &delivery.provider_message_id {
                body["provider_message_id"] = json!(id);
            }
            body
        })
        .collect();
    json!({
        "id": record.id,
        "status": status(record),
        "user_id": record.user_id,
        "template": record.template,
        "created_at": record.created_at,
        "deliveries": deliveries,
        "skipped": record.skipped,
        "events": record.events,
    })
}

impl Intake {
    pub(crate) async fn get_notification(
        &self,
        app: &AppRecord,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let id = path_parameter(request, "id")?;
        let not_found = || ApiError::NotFound(format!("no notification {id}"));
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(not_found());
        }
        // Another app's notification is indistinguishable from none.
        let record =
            self.notifications.get(id).await?.filter(|record| record.app_key == app.app_key).ok_or_else(not_found)?;
        Ok(json_response(200, "application/json", &notification_body(&record)))
    }
}
