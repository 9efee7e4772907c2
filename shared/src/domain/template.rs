//! Message templates: per-channel content with optional per-locale variants, written in
//! MiniJinja (`{{ item_name }}`). Email HTML is auto-escaped; SMS, push and email text are not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::channel::Channel;

/// A template name: 1–128 characters of lowercase letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(input: &str) -> Result<Self, String> {
        let valid_chars = input.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if input.is_empty() || input.len() > 128 || !valid_chars {
            return Err("must be 1 to 128 characters of lowercase letters, digits, - and _".into());
        }
        Ok(Self(input.to_string()))
    }
}

super::validated_string!(TemplateName);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSource {
    pub title: String,
    pub body: String,
    /// APNs sound name (iOS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// APNs badge count (iOS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSource {
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSource {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// The content of one locale: any subset of the channels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalizedContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSource>,
}

impl LocalizedContent {
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Push => self.push.is_some(),
            Channel::Sms => self.sms.is_some(),
            Channel::Email => self.email.is_some(),
        }
    }
}

/// A stored template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: TemplateName,
    pub default_locale: String,
    /// Transactional messages (OTPs, security alerts) bypass per-user rate limits.
    #[serde(default)]
    pub transactional: bool,
    /// Open and click tracking of email (see `domain::tracking`); off unless the template asks.
    #[serde(default)]
    pub tracking: bool,
    /// Whether its email is held in the recipient's quiet hours (push and SMS always are,
    /// unless the template is transactional).
    #[serde(default)]
    pub quiet_hours: bool,
    /// Content per locale; `default_locale` must be one of the keys.
    pub locales: BTreeMap<String, LocalizedContent>,
    pub updated_at: String,
    /// The parts compiled on first render and reused by every clone (intake caches templates
    /// per warm instance): compiling is most of a render's cost.
    #[serde(skip)]
    pub compiled: CompiledParts,
}

/// A template's parts, compiled once. Derived from the template's fields, so it never makes
/// two templates different.
#[derive(Clone, Default)]
pub struct CompiledParts(Arc<OnceLock<Result<Compiled, RenderError>>>);

pub struct Compiled {
    environment: Environment<'static>,
    /// Part name (`en/email.html`) → the parameters it uses.
    needs: HashMap<String, Vec<String>>,
}

impl PartialEq for CompiledParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CompiledParts {}

impl std::fmt::Debug for CompiledParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "CompiledParts(compiled)" } else { "CompiledParts(not yet)" })
    }
}

/// The most bytes one template part may have.
pub const MAX_PART_BYTES: usize = 64 * 1024;

/// A template as a caller writes it (`PUT /v1/templates/{name}`), before it is checked.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub default_locale: String,
    #[serde(default)]
    pub transactional: bool,
    #[serde(default)]
    pub tracking: bool,
    #[serde(default)]
    pub quiet_hours: bool,
    pub locales: BTreeMap<String, LocalizedContent>,
}

impl TemplateInput {
    /// Checks every locale and compiles every part, reporting each problem with its path
    /// (`locales.en.email.html`).
    pub fn check(self, name: TemplateName, now: &str) -> Result<Template, Vec<super::FieldError>> {
        use super::FieldError;
        let mut errors = Vec::new();
        if self.locales.is_empty() {
            errors.push(FieldError::new("locales", "must have at least one locale"));
        } else if !self.locales.contains_key(&self.default_locale) {
            errors.push(FieldError::new("default_locale", "must be one of the keys of locales"));
        }
        for (locale, content) in &self.locales {
            if let Err(message) = super::user::Locale::parse(locale) {
                errors.push(FieldError::new(format!("locales.{locale}"), message));
            }
            if !Channel::ALL.iter().any(|channel| content.has(*channel)) {
                errors.push(FieldError::new(format!("locales.{locale}"), "must have content for at least one channel"));
            }
            for (part, source) in content.parts() {
                let field = format!("locales.{locale}.{part}");
                if source.len() > MAX_PART_BYTES {
                    errors.push(FieldError::new(field, format!("must be at most {MAX_PART_BYTES} bytes")));
                } else if let Err(message) = check_compiles(part, source) {
                    errors.push(FieldError::new(field, message));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Template {
            name,
            default_locale: self.default_locale,
            transactional: self.transactional,
            tracking: self.tracking,
            quiet_hours: self.quiet_hours,
            locales: self.locales,
            updated_at: now.to_string(),
            compiled: CompiledParts::default(),
        })
    }
}

impl LocalizedContent {
    /// Every part with its name (`email.html`); the name's suffix decides escaping.
    pub fn parts(&self) -> Vec<(&'static str, &str)> {
        let mut parts = Vec::new();
        if let Some(push) = &self.push {
            parts.extend([("push.title", push.title.as_str()), ("push.body", push.body.as_str())]);
        }
        if let Some(sms) = &self.sms {
            parts.push(("sms.body", sms.body.as_str()));
        }
        if let Some(email) = &self.email {
            parts.extend([
                ("email.subject", email.subject.as_str()),
                ("email.html", email.html.as_str()),
                ("email.text", email.text.as_str()),
            ]);
        }
        parts
    }
}

/// SNS delivers at most 1600 characters of SMS (10 concatenated segments of 153 GSM-7
/// characters, fewer with Unicode); longer text is refused at intake, never truncated.
pub const MAX_SMS_CHARS: usize = 1600;
/// APNs accepts 4 KB payloads; title and body must leave room for the rest of it.
pub const MAX_PUSH_BYTES: usize = 3500;
/// Rendered email (subject, HTML and text) must fit one queue message with room to spare.
pub const MAX_EMAIL_BYTES: usize = 200 * 1024;

/// A channel's content after rendering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum Rendered {
    Push { title: String, body: String, sound: Option<String>, badge: Option<u32> },
    Sms { body: String },
    Email { subject: String, html: String, text: String },
}

impl Rendered {
    /// Checks the provider's size limits.
    pub fn check_limits(&self) -> Result<(), String> {
        match self {
            Rendered::Sms { body } => {
                let characters = body.chars().count();
                if characters > MAX_SMS_CHARS {
                    return Err(format!("the rendered SMS is {characters} characters; at most {MAX_SMS_CHARS}"));
                }
            }
            Rendered::Push { title, body, .. } => {
                let bytes = title.len() + body.len();
                if bytes > MAX_PUSH_BYTES {
                    return Err(format!(
                        "the rendered push title and body are {bytes} bytes; at most {MAX_PUSH_BYTES}"
                    ));
                }
            }
            Rendered::Email { subject, html, text } => {
                let bytes = subject.len() + html.len() + text.len();
                if bytes > MAX_EMAIL_BYTES {
                    return Err(format!("the rendered email is {bytes} bytes; at most {MAX_EMAIL_BYTES}"));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Parameters the template uses that the request did not give (all of them, sorted).
    #[error("missing template parameters: {}", .0.join(", "))]
    MissingParams(Vec<String>),
    #[error("the template has no {0} content")]
    NoContent(Channel),
    /// The rendered content exceeds what the provider accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A template that compiled when saved but fails on these values (e.g. a filter error).
    #[error("{part}: {message}")]
    Failed { part: String, message: String },
}

impl Template {
    /// The content for `locale`, falling back from `pt-BR` to `pt` to the default locale.
    pub fn content_for(&self, locale: Option<&str>) -> &LocalizedContent {
        &self.locales[self.locale_key(locale)]
    }

    /// The locale whose content a user with `locale` gets: theirs, its language, or the default.
    fn locale_key(&self, locale: Option<&str>) -> &str {
        let candidates = locale.into_iter().flat_map(|tag| [tag, tag.split('-').next().unwrap_or(tag)]);
        candidates
            .filter_map(|tag| self.locales.get_key_value(tag))
            .map(|(key, _)| key.as_str())
            .next()
            .unwrap_or(&self.default_locale)
    }

    /// Every part of every locale in one environment, with the parameters each uses.
    fn compile(&self) -> Result<Compiled, RenderError> {
        let mut environment = environment();
        let mut needs = HashMap::new();
        for (locale, content) in &self.locales {
            for (part, source) in content.parts() {
                let name = format!("{locale}/{part}");
                let failed =
                    |error: minijinja::Error| RenderError::Failed { part: part.to_string(), message: describe(&error) };
                environment.add_template_owned(name.clone(), source.to_string()).map_err(failed)?;
                let template = environment.get_template(&name).map_err(failed)?;
                // Globals (`range`, `dict`, …) are the engine's, not parameters.
                let uses: Vec<String> = template
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|used| !environment.globals().any(|(global, _)| global == used))
                    .collect();
                needs.insert(name, uses);
            }
        }
        Ok(Compiled { environment, needs })
    }

    /// Renders one channel for one locale.
    pub fn render(
        &self,
        channel: Channel,
        locale: Option<&str>,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered, RenderError> {
        let key = self.locale_key(locale);
        let content = &self.locales[key];
        let prefix = format!("{channel}.");
        let parts: Vec<&str> =
            content.parts().into_iter().map(|(part, _)| part).filter(|part| part.starts_with(&prefix)).collect();
        if parts.is_empty() {
            return Err(RenderError::NoContent(channel));
        }
        let compiled = self.compiled.0.get_or_init(|| self.compile()).as_ref().map_err(Clone::clone)?;
        let names: Vec<String> = parts.iter().map(|part| format!("{key}/{part}")).collect();
        let missing: BTreeSet<&String> = names
            .iter()
            .flat_map(|name| compiled.needs.get(name).into_iter().flatten())
            .filter(|used| !params.contains_key(*used))
            .collect();
        if !missing.is_empty() {
            return Err(RenderError::MissingParams(missing.into_iter().cloned().collect()));
        }
        // Converted once for every part (rendering from the JSON map would convert it per part).
        let context = minijinja::Value::from_serialize(params);
        let mut output = Vec::with_capacity(names.len());
        for (name, part) in names.iter().zip(&parts) {
            let failed =
                |error: minijinja::Error| RenderError::Failed { part: part.to_string(), message: describe(&error) };
            output.push(compiled.environment.get_template(name).map_err(failed)?.render(&context).map_err(failed)?);
        }
        let mut output = output.into_iter();
        let mut next = || output.next().expect("one output per part");
        let rendered = match channel {
            Channel::Push => {
                let push = content.push.as_ref().expect("push parts exist");
                Rendered::Push { title: next(), body: next(), sound: push.sound.clone(), badge: push.badge }
            }
            Channel::Sms => Rendered::Sms { body: next() },
            Channel::Email => Rendered::Email { subject: next(), html: next(), text: next() },
        };
        rendered.check_limits().map_err(RenderError::TooLarge)?;
        Ok(rendered)
    }
}

/// Checks that a template source compiles; the error names the position.
pub fn check_compiles(part: &str, source: &str) -> Result<(), String> {
    environment().template_from_named_str(part, source).map(|_| ()).map_err(|error| describe(&error))
}

/// Rendering steps one template part may take: generous for real templates, and a bound on
/// what a template with runaway loops can cost a send.
const RENDER_FUEL: u64 = 50_000;

fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_fuel(Some(RENDER_FUEL));
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment
        .set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
    environment
}

fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!("{} (line {line})", error.detail().unwrap_or(&error.to_string())),
        None => error.detail().map(str::to_string).unwrap_or_else(|| error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Template {
        let english = LocalizedContent {
            sms: Some(SmsSource { body: "Hi {{ name }}, your code is {{ code }} & <b>".into() }),
            email: Some(EmailSource {
                subject: "Hello {{ name }}".into(),
                html: "<p>Hello {{ name }}</p>".into(),
                text: "Hello {{ name }}".into(),
            }),
            push: None,
        };
        let portuguese =
            LocalizedContent { sms: Some(SmsSource { body: "Olá {{ name }}".into() }), ..Default::default() };
        Template {
            name: TemplateName::parse("welcome").unwrap(),
            default_locale: "en".into(),
            transactional: false,
            tracking: false,
            quiet_hours: false,
            locales: BTreeMap::from([("en".into(), english), ("pt".into(), portuguese)]),
            updated_at: "2026-01-01T00:00:00Z".into(),
            compiled: Default::default(),
        }
    }

    fn params(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn sms_is_rendered_without_escaping() {
        let rendered = template().render(Channel::Sms, None, &params(json!({"name": "Ada", "code": "42"}))).unwrap();
        assert_eq!(rendered, Rendered::Sms { body: "Hi Ada, your code is 42 & <b>".into() });
    }

    #[test]
    fn email_html_is_escaped_and_text_is_not() {
        let rendered = template().render(Channel::Email, None, &params(json!({"name": "<Ada & Bob>"}))).unwrap();
        let Rendered::Email { subject, html, text } = rendered else { panic!("email expected") };
        assert_eq!(subject, "Hello <Ada & Bob>");
        assert_eq!(html, "<p>Hello &lt;Ada &amp; Bob&gt;</p>");
        assert_eq!(text, "Hello <Ada & Bob>");
    }

    #[test]
    fn every_missing_parameter_is_listed() {
        let error = template().render(Channel::Sms, None, &params(json!({}))).unwrap_err();
        assert_eq!(error, RenderError::MissingParams(vec!["code".into(), "name".into()]));
    }

    #[test]
    fn locales_fall_back_from_region_to_language_to_default() {
        let rendered = template().render(Channel::Sms, Some("pt-BR"), &params(json!({"name": "Ana"}))).unwrap();
        assert_eq!(rendered, Rendered::Sms { body: "Olá Ana".into() });
        let template = template();
        assert!(template.content_for(Some("de-DE")).email.is_some());
    }

    #[test]
    fn a_channel_without_content_is_reported() {
        let error = template().render(Channel::Push, None, &params(json!({}))).unwrap_err();
        assert_eq!(error, RenderError::NoContent(Channel::Push));
    }

    #[test]
    fn template_input_is_checked_part_by_part() {
        let input: TemplateInput = serde_json::from_value(json!({
            "default_locale": "fr",
            "locales": {
                "en": {"sms": {"body": "ok {{ name }}"}, "email": {"subject": "s", "html": "<p>{{ name </p>", "text": "t"}},
                "not a locale": {}
            }
        }))
        .unwrap();
        let errors = input.check(TemplateName::parse("t").unwrap(), "now").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["default_locale", "locales.en.email.html", "locales.not a locale", "locales.not a locale"]
        );
        assert!(errors[1].message.contains("line 1"), "{}", errors[1].message);
    }

    #[test]
    fn a_valid_input_becomes_a_template() {
        let input: TemplateInput = serde_json::from_value(
            json!({"default_locale": "en", "transactional": true, "locales": {"en": {"sms": {"body": "{{ code }}"}}}}),
        )
        .unwrap();
        let template = input.check(TemplateName::parse("otp").unwrap(), "now").unwrap();
        assert!(template.transactional);
        assert!(
            serde_json::from_value::<TemplateInput>(json!({"default_locale": "en", "locales": {}, "extra": 1}))
                .is_err()
        );
    }

    #[test]
    fn rendered_content_over_the_provider_limits_is_refused() {
        let long = "x".repeat(MAX_SMS_CHARS);
        let error = template().render(Channel::Sms, None, &params(json!({"name": long, "code": "1"}))).unwrap_err();
        assert!(matches!(&error, RenderError::TooLarge(message) if message.contains("at most 1600")), "{error}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let mut looping = template();
        looping.locales.get_mut("en").unwrap().sms = Some(SmsSource {
            body: "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}".into(),
        });
        let error = looping.render(Channel::Sms, None, &params(json!({}))).unwrap_err();
        assert!(matches!(error, RenderError::Failed { .. }), "{error}");
    }

    #[test]
    fn compile_errors_name_the_line() {
        let message = check_compiles("email.html", "line one\n{{ name ").unwrap_err();
        assert!(message.contains("line 2"), "{message}");
    }
}
