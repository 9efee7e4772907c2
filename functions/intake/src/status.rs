//! `GET /v1/notifications/{id}` (scope `status`): deliveries and timeline.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::app::AppRecord;

use crate::Intake;
use crate::problem::{ApiError, json_response};
use crate::request::path_parameter;

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
        let record = self
            .notifications
            .get(&id.into())
            .await?
            .filter(|record| record.app_key == app.app_key)
            .ok_or_else(not_found)?;
        Ok(json_response(200, "application/json", &record.view()))
    }
}
