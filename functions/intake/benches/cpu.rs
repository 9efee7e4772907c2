//! CPU per notification in our own code, no I/O (`scripts/bench.sh cpu`):
//! - intake: the auth check (SHA-256 and constant-time compare), request validation, rendering
//!   every channel (SMS and email here), assembling the queue messages and the log record (the
//!   intake's own `assemble`: ids, serialization, request hash) and converting the record to the
//!   log write's DynamoDB item;
//! - dispatch: parsing one queue message and building the provider request (the email's MIME,
//!   the largest of the three).
//!
//! Criterion times each step. Run as `cpu --repeat STEP N` (what `scripts/bench.sh
//! cpu_instructions` does under callgrind), the binary instead runs one step N times and exits,
//! so instructions per step can be counted: a figure this machine's noise cannot move;
//! `cpu --steps` lists the steps' names.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use intake::{Prepared, SendRequest, assemble};
use notify::config::Settings;
use notify::domain::app::{AppRecord, Scope};
use notify::domain::delivery::{DeliveryMessage, EmailContent};
use notify::domain::plan::{Plan, plan};
use notify::domain::template::{Template, TemplateInput, TemplateName};
use notify::domain::tracking::LinkTracker;
use notify::domain::unsubscribe::{LinkSigner, SigningKey};
use notify::domain::user::UserProfile;
use notify::provider::email::EmailMime;
use notify::store::notifications::log_item;
use serde_json::{Value, json};

const NOW: &str = "2026-11-22T05:00:00Z";
const NOTIFICATION_ID: &str = "0196a0f2-7c1e-7d2a-9b4e-1f2a3b4c5d6e";
const IDEMPOTENCY_KEY: &str = "order-A-1042-shipped";
const LINK_BASE: &str = "https://api.example.com";
const LINK_SECRET: &str = "a secret of at least thirty-two bytes";
const BODY: &[u8] =
    br#"{"user_id": "user-42", "template": "order-shipped", "params": {"name": "Ada", "order": "A-1042"}}"#;

fn template() -> Template {
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

/// Everything a step needs, made once; each method is one measured step.
struct Fixture {
    app: AppRecord,
    secret: String,
    profile: UserProfile,
    template: Template,
    json: Value,
    request: SendRequest,
    rendered: Plan,
    tracker: LinkTracker,
    prepared: Prepared,
    email: EmailMime,
    signer: LinkSigner,
    email_message: String,
}

impl Fixture {
    fn new() -> Self {
        let (app, secret) = AppRecord::create("bench", BTreeSet::from([Scope::Send]), NOW);
        let (profile, template) = (profile(), template());
        let json: Value = serde_json::from_slice(BODY).unwrap();
        let request = SendRequest::parse(&json).unwrap();
        let rendered = plan(&profile, &template, None, &request.params).unwrap();
        let tracker = LinkTracker::new(signer());
        let prepared = assemble_one(&tracker, &app, &request, &template, rendered.clone(), &json);
        let (email, email_message) = email_dispatch(&profile, &template);
        let secret = secret.expose().to_string();
        let signer = signer();
        Self {
            app,
            secret,
            profile,
            template,
            json,
            request,
            rendered,
            tracker,
            prepared,
            email,
            signer,
            email_message,
        }
    }

    /// The intake's whole CPU work for one notification (the steps below, end to end).
    fn intake(&self) -> usize {
        assert!(self.app.verify(black_box(&self.secret)));
        let json: Value = serde_json::from_slice(black_box(BODY)).unwrap();
        let request = SendRequest::parse(&json).unwrap();
        let plan = plan(&self.profile, &self.template, request.channels.as_deref(), &request.params).unwrap();
        let prepared = assemble_one(&self.tracker, &self.app, &request, &self.template, plan, &json);
        log_item(&prepared.record).unwrap().len()
    }

    fn auth(&self) -> bool {
        self.app.verify(black_box(&self.secret))
    }

    fn parse(&self) -> SendRequest {
        SendRequest::parse(&serde_json::from_slice::<Value>(black_box(BODY)).unwrap()).unwrap()
    }

    fn render(&self) -> Plan {
        plan(&self.profile, &self.template, None, black_box(&self.request.params)).unwrap()
    }

    fn assemble(&self) -> Prepared {
        assemble_one(
            &self.tracker,
            &self.app,
            &self.request,
            &self.template,
            black_box(&self.rendered).clone(),
            &self.json,
        )
    }

    fn log_item(&self) -> usize {
        log_item(black_box(&self.prepared.record)).unwrap().len()
    }

    fn dispatch_email(&self) -> usize {
        let message: DeliveryMessage<EmailContent> = serde_json::from_str(black_box(&self.email_message)).unwrap();
        self.email.build(&message, &self.signer).unwrap().len()
    }
}

fn assemble_one(
    tracker: &LinkTracker,
    app: &AppRecord,
    request: &SendRequest,
    template: &Template,
    plan: Plan,
    json: &Value,
) -> Prepared {
    let key = Some(IDEMPOTENCY_KEY.to_string());
    assemble(tracker, app, LINK_BASE, key, request, template, plan, json).unwrap()
}

fn signer() -> LinkSigner {
    LinkSigner::new(SigningKey::new("bench", LINK_SECRET), [])
}

/// The email dispatcher's MIME writer as its function loads it, and one email queue message.
fn email_dispatch(profile: &UserProfile, template: &Template) -> (EmailMime, String) {
    let env: BTreeMap<&str, &str> = BTreeMap::from([
        ("EMAIL_FROM_ADDRESS", "notifications@example.com"),
        ("PUBLIC_API_URL", "https://api.example.com"),
    ]);
    let env: std::collections::HashMap<String, String> =
        env.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut settings = Settings::new(&env);
    let email = EmailMime::load(&mut settings);
    settings.finish().unwrap();
    let params = json!({"name": "Ada", "order": "A-1042"});
    let rendered = template.render(notify::domain::channel::Channel::Email, Some("en"), params.as_object().unwrap());
    let notify::domain::template::Rendered::Email { subject, html, text } = rendered.unwrap() else { unreachable!() };
    let message = DeliveryMessage {
        notification_id: NOTIFICATION_ID.into(),
        delivery_id: "email".into(),
        user_id: profile.user_id.clone(),
        app_key: "ak_0123456789abcdef0123".into(),
        template: template.name.clone(),
        transactional: false,
        quiet_hours: false,
        deliver_after: None,
        content: EmailContent { to: profile.email.clone().unwrap(), subject, html, text },
    };
    (email, serde_json::to_string(&message).unwrap())
}

/// (name, criterion id, the step run once).
type Step = (&'static str, &'static str, fn(&Fixture));

/// A step entry: the fixture's `method`, its result kept from the optimiser.
macro_rules! step {
    ($name:literal, $id:literal, $method:ident) => {
        ($name, $id, |fixture: &Fixture| {
            black_box(fixture.$method());
        })
    };
}

const STEPS: &[Step] = &[
    step!("intake", "intake: one notification, SMS and email", intake),
    step!("auth", "intake step: auth check", auth),
    step!("parse", "intake step: parse and validate", parse),
    step!("render", "intake step: render SMS and email", render),
    step!("assemble", "intake step: assemble the messages and the log record", assemble),
    step!("log_item", "intake step: the log record as a DynamoDB item", log_item),
    step!("dispatch", "dispatch: one email message (parse, MIME)", dispatch_email),
];

fn steps(c: &mut Criterion) {
    let fixture = Fixture::new();
    for (_, id, step) in STEPS {
        c.bench_function(id, |b| b.iter(|| step(&fixture)));
    }
}

criterion_group!(benches, steps);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--steps") {
        STEPS.iter().for_each(|(name, _, _)| println!("{name}"));
        return;
    }
    if let Some(at) = args.iter().position(|arg| arg == "--repeat") {
        let (name, times) = (&args[at + 1], args[at + 2].parse::<u64>().expect("--repeat STEP N"));
        let (_, _, step) = STEPS.iter().find(|(n, _, _)| n == name).expect("a step name");
        let fixture = Fixture::new();
        for _ in 0..times {
            step(&fixture);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
