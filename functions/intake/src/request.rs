//! Reading requests: JSON bodies into typed values (with the path of the field at fault) and
//! path parameters.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use notify::domain::notification::NotificationId;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::ApiError;

/// The body as JSON, or 400 when it is not JSON.
pub fn json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::Malformed(format!("the body is not JSON: {error}")))
}

/// The body as `T`, or 422 naming the field whose value does not fit.
pub fn typed<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(json(body)?).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_string() } else { path };
        ApiError::invalid(&field, error.into_inner().to_string())
    })
}

/// A path parameter API Gateway extracted for the matched route.
pub fn path_parameter<'a>(request: &'a ApiGatewayV2httpRequest, name: &str) -> Result<&'a str, ApiError> {
    request
        .path_parameters
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::NotFound(format!("the route has no {{{name}}} parameter")))
}

/// The `{id}` of a notification route: a notification id is a UUID, so anything else is a 404
/// like an unknown one.
pub fn notification_id(request: &ApiGatewayV2httpRequest) -> Result<NotificationId, ApiError> {
    let id = path_parameter(request, "id")?;
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(id.into()),
        Err(_) => Err(not_found(id)),
    }
}

/// The answer for a notification this app cannot see: unknown, or another app's.
pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no notification {id}"))
}

/// Parses a path parameter into a domain type; an invalid one is a 422 on that parameter.
pub fn parsed_path_parameter<T>(
    request: &ApiGatewayV2httpRequest,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ApiError> {
    parse(path_parameter(request, name)?).map_err(|message| ApiError::invalid(name, message))
}
