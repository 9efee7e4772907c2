//! The local HTTP API: what API Gateway (HTTP API, payload format 2.0) does in front of the
//! functions. Requests are matched against the routes the template declares, turned into the
//! same event Lambda receives, and the function's answer is turned back into HTTP.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::StackError;
use crate::functions::LocalFunction;

/// API Gateway's payload limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

struct Route {
    route_key: String,
    function: Arc<LocalFunction>,
}

/// The template's HTTP routes, matched as API Gateway does (exact method, then `ANY`).
pub struct Routes {
    by_method: HashMap<String, matchit::Router<Route>>,
    account_id: String,
}

impl Routes {
    pub fn new(account_id: &str) -> Self {
        Self { by_method: HashMap::new(), account_id: account_id.to_string() }
    }

    pub fn add(&mut self, method: &str, path: &str, function: Arc<LocalFunction>) -> Result<(), StackError> {
        // SAM's greedy `{proxy+}` is matchit's catch-all `{*proxy}`.
        let pattern = path.replace("+}", "}").replacen("{proxy}", "{*proxy}", 1);
        let route = Route { route_key: format!("{method} {path}"), function };
        self.by_method
            .entry(method.to_string())
            .or_default()
            .insert(pattern, route)
            .map_err(|error| StackError::Template(format!("route {method} {path}: {error}")))
    }

    fn find<'a, 'p>(&'a self, method: &str, path: &'p str) -> Option<matchit::Match<'a, 'p, &'a Route>> {
        [method, "ANY"].iter().find_map(|candidate| self.by_method.get(*candidate)?.at(path).ok())
    }
}

pub async fn serve(listener: tokio::net::TcpListener, routes: Arc<Routes>) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(handle).with_state(routes);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn handle(
    State(routes): State<Arc<Routes>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let path = parts.uri.path().to_string();
    let Some(matched) = routes.find(parts.method.as_str(), &path) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let path_parameters: Map<String, Value> =
        matched.params.iter().map(|(name, value)| (name.to_string(), Value::String(value.to_string()))).collect();
    let route = matched.value;
    let event = event(&routes.account_id, &route.route_key, &parts, path_parameters, &body, peer);
    match route.function.invoke(event).await {
        Ok(output) => response(output),
        Err(error) => {
            tracing::error!(function = %route.function.logical_id, error = %error, "integration failed");
            gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// The API Gateway HTTP API payload 2.0 event for a request (also what the cold-start
/// benchmark hands the intake binary).
pub fn event(
    account_id: &str,
    route_key: &str,
    parts: &axum::http::request::Parts,
    path_parameters: Map<String, Value>,
    body: &[u8],
    peer: SocketAddr,
) -> Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        if name == "cookie" {
            cookies
                .extend(value.split(';').map(|cookie| cookie.trim().to_string()).filter(|cookie| !cookie.is_empty()));
        } else {
            headers.entry(name.as_str().to_string()).or_default().push(value);
        }
    }
    let headers: Map<String, Value> =
        headers.into_iter().map(|(name, values)| (name, Value::String(values.join(",")))).collect();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        query.entry(name.into_owned()).or_default().push(value.into_owned());
    }
    let query: Map<String, Value> =
        query.into_iter().map(|(name, values)| (name, Value::String(values.join(",")))).collect();
    let content_type = headers.get("content-type").and_then(Value::as_str).unwrap_or_default().to_string();
    let text = std::str::from_utf8(body).ok().filter(|_| is_text(&content_type));
    let (body, is_base64) = match text {
        _ if body.is_empty() => (Value::Null, false),
        Some(text) => (Value::String(text.to_string()), false),
        None => (Value::String(STANDARD.encode(body)), true),
    };
    let now = OffsetDateTime::now_utc();
    let host = headers.get("host").and_then(Value::as_str).unwrap_or("localhost").to_string();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": account_id,
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": format!("{:?}", parts.version),
                "sourceIp": peer.ip().to_string(),
                "userAgent": headers.get("user-agent").cloned().unwrap_or(Value::String(String::new())),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format(time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000")).unwrap_or_default(),
            "timeEpoch": now.unix_timestamp() * 1000 + i64::from(now.millisecond()),
        },
        "isBase64Encoded": is_base64,
    });
    if !body.is_null() {
        event["body"] = body;
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !path_parameters.is_empty() {
        event["pathParameters"] = Value::Object(path_parameters);
    }
    event
}

fn is_text(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media.is_empty()
        || media.starts_with("text/")
        || media.ends_with("+json")
        || media.ends_with("+xml")
        || matches!(
            media.as_str(),
            "application/json" | "application/xml" | "application/x-www-form-urlencoded" | "application/javascript"
        )
}

/// Turns the function's output into HTTP as API Gateway does; output without `statusCode` is
/// a 200 JSON answer.
fn response(output: Value) -> Response {
    if output.get("statusCode").is_none() {
        let mut response = Response::new(Body::from(output.to_string()));
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        return response;
    }
    let status =
        output.get("statusCode").and_then(Value::as_u64).and_then(|code| StatusCode::from_u16(code as u16).ok());
    let Some(status) = status else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let text = output.get("body").and_then(Value::as_str).unwrap_or_default();
    let body = if output.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false) {
        match STANDARD.decode(text) {
            Ok(bytes) => bytes,
            Err(_) => return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        }
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut add = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    };
    for (name, value) in output.get("headers").and_then(Value::as_object).into_iter().flatten() {
        add(name, value.as_str().unwrap_or_default());
    }
    for (name, values) in output.get("multiValueHeaders").and_then(Value::as_object).into_iter().flatten() {
        for value in values.as_array().into_iter().flatten() {
            add(name, value.as_str().unwrap_or_default());
        }
    }
    for cookie in output.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        add("set-cookie", cookie.as_str().unwrap_or_default());
    }
    response
}

/// API Gateway's own error answers: `{"message": "..."}`.
fn gateway_error(status: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(json!({"message": message}).to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}
