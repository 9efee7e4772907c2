//! Open and click tracking routes, no app credentials: the tokens are sealed by this deployment
//! (see `notify::domain::tracking`). A token that is tampered with, foreign, or names a
//! notification no longer logged gets 404 and records nothing.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use notify::domain::tracking::Tracked;
use notify::store::notifications::{Engaged, Engagement};

use crate::Intake;
use crate::problem::ApiError;
use crate::request::path_parameter;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

fn not_tracked() -> ApiError {
    ApiError::NotFound("no such tracking link".into())
}

fn response(status: i64, headers: HeaderMap, body: Option<Body>) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = body;
    response
}

impl Intake {
    async fn engage(&self, tracked: &Tracked, engagement: Engagement) -> Result<Engaged, ApiError> {
        let engaged = self
            .notifications
            .record_engagement(&tracked.notification_id, &tracked.delivery_id, tracked.channel, engagement)
            .await?;
        if engaged == Engaged::Missing {
            return Err(not_tracked());
        }
        self.stats.count_engagement(&tracked.template, tracked.channel, engagement, engaged);
        Ok(engaged)
    }

    /// `GET /t/c/{token}`: records the click and redirects to the link's original URL.
    pub(crate) async fn click(&self, request: &ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let tracked = self.tracker.click(path_parameter(request, "token")?).ok_or_else(not_tracked)?;
        let url = tracked.url.clone().unwrap_or_default();
        let location = HeaderValue::try_from(url.as_str()).map_err(|_| not_tracked())?;
        self.engage(&tracked, Engagement::Click).await?;
        let mut headers = HeaderMap::new();
        headers.insert("location", location);
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        Ok(response(302, headers, None))
    }

    /// `GET /t/o/{token}`: records the first open and answers with a transparent pixel.
    pub(crate) async fn open(&self, request: &ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let tracked = self.tracker.open(path_parameter(request, "token")?).ok_or_else(not_tracked)?;
        self.engage(&tracked, Engagement::Open).await?;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("image/gif"));
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        Ok(response(200, headers, Some(Body::Binary(PIXEL.to_vec()))))
    }
}
