//! Property tests (issue 7's reliability suite): no input makes a request parser, the
//! credentials reader, a token opener, the template renderer or the link rewriter panic, and
//! every rejected body is a client error (400 or 422), never a server error.

use aws_lambda_events::http::{HeaderMap, HeaderValue};
use notify::domain::channel::Channel;
use notify::domain::contact::EmailAddress;
use notify::domain::delivery::EmailContent;
use notify::domain::template::{TemplateInput, TemplateName};
use notify::domain::tracking::{LinkTracker, Tracked};
use notify::domain::unsubscribe::{LinkSigner, SigningKey};
use notify::domain::user::{ContactsInput, DeviceToken, PreferencesPatch, UserId};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::problem::ApiError;
use crate::request::{json, typed};
use crate::send::{SendRequest, batch_items};
use crate::users::DeviceInput;

/// A header map holding one `authorization` value, if it is a valid header value.
fn header_map(value: &str) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(value).ok()?);
    Some(headers)
}

/// Field names the parsers know, mixed with arbitrary ones, so generated objects reach past
/// the unknown-field checks.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "user_id", "template", "params", "channels", "notifications", "idempotency_key", "phone",
            "email", "locale", "timezone", "platform", "token", "sms", "push", "default_locale",
            "locales", "en", "fr-CA", "subject", "html", "text", "body", "title", "sound", "badge",
            "transactional", "tracking", "cancellation_key",
        ])
        .prop_map(String::from),
        1 => ".{0,8}",
    ]
}

/// Strings shaped like the fields' values (ids, phone numbers, addresses, channels, tags),
/// mixed with arbitrary text.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.-]{0,70}",
        "\\+?[0-9 ()-]{0,20}",
        "[a-z.]{0,10}@[a-z]{0,10}\\.[a-z]{0,3}",
        prop::sample::select(vec!["sms", "email", "push", "ios", "android", "fax", "en", "Europe/London"])
            .prop_map(String::from),
        ".{0,40}",
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        field_value().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn is_client_error(error: &ApiError) -> bool {
    matches!(error, ApiError::Malformed(_) | ApiError::Validation(_))
}

/// Every body reader of the API on `body`: each either accepts it or answers a client error.
fn read_every_body(body: &[u8]) -> Result<(), String> {
    let rejected = |what: &str, error: ApiError| {
        if is_client_error(&error) { Ok(()) } else { Err(format!("{what}: {error:?}")) }
    };
    if let Err(error) = typed::<ContactsInput>(body).map(|contacts| contacts.check()) {
        rejected("contacts", error)?;
    }
    if let Err(error) = typed::<PreferencesPatch>(body) {
        rejected("preferences", error)?;
    }
    match typed::<DeviceInput>(body) {
        Ok(device) => drop(DeviceToken::parse(device.platform, &device.token)),
        Err(error) => rejected("device", error)?,
    }
    // A template that reads but does not check is a 422 listing its fields (a Vec, no panic).
    match typed::<TemplateInput>(body) {
        Ok(input) => drop(input.check(TemplateName::parse("t").unwrap(), "2026-11-22T00:00:00Z")),
        Err(error) => rejected("template", error)?,
    }
    match json(body) {
        Ok(value) => {
            if let Err(error) = SendRequest::parse(&value) {
                rejected("send", error)?;
            }
            match batch_items(&value) {
                Ok(items) => {
                    for item in items {
                        if let Ok((_, item)) = item
                            && let Err(error) = SendRequest::parse(&item)
                        {
                            rejected("batch item", error)?;
                        }
                    }
                }
                Err(error) => rejected("batch", error)?,
            }
        }
        Err(error) => rejected("json", error)?,
    }
    Ok(())
}

/// Template sources built from fragments of the template language, well-formed or not.
fn template_source() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        prop::sample::select(vec![
            "{{ name }}",
            "{{ order }}",
            "{{",
            "}}",
            "{%",
            "%}",
            "{% if name %}",
            "{% else %}",
            "{% endif %}",
            "{% for i in items %}",
            "{% endfor %}",
            "{{ name|upper }}",
            "{{ name|default('x') }}",
            "{{ a.b.c }}",
            "{{ items[3] }}",
            "{{ 1/0 }}",
            "{{ name ~ order }}",
            "{# c #}",
            "{#",
            "{% raw %}",
            "{% endraw %}",
            "{% set x = 1 %}",
            "{{ x }}",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
            "<a href=\"https://example.com/{{ order }}\">",
            "</a>",
            "https://example.com/é?q=1&r=2",
            "<a href='",
            "'>",
            "</body>",
            "é",
            "\u{0}",
        ])
        .prop_map(String::from),
        ".{0,12}",
    ];
    prop::collection::vec(fragment, 0..10).prop_map(|fragments| fragments.concat())
}

fn params() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["name", "order", "items", "a", "x"]).prop_map(String::from),
        arbitrary_json(),
        0..5,
    )
    .prop_map(|params| params.into_iter().collect())
}

proptest! {
    // 256 cases each by default; scripts/reliability.sh runs more (PROPTEST_CASES).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_read_or_refused_as_a_client_error(body in prop::collection::vec(any::<u8>(), 0..256)) {
        read_every_body(&body).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn any_json_is_read_or_refused_as_a_client_error(value in arbitrary_json()) {
        read_every_body(&serde_json::to_vec(&value).unwrap()).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn any_authorization_header_is_read_without_panicking(value in ".{0,80}", encoded in "[A-Za-z0-9+/=]{0,60}") {
        for header in [value.clone(), format!("Basic {value}"), format!("basic {encoded}")] {
            if let Some(headers) = header_map(&header) {
                drop(crate::auth::credentials(&headers));
            }
        }
    }

    #[test]
    fn any_token_is_refused_unless_it_was_issued(token in ".{0,120}", suffix in ".{1,4}") {
        let signer = LinkSigner::new(SigningKey::new("k1", "a secret of at least thirty-two bytes"), []);
        prop_assert!(signer.open_unsubscribe_link(&token).is_none());
        // The refusal is not blanket: an issued token opens, and any change to it does not.
        let user = UserId::parse("ada").unwrap();
        let issued = signer.unsubscribe_link(&user, Channel::Email, 1_700_000_000);
        let opened = signer.open_unsubscribe_link(&issued).map(|link| (link.user_id, link.channel));
        prop_assert_eq!(opened, Some((user, Channel::Email)));
        let tampered = format!("{issued}{suffix}");
        prop_assert!(signer.open_unsubscribe_link(&tampered).is_none());
        let tracker = LinkTracker::new(LinkSigner::new(SigningKey::new("k1", "a secret of at least thirty-two bytes"), []));
        prop_assert!(tracker.click(&token).is_none() && tracker.open(&token).is_none());
    }

    #[test]
    fn any_template_renders_or_is_refused(source in template_source(), params in params()) {
        let content = json!({"default_locale": "en", "locales": {"en": {
            "sms": {"body": source},
            "push": {"title": source, "body": source},
            "email": {"subject": source, "html": source, "text": source},
        }}});
        let input: TemplateInput = serde_json::from_value(content).unwrap();
        if let Ok(template) = input.check(TemplateName::parse("t").unwrap(), "2026-11-22T00:00:00Z") {
            for channel in Channel::ALL {
                if let Ok(rendered) = template.render(channel, Some("en"), &params) {
                    drop(rendered.check_limits());
                }
            }
        }
    }

    #[test]
    fn any_email_is_rewritten_for_tracking_without_panicking(html in template_source(), text in template_source()) {
        let tracker = LinkTracker::new(LinkSigner::new(SigningKey::new("k1", "a secret of at least thirty-two bytes"), []));
        let email = EmailContent {
            to: EmailAddress::parse("ada@example.com").unwrap(),
            subject: "s".into(),
            html,
            text,
        };
        let delivery = Tracked {
            app_key: "ak_0123456789abcdef0123".into(),
            notification_id: "n".into(),
            delivery_id: "email".into(),
            channel: Channel::Email,
            template: "t".into(),
            url: None,
        };
        let tracked = tracker.track_email(email, &delivery, "https://api.example.com/");
        prop_assert!(tracked.html.contains("/t/o/"));
    }
}
