//! `POST /v1/notifications/{id}/events` (scope `send`): the app reports what a notification led
//! to. `{"type": "converted", "value"?: number, "occurred_at"?: time}` records its conversion,
//! once: 201 with it; a repeat answers 200 with the one recorded first; another app's
//! notification is a 404. Stats count it on each delivery the notification sent.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::app::AppRecord;
use notify::domain::notification::{Conversion, DeliveryStatus};
use notify::domain::stats::CONVERTED;
use notify::store::notifications::Converted;
use notify::store::stats::Counted;
use serde_json::json;

use crate::Intake;
use crate::problem::{ApiError, json_response};
use crate::request::{json, not_found, notification_id};

impl Intake {
    pub(crate) async fn record_event(
        &self,
        app: &AppRecord,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let id = notification_id(request)?;
        let conversion =
            Conversion::parse(&json(body)?, notify::time::now_epoch_millis()).map_err(ApiError::Validation)?;
        let (status, conversion) = match self.notifications.record_conversion(&id, &app.app_key, &conversion).await? {
            Converted::Recorded(record) => {
                let counted = Counted { app_key: &record.app_key, template: &record.template };
                let sent = record.deliveries.values().filter(|delivery| {
                    matches!(
                        delivery.status,
                        DeliveryStatus::Sent
                            | DeliveryStatus::Delivered
                            | DeliveryStatus::Bounced
                            | DeliveryStatus::Complained
                    )
                });
                for delivery in sent {
                    self.stats.count(counted, delivery.channel, CONVERTED);
                }
                (201, record.conversion.unwrap_or(conversion))
            }
            Converted::Already(first) => (200, first),
            Converted::NotFound => return Err(not_found(id.as_str())),
        };
        let body = json!({"notification_id": id, "type": "converted", "conversion": conversion});
        Ok(json_response(status, "application/json", &body))
    }
}
