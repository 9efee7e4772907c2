//! CPU per notification in our own code, no I/O (`scripts/bench.sh cpu`):
//! - intake: the auth check (SHA-256 and constant-time compare), request validation, rendering
//!   every channel (SMS and email here) and serializing the queue messages and request hash;
//! - dispatch: parsing one queue message and building the provider request (the email's MIME,
//!   the largest of the three).

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use intake::SendRequest;
use notify::config::Settings;
use notify::domain::app::{AppRecord, Scope};
use notify::domain::delivery::{DeliveryMessage, EmailContent};
use notify::domain::plan::plan;
use notify::domain::template::{TemplateInput, TemplateName};
use notify::domain::user::UserProfile;
use notify::provider::email::SesEmail;
use serde_json::{Value, json};

const NOW: &str = "2026-11-22T05:00:00Z";

fn template() -> notify::domain::template::Template {
    let input: TemplateInput = serde_json::from_value(json!({"default_locale": "en", "locales": {"en": {
        "sms": {"body": "Hi {{ name }}, order {{ order }} has shipped."},
        "email": {
            "subject": "Order {{ order }} shipped",
            "html": "<html><body><p>Hi <b>{{ name }}</b>,</p><p>order {{ order }} is on its way.</p><a href=\"https://shop.example.com/orders/{{ order }}\">Track it</a></body></html>",
            "text": "Hi {{ name }}, order {{ order }} is on its way: https://shop.example.com/orders/{{ order }}"
        }
    }}}))
    .unwrap();
    input.check(TemplateName::parse("order-shipped").unwrap(), NOW).unwrap()
}

fn profile() -> UserProfile {
    serde_json::from_value(json!({"user_id": "user-42", "email": "ada@example.com", "phone": "+12015550123", "locale": "en-GB", "created_at": NOW, "updated_at": NOW})).unwrap()
}

fn intake(c: &mut Criterion) {
    let (app, secret) = AppRecord::create("bench", BTreeSet::from([Scope::Send]), NOW);
    let (profile, template) = (profile(), template());
    let body = br#"{"user_id": "user-42", "template": "order-shipped", "params": {"name": "Ada", "order": "A-1042"}}"#;
    c.bench_function("intake: one notification, SMS and email", |b| {
        b.iter(|| {
            assert!(app.verify(black_box(secret.expose())));
            let json: Value = serde_json::from_slice(black_box(body)).unwrap();
            let request = SendRequest::parse(&json).unwrap();
            let plan = plan(&profile, &template, request.channels.as_deref(), &request.params).unwrap();
            let mut bytes = 0;
            for (delivery_id, content) in plan.deliveries {
                let message = DeliveryMessage {
                    notification_id: "0196a0f2-7c1e-7d2a-9b4e-1f2a3b4c5d6e".into(),
                    delivery_id,
                    user_id: request.user_id.clone(),
                    template: request.template.clone(),
                    transactional: false,
                    content,
                };
                bytes += serde_json::to_string(&message).unwrap().len();
            }
            black_box((bytes, notify::domain::notification::request_hash(json.to_string().as_bytes())))
        })
    });
}

/// The intake's steps on their own, to show where its time goes.
fn intake_steps(c: &mut Criterion) {
    let (app, secret) = AppRecord::create("bench", BTreeSet::from([Scope::Send]), NOW);
    let (profile, template) = (profile(), template());
    let body = br#"{"user_id": "user-42", "template": "order-shipped", "params": {"name": "Ada", "order": "A-1042"}}"#;
    let json: Value = serde_json::from_slice(body).unwrap();
    let request = SendRequest::parse(&json).unwrap();
    c.bench_function("intake step: auth check", |b| b.iter(|| app.verify(black_box(secret.expose()))));
    c.bench_function("intake step: parse and validate", |b| {
        b.iter(|| SendRequest::parse(&serde_json::from_slice::<Value>(black_box(body)).unwrap()).unwrap())
    });
    c.bench_function("intake step: render SMS and email", |b| {
        b.iter(|| plan(&profile, &template, None, black_box(&request.params)).unwrap())
    });
    let rendered = plan(&profile, &template, None, &request.params).unwrap();
    c.bench_function("intake step: serialize the SMS and email messages", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (delivery_id, content) in black_box(&rendered.deliveries) {
                let message = DeliveryMessage {
                    notification_id: "0196a0f2-7c1e-7d2a-9b4e-1f2a3b4c5d6e".to_string(),
                    delivery_id: delivery_id.clone(),
                    user_id: request.user_id.clone(),
                    template: request.template.clone(),
                    transactional: false,
                    content: content.clone(),
                };
                bytes += serde_json::to_string(&message).unwrap().len();
            }
            bytes
        })
    });
    c.bench_function("intake step: request hash", |b| {
        b.iter(|| notify::domain::notification::request_hash(black_box(&json).to_string().as_bytes()))
    });
}

fn dispatch(c: &mut Criterion) {
    let env: BTreeMap<&str, &str> = BTreeMap::from([
        ("EMAIL_FROM_ADDRESS", "notifications@example.com"),
        ("PUBLIC_API_URL", "https://api.example.com"),
        ("LINK_SIGNING_SECRET", "a secret of at least thirty-two bytes"),
        ("SUPPRESSIONS_TABLE", "suppressions"),
    ]);
    let env: std::collections::HashMap<String, String> =
        env.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut settings = Settings::new(&env);
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let email = SesEmail::load(aws_sdk_sesv2::Client::new(&sdk), aws_sdk_dynamodb::Client::new(&sdk), &mut settings);
    settings.finish().unwrap();
    let rendered = template()
        .render(
            notify::domain::channel::Channel::Email,
            Some("en"),
            json!({"name": "Ada", "order": "A-1042"}).as_object().unwrap(),
        )
        .unwrap();
    let notify::domain::template::Rendered::Email { subject, html, text } = rendered else { unreachable!() };
    let message = DeliveryMessage {
        notification_id: "0196a0f2-7c1e-7d2a-9b4e-1f2a3b4c5d6e".into(),
        delivery_id: "email".into(),
        user_id: profile().user_id,
        template: TemplateName::parse("order-shipped").unwrap(),
        transactional: false,
        content: EmailContent { to: profile().email.unwrap(), subject, html, text },
    };
    let body = serde_json::to_string(&message).unwrap();
    c.bench_function("dispatch: one email message (parse, MIME)", |b| {
        b.iter(|| {
            let message: DeliveryMessage<EmailContent> = serde_json::from_str(black_box(&body)).unwrap();
            black_box(email.mime(&message).unwrap().len())
        })
    });
}

criterion_group!(benches, intake, intake_steps, dispatch);
criterion_main!(benches);
