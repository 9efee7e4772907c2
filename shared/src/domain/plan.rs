//! Deciding what a notification turns into: for each channel asked for (or every channel),
//! either a rendered delivery or the reason it is skipped.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::channel::Channel;
use super::contact::EmailAddress;
use super::delivery::{EmailContent, OutboundContent, PushContent, SmsContent};
use super::notification::{SkipReason, SkippedChannel};
use super::template::{RenderError, Rendered, Template};
use super::user::UserProfile;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// (delivery id, content), in channel order.
    pub deliveries: Vec<(String, OutboundContent)>,
    pub skipped: Vec<SkippedChannel>,
}

impl Plan {
    /// The address the plan emails, if it has an email delivery.
    pub fn email_address(&self) -> Option<&EmailAddress> {
        self.deliveries.iter().find_map(|(_, content)| match content {
            OutboundContent::Email(email) => Some(&email.to),
            _ => None,
        })
    }

    /// Turns the planned deliveries of `channel` into a skip for `reason` (a check that needs
    /// I/O, made after planning: the email suppression list).
    pub fn skip(&mut self, channel: Channel, reason: SkipReason) {
        let before = self.deliveries.len();
        self.deliveries.retain(|(_, content)| content.channel() != channel);
        if self.deliveries.len() != before {
            self.skipped.push(SkippedChannel { channel, reason });
        }
    }
}

/// Plans the deliveries of one notification. Every missing parameter of every channel is
/// reported at once, so the caller can fix the request in one go.
pub fn plan(
    profile: &UserProfile,
    template: &Template,
    channels: Option<&[Channel]>,
    params: &Map<String, Value>,
) -> Result<Plan, RenderError> {
    let wanted: BTreeSet<Channel> =
        channels.map_or_else(|| Channel::ALL.into_iter().collect(), |list| list.iter().copied().collect());
    let locale = profile.locale.as_ref().map(|locale| locale.as_str());
    let content = template.content_for(locale);
    let mut plan = Plan { deliveries: Vec::new(), skipped: Vec::new() };
    let mut missing = BTreeSet::new();
    for channel in wanted {
        let skip = |reason| SkippedChannel { channel, reason };
        if !content.has(channel) {
            plan.skipped.push(skip(SkipReason::NoContent));
            continue;
        }
        if !profile.reachable(channel) {
            plan.skipped.push(skip(SkipReason::NoContact));
            continue;
        }
        if !profile.preferences.allows(channel) {
            plan.skipped.push(skip(SkipReason::OptedOut));
            continue;
        }
        match template.render(channel, locale, params) {
            Ok(rendered) => plan.deliveries.extend(outbound(profile, rendered)),
            Err(RenderError::MissingParams(names)) => missing.extend(names),
            Err(other) => return Err(other),
        }
    }
    if !missing.is_empty() {
        return Err(RenderError::MissingParams(missing.into_iter().collect()));
    }
    Ok(plan)
}

/// The deliveries of one rendered channel: one for SMS and email, one per active device for
/// push (ids `push-1`, `push-2`, … in device order).
fn outbound(profile: &UserProfile, rendered: Rendered) -> Vec<(String, OutboundContent)> {
    let contact = "checked reachable before rendering";
    match rendered {
        Rendered::Sms { body } => {
            vec![("sms".into(), OutboundContent::Sms(SmsContent { to: profile.phone.clone().expect(contact), body }))]
        }
        Rendered::Email { subject, html, text } => vec![(
            "email".into(),
            OutboundContent::Email(EmailContent { to: profile.email.clone().expect(contact), subject, html, text }),
        )],
        Rendered::Push { title, body, sound, badge } => profile
            .active_devices()
            .enumerate()
            .map(|(index, device)| {
                let content = PushContent {
                    platform: device.platform,
                    token: device.token.clone(),
                    title: title.clone(),
                    body: body.clone(),
                    sound: sound.clone(),
                    badge,
                    // Sealed by the intake, which knows the notification's id.
                    open_token: None,
                };
                (format!("push-{}", index + 1), OutboundContent::Push(content))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::contact::{EmailAddress, PhoneNumber};
    use crate::domain::delivery::Platform;
    use crate::domain::template::{EmailSource, LocalizedContent, PushSource, SmsSource, TemplateName};
    use crate::domain::user::{Device, Preferences, UserId};

    fn profile() -> UserProfile {
        UserProfile {
            user_id: UserId::parse("u-1").unwrap(),
            email: None,
            phone: Some(PhoneNumber::parse("+12015550123").unwrap()),
            locale: None,
            timezone: None,
            preferences: Preferences::default(),
            preferences_updated_at: None,
            devices: BTreeMap::new(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn template() -> Template {
        let content = LocalizedContent {
            sms: Some(SmsSource { body: "Code {{ code }}".into() }),
            email: Some(EmailSource {
                subject: "{{ subject }}".into(),
                html: "{{ code }}".into(),
                text: "{{ code }}".into(),
            }),
            push: None,
        };
        Template {
            name: TemplateName::parse("otp").unwrap(),
            default_locale: "en".into(),
            transactional: true,
            tracking: false,
            quiet_hours: false,
            locales: BTreeMap::from([("en".into(), content)]),
            updated_at: "2026-01-01T00:00:00Z".into(),
            compiled: Default::default(),
        }
    }

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn reachable_channels_are_rendered_and_the_rest_skipped_with_a_reason() {
        let plan = plan(&profile(), &template(), None, &params(json!({"code": "123456"}))).unwrap();
        assert_eq!(plan.deliveries.len(), 1);
        assert_eq!(plan.deliveries[0].0, "sms");
        assert_eq!(plan.deliveries[0].1.target(), "+12015550123");
        assert_eq!(
            plan.skipped,
            vec![
                SkippedChannel { channel: Channel::Push, reason: SkipReason::NoContent },
                SkippedChannel { channel: Channel::Email, reason: SkipReason::NoContact },
            ]
        );
    }

    #[test]
    fn push_goes_to_every_active_device() {
        let mut with_devices = profile();
        let device = |platform, token: &str, active| Device {
            platform,
            token: token.into(),
            active,
            created_at: "t".into(),
            endpoint_arn: None,
        };
        with_devices.devices.insert("a".into(), device(Platform::Ios, "ios-token", true));
        with_devices.devices.insert("b".into(), device(Platform::Android, "android-token", true));
        with_devices.devices.insert("c".into(), device(Platform::Android, "dead-token", false));
        let mut template = template();
        template.locales.get_mut("en").unwrap().push =
            Some(PushSource { title: "T {{ code }}".into(), body: "B".into(), sound: None, badge: None });
        let plan = plan(&with_devices, &template, Some(&[Channel::Push]), &params(json!({"code": "1"}))).unwrap();
        let ids: Vec<&str> = plan.deliveries.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["push-1", "push-2"]);
        let OutboundContent::Push(first) = &plan.deliveries[0].1 else { panic!("push expected") };
        assert_eq!((first.platform, first.token.as_str(), first.title.as_str()), (Platform::Ios, "ios-token", "T 1"));
    }

    #[test]
    fn opted_out_channels_are_skipped() {
        let mut opted_out = profile();
        opted_out.preferences.sms = false;
        let plan = plan(&opted_out, &template(), Some(&[Channel::Sms]), &params(json!({"code": "1"}))).unwrap();
        assert!(plan.deliveries.is_empty());
        assert_eq!(plan.skipped, vec![SkippedChannel { channel: Channel::Sms, reason: SkipReason::OptedOut }]);
    }

    #[test]
    fn missing_parameters_of_every_channel_are_reported_together() {
        let mut both = profile();
        both.email = Some(EmailAddress::parse("ada@example.com").unwrap());
        let error = plan(&both, &template(), None, &params(json!({}))).unwrap_err();
        assert_eq!(error, RenderError::MissingParams(vec!["code".into(), "subject".into()]));
    }

    #[test]
    fn a_suppressed_address_skips_email_only() {
        let mut with_email = profile();
        with_email.email = Some(EmailAddress::parse("ada@example.com").unwrap());
        let params = params(json!({"code": "1", "subject": "s"}));
        let mut plan = plan(&with_email, &template(), None, &params).unwrap();
        assert_eq!(plan.email_address().map(|a| a.as_str()), Some("ada@example.com"));
        plan.skip(Channel::Email, SkipReason::Suppressed);
        let skipped: Vec<(Channel, SkipReason)> = plan.skipped.iter().map(|s| (s.channel, s.reason)).collect();
        assert!(skipped.contains(&(Channel::Email, SkipReason::Suppressed)), "{skipped:?}");
        assert!(plan.deliveries.iter().all(|(_, content)| content.channel() != Channel::Email));
        assert!(!plan.deliveries.is_empty(), "other channels are still sent");
    }
}
