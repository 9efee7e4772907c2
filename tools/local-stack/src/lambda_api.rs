//! The local Lambda API: the `Invoke` operation (`POST /2015-03-31/functions/{name}/invocations`)
//! for the stack's functions, so tools that invoke a function with aws-sdk-lambda (notifyctl's
//! `dlq redrive`) work against the local stack exactly as against AWS. The emulator's own
//! Lambda needs Docker, so the stack answers for its in-process functions itself.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::functions::{InvokeError, LocalFunction};

/// Lambda's limit for a synchronous invocation's payload.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The stack's functions by name and by ARN (Invoke accepts either).
pub struct Functions {
    by_name_or_arn: HashMap<String, Arc<LocalFunction>>,
}

impl Functions {
    pub fn new<'a>(functions: impl IntoIterator<Item = &'a Arc<LocalFunction>>) -> Self {
        let mut by_name_or_arn = HashMap::new();
        for function in functions {
            by_name_or_arn.insert(function.name.clone(), function.clone());
            by_name_or_arn.insert(function.arn.clone(), function.clone());
        }
        Self { by_name_or_arn }
    }
}

pub async fn serve(listener: tokio::net::TcpListener, functions: Arc<Functions>) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/2015-03-31/functions/{function}/invocations", axum::routing::post(invoke))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "UnknownOperationException", "the local stack serves Invoke only")
        })
        .with_state(functions);
    axum::serve(listener, app).await
}

async fn invoke(
    State(functions): State<Arc<Functions>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(function) = functions.by_name_or_arn.get(&function).cloned() else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {function}"));
    };
    let Ok(body) = to_bytes(body, MAX_PAYLOAD_BYTES).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", "Request must be smaller than 6 MB");
    };
    let payload = if body.is_empty() { Ok(json!({})) } else { serde_json::from_slice::<Value>(&body) };
    let Ok(payload) = payload else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json",
        );
    };
    let invocation_type = headers.get("x-amz-invocation-type").and_then(|value| value.to_str().ok());
    match invocation_type.unwrap_or("RequestResponse") {
        "RequestResponse" => match function.invoke(payload).await {
            Ok(output) => answer(StatusCode::OK, output.to_string(), None),
            // As Lambda reports a failed invocation: 200, the error as the payload, and the header.
            Err(failure) => {
                let error_type = match &failure {
                    InvokeError::Failed(_) => "Error",
                    InvokeError::TimedOut(_) => "Sandbox.Timedout",
                    InvokeError::Crashed(_) => "Runtime.ExitError",
                };
                let payload = json!({"errorType": error_type, "errorMessage": failure.to_string()});
                answer(StatusCode::OK, payload.to_string(), Some("Unhandled"))
            }
        },
        "Event" => {
            tokio::spawn(async move {
                if let Err(failure) = function.invoke(payload).await {
                    tracing::error!(function = %function.logical_id, error = %failure, "asynchronous invocation failed");
                }
            });
            answer(StatusCode::ACCEPTED, String::new(), None)
        }
        "DryRun" => answer(StatusCode::NO_CONTENT, String::new(), None),
        other => error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("unknown InvocationType {other:?}"),
        ),
    }
}

fn answer(status: StatusCode, payload: String, function_error: Option<&'static str>) -> Response {
    let mut response = Response::new(Body::from(payload));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response.headers_mut().insert("x-amz-executed-version", HeaderValue::from_static("$LATEST"));
    if let Some(function_error) = function_error {
        response.headers_mut().insert("x-amz-function-error", HeaderValue::from_static(function_error));
    }
    response
}

/// A Lambda service error, shaped as the SDK parses them (REST-JSON: the type in a header).
fn error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    let mut response = Response::new(Body::from(json!({"Type": "User", "message": message}).to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    response
}
