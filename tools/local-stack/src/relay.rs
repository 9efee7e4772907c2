//! Passing an AWS request on to the endpoint behind a local proxy (the IAM authorizer, and the
//! tests' fault proxy) and its answer back, unchanged but for the hop-by-hop headers.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

/// Requests larger than this are refused by the proxies (AWS's own limits are far lower).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A request to `upstream` with the given parts (the HTTP client sets `host` and the length;
/// the emulator does not check signatures, so the changed host does not matter).
pub fn upstream_request(
    http: &reqwest::Client,
    upstream: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let mut request = http.request(method.clone(), format!("{upstream}{path_and_query}")).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    request
}

/// An upstream answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Sends `request` and reads its answer; an answer that does not arrive (the emulator now
    /// and then closes a kept-alive connection just as it is reused) is a 502, which the SDK
    /// retries as it would a dropped connection.
    pub async fn fetch(request: reqwest::RequestBuilder) -> Result<Self, Response> {
        let answer = request.send().await.map_err(|error| bad_gateway(&error))?;
        let (status, headers) = (answer.status(), answer.headers().clone());
        let body = answer.bytes().await.map_err(|error| bad_gateway(&error))?;
        Ok(Self { status, headers, body })
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::builder().status(self.status.as_u16());
        for (name, value) in &self.headers {
            if name != "content-length" && name != "transfer-encoding" {
                response = response.header(name.as_str(), value.as_bytes());
            }
        }
        response.body(Body::from(self.body)).expect("the upstream's status and headers are valid")
    }
}

fn bad_gateway(error: &reqwest::Error) -> Response {
    tracing::warn!(error = %error, "no answer from the AWS endpoint; answered 502");
    Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::from("no answer from the AWS endpoint")).unwrap()
}
