//! One-click unsubscribe (RFC 8058), no app credentials: the link in every email carries a
//! signed token naming the user and channel.
//! - `GET` (a person clicking the link) shows a one-button confirmation, because link scanners
//!   follow GET links and must not unsubscribe anyone.
//! - `POST` (that button, or a mail client's one-click `List-Unsubscribe=One-Click`) opts the
//!   user out, whatever happened since: one-click must work without any other state. The page
//!   it answers offers an undo and the way to the preference center.
//! - `POST` with `undo` (that page's form) opts back in, only while nothing changed since the
//!   unsubscribe (the form token's revision), so a replayed undo changes nothing.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::channel::Channel;
use notify::domain::preference_center::{form_token, link_token, open_form};
use notify::domain::user::{PreferencesPatch, UserId, UserProfile};

use crate::Intake;
use crate::pages::{Language, not_found, page};
use crate::preference_center::visitor_language;
use crate::problem::ApiError;
use crate::request::path_parameter;

impl Intake {
    /// The user and channel of the link, if this deployment signed it.
    async fn unsubscribe_link(&self, request: &ApiGatewayV2httpRequest) -> Result<Option<(UserId, Channel)>, ApiError> {
        let token = path_parameter(request, "token")?;
        Ok(self.link_keys.verified(|signer| signer.verify(token)).await?)
    }

    /// The preference center's link from a page under `/v1/unsubscribe/`: relative, so it
    /// holds behind any base path.
    async fn center_link(&self, user_id: &UserId) -> Result<String, ApiError> {
        let token = link_token(&self.link_keys.signer().await?, user_id, notify::time::now_epoch_seconds());
        Ok(format!("../preferences/{token}"))
    }

    pub(crate) async fn unsubscribe_form(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let Some((user_id, channel)) = self.unsubscribe_link(request).await? else {
            return Ok(not_found(visitor_language(request)));
        };
        let profile = self.users.get(&user_id).await?;
        let language = language_of(profile.as_ref(), request);
        let center = match profile {
            Some(_) => Some(self.center_link(&user_id).await?),
            None => None,
        };
        let title = language.text("unsubscribe_title");
        let context = minijinja::context! { channel => language.channel(channel, true), center };
        Ok(page(200, language, title, "unsubscribe.html", context))
    }

    pub(crate) async fn unsubscribe(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let Some((user_id, channel)) = self.unsubscribe_link(request).await? else {
            return Ok(not_found(visitor_language(request)));
        };
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str());
        if field("undo").is_some() {
            return self.undo(request, user_id, channel, field("form").unwrap_or_default()).await;
        }
        let now = notify::time::now_rfc3339();
        let profile = self.users.set_preferences(&user_id, PreferencesPatch::opt_out(channel), &now, None).await?;
        self.user_cache.invalidate(&user_id);
        tracing::info!(user_id = %user_id, channel = %channel, "unsubscribed");
        let language = language_of(profile.as_ref(), request);
        // A user deleted since the email was sent is as unsubscribed as can be: the same answer,
        // with nothing to undo or manage.
        let (undo, center) = match &profile {
            Some(profile) => (
                Some(form_token(&self.link_keys.signer().await?, &user_id, &profile.updated_at)),
                Some(self.center_link(&user_id).await?),
            ),
            None => (None, None),
        };
        let (heading, message) = (language.text("unsubscribed_title"), language.text("unsubscribed"));
        let message = message.replace("{channel}", language.channel(channel, true));
        let context = minijinja::context! { heading, message, role => "status", undo, center };
        Ok(page(200, language, heading, "message.html", context))
    }

    async fn undo(
        &self,
        request: &ApiGatewayV2httpRequest,
        user_id: UserId,
        channel: Channel,
        form: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let revision = self.link_keys.verified(|signer| open_form(signer, form, &user_id)).await?;
        let Some(revision) = revision else { return Ok(not_found(visitor_language(request))) };
        let mut patch = PreferencesPatch::default();
        match channel {
            Channel::Push => patch.push = Some(true),
            Channel::Sms => patch.sms = Some(true),
            Channel::Email => patch.email = Some(true),
        }
        let now = notify::time::now_rfc3339();
        let undone = self.users.set_preferences(&user_id, patch, &now, Some(&revision)).await?;
        let saved = undone.is_some();
        let profile = match undone {
            Some(profile) => Some(profile),
            None => self.users.get(&user_id).await?,
        };
        let Some(profile) = profile else { return Ok(not_found(visitor_language(request))) };
        let language = language_of(Some(&profile), request);
        let (status, heading, message) = if saved {
            self.user_cache.invalidate(&user_id);
            tracing::info!(user_id = %user_id, channel = %channel, "unsubscribe undone");
            let message = language.text("resubscribed").replace("{channel}", language.channel(channel, true));
            (200, language.text("resubscribed_title"), message)
        } else {
            (409, language.text("stale_title"), language.text("stale").to_string())
        };
        let center = Some(self.center_link(&user_id).await?);
        Ok(page(
            status,
            language,
            heading,
            "message.html",
            minijinja::context! { heading, message, role => "status", center },
        ))
    }
}

/// The user's language, or the visitor's when the user is gone.
fn language_of(profile: Option<&UserProfile>, request: &ApiGatewayV2httpRequest) -> Language {
    match profile {
        Some(profile) => Language::for_locale(profile.locale.as_ref().map(|locale| locale.as_str())),
        None => visitor_language(request),
    }
}
