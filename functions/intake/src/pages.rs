//! The HTML pages end users see: the preference center, the unsubscribe pages and the page for
//! a link that does not work. Rendered from `pages/*.html` in the user's language
//! (`locales/<tag>.json`, with the templates' fallback: `pt-BR` → `pt` → `en`).
//!
//! Every page is plain HTML forms with no script, so it works with JavaScript off. Its headers
//! keep it safe to serve to anyone holding a link:
//! - a Content-Security-Policy that allows nothing but the page's own stylesheet (by hash) and
//!   forms posting back to this API, and forbids framing;
//! - no referrer (the URL carries the user's token);
//! - no sniffing, and no caching (the page shows one user's preferences).
//!
//! Adding a language is adding `locales/<tag>.json` with every key of `en.json` and a line in
//! [`LOCALES`]; a test holds every file to the same keys.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;
use minijinja::Environment;
use notify::domain::channel::Channel;
use sha2::{Digest, Sha256};

/// Each language's strings, by BCP 47 tag.
const LOCALES: &[(&str, &str)] =
    &[("en", include_str!("../locales/en.json")), ("ko", include_str!("../locales/ko.json"))];

/// The language of last resort: every key is in it.
const DEFAULT_LOCALE: &str = "en";

const CSS: &str = include_str!("../pages/style.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../pages/layout.html")),
    ("center.html", include_str!("../pages/center.html")),
    ("unsubscribe.html", include_str!("../pages/unsubscribe.html")),
    ("message.html", include_str!("../pages/message.html")),
];

/// One language's strings.
pub type Strings = BTreeMap<String, String>;

static CATALOG: LazyLock<BTreeMap<&'static str, Strings>> = LazyLock::new(|| {
    LOCALES
        .iter()
        .map(|(tag, json)| {
            (*tag, serde_json::from_str(json).expect("locale files are JSON objects of strings (tested)"))
        })
        .collect()
});

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    // `.html` templates escape every value (minijinja's default for the extension).
    let mut environment = Environment::new();
    for (name, source) in TEMPLATES {
        environment.add_template(name, source).expect("page templates compile (tested)");
    }
    environment
});

static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// A language's strings, chosen like a template's locale: the tag, its language, then English.
#[derive(Clone, Copy)]
pub struct Language {
    pub tag: &'static str,
    pub strings: &'static Strings,
}

impl Language {
    pub fn for_locale(locale: Option<&str>) -> Self {
        locale.and_then(Self::matching).unwrap_or_else(|| Self::of(DEFAULT_LOCALE))
    }

    /// For a visitor the link does not identify: the first of the browser's `Accept-Language`
    /// (by weight) that we have.
    pub fn negotiate(accept_language: Option<&str>) -> Self {
        let mut wanted: Vec<(f32, &str)> = accept_language
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let tag = parts.next()?.trim();
                let weight = parts
                    .find_map(|part| part.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |weight| weight.trim().parse().ok())?;
                (!tag.is_empty() && weight > 0.0).then_some((weight, tag))
            })
            .collect();
        // Stable: equal weights keep the browser's order.
        wanted.sort_by(|a, b| b.0.total_cmp(&a.0));
        wanted.into_iter().find_map(|(_, tag)| Self::matching(tag)).unwrap_or_else(|| Self::of(DEFAULT_LOCALE))
    }

    fn matching(tag: &str) -> Option<Self> {
        let language = tag.split('-').next().unwrap_or(tag);
        [tag, language]
            .into_iter()
            .find_map(|candidate| CATALOG.get_key_value(candidate).map(|(tag, strings)| Self { tag, strings }))
    }

    fn of(tag: &'static str) -> Self {
        Self { tag, strings: &CATALOG[tag] }
    }

    pub fn text(&self, key: &str) -> &'static str {
        self.strings.get(key).map(String::as_str).unwrap_or_else(|| CATALOG[DEFAULT_LOCALE][key].as_str())
    }

    /// A channel's name, as a heading (`label`) or inside a sentence.
    pub fn channel(&self, channel: Channel, in_sentence: bool) -> &'static str {
        let kind = if in_sentence { "in_sentence" } else { "channel" };
        self.text(&format!("{kind}_{channel}"))
    }
}

/// A page: `template` rendered with `context` (plus the language's strings as `t`), inside the
/// layout titled `title`.
pub fn page(
    status: i64,
    language: Language,
    title: &str,
    template: &str,
    context: minijinja::Value,
) -> ApiGatewayV2httpResponse {
    let strings = minijinja::Value::from_serialize(language.strings);
    let render = |name: &str, context: minijinja::Value| {
        ENVIRONMENT.get_template(name).and_then(|template| template.render(context)).expect("pages render (tested)")
    };
    let content = render(template, minijinja::context! { t => strings, ..context });
    let html = render("layout.html", minijinja::context! { lang => language.tag, title, css => CSS, content });
    response(status, Some(html), None)
}

/// The page for a link that does not work (forged, cut, expired, or for a deleted user): a 404
/// that changes nothing.
pub fn not_found(language: Language) -> ApiGatewayV2httpResponse {
    let (heading, message) = (language.text("not_found_title"), language.text("not_found"));
    page(404, language, heading, "message.html", minijinja::context! { heading, message })
}

/// `303 See Other` to `location` (after a saved form, so reloading shows the page, not a
/// second POST).
pub fn see_other(location: &str) -> ApiGatewayV2httpResponse {
    response(303, None, Some(location))
}

fn response(status: i64, html: Option<String>, location: Option<&str>) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_str(&CONTENT_SECURITY_POLICY).expect("the policy is ASCII"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    if let Some(location) = location {
        headers.insert("location", HeaderValue::from_str(location).expect("locations are ASCII"));
    }
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = html.map(Body::Text);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_every_key_of_the_default() {
        let keys = |tag: &str| CATALOG[tag].keys().cloned().collect::<Vec<_>>();
        for (tag, _) in LOCALES {
            assert_eq!(keys(tag), keys(DEFAULT_LOCALE), "locales/{tag}.json");
        }
        let files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/locales"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string())
            .collect();
        for file in files {
            assert!(LOCALES.iter().any(|(tag, _)| *tag == file), "locales/{file}.json is not listed in LOCALES");
        }
    }

    #[test]
    fn languages_fall_back_like_templates() {
        assert_eq!(Language::for_locale(Some("ko-KR")).tag, "ko");
        assert_eq!(Language::for_locale(Some("pt-BR")).tag, "en");
        assert_eq!(Language::for_locale(None).tag, "en");
        assert_eq!(Language::negotiate(Some("fr-CA,fr;q=0.9,ko;q=0.8,en;q=0.7")).tag, "ko");
        assert_eq!(Language::negotiate(Some("en;q=0.5, ko")).tag, "ko");
        assert_eq!(Language::negotiate(Some("ko;q=0")).tag, "en");
        assert_eq!(Language::negotiate(None).tag, "en");
    }

    #[test]
    fn pages_escape_values_and_carry_the_safety_headers() {
        let language = Language::for_locale(Some("ko"));
        let response = page(
            200,
            language,
            "t",
            "message.html",
            minijinja::context! { heading => "<script>x</script>", message => "m" },
        );
        let Some(Body::Text(html)) = &response.body else { panic!("a page has a body") };
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.starts_with("<!doctype html>") && html.contains(r#"<html lang="ko">"#));
        assert!(html.contains(&format!("<style>{CSS}</style>")), "the stylesheet is the one the policy hashes");
        let policy = response.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("script-src"), "{policy}");
        assert_eq!(response.headers["referrer-policy"], "no-referrer");
        assert_eq!(response.headers["x-content-type-options"], "nosniff");
    }
}
