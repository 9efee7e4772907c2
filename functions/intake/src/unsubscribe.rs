//! One-click unsubscribe (RFC 8058), no app credentials: the link in every email carries a
//! signed token. `POST` (what mail clients send for one-click) opts the user out of the channel;
//! `GET` (a person clicking the link) shows a confirmation form, because link scanners follow
//! GET links and must not unsubscribe anyone.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use notify::domain::channel::Channel;
use notify::domain::user::{PreferencesPatch, UserId};

use crate::Intake;
use crate::problem::ApiError;
use crate::request::path_parameter;

fn html(status: i64, body: String) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = Some(Body::Text(body));
    response
}

impl Intake {
    /// The link's token, user and channel, if this deployment signed it.
    async fn verified_link<'a>(
        &self,
        request: &'a ApiGatewayV2httpRequest,
    ) -> Result<(&'a str, UserId, Channel), ApiError> {
        let token = path_parameter(request, "token")?;
        let (user_id, channel) = self
            .link_keys
            .verified(|signer| signer.verify(token))
            .await?
            .ok_or_else(|| ApiError::NotFound("no such unsubscribe link".into()))?;
        Ok((token, user_id, channel))
    }

    pub(crate) async fn unsubscribe_form(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (token, _, _) = self.verified_link(request).await?;
        Ok(html(
            200,
            format!(
                "<!doctype html><title>Unsubscribe</title><form method=\"post\" action=\"/v1/unsubscribe/{token}\">\
                 <p>Stop receiving these emails?</p><button type=\"submit\">Unsubscribe</button></form>"
            ),
        ))
    }

    pub(crate) async fn unsubscribe(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (_, user_id, channel) = self.verified_link(request).await?;
        let patch = PreferencesPatch::opt_out(channel);
        // A user deleted since the email was sent is as unsubscribed as can be: same answer.
        self.users.set_preferences(&user_id, patch, &notify::time::now_rfc3339()).await?;
        self.user_cache.invalidate(&user_id);
        tracing::info!(user_id = %user_id, channel = %channel, "unsubscribed");
        Ok(html(
            200,
            "<!doctype html><title>Unsubscribed</title><p>You will not receive these emails any more.</p>".into(),
        ))
    }
}
