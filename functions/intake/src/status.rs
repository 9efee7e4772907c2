//! `GET /v1/notifications/{id}` (scope `status`): deliveries and timeline.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::app::AppRecord;

use crate::Intake;
use crate::problem::{ApiError, json_response};
use crate::request::{not_found, notification_id};

impl Intake {
    pub(crate) async fn get_notification(
        &self,
        app: &AppRecord,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let id = notification_id(request)?;
        // Another app's notification is indistinguishable from none.
        let record = self
            .notifications
            .get(&id)
            .await?
            .filter(|record| record.app_key == app.app_key)
            .ok_or_else(|| not_found(id.as_str()))?;
        Ok(json_response(200, "application/json", &record.view()))
    }
}
