//! Twilio Programmable Messaging: Create Message over its REST API
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP Basic with the
//! account SID and auth token), its answers classified, and the signature Twilio puts on the
//! status callbacks it sends back (`X-Twilio-Signature`). The credentials live in a Secrets
//! Manager secret ([`TwilioSecret`]).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use sha1::Sha1;

use crate::domain::delivery::{DeliveryMessage, SmsContent};
use crate::error::{DependencyError, FailureClass};
use crate::secrets::{RotatingSecret, Versions};

/// The header Twilio signs its requests with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// The signature of a request to `url` (as Twilio called it, query string included) with the
/// form `params`: the base64 HMAC-SHA1, keyed with the account's auth token, of the URL followed
/// by each parameter's name and value, sorted by name (then value, for a repeated name).
pub fn signature<'a>(auth_token: &str, url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `signature` is the request's, compared in constant time.
pub fn verify<'a>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    signature: &str,
) -> bool {
    let Ok(given) = STANDARD.decode(signature) else { return false };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

fn mac<'a>(auth_token: &str, url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Hmac<Sha1> {
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_unstable();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Twilio's errors that say it does not serve the destination (another provider may): 21408
/// "Permission to send an SMS has not been enabled for the region indicated by the 'To'
/// number", 21612 "The 'To' phone number is not currently reachable using the 'From' phone
/// number via SMS".
const UNSERVED: [u32; 2] = [21408, 21612];

/// Twilio's errors about the recipient or the text, which no retry or provider can fix: 21211
/// invalid `To`, 21610 the recipient replied STOP, 21614 not a mobile number, 21604 `To`
/// missing, 21602 `Body` missing, 21617 `Body` over 1,600 characters.
const PERMANENT: [u32; 6] = [21211, 21610, 21614, 21604, 21602, 21617];

/// Twilio's "Authenticate" error (401): the credentials are not (or no longer) the account's.
const AUTHENTICATE: &str = "20003";

/// How an answer of Twilio's is handled, from its HTTP status and Twilio error code.
fn class_of(status: u16, code: Option<u32>) -> FailureClass {
    match (status, code) {
        (_, Some(code)) if UNSERVED.contains(&code) => FailureClass::Unserved,
        (_, Some(code)) if PERMANENT.contains(&code) => FailureClass::Permanent,
        (429, _) | (_, Some(20429)) => FailureClass::Throttled,
        // The credentials or the account: the deployment's to fix.
        (401 | 403 | 404, _) => FailureClass::AccessDenied,
        // Refused before it was taken in.
        (503, _) => FailureClass::Transient,
        // An error on Twilio's side while handling it: it may have been created.
        (500..=599, _) => FailureClass::Ambiguous,
        (400..=499, _) => FailureClass::Permanent,
        _ => FailureClass::Ambiguous,
    }
}

/// The account's credentials, as the secret holds them (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: String,
}

/// The Twilio credentials in Secrets Manager (`TWILIO_SECRET_ARN`), rotating: put the new token
/// as the secret's current version once Twilio issued it (its secondary token, promoted), and
/// sends and callbacks signed with either keep working.
pub type TwilioSecret = RotatingSecret<TwilioCredentials>;

/// The secret named `secret_arn`, not yet read.
pub fn twilio_secret(client: aws_sdk_secretsmanager::Client, secret_arn: String) -> TwilioSecret {
    RotatingSecret::new(client, secret_arn, |version| {
        serde_json::from_str(&version.value)
            .map_err(|_| r#"it must hold {"account_sid": "AC…", "auth_token": "…"}"#.to_string())
    })
}

/// Whether a callback to `url` with the form `params` carries `signature` under the account's
/// current or previous token (the secret read again once, at most once a minute, when neither
/// matches: a rotation newer than this instance's read).
pub async fn verify_callback(
    secret: &TwilioSecret,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> Result<bool, DependencyError> {
    let signed_by = |credentials: &TwilioCredentials| {
        let params = params.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        verify(&credentials.auth_token, url, params, signature)
    };
    let signed = |versions: &Versions<TwilioCredentials>| {
        signed_by(&versions.current) || versions.previous.as_ref().is_some_and(signed_by)
    };
    if signed(&*secret.versions().await?) {
        return Ok(true);
    }
    match secret.reread_after_failure().await {
        Ok(fresh) => Ok(fresh.is_some_and(|fresh| signed(&fresh))),
        Err(error) => {
            tracing::warn!(error = %error, "the Twilio credentials could not be read again; those in hand are kept");
            Ok(false)
        }
    }
}

/// Sends SMS through Twilio.
#[derive(Clone)]
pub struct TwilioSms {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `https://api.twilio.com`, or the local stack's Twilio.
    api_url: String,
    /// A Twilio number (E.164) or a Messaging Service SID (`MG…`).
    sender: String,
    /// Where Twilio posts the message's status callbacks (the stack's receipts route).
    callback_url: String,
    secret: TwilioSecret,
    /// The whole exchange's limit: past it, whether Twilio took the message is unknown.
    timeout: Duration,
}

impl TwilioSms {
    /// Fails when the system has no root certificates (HTTPS to Twilio could not work).
    pub fn new(api_url: String, sender: String, callback_url: String, secret: TwilioSecret) -> Result<Self, String> {
        // The system's roots: Twilio's certificates come from a public CA it may change.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|error| format!("no root certificates to reach Twilio with: {error}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self { http, api_url, sender, callback_url, secret, timeout: Duration::from_secs(10) })
    }

    pub fn secret(&self) -> &TwilioSecret {
        &self.secret
    }

    /// Sends `message`; the credentials are read again once if Twilio refuses them (a rotation).
    /// A failure to read them is a configuration error, never the message's: it is retried (and
    /// is never ambiguous: nothing reached Twilio).
    pub async fn send(&self, message: &DeliveryMessage<SmsContent>) -> Result<String, DependencyError> {
        let unreadable = |error: DependencyError| DependencyError {
            class: if error.class == FailureClass::Permanent {
                FailureClass::AccessDenied
            } else {
                FailureClass::Transient
            },
            ..error
        };
        let credentials = self.secret.versions().await.map_err(unreadable)?.current.clone();
        match self.create(&credentials, message).await {
            Err(error) if error.code == AUTHENTICATE => match self.secret.reread_after_failure().await {
                Ok(Some(fresh)) => self.create(&fresh.current, message).await,
                Ok(None) => Err(error),
                Err(unread) => {
                    tracing::warn!(error = %unread, "the Twilio credentials could not be read again");
                    Err(error)
                }
            },
            sent => sent,
        }
    }

    async fn create(
        &self,
        credentials: &TwilioCredentials,
        message: &DeliveryMessage<SmsContent>,
    ) -> Result<String, DependencyError> {
        let sender = if self.sender.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let callback = format!(
            "{}?notification_id={}&delivery_id={}",
            self.callback_url, message.notification_id, message.delivery_id
        );
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", message.content.to.as_str())
            .append_pair(sender, &self.sender)
            .append_pair("Body", &message.content.body)
            .append_pair("StatusCallback", &callback)
            .finish();
        let basic = STANDARD.encode(format!("{}:{}", credentials.account_sid, credentials.auth_token));
        let request = http::Request::post(format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_url.trim_end_matches('/'),
            credentials.account_sid
        ))
        .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .map_err(|error| failure(FailureClass::Permanent, "Construction", error.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|error| {
                // Not connected: nothing was sent. Anything later: it may have been.
                let class = if error.is_connect() { FailureClass::Transient } else { FailureClass::Ambiguous };
                failure(class, "Dispatch", crate::aws::error_chain(&error))
            })?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| failure(FailureClass::Ambiguous, "Response", error.to_string()))?
                .to_bytes();
            Ok::<_, DependencyError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange).await.map_err(|_| {
            failure(FailureClass::Ambiguous, "Timeout", format!("no answer within {:?}", self.timeout))
        })??;
        if (200..300).contains(&status) {
            #[derive(Deserialize)]
            struct Created {
                sid: String,
            }
            return serde_json::from_slice::<Created>(&body)
                .map(|created| created.sid)
                .map_err(|error| failure(FailureClass::Ambiguous, "Response", format!("unreadable answer: {error}")));
        }
        #[derive(Deserialize)]
        struct Refused {
            code: Option<u32>,
            message: Option<String>,
        }
        let refused = serde_json::from_slice::<Refused>(&body).ok();
        let code = refused.as_ref().and_then(|refused| refused.code);
        let message = refused.and_then(|refused| refused.message).unwrap_or_else(|| format!("HTTP {status}"));
        let error = failure(
            class_of(status, code),
            &code.map_or_else(|| format!("HTTP{status}"), |code| code.to_string()),
            message,
        );
        if error.class == FailureClass::AccessDenied {
            tracing::error!(code = %error.code, error = %error.message, "Twilio refused the account's credentials (RUNBOOK.md#provider-down)");
        }
        Err(error)
    }
}

fn failure(class: FailureClass, code: &str, message: String) -> DependencyError {
    DependencyError { class, service: "twilio", operation: "CreateMessage", code: code.to_string(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's webhook security guide.
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn twilios_answers_are_classified_by_what_they_say_of_the_message() {
        assert_eq!(class_of(400, Some(21408)), FailureClass::Unserved, "region not enabled");
        assert_eq!(class_of(400, Some(21612)), FailureClass::Unserved, "not reachable from this sender");
        for code in [21211, 21610, 21614] {
            assert_eq!(class_of(400, Some(code)), FailureClass::Permanent, "{code}");
        }
        assert_eq!(class_of(429, Some(20429)), FailureClass::Throttled);
        assert_eq!(class_of(401, Some(20003)), FailureClass::AccessDenied);
        assert_eq!(class_of(503, Some(20503)), FailureClass::Transient, "refused before it was taken in");
        assert_eq!(class_of(500, Some(20500)), FailureClass::Ambiguous, "it may have been created");
        assert_eq!(class_of(400, Some(21999)), FailureClass::Permanent, "another request error");
    }

    #[test]
    fn signs_as_twilios_guide_does() {
        let mut shuffled = PARAMS;
        shuffled.reverse();
        assert_eq!(signature("12345", URL, shuffled), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify("12345", URL, PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    }

    #[test]
    fn a_changed_parameter_url_or_token_or_a_malformed_signature_does_not_verify() {
        let good = signature("12345", URL, PARAMS);
        let mut changed = PARAMS;
        changed[2].1 = "1235";
        assert!(!verify("12345", URL, changed, &good));
        assert!(!verify("12345", "https://mycompany.com/myapp.php?foo=1", PARAMS, &good));
        assert!(!verify("54321", URL, PARAMS, &good));
        assert!(!verify("12345", URL, PARAMS, "not base64!"));
        assert!(!verify("12345", URL, PARAMS, ""));
    }
}
