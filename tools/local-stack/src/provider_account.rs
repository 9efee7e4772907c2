//! The providers' side of the AWS account the local stack stands for, which the emulator does
//! not have: SES's sending quota, which `GetAccount` reports (SES v2 `SendQuota`), and the
//! rates SES and SNS hold an account to. Each channel's rate is a token bucket holding one
//! second of sends, refilled continuously: a short burst over the rate passes, a sustained one
//! is refused ("You can exceed this quota for short bursts, but not for sustained periods of
//! time", SES's sending quotas). A refused send gets the provider's own throttling answer, as
//! the API references spell it: SES v2 `429 TooManyRequestsException` "Maximum sending rate
//! exceeded."; SNS `Publish` `400 Throttling` "Rate exceeded" (SMS to a phone number, and
//! mobile push to an endpoint, which SNS counts against the account's Publish quota).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use notify::domain::channel::Channel;

/// The account's rates, in sends per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quotas {
    /// SES's MaxSendRate.
    pub email: f64,
    /// SNS's SMS rate (20 per second by default).
    pub sms: f64,
    /// SNS's Publish rate, which mobile push counts against (30,000/s in us-east-1, 300/s in
    /// the smallest regions).
    pub push: f64,
}

impl Default for Quotas {
    /// What a new production account starts with: SNS's published defaults, and the 14 emails
    /// per second SES has granted new production accounts (SES now says it varies; GetAccount
    /// tells).
    fn default() -> Self {
        Self { email: 14.0, sms: 20.0, push: 300.0 }
    }
}

impl Quotas {
    fn of(&self, channel: Channel) -> f64 {
        match channel {
            Channel::Email => self.email,
            Channel::Sms => self.sms,
            Channel::Push => self.push,
        }
    }
}

/// One channel's bucket: tokens left, as of when.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the account did with one channel's sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sends {
    pub accepted: u64,
    pub throttled: u64,
    /// Refused by an outage.
    pub refused: u64,
}

pub struct ProviderAccount {
    quotas: Quotas,
    buckets: [Mutex<Bucket>; 3],
    accepted: [AtomicU64; 3],
    throttled: [AtomicU64; 3],
    /// Channels whose provider is down: it refuses every send (an outage).
    down: [AtomicBool; 3],
    refused: [AtomicU64; 3],
}

fn index(channel: Channel) -> usize {
    match channel {
        Channel::Push => 0,
        Channel::Sms => 1,
        Channel::Email => 2,
    }
}

/// The provider send a request is, if it is one.
fn send_channel(method: &Method, path: &str, body: &[u8]) -> Option<Channel> {
    if method == Method::POST && path == "/v2/email/outbound-emails" {
        return Some(Channel::Email);
    }
    let form = std::str::from_utf8(body).ok()?;
    if !form.split('&').any(|pair| pair == "Action=Publish") {
        return None;
    }
    form.split('&').find_map(|pair| match pair.split_once('=')?.0 {
        "PhoneNumber" => Some(Channel::Sms),
        "TargetArn" => Some(Channel::Push),
        _ => None,
    })
}

impl ProviderAccount {
    pub fn new(quotas: Quotas) -> Self {
        let full = |channel| Mutex::new(Bucket { tokens: quotas.of(channel).max(1.0), at: Instant::now() });
        Self {
            quotas,
            buckets: [full(Channel::Push), full(Channel::Sms), full(Channel::Email)],
            accepted: Default::default(),
            throttled: Default::default(),
            down: Default::default(),
            refused: Default::default(),
        }
    }

    /// Takes `channel`'s provider down (every send refused with its `503 ServiceUnavailable`:
    /// refused, so known unsent) or brings it back.
    pub fn set_down(&self, channel: Channel, down: bool) {
        self.down[index(channel)].store(down, Ordering::SeqCst);
    }

    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// What the account did with `channel`'s sends so far.
    pub fn sends(&self, channel: Channel) -> Sends {
        Sends {
            accepted: self.accepted[index(channel)].load(Ordering::SeqCst),
            throttled: self.throttled[index(channel)].load(Ordering::SeqCst),
            refused: self.refused[index(channel)].load(Ordering::SeqCst),
        }
    }

    /// The account's own answer to a request, when it has one: `GetAccount`, or a send over its
    /// channel's rate. `None`: the emulator answers.
    pub fn answer(&self, method: &Method, path: &str, body: &[u8]) -> Option<Response> {
        if method == Method::GET && path == "/v2/email/account" {
            return Some(self.account());
        }
        let channel = send_channel(method, path, body)?;
        if self.down[index(channel)].load(Ordering::SeqCst) {
            self.refused[index(channel)].fetch_add(1, Ordering::SeqCst);
            return Some(unavailable(channel));
        }
        if self.take(channel) {
            self.accepted[index(channel)].fetch_add(1, Ordering::SeqCst);
            return None;
        }
        self.throttled[index(channel)].fetch_add(1, Ordering::SeqCst);
        Some(throttled(channel))
    }

    fn take(&self, channel: Channel) -> bool {
        let rate = self.quotas.of(channel);
        let mut bucket = self.buckets[index(channel)].lock().expect("bucket lock");
        let now = Instant::now();
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(rate.max(1.0));
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// SES v2 `GetAccount` (GET /v2/email/account), as its API reference shapes it.
    fn account(&self) -> Response {
        let sent = self.accepted[index(Channel::Email)].load(Ordering::SeqCst);
        let body = serde_json::json!({
            "DedicatedIpAutoWarmupEnabled": false,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": true,
            "SendingEnabled": true,
            "SendQuota": {
                "Max24HourSend": self.quotas.email * 86_400.0,
                "MaxSendRate": self.quotas.email,
                "SentLast24Hours": sent as f64,
            },
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
            .body(Body::from(body.to_string()))
            .expect("a static status and headers")
    }
}

/// The provider's answer to a send of `channel` over its rate.
pub fn throttled(channel: Channel) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = match channel {
        Channel::Email => Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "TooManyRequestsException")
            .header("x-amzn-requestid", request_id)
            .body(Body::from(r#"{"message":"Maximum sending rate exceeded."}"#)),
        Channel::Sms | Channel::Push => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "text/xml")
            .body(Body::from(format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>\
                 <Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ))),
    };
    response.expect("a static status and headers")
}

/// The provider's answer to a send while it is down: SNS's and SES's `503 ServiceUnavailable`.
fn unavailable(channel: Channel) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = match channel {
        Channel::Email => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "ServiceUnavailable")
            .header("x-amzn-requestid", request_id)
            .body(Body::from(r#"{"message":"Service Unavailable"}"#)),
        Channel::Sms | Channel::Push => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "text/xml")
            .body(Body::from(format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Receiver</Type>\
                 <Code>ServiceUnavailable</Code><Message>Service Unavailable</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            ))),
    };
    response.expect("a static status and headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms() -> (Method, &'static str, &'static [u8]) {
        (Method::POST, "/", b"Action=Publish&PhoneNumber=%2B12015550123&Message=hi&Version=2010-03-31")
    }

    #[test]
    fn sends_are_told_apart_by_channel() {
        let (method, path, body) = sms();
        assert_eq!(send_channel(&method, path, body), Some(Channel::Sms));
        let push = b"Action=Publish&TargetArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3Aendpoint%2FGCM%2Fa%2Fb&Message=x";
        assert_eq!(send_channel(&Method::POST, "/", push), Some(Channel::Push));
        assert_eq!(send_channel(&Method::POST, "/v2/email/outbound-emails", b"{}"), Some(Channel::Email));
        assert_eq!(send_channel(&Method::POST, "/", b"Action=CreatePlatformEndpoint&Token=t"), None);
    }

    #[test]
    fn a_seconds_burst_passes_and_the_rest_is_throttled_until_the_bucket_refills() {
        let account = ProviderAccount::new(Quotas { email: 5.0, sms: 3.0, push: 100.0 });
        let (method, path, body) = sms();
        let answers: Vec<bool> = (0..5).map(|_| account.answer(&method, path, body).is_none()).collect();
        assert_eq!(answers, [true, true, true, false, false]);
        assert_eq!(account.sends(Channel::Sms), Sends { accepted: 3, throttled: 2, refused: 0 });
        let refused = account.answer(&method, path, body).unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(account.answer(&method, path, body).is_none(), "a token back after a third of a second");
        assert_eq!(account.sends(Channel::Email), Sends::default(), "each channel has its own rate");
    }

    #[test]
    fn a_provider_that_is_down_refuses_every_send_until_it_is_back() {
        let account = ProviderAccount::new(Quotas::default());
        let (method, path, body) = sms();
        account.set_down(Channel::Sms, true);
        assert_eq!(account.answer(&method, path, body).unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        account.set_down(Channel::Sms, false);
        assert!(account.answer(&method, path, body).is_none());
        assert_eq!(account.sends(Channel::Sms), Sends { accepted: 1, throttled: 0, refused: 1 });
    }

    #[test]
    fn get_account_reports_the_email_quota() {
        let account = ProviderAccount::new(Quotas { email: 5.0, ..Quotas::default() });
        let answer = account.answer(&Method::GET, "/v2/email/account", b"").unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
