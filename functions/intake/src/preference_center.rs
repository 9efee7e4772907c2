//! The hosted preference center (`/v1/preferences/{token}`), no app credentials: the signed link
//! in every email opens a page of the user's channels and quiet hours. `GET` only shows it (link
//! scanners fetch links); the form's `POST` saves it, once (see `domain::preference_center`).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::channel::Channel;
use notify::domain::preference_center::{
    FormErrorReason, PreferencesForm, form_token, link_token, open_form, open_link,
};
use notify::domain::quiet_hours::{QuietHours, TimeOfDay};
use notify::domain::user::{UserId, UserProfile};
use serde::Serialize;

use crate::Intake;
use crate::pages::{Language, not_found, page, see_other};
use crate::problem::ApiError;
use crate::request::path_parameter;

/// What the center shows besides the user's preferences.
enum Notice {
    None,
    Saved,
    /// The form was rendered from older preferences: nothing was saved.
    Stale,
    /// A field of the form is wrong: nothing was saved.
    Invalid {
        field: &'static str,
        reason: FormErrorReason,
    },
}

/// The state the center's form shows.
struct Shown {
    push: bool,
    sms: bool,
    email: bool,
    quiet_on: bool,
    start: String,
    end: String,
}

impl Shown {
    /// The profile's preferences; the times of their window, else of the deployment's default.
    fn of(profile: &UserProfile, default_window: Option<QuietHours>) -> Self {
        let preferences = &profile.preferences;
        let window = preferences.quiet_hours.or(default_window);
        let time =
            |pick: fn(&QuietHours) -> TimeOfDay| window.as_ref().map(|window| pick(window).into()).unwrap_or_default();
        Self {
            push: preferences.push,
            sms: preferences.sms,
            email: preferences.email,
            quiet_on: preferences.quiet_hours.is_some(),
            start: time(QuietHours::start),
            end: time(QuietHours::end),
        }
    }

    fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::Push => self.push,
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        }
    }
}

#[derive(Serialize)]
struct ChannelView {
    name: Channel,
    label: &'static str,
    on: bool,
    reachable: bool,
}

#[derive(Serialize)]
struct FieldErrorView {
    field: &'static str,
    message: &'static str,
}

impl Intake {
    /// The URL of `user_id`'s preference center, under `base` (the API's public URL).
    pub(crate) async fn preferences_url(&self, base: &str, user_id: &UserId) -> Result<String, ApiError> {
        let token = link_token(&self.link_keys.signer().await?, user_id, notify::time::now_epoch_seconds());
        Ok(format!("{base}/v1/preferences/{token}"))
    }

    /// The user a preference center link names, if it is this deployment's and has not expired.
    async fn link_user(&self, request: &ApiGatewayV2httpRequest) -> Result<Option<UserId>, ApiError> {
        let token = path_parameter(request, "token")?;
        let now = notify::time::now_epoch_seconds();
        Ok(self.link_keys.verified(|signer| open_link(signer, token, now)).await?)
    }

    pub(crate) async fn preference_center(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let visitor = visitor_language(request);
        let Some(user_id) = self.link_user(request).await? else { return Ok(not_found(visitor)) };
        let Some(profile) = self.users.get(&user_id).await? else { return Ok(not_found(visitor)) };
        let saved = request.raw_query_string.as_deref().is_some_and(|query| query.contains("saved=1"));
        self.center_page(200, &profile, None, if saved { Notice::Saved } else { Notice::None }).await
    }

    pub(crate) async fn save_preferences(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let visitor = visitor_language(request);
        let Some(user_id) = self.link_user(request).await? else { return Ok(not_found(visitor)) };
        // The form's token first: a form this deployment did not serve gets nothing else.
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str());
        let token = field("form").unwrap_or_default();
        let revision = self.link_keys.verified(|signer| open_form(signer, token, &user_id)).await?;
        let Some(revision) = revision else { return Ok(not_found(visitor)) };
        let form = match PreferencesForm::parse(body) {
            Ok(form) => form,
            Err(error) => {
                let Some(profile) = self.users.get(&user_id).await? else { return Ok(not_found(visitor)) };
                // What the user entered, shown back with the field marked.
                let shown = Shown {
                    push: field("push").is_some(),
                    sms: field("sms").is_some(),
                    email: field("email").is_some(),
                    quiet_on: field("quiet_hours").is_some(),
                    start: field("quiet_start").unwrap_or_default().to_string(),
                    end: field("quiet_end").unwrap_or_default().to_string(),
                };
                let notice = Notice::Invalid { field: error.field, reason: error.reason };
                return self.center_page(422, &profile, Some(shown), notice).await;
            }
        };
        let now = notify::time::now_rfc3339();
        match self.users.set_preferences(&user_id, form.patch, &now, Some(&revision)).await? {
            Some(_) => {
                self.user_cache.invalidate(&user_id);
                tracing::info!(user_id = %user_id, "preferences saved in the preference center");
                // Relative, so it holds behind any base path a custom domain maps.
                Ok(see_other("?saved=1"))
            }
            None => match self.users.get(&user_id).await? {
                None => Ok(not_found(visitor)),
                Some(profile) => self.center_page(409, &profile, None, Notice::Stale).await,
            },
        }
    }

    /// The center for `profile`, showing `shown` (what a refused form held) or else the
    /// profile's preferences.
    async fn center_page(
        &self,
        status: i64,
        profile: &UserProfile,
        shown: Option<Shown>,
        notice: Notice,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let language = Language::for_locale(profile.locale.as_ref().map(|locale| locale.as_str()));
        let form = form_token(&self.link_keys.signer().await?, &profile.user_id, profile.preferences_revision());
        let policy = &self.quiet_hours;
        let shown = shown.unwrap_or_else(|| Shown::of(profile, policy.default_window));
        let channels: Vec<ChannelView> = Channel::ALL
            .into_iter()
            .map(|channel| ChannelView {
                name: channel,
                label: language.channel(channel, false),
                on: shown.allows(channel),
                reachable: profile.reachable(channel),
            })
            .collect();
        // The name, as `zone_of` reads it (names are checked when stored): the intake does not
        // link the tz database for a label.
        let zone = profile.timezone.as_ref().or(policy.default_zone.as_ref()).map_or("UTC", |name| name.as_str());
        let default_window = policy
            .default_window
            .map(|window| format!("{}–{}", String::from(window.start()), String::from(window.end())));
        let (notice, error) = match notice {
            Notice::None => (None, None),
            Notice::Saved => (Some(language.text("saved")), None),
            Notice::Stale => (Some(language.text("stale")), None),
            Notice::Invalid { field, reason } => {
                let message = match reason {
                    FormErrorReason::EmptyWindow => language.text("error_empty_window"),
                    _ => language.text("error_time"),
                };
                (None, Some(FieldErrorView { field, message }))
            }
        };
        let title = language.text("center_title");
        Ok(page(
            status,
            language,
            title,
            "center.html",
            minijinja::context! {
                form,
                channels,
                quiet => minijinja::context! { on => shown.quiet_on, start => shown.start, end => shown.end },
                zone,
                default_window,
                notice,
                error,
            },
        ))
    }
}

/// The language for a visitor the link does not identify.
pub(crate) fn visitor_language(request: &ApiGatewayV2httpRequest) -> Language {
    Language::negotiate(request.headers.get("accept-language").and_then(|value| value.to_str().ok()))
}
