//! `/v1/templates/{name}` (scope `templates`).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::template::{TemplateInput, TemplateName};
use serde_json::json;

use crate::Intake;
use crate::problem::{ApiError, json_response};
use crate::request::{parsed_path_parameter, typed};

impl Intake {
    pub(crate) async fn put_template(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let name = parsed_path_parameter(request, "name", TemplateName::parse)?;
        let input: TemplateInput = typed(body)?;
        let template = input.check(name.clone(), &notify::time::now_rfc3339()).map_err(ApiError::Validation)?;
        let created = self.templates.put(&template).await?;
        self.template_cache.invalidate(&name);
        Ok(json_response(if created { 201 } else { 200 }, "application/json", &json!(template)))
    }

    pub(crate) async fn get_template(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let name = parsed_path_parameter(request, "name", TemplateName::parse)?;
        let template =
            self.templates.get(&name).await?.ok_or_else(|| ApiError::NotFound(format!("no template {name}")))?;
        Ok(json_response(200, "application/json", &json!(template)))
    }
}
