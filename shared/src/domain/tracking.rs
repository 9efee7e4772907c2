//! Open and click tracking for templates that opt in (`"tracking": true`). Each link of a
//! rendered email (html and text) becomes `<api>/t/c/<token>` and the html gets an open pixel
//! `<api>/t/o/<token>`. A token is sealed (HMAC) over the notification, delivery, channel,
//! template and, for a click, the original URL: it cannot be altered, so only URLs that were in
//! the rendered message can be redirect targets (no open redirect).

use linkify::{LinkFinder, LinkKind};
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::delivery::EmailContent;
use super::notification::{DeliveryId, NotificationId};
use super::unsubscribe::LinkSigner;

const CLICK: &str = "track-click";
const OPEN: &str = "track-open";
const PUSH_OPEN: &str = "track-push-open";

/// What a tracking token refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The app that sent it (whose stats count it); empty in tokens sealed before it was added.
    #[serde(rename = "a", default)]
    pub app_key: String,
    #[serde(rename = "n")]
    pub notification_id: NotificationId,
    #[serde(rename = "d")]
    pub delivery_id: DeliveryId,
    #[serde(rename = "c")]
    pub channel: Channel,
    #[serde(rename = "t")]
    pub template: String,
    /// The original URL (click tokens only).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Clone)]
pub struct LinkTracker {
    signer: LinkSigner,
}

impl LinkTracker {
    pub fn new(signer: LinkSigner) -> Self {
        Self { signer }
    }

    /// The email with every http(s) link rewritten to `base_url` (the API's public URL) and an
    /// open pixel at the end of the html. In the html only `href` values are links (images and
    /// other URLs stay as they are); in the text, every URL is.
    pub fn track_email(&self, email: EmailContent, delivery: &Tracked, base_url: &str) -> EmailContent {
        let base_url = base_url.trim_end_matches('/');
        let pixel = format!(
            r#"<img src="{base_url}/t/o/{}" width="1" height="1" alt="" style="display:none">"#,
            self.signer.seal(OPEN, &serde_json::to_vec(delivery).expect("serializes"))
        );
        let mut html = self.rewrite_hrefs(&email.html, delivery, base_url);
        match html.rfind("</body>") {
            Some(end) => html.insert_str(end, &pixel),
            None => html.push_str(&pixel),
        }
        EmailContent { html, text: self.rewrite_text(&email.text, delivery, base_url), ..email }
    }

    /// The tracking link for `url`; a non-ASCII URL is percent-encoded, as a redirect needs.
    fn click_link(&self, url: &str, delivery: &Tracked, base_url: &str) -> String {
        let url = percent_encoding::utf8_percent_encode(url, percent_encoding::CONTROLS).to_string();
        let tracked = Tracked { url: Some(url), ..delivery.clone() };
        format!("{base_url}/t/c/{}", self.signer.seal(CLICK, &serde_json::to_vec(&tracked).expect("serializes")))
    }

    fn rewrite_hrefs(&self, html: &str, delivery: &Tracked, base_url: &str) -> String {
        // ASCII lower-casing keeps every byte offset.
        let lower = html.to_ascii_lowercase();
        let mut rewritten = String::with_capacity(html.len());
        let (mut last, mut from) = (0, 0);
        while let Some(found) = lower[from..].find("href=") {
            let start = from + found + "href=".len();
            from = start;
            let Some(quote) = html[start..].chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
            let value = start + 1;
            let Some(length) = html[value..].find(quote) else { break };
            let url = unescape_html(&html[value..value + length]);
            if (url.starts_with("https://") || url.starts_with("http://")) && !is_own_page(&url, base_url) {
                rewritten.push_str(&html[last..value]);
                rewritten.push_str(&self.click_link(&url, delivery, base_url));
                last = value + length;
            }
            from = value + length;
        }
        rewritten.push_str(&html[last..]);
        rewritten
    }

    fn rewrite_text(&self, text: &str, delivery: &Tracked, base_url: &str) -> String {
        let mut finder = LinkFinder::new();
        finder.kinds(&[LinkKind::Url]);
        let mut rewritten = String::with_capacity(text.len());
        let mut last = 0;
        let links = finder.links(text).filter(|link| link.as_str().starts_with("http"));
        for link in links.filter(|link| !is_own_page(link.as_str(), base_url)) {
            rewritten.push_str(&text[last..link.start()]);
            rewritten.push_str(&self.click_link(link.as_str(), delivery, base_url));
            last = link.end();
        }
        rewritten.push_str(&text[last..]);
        rewritten
    }

    /// The click a token records, with its target; `None` for a token this tracker did not issue.
    pub fn click(&self, token: &str) -> Option<Tracked> {
        let tracked: Tracked = serde_json::from_slice(&self.signer.open(CLICK, token)?).ok()?;
        tracked.url.is_some().then_some(tracked)
    }

    /// The open a pixel token records; `None` for a token this tracker did not issue.
    pub fn open(&self, token: &str) -> Option<Tracked> {
        serde_json::from_slice(&self.signer.open(OPEN, token)?).ok()
    }

    /// The token a push delivery's app reports its open with (`POST /t/p/{token}`): sealed for
    /// push opens only, so an email pixel token never counts a push open, nor the reverse.
    pub fn push_open_token(&self, delivery: &Tracked) -> String {
        self.signer.seal(PUSH_OPEN, &serde_json::to_vec(delivery).expect("serializes"))
    }

    /// The push open a token records; `None` for a token this tracker did not issue for one.
    pub fn push_open(&self, token: &str) -> Option<Tracked> {
        serde_json::from_slice(&self.signer.open(PUSH_OPEN, token)?).ok()
    }
}

/// Links to this API's own pages for the recipient (preference center, unsubscribe) are not
/// tracked: they are not content, and the redirect would only delay them.
fn is_own_page(url: &str, base_url: &str) -> bool {
    url.strip_prefix(base_url)
        .is_some_and(|path| path.starts_with("/v1/preferences/") || path.starts_with("/v1/unsubscribe/"))
}

/// Undoes what the template engine's HTML escaping does to a value (`&amp;`, `&#x2f;`, …), so
/// the target is the URL the author meant.
fn unescape_html(value: &str) -> String {
    [("&#x2f;", "/"), ("&#x27;", "'"), ("&quot;", "\""), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")]
        .iter()
        .fold(value.to_string(), |value, (escaped, plain)| value.replace(escaped, plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::contact::EmailAddress;
    use crate::domain::unsubscribe::SigningKey;

    const BASE: &str = "https://api.example.com/";

    fn tracker() -> LinkTracker {
        LinkTracker::new(LinkSigner::new(SigningKey::new("k1", "a secret of at least thirty-two bytes"), []))
    }

    fn delivery() -> Tracked {
        Tracked {
            app_key: "ak_0123456789abcdef0123".into(),
            notification_id: "n-1".into(),
            delivery_id: "email".into(),
            channel: Channel::Email,
            template: "welcome".into(),
            url: None,
        }
    }

    fn email(html: &str, text: &str) -> EmailContent {
        EmailContent {
            to: EmailAddress::parse("ada@example.com").unwrap(),
            subject: "Hi".into(),
            html: html.into(),
            text: text.into(),
        }
    }

    fn tokens(content: &str, kind: &str) -> Vec<String> {
        let prefix = format!("https://api.example.com/t/{kind}/");
        content
            .split(&prefix)
            .skip(1)
            .map(|rest| rest.split(['"', '\'', ' ', '\n']).next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn links_are_rewritten_to_signed_clicks_that_lead_back_to_them() {
        let tracked = tracker().track_email(
            email(
                r#"<html><body><a href="https://shop.example.com/o?id=1&amp;x=2">Order</a></body></html>"#,
                "See https://shop.example.com/o?id=1&x=2 or mail us",
            ),
            &delivery(),
            BASE,
        );
        assert!(!tracked.html.contains("shop.example.com") && !tracked.text.contains("shop.example.com"));
        for content in [&tracked.html, &tracked.text] {
            let [token] = tokens(content, "c").try_into().unwrap();
            let click = tracker().click(&token).unwrap();
            assert_eq!(click.url.as_deref(), Some("https://shop.example.com/o?id=1&x=2"));
            assert_eq!(click.notification_id, "n-1");
        }
        let [pixel] = tokens(&tracked.html, "o").try_into().unwrap();
        assert!(tracked.html.find("/t/o/").unwrap() < tracked.html.find("</body>").unwrap());
        assert_eq!(tracker().open(&pixel), Some(delivery()));
        assert_eq!(tracker().click(&pixel), None, "an open token is no click token");
    }

    #[test]
    fn only_links_are_tracked_and_escaped_or_unicode_urls_lead_to_the_right_place() {
        let tracked = tracker().track_email(
            email(
                r#"<img src="https://cdn.example.com/logo.png"><a href="https:&#x2f;&#x2f;shop.example.com&#x2f;caf&eacute;">x</a><a href='https://b.example/é'>y</a>"#,
                "",
            ),
            &delivery(),
            BASE,
        );
        assert!(tracked.html.contains("https://cdn.example.com/logo.png"), "images are not links");
        let targets: Vec<String> =
            tokens(&tracked.html, "c").iter().map(|token| tracker().click(token).unwrap().url.unwrap()).collect();
        assert_eq!(targets, ["https://shop.example.com/caf&eacute;", "https://b.example/%C3%A9"]);
    }

    #[test]
    fn links_to_the_recipients_own_pages_are_not_tracked() {
        let own = "https://api.example.com/v1/preferences/k1.abc.def";
        let tracked = tracker().track_email(
            email(&format!(r#"<a href="{own}">prefs</a><a href="https://a.example/">a</a>"#), &format!("prefs: {own}")),
            &delivery(),
            BASE,
        );
        assert!(tracked.html.contains(own) && tracked.text.contains(own));
        assert_eq!(tokens(&tracked.html, "c").len(), 1, "the other link is tracked");
        assert!(tokens(&tracked.text, "c").is_empty());
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let tracked = tracker().track_email(email("<a href=\"https://a.example/\">a</a>", ""), &delivery(), BASE);
        let [token] = tokens(&tracked.html, "c").try_into().unwrap();
        let (key_id, rest) = token.split_once('.').unwrap();
        let (payload, tag) = rest.split_once('.').unwrap();
        let mut forged: Tracked = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
        )
        .unwrap();
        forged.url = Some("https://evil.example/".into());
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&forged).unwrap(),
        );
        assert_eq!(tracker().click(&format!("{key_id}.{forged_payload}.{tag}")), None);
        assert_eq!(tracker().click("garbage"), None);
        let other = LinkTracker::new(LinkSigner::new(SigningKey::new("k2", "another secret of thirty-two bytes!"), []));
        assert_eq!(other.click(&token), None);
    }
}
