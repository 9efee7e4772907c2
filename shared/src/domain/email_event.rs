//! SES event publishing records (the configuration set's SNS destination, delivered raw to the
//! email events queue): what happened to a sent email, and which delivery it was. Every email
//! is sent with the tags `notification_id` and `delivery_id`, which SES copies into each event.

use std::collections::HashMap;

use super::notification::{DeliveryId, NotificationId};

use serde::Deserialize;

/// The record as SES publishes it (only the fields we use).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesEvent {
    /// `eventType` for event publishing; identity notifications call it `notificationType`.
    #[serde(alias = "notificationType")]
    pub event_type: String,
    pub mail: SesMail,
    #[serde(default)]
    pub bounce: Option<SesBounce>,
    #[serde(default)]
    pub complaint: Option<SesComplaint>,
    #[serde(default)]
    pub reject: Option<SesReject>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesMail {
    pub message_id: String,
    #[serde(default)]
    pub tags: HashMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesBounce {
    /// `Permanent` (hard), `Transient` (soft) or `Undetermined`.
    pub bounce_type: String,
    #[serde(default)]
    pub bounce_sub_type: String,
    #[serde(default)]
    pub bounced_recipients: Vec<SesRecipient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesComplaint {
    #[serde(default)]
    pub complained_recipients: Vec<SesRecipient>,
    #[serde(default)]
    pub complaint_feedback_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesRecipient {
    pub email_address: String,
    #[serde(default)]
    pub diagnostic_code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SesReject {
    #[serde(default)]
    pub reason: String,
}

/// What an event means for the delivery it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    Delivered,
    /// A hard bounce: the addresses go on the suppression list.
    Bounced {
        addresses: Vec<String>,
        detail: String,
    },
    /// A complaint: the addresses go on the suppression list.
    Complained {
        addresses: Vec<String>,
        detail: String,
    },
    /// A soft bounce (mailbox full, …): recorded, the address stays usable.
    SoftBounced {
        detail: String,
    },
    Rejected {
        reason: String,
    },
    /// An event type we do not act on (`Send`, `DeliveryDelay`; `Open` and `Click` are not
    /// published: opens and clicks come from our own tracking links).
    Ignored(String),
}

impl SesEvent {
    /// The delivery the event is about: (notification id, delivery id), from the send's tags.
    pub fn delivery(&self) -> Option<(NotificationId, DeliveryId)> {
        Some((self.tag("notification_id")?.into(), self.tag("delivery_id")?.into()))
    }

    fn tag(&self, name: &str) -> Option<&str> {
        self.mail.tags.get(name).and_then(|values| values.first()).map(String::as_str)
    }

    /// The template the email was rendered from (the `template` tag).
    pub fn template(&self) -> &str {
        self.tag("template").unwrap_or("unknown")
    }

    /// The app that sent it (the `app` tag; none on emails sent before the tag was added).
    pub fn app_key(&self) -> &str {
        self.tag("app").unwrap_or_default()
    }

    pub fn feedback(&self) -> Feedback {
        let recipients = |list: &[SesRecipient]| list.iter().map(|r| r.email_address.to_ascii_lowercase()).collect();
        match (self.event_type.as_str(), &self.bounce, &self.complaint) {
            ("Delivery", _, _) => Feedback::Delivered,
            ("Bounce", Some(bounce), _) => {
                let diagnostic = bounce.bounced_recipients.iter().find_map(|r| r.diagnostic_code.clone());
                let detail = match diagnostic {
                    Some(code) => format!("{} {}: {code}", bounce.bounce_type, bounce.bounce_sub_type),
                    None => format!("{} {}", bounce.bounce_type, bounce.bounce_sub_type),
                };
                if bounce.bounce_type == "Permanent" {
                    Feedback::Bounced { addresses: recipients(&bounce.bounced_recipients), detail }
                } else {
                    Feedback::SoftBounced { detail }
                }
            }
            ("Complaint", _, Some(complaint)) => Feedback::Complained {
                addresses: recipients(&complaint.complained_recipients),
                detail: complaint.complaint_feedback_type.clone().unwrap_or_else(|| "complaint".into()),
            },
            ("Reject", _, _) => {
                Feedback::Rejected { reason: self.reject.as_ref().map(|r| r.reason.clone()).unwrap_or_default() }
            }
            (other, _, _) => Feedback::Ignored(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> SesEvent {
        serde_json::from_str(json).unwrap()
    }

    const MAIL: &str = r#""mail": {"timestamp": "2026-11-22T10:00:00.000Z", "source": "n@example.com", "messageId": "0100-abc", "destination": ["Ada@Example.com"], "tags": {"ses:configuration-set": ["cs"], "notification_id": ["n-1"], "delivery_id": ["email"], "template": ["welcome"]}}"#;

    #[test]
    fn a_hard_bounce_names_the_addresses_to_suppress() {
        let bounce = event(&format!(
            r#"{{"eventType": "Bounce", {MAIL}, "bounce": {{"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [{{"emailAddress": "Ada@Example.com", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}}], "timestamp": "2026-11-22T10:00:01.000Z", "feedbackId": "f"}}}}"#
        ));
        assert_eq!((bounce.delivery(), bounce.template()), (Some(("n-1".into(), "email".into())), "welcome"));
        assert_eq!(
            bounce.feedback(),
            Feedback::Bounced {
                addresses: vec!["ada@example.com".into()],
                detail: "Permanent General: smtp; 550 5.1.1 user unknown".into()
            }
        );
    }

    #[test]
    fn soft_bounces_complaints_and_deliveries_are_told_apart() {
        let soft = format!(
            r#"{{"eventType": "Bounce", {MAIL}, "bounce": {{"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{{"emailAddress": "ada@example.com"}}]}}}}"#
        );
        assert_eq!(event(&soft).feedback(), Feedback::SoftBounced { detail: "Transient MailboxFull".into() });
        let complaint = format!(
            r#"{{"eventType": "Complaint", {MAIL}, "complaint": {{"complainedRecipients": [{{"emailAddress": "ada@example.com"}}], "complaintFeedbackType": "abuse"}}}}"#
        );
        assert!(
            matches!(event(&complaint).feedback(), Feedback::Complained { addresses, .. } if addresses == ["ada@example.com"])
        );
        let delivery =
            format!(r#"{{"eventType": "Delivery", {MAIL}, "delivery": {{"recipients": ["ada@example.com"]}}}}"#);
        assert_eq!(event(&delivery).feedback(), Feedback::Delivered);
        let notification = format!(r#"{{"notificationType": "Delivery", {MAIL}}}"#);
        assert_eq!(event(&notification).feedback(), Feedback::Delivered);
        let send = format!(r#"{{"eventType": "Send", {MAIL}, "send": {{}}}}"#);
        assert_eq!(event(&send).feedback(), Feedback::Ignored("Send".into()));
    }

    #[test]
    fn an_event_without_our_tags_names_no_delivery() {
        let untagged = r#"{"eventType": "Delivery", "mail": {"messageId": "m"}}"#;
        assert_eq!(event(untagged).delivery(), None);
    }
}
