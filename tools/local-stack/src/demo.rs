//! Demo data for a freshly started local stack: an app with every scope, a user reachable by
//! SMS and email, and a template, written through the project's own stores.

use std::collections::{BTreeMap, BTreeSet};

use notify::config::{Settings, Tables};
use notify::domain::app::{AppRecord, Scope};
use notify::domain::contact::{EmailAddress, PhoneNumber};
use notify::domain::template::{EmailSource, LocalizedContent, SmsSource, Template, TemplateName};
use notify::domain::user::{Locale, Preferences, TimeZoneName, UserId, UserProfile};
use notify::store::apps::AppStore;
use notify::store::templates::TemplateStore;
use notify::store::users::UserStore;

use crate::provision::Deployed;
use crate::{Clients, StackError};

pub const DEMO_USER: &str = "demo-user";
pub const DEMO_PHONE: &str = "+12015550123";
pub const DEMO_TEMPLATE: &str = "welcome";

pub struct DemoApp {
    pub app_key: String,
    pub app_secret: String,
}

/// The tables as the intake function sees them (its resolved environment).
pub fn tables(deployed: &Deployed) -> Result<Tables, StackError> {
    let intake = deployed
        .spec
        .functions
        .iter()
        .find(|function| function.binary == "intake")
        .ok_or_else(|| StackError::Template("no function is built from the intake binary".into()))?;
    let environment = &deployed.function_environments[&intake.logical_id];
    let mut settings = Settings::new(environment);
    let tables = Tables::load(&mut settings);
    settings
        .finish()
        .map_err(|error| StackError::Function { function: intake.logical_id.clone(), message: error.to_string() })?;
    Ok(tables)
}

/// Creates an app with every scope; its secret is returned once, here.
pub async fn create_app(
    clients: &Clients,
    deployed: &Deployed,
    name: &str,
    scopes: BTreeSet<Scope>,
) -> Result<DemoApp, StackError> {
    let apps = AppStore::new(clients.dynamodb.clone(), tables(deployed)?.apps);
    let (record, secret) = AppRecord::create(name, scopes, &notify::time::now_rfc3339());
    apps.create(&record)
        .await
        .map_err(|error| StackError::Aws { action: "creating the demo app".into(), message: error.to_string() })?;
    Ok(DemoApp { app_key: record.app_key, app_secret: secret.expose().to_string() })
}

pub async fn seed(clients: &Clients, deployed: &Deployed) -> Result<DemoApp, StackError> {
    let tables = tables(deployed)?;
    let failed = |what: &str| {
        let what = what.to_string();
        move |error: notify::error::DependencyError| StackError::Aws {
            action: format!("seeding the demo {what}"),
            message: error.to_string(),
        }
    };
    let now = notify::time::now_rfc3339();
    UserStore::new(clients.dynamodb.clone(), tables.users)
        .put(&UserProfile {
            user_id: UserId::parse(DEMO_USER).expect("valid id"),
            email: Some(EmailAddress::parse("ada@example.com").expect("valid address")),
            phone: Some(PhoneNumber::parse(DEMO_PHONE).expect("valid number")),
            locale: Some(Locale::parse("en").expect("valid tag")),
            timezone: Some(TimeZoneName::parse("Europe/London").expect("valid zone")),
            preferences: Preferences::default(),
            preferences_updated_at: None,
            devices: BTreeMap::new(),
            created_at: now.clone(),
            updated_at: now.clone(),
        })
        .await
        .map_err(failed("user"))?;
    let english = LocalizedContent {
        sms: Some(SmsSource { body: "Hi {{ name }}, welcome to notify!".into() }),
        email: Some(EmailSource {
            subject: "Welcome, {{ name }}".into(),
            html: "<p>Hi {{ name }}, welcome to <b>notify</b>!</p>".into(),
            text: "Hi {{ name }}, welcome to notify!".into(),
        }),
        push: None,
    };
    TemplateStore::new(clients.dynamodb.clone(), tables.templates)
        .put(&Template {
            name: TemplateName::parse(DEMO_TEMPLATE).expect("valid name"),
            default_locale: "en".into(),
            transactional: false,
            tracking: false,
            quiet_hours: false,
            locales: BTreeMap::from([("en".into(), english)]),
            updated_at: now,
            compiled: Default::default(),
        })
        .await
        .map_err(failed("template"))?;
    create_app(clients, deployed, "demo", Scope::ALL.into_iter().collect()).await
}
