//! The hosted preference center, end to end through the local stack:
//! - in Debian's headless Chromium (`tools/browser-tests/preference-center.mjs`), from the link
//!   in an email the emulator recorded: SMS off and quiet hours set with JavaScript off, kept
//!   after a reload and read back by the API; keyboard, focus, the page's own CSP and axe-core;
//!   screenshots at 320 px and 1280 px in `target/browser-artifacts/`; unsubscribe and undo;
//! - over plain HTTP, what an attacker or a link scanner can do: a forged, cut, foreign-purpose
//!   or expired link, a GET, a replayed or stale form, a replayed undo change nothing.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use local_stack::resolve::Physical;
use notify::config::Settings;
use notify::domain::preference_center::{LINK_VALIDITY_SECONDS, link_token};
use notify::domain::user::UserId;
use notify::link_keys::LinkKeys;
use reqwest::Method;
use serde_json::{Value, json};
use support::api::{Api, Reply, every_delivery_sent, unique};

/// A user with every contact in `locale`, and an email sent to them from a template whose html
/// is `html`; returns (user, notification id).
async fn emailed_user(api: &Api, locale: &str, html: &str) -> (String, String) {
    let (user, template) = (unique("u"), unique("t"));
    let contacts = json!({"email": format!("{}@example.com", unique("ada")), "phone": "+14155550123",
        "locale": locale, "timezone": "Asia/Seoul"});
    api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await;
    let content = json!({"default_locale": "en", "locales": {"en": {"email": {
        "subject": "Your order", "html": html, "text": "Your order shipped."}}}});
    api.call(Method::PUT, &format!("/v1/templates/{template}"), Some(content)).await;
    let body = json!({"user_id": user, "template": template, "channels": ["email"]});
    let id = api.call(Method::POST, "/v1/notifications", Some(body)).await.body["id"].as_str().unwrap().to_string();
    api.wait_for_notification(&id, "the email to be sent", every_delivery_sent).await;
    (user, id)
}

/// The preference center link in `content` (the first), as a path of the API.
fn center_path(api: &Api, content: &str) -> String {
    // The template engine escapes `/` in html.
    let content = content.replace("&#x2f;", "/");
    let marker = format!("{}/v1/preferences/", api.stack.api_url);
    let rest = content.split(&marker).nth(1).unwrap_or_else(|| panic!("no preference center link in {content}"));
    format!("/v1/preferences/{}", rest.split(['"', ' ', '\r', '\n', '<']).next().unwrap())
}

async fn preferences(api: &Api, user: &str) -> Value {
    api.call(Method::GET, &format!("/v1/users/{user}/preferences"), None).await.body
}

/// The value of a page's hidden field `name`.
fn hidden(page: &Reply, name: &str) -> String {
    let html = page.body.as_str().unwrap();
    let marker = format!(r#"name="{name}" value=""#);
    let rest = html.split(&marker).nth(1).unwrap_or_else(|| panic!("no hidden {name} in {html}"));
    rest.split('"').next().unwrap().to_string()
}

/// The center's form token on a page.
fn form_token(page: &Reply) -> String {
    hidden(page, "form")
}

fn html(reply: &Reply) -> &str {
    reply.body.as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_user_sets_channels_and_quiet_hours_in_a_real_browser() {
    let api = Api::start().await;
    let (user, id) = emailed_user(&api, "en-US", "<html><body><p>Your order shipped.</p></body></html>").await;
    let (html_part, text_part) = api.email_parts(&id).await;
    // The template places no link: the email carries the footer link, in both parts.
    let center = center_path(&api, &text_part);
    assert_eq!(center_path(&api, &html_part), center, "{html_part}");
    let unsubscribe = api.unsubscribe_path(&id).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let artifacts = root.join("target/browser-artifacts");
    let run = tokio::process::Command::new("node")
        .arg(root.join("tools/browser-tests/preference-center.mjs"))
        .arg(format!("{}{center}", api.stack.api_url))
        .arg(format!("{}{unsubscribe}", api.stack.api_url))
        .arg(&artifacts)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser suite finished within 3 minutes")
        .expect("node runs (scripts/setup.sh browser installs its packages)");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser suite failed: {stderr}\nit saw: {stdout}");
    for shot in ["preference-center-320.png", "preference-center-1280.png", "unsubscribe-320.png"] {
        assert!(artifacts.join(shot).metadata().is_ok_and(|file| file.len() > 1_000), "no screenshot {shot}");
    }

    // The API reads back what the browser saved (and the unsubscribe it undid).
    let saved = preferences(&api, &user).await;
    assert_eq!(
        saved,
        json!({"push": true, "sms": false, "email": true, "quiet_hours": {"start": "22:00", "end": "07:00"}}),
        "{stdout}"
    );
    api.stack.stop().await;
}

#[tokio::test]
async fn forged_scanned_and_replayed_requests_change_nothing() {
    let api = Api::start().await;
    let placed = "<html><body><p>Hi</p><a href=\"{{ preferences_url }}\">Settings</a></body></html>";
    let (user, id) = emailed_user(&api, "ko-KR", placed).await;
    let (html_part, text_part) = api.email_parts(&id).await;
    let center = center_path(&api, &html_part);
    assert_eq!(
        html_part.replace("&#x2f;", "/").matches("/v1/preferences/").count(),
        1,
        "placed by the template, so no footer: {html_part}"
    );
    assert!(text_part.contains("알림 설정 관리"), "the text part's footer is in the user's language: {text_part}");
    let before = preferences(&api, &user).await;
    let profile = || async { api.call(Method::GET, &format!("/v1/users/{user}"), None).await.body };
    let untouched = profile().await;

    // A link scanner's GETs: the page, in Korean, with its safety headers; nothing changes.
    for path in [center.clone(), api.unsubscribe_path(&id).await] {
        for _ in 0..2 {
            let page = api.call_as(None, Method::GET, &path, None, &[]).await;
            assert_eq!(page.status, 200, "{path}");
            assert!(html(&page).contains(r#"<html lang="ko">"#), "{}", html(&page));
            let policy = page.headers["content-security-policy"].to_str().unwrap();
            assert!(policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"), "{policy}");
            assert_eq!(page.headers["referrer-policy"], "no-referrer");
            assert_eq!(page.headers["x-content-type-options"], "nosniff");
        }
    }
    assert_eq!(profile().await, untouched, "GETs change nothing");

    // Forged, cut, foreign-purpose and expired links: a 404 page, GET or POST, nothing changed.
    let Some(Physical::Secret { arn, .. }) = api.stack.deployed.resources.get("LinkSigningKey") else {
        panic!("the template has a LinkSigningKey secret")
    };
    let env = HashMap::from([("LINK_SIGNING_KEY_ARN".to_string(), arn.clone())]);
    let mut settings = Settings::new(&env);
    let keys = LinkKeys::load(api.clients.secrets.clone(), &mut settings);
    settings.finish().unwrap();
    let signer = keys.signer().await.unwrap();
    let long_ago = notify::time::now_epoch_seconds() - LINK_VALIDITY_SECONDS - 60;
    let expired = format!("/v1/preferences/{}", link_token(&signer, &UserId::parse(&user).unwrap(), long_ago));
    let (head, tag) = center.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}{}", if tag.starts_with('A') { "B" } else { "A" }, &tag[1..]);
    let cut = center[..center.len() - 4].to_string();
    let unsubscribe_token = api.unsubscribe_path(&id).await.replace("/v1/unsubscribe/", "/v1/preferences/");
    let page = api.call_as(None, Method::GET, &center, None, &[]).await;
    let form = form_token(&page);
    for path in [expired, flipped, cut, unsubscribe_token] {
        let got = api.call_as(None, Method::GET, &path, None, &[("accept-language", "ko-KR,ko;q=0.9")]).await;
        assert_eq!(got.status, 404, "GET {path}");
        assert!(html(&got).contains(r#"<html lang="ko">"#), "the visitor's language: {}", html(&got));
        let posted = api.post_form(&path, &format!("form={form}&email=on")).await;
        assert_eq!(posted.status, 404, "POST {path}");
    }
    // A form without its token, with a forged one, or with another user's.
    let (other, _) = emailed_user(&api, "en", "<p>Hi</p>").await;
    let other_link = link_token(&signer, &UserId::parse(&other).unwrap(), notify::time::now_epoch_seconds());
    let other_page = api.call_as(None, Method::GET, &format!("/v1/preferences/{other_link}"), None, &[]).await;
    for body in
        ["email=on".to_string(), format!("form={form}x&email=on"), format!("form={}&email=on", form_token(&other_page))]
    {
        assert_eq!(api.post_form(&center, &body).await.status, 404, "{body}");
    }
    assert_eq!(profile().await, untouched, "forged requests change nothing");

    // A bad time: 422, naming the field; nothing changed.
    let bad = api
        .post_form(&center, &format!("form={form}&email=on&quiet_hours=on&quiet_start=25%3A00&quiet_end=07%3A00"))
        .await;
    assert_eq!(bad.status, 422);
    // What was entered is shown back, the bad field marked.
    let shown = html(&bad);
    assert!(shown.contains(r#"id="quiet-start" name="quiet_start" value="25:00" aria-invalid="true""#), "{shown}");
    assert!(shown.contains(r#"name="quiet_end" value="07:00""#) && !shown.contains(r#"name="push" checked"#));
    assert_eq!(profile().await, untouched);

    // A contact sync by the calling service between opening the page and saving does not
    // stand in the way: only a change to the preferences makes a form stale.
    let contacts = json!({"email": untouched["email"], "phone": untouched["phone"], "locale": "ko-KR",
        "timezone": "Asia/Seoul"});
    assert_eq!(api.call(Method::PUT, &format!("/v1/users/{user}"), Some(contacts)).await.status, 200);

    // A save, then the same form again and a stale one: 409, nothing changed.
    let save = format!("form={form}&push=on&email=on&quiet_hours=on&quiet_start=23%3A00&quiet_end=06%3A30");
    let saved = api.post_form(&center, &save).await;
    assert_eq!((saved.status.as_u16(), saved.headers["location"].to_str().unwrap()), (303, "?saved=1"));
    let after_save = preferences(&api, &user).await;
    assert_eq!(
        after_save,
        json!({"push": true, "sms": false, "email": true, "quiet_hours": {"start": "23:00", "end": "06:30"}})
    );
    assert_ne!(after_save, before);
    let saved_profile = profile().await;
    for replay in [save.clone(), format!("form={form}&push=on&sms=on")] {
        let replayed = api.post_form(&center, &replay).await;
        assert_eq!(replayed.status, 409, "{replay}");
        assert!(html(&replayed).contains("role=\"status\""), "the page says why: {}", html(&replayed));
    }
    assert_eq!(profile().await, saved_profile, "replayed forms change nothing");
    let shown = api.call_as(None, Method::GET, &format!("{center}?saved=1"), None, &[]).await;
    assert!(html(&shown).contains("설정이 저장되었습니다"), "{}", html(&shown));

    // A mail client's one-click unsubscribe, its undo, and the undo replayed: the replay
    // changes nothing. Neither an undo token nor a center form token stands for the other.
    let unsubscribe = api.unsubscribe_path(&id).await;
    let unsubscribed = api.post_form(&unsubscribe, "List-Unsubscribe=One-Click").await;
    assert_eq!((unsubscribed.status.as_u16(), preferences(&api, &user).await["email"].clone()), (200, json!(false)));
    let undo = format!("undo={}", hidden(&unsubscribed, "undo"));
    assert_eq!(api.post_form(&unsubscribe, &format!("undo={form}")).await.status, 404, "a form token is no undo");
    let as_form = format!("form={}&email=on", hidden(&unsubscribed, "undo"));
    assert_eq!(api.post_form(&center, &as_form).await.status, 404, "an undo token is no form token");
    let undone = api.post_form(&unsubscribe, &undo).await;
    assert_eq!((undone.status.as_u16(), undone.headers["location"].to_str().unwrap()), (303, "?resubscribed=1"));
    assert_eq!(preferences(&api, &user).await["email"], true);
    let current = form_token(&api.call_as(None, Method::GET, &center, None, &[]).await);
    assert_eq!(api.post_form(&center, &format!("form={current}&push=on&sms=on")).await.status, 303);
    let replayed_undo = api.post_form(&unsubscribe, &undo).await;
    assert_eq!(replayed_undo.status, 409);
    assert_eq!(preferences(&api, &user).await["email"], false, "the replayed undo did not opt back in");

    // An unsubscribe of a channel the user had turned off offers no undo: an unsubscribe link
    // never opts anyone in. The page's button answers 303 to the result, so a reload is a GET.
    let button = api.post_form(&unsubscribe, "confirm=1").await;
    assert_eq!((button.status.as_u16(), button.headers["location"].to_str().unwrap()), (303, "?done=1"));
    let one_click = api.post_form(&unsubscribe, "List-Unsubscribe=One-Click").await;
    assert!(!html(&one_click).contains(r#"name="undo""#), "{}", html(&one_click));
    assert_eq!(preferences(&api, &user).await["email"], false);
    api.stack.stop().await;
}
