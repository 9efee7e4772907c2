//! Twilio's status callbacks (`POST /v1/receipts/twilio`, form-encoded, no app credentials):
//! signed by Twilio with the account's auth token (`X-Twilio-Signature`) over the URL the SMS
//! dispatcher gave it, which names the notification and the delivery. A callback whose
//! signature does not verify, a `delivered` or `undelivered` one its delivery has recorded
//! already (a replay), or one for a delivery not sent through Twilio answers 403 and changes
//! nothing; one that moves the delivery records `sent`, `delivered`, or `failed` with the
//! carrier's error code.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::channel::Channel;
use notify::domain::lifecycle::Event;
use notify::domain::notification::{DeliveryFailure, DeliveryId, NotificationId};
use notify::error::FailureClass;
use notify::metrics::{self, DeliveryMetric};
use notify::ports::{DeliveryLog, FeedbackRecorded, Receipt};
use notify::provider::sms_routing::receipts_url;
use notify::provider::twilio::{SIGNATURE_HEADER, verify_callback};

use crate::Intake;
use crate::problem::ApiError;

/// The receipt a callback's `MessageStatus` is (`None`: a status on the way, recorded by none).
fn receipt_event(status: &str) -> Option<Event> {
    match status {
        "sent" => Some(Event::ReceiptSent),
        "delivered" => Some(Event::ReceiptDelivered),
        "undelivered" | "failed" => Some(Event::ReceiptUndelivered),
        _ => None,
    }
}

impl Intake {
    pub(crate) async fn twilio_receipt(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let forged = || ApiError::Refused("the X-Twilio-Signature does not verify for this URL and form".into());
        let Some(secret) = &self.twilio else {
            return Err(ApiError::NotFound("this stack does not send through Twilio".into()));
        };
        let signature =
            request.headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok()).ok_or_else(forged)?;
        let query = request.raw_query_string.as_deref().unwrap_or_default();
        // The URL the SMS function gave Twilio, which Twilio signed.
        let url = format!("{}?{query}", receipts_url(&self.link_base(request)));
        let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        if !verify_callback(secret, &url, &params, signature).await? {
            tracing::warn!(url, "a Twilio callback whose signature does not verify; refused");
            return Err(forged());
        }
        let field = |name: &str, from: &[(String, String)]| {
            from.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
        };
        let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let (Some(id), Some(delivery_id)) = (field("notification_id", &query), field("delivery_id", &query)) else {
            return Err(ApiError::Malformed("the callback URL names no notification_id and delivery_id".into()));
        };
        let (Some(sid), Some(status)) = (field("MessageSid", &params), field("MessageStatus", &params)) else {
            return Err(ApiError::Malformed("the callback has no MessageSid and MessageStatus".into()));
        };
        let Some(event) = receipt_event(&status) else { return Ok(no_content()) };
        let error = (event == Event::ReceiptUndelivered).then(|| DeliveryFailure {
            class: FailureClass::Permanent,
            code: field("ErrorCode", &params).unwrap_or_else(|| status.clone()),
            message: format!("Twilio reports the message {status}"),
            provider: Some("twilio".into()),
        });
        let receipt = Receipt { event, provider: "twilio".into(), provider_message_id: sid.clone(), error };
        let (id, delivery_id) = (NotificationId::from(id.as_str()), DeliveryId::from(delivery_id.as_str()));
        match self.notifications.record_receipt(&id, &delivery_id, Channel::Sms, &receipt).await? {
            FeedbackRecorded::Recorded => {
                match event {
                    Event::ReceiptDelivered => metrics::delivery(Channel::Sms, DeliveryMetric::Delivered),
                    Event::ReceiptUndelivered => metrics::delivery(Channel::Sms, DeliveryMetric::Failed),
                    _ => {}
                }
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, message_sid = %sid, status, "Twilio receipt recorded");
                Ok(no_content())
            }
            FeedbackRecorded::Missing => Err(ApiError::NotFound("no such delivery".into())),
            // `sent` is usually recorded first by the send's own answer: that receipt is news to
            // no one, not a replay. A final receipt seen twice is one.
            FeedbackRecorded::Unchanged(now) if now == event.transition().to && event != Event::ReceiptSent => {
                tracing::warn!(notification_id = %id, delivery_id = %delivery_id, message_sid = %sid, status, "a Twilio receipt already recorded (a replay); refused");
                Err(ApiError::Refused(format!("the delivery is {} already", now.as_str())))
            }
            // A receipt that came after a later one (Twilio does not keep their order).
            FeedbackRecorded::Unchanged(_) => Ok(no_content()),
            FeedbackRecorded::OtherProvider => {
                Err(ApiError::Refused("the delivery's latest attempt did not go through Twilio".into()))
            }
            FeedbackRecorded::NotYetSent => Err(ApiError::Refused("the delivery was never sent".into())),
        }
    }
}

fn no_content() -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = 204;
    response
}
