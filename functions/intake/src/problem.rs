//! The HTTP boundary's errors, rendered as RFC 9457 `application/problem+json`. The status
//! derives from the variant; clients see a clean message, logs get the cause.

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use notify::domain::FieldError;
use notify::domain::app::Scope;
use notify::error::DependencyError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    /// No or unusable credentials, unknown app, wrong secret, disabled app.
    Unauthorized,
    /// A valid app without the route's scope.
    Forbidden(Scope),
    NotFound(String),
    /// A request that names no app but proves itself otherwise (a signature), and does not.
    Refused(String),
    /// The body is not JSON or not an object.
    Malformed(String),
    PayloadTooLarge(usize),
    Validation(Vec<FieldError>),
    /// The request conflicts with the state of the resource.
    Conflict(String),
    /// A dependency failed; transient ones are worth retrying.
    Dependency(DependencyError),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The status and problem document (RFC 9457) for this error.
    pub fn problem(&self) -> (i64, serde_json::Value) {
        let (status, kind, title, detail, errors) = match self {
            ApiError::Unauthorized => (
                401,
                "unauthorized",
                "Unauthorized",
                "Valid app credentials are required (HTTP Basic: app key and app secret).".to_string(),
                None,
            ),
            ApiError::Forbidden(scope) => (
                403,
                "forbidden",
                "Forbidden",
                format!("This app lacks the \"{scope}\" scope needed for this route."),
                None,
            ),
            ApiError::NotFound(what) => (404, "not-found", "Not Found", what.clone(), None),
            ApiError::Refused(reason) => (403, "refused", "Forbidden", reason.clone(), None),
            ApiError::Malformed(reason) => (400, "malformed-body", "Malformed request body", reason.clone(), None),
            ApiError::PayloadTooLarge(limit) => (
                413,
                "payload-too-large",
                "Payload Too Large",
                format!("The body must be at most {limit} bytes."),
                None,
            ),
            ApiError::Validation(errors) => (
                422,
                "validation",
                "Validation failed",
                "The request has invalid fields.".to_string(),
                Some(errors.clone()),
            ),
            ApiError::Conflict(reason) => (409, "conflict", "Conflict", reason.clone(), None),
            ApiError::Dependency(error) if error.is_retried() => {
                tracing::error!(error = %error, "dependency failed");
                (
                    503,
                    "unavailable",
                    "Service Unavailable",
                    "A dependency is temporarily unavailable; retry with the same Idempotency-Key.".to_string(),
                    None,
                )
            }
            ApiError::Dependency(error) => {
                tracing::error!(error = %error, "dependency failed permanently");
                (500, "internal", "Internal Server Error", "The request could not be completed.".to_string(), None)
            }
        };
        let mut body = json!({"type": format!("/problems/{kind}"), "title": title, "status": status, "detail": detail});
        if let Some(errors) = errors {
            body["errors"] = json!(errors);
        }
        (status, body)
    }

    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let (status, body) = self.problem();
        let mut response = json_response(status, "application/problem+json", &body);
        match self {
            ApiError::Unauthorized => {
                response
                    .headers
                    .insert("www-authenticate", HeaderValue::from_static(r#"Basic realm="notify", charset="UTF-8""#));
            }
            ApiError::Dependency(error) if error.is_retried() => {
                response.headers.insert("retry-after", HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<DependencyError> for ApiError {
    fn from(error: DependencyError) -> Self {
        ApiError::Dependency(error)
    }
}

pub fn json_response(status: i64, content_type: &'static str, body: &serde_json::Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = Some(Body::Text(body.to_string()));
    response
}

pub fn empty_response(status: i64) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response
}
