//! Open and click tracking routes, no app credentials: the tokens are sealed by this deployment
//! (see `notify::domain::tracking`). A token that is tampered with or foreign gets 404 and
//! records nothing; a sealed one always redirects (or shows the pixel, or answers 204 to the app
//! reporting a push open).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use notify::domain::tracking::{LinkTracker, Tracked};
use notify::ports::{DeliveryLog, Engagement};
use notify::store::stats::Counted;

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
    /// Records an engagement, best effort: a tracked link keeps working when its notification is
    /// no longer logged (nothing is recorded) or the write fails (logged).
    async fn engage(&self, tracked: &Tracked, engagement: Engagement) {
        let engaged = self
            .notifications
            .record_engagement(&tracked.notification_id, &tracked.delivery_id, tracked.channel, engagement)
            .await;
        match engaged {
            Ok(engaged) => {
                let counted = Counted { app_key: &tracked.app_key, template: &tracked.template };
                self.stats.count_engagement(counted, tracked.channel, engagement, engaged)
            }
            Err(error) => {
                tracing::warn!(notification_id = %tracked.notification_id, error = %error, ?engagement, "engagement not recorded")
            }
        }
    }

    /// `GET /t/c/{token}`: records the click and redirects to the link's original URL.
    pub(crate) async fn click(&self, request: &ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let token = path_parameter(request, "token")?;
        let tracked = self
            .link_keys
            .verified(|signer| LinkTracker::new(signer.clone()).click(token))
            .await?
            .ok_or_else(not_tracked)?;
        // Sealed targets are ASCII (percent-encoded when the link is sealed).
        let location = HeaderValue::try_from(tracked.url.as_deref().unwrap_or_default()).map_err(|_| not_tracked())?;
        self.engage(&tracked, Engagement::Click).await;
        let mut headers = HeaderMap::new();
        headers.insert("location", location);
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        Ok(response(302, headers, None))
    }

    /// `GET /t/o/{token}`: records the first open and answers with a transparent pixel.
    pub(crate) async fn open(&self, request: &ApiGatewayV2httpRequest) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let token = path_parameter(request, "token")?;
        let tracked = self
            .link_keys
            .verified(|signer| LinkTracker::new(signer.clone()).open(token))
            .await?
            .ok_or_else(not_tracked)?;
        self.engage(&tracked, Engagement::Open).await;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("image/gif"));
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        Ok(response(200, headers, Some(Body::Binary(PIXEL.to_vec()))))
    }

    /// `POST /t/p/{token}`: the app reports that its push was opened (the token is in the push's
    /// custom data); the first open is recorded, a repeat changes nothing.
    pub(crate) async fn push_open(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let token = path_parameter(request, "token")?;
        let tracked = self
            .link_keys
            .verified(|signer| LinkTracker::new(signer.clone()).push_open(token))
            .await?
            .ok_or_else(not_tracked)?;
        self.engage(&tracked, Engagement::Open).await;
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        Ok(response(204, headers, None))
    }
}
