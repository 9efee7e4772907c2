//! Unsubscribe (RFC 8058), no app credentials: the link in every email names the user, the
//! channel and when the email was sent, sealed.
//! - `GET` (a person clicking the link) shows a one-button confirmation, because link scanners
//!   follow GET links and must not unsubscribe anyone. With `?undo=`/`?done=1`/`?resubscribed=1`
//!   it shows what a POST did (each POST from the page answers `303` to one, so reloading the
//!   result never posts again); a GET never changes anything.
//! - `POST` opts the user out, whatever happened since: a mail client's one-click POST
//!   (`List-Unsubscribe=One-Click`, answered `200` with the page) must work without any other
//!   state, and so does the page's button. When it turned the channel off, the result offers an
//!   undo, and a link to the preference center while the email's link would still be valid.
//! - `POST` with `undo` (that page's form) opts back in, only while nothing changed since the
//!   unsubscribe (the undo token names the revision it left): a replayed undo changes nothing.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::preference_center::{LINK_VALIDITY_SECONDS, link_token, open_undo, undo_token};
use notify::domain::unsubscribe::UnsubscribeLink;
use notify::domain::user::{PreferencesPatch, UserProfile};

use crate::Intake;
use crate::pages::{Language, not_found, page, see_other};
use crate::preference_center::visitor_language;
use crate::problem::ApiError;
use crate::request::path_parameter;

/// What the unsubscribe page shows.
enum Shown<'a> {
    /// The one-button confirmation.
    Confirm,
    /// Unsubscribed, with the undo token when the unsubscribe turned the channel off.
    Unsubscribed(Option<&'a str>),
    Resubscribed,
    /// An undo refused: the preferences changed since the unsubscribe.
    UndoStale,
}

impl Intake {
    /// What the link names, if this deployment signed it.
    async fn unsubscribe_link(&self, request: &ApiGatewayV2httpRequest) -> Result<Option<UnsubscribeLink>, ApiError> {
        let token = path_parameter(request, "token")?;
        Ok(self.link_keys.verified(|signer| signer.open_unsubscribe_link(token)).await?)
    }

    /// The preference center's link from a page under `/v1/unsubscribe/` (relative, so it holds
    /// behind any base path): valid as long as the email's own link to the center, so an old
    /// unsubscribe link opens no more than the email did. None for links from before they
    /// carried their send time.
    async fn center_link(&self, link: &UnsubscribeLink) -> Result<Option<String>, ApiError> {
        let Some(issued) =
            link.issued.filter(|issued| issued + LINK_VALIDITY_SECONDS > notify::time::now_epoch_seconds())
        else {
            return Ok(None);
        };
        let token = link_token(&self.link_keys.signer().await?, &link.user_id, issued);
        Ok(Some(format!("../preferences/{token}")))
    }

    pub(crate) async fn unsubscribe_page(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let Some(link) = self.unsubscribe_link(request).await? else {
            return Ok(not_found(visitor_language(request)));
        };
        let query: Vec<(String, String)> =
            form_urlencoded::parse(request.raw_query_string.as_deref().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let value = |name: &str| query.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str());
        let shown = match (value("undo"), value("done"), value("resubscribed")) {
            (Some(undo), _, _) => Shown::Unsubscribed(Some(undo)),
            (None, Some(_), _) => Shown::Unsubscribed(None),
            (None, None, Some(_)) => Shown::Resubscribed,
            _ => Shown::Confirm,
        };
        let profile = self.users.get(&link.user_id).await?;
        self.unsubscribe_answer(200, request, &link, profile.as_ref(), shown).await
    }

    pub(crate) async fn unsubscribe(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let Some(link) = self.unsubscribe_link(request).await? else {
            return Ok(not_found(visitor_language(request)));
        };
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str());
        if let Some(undo) = field("undo") {
            return self.undo(request, &link, undo).await;
        }
        let (user_id, channel) = (&link.user_id, link.channel);
        let before = self.users.get(user_id).await?;
        let now = notify::time::now_rfc3339();
        let after = self.users.set_preferences(user_id, PreferencesPatch::opt(channel, false), &now, None).await?;
        self.user_cache.invalidate(user_id);
        tracing::info!(user_id = %user_id, channel = %channel, "unsubscribed");
        // An undo only for an unsubscribe that turned the channel off: an unsubscribe link must
        // never opt anyone in to what they had turned off themselves.
        let turned_off = before.is_some_and(|before| before.preferences.allows(channel));
        let undo = match &after {
            Some(after) if turned_off => {
                Some(undo_token(&self.link_keys.signer().await?, user_id, channel, after.preferences_revision()))
            }
            _ => None,
        };
        if field("confirm").is_some() {
            // The page's button: the result by GET, so a reload does not post again.
            return Ok(see_other(&match &undo {
                Some(undo) => format!("?undo={undo}"),
                None => "?done=1".to_string(),
            }));
        }
        // A mail client's one-click POST (or any other body): the page itself.
        self.unsubscribe_answer(200, request, &link, after.as_ref(), Shown::Unsubscribed(undo.as_deref())).await
    }

    async fn undo(
        &self,
        request: &ApiGatewayV2httpRequest,
        link: &UnsubscribeLink,
        undo: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (user_id, channel) = (&link.user_id, link.channel);
        let revision = self.link_keys.verified(|signer| open_undo(signer, undo, user_id, channel)).await?;
        let Some(revision) = revision else { return Ok(not_found(visitor_language(request))) };
        let patch = PreferencesPatch::opt(channel, true);
        let now = notify::time::now_rfc3339();
        if self.users.set_preferences(user_id, patch, &now, Some(&revision)).await?.is_some() {
            self.user_cache.invalidate(user_id);
            tracing::info!(user_id = %user_id, channel = %channel, "unsubscribe undone");
            return Ok(see_other("?resubscribed=1"));
        }
        match self.users.get(user_id).await? {
            None => Ok(not_found(visitor_language(request))),
            Some(profile) => self.unsubscribe_answer(409, request, link, Some(&profile), Shown::UndoStale).await,
        }
    }

    async fn unsubscribe_answer(
        &self,
        status: i64,
        request: &ApiGatewayV2httpRequest,
        link: &UnsubscribeLink,
        profile: Option<&UserProfile>,
        shown: Shown<'_>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let language = match profile {
            Some(profile) => Language::for_locale(profile.locale.as_ref().map(|locale| locale.as_str())),
            // A user deleted since the email was sent is as unsubscribed as can be: the same
            // pages, in the visitor's language, with nothing to manage.
            None => visitor_language(request),
        };
        let center = match profile {
            Some(_) => self.center_link(link).await?,
            None => None,
        };
        let channel = language.channel(link.channel, true);
        let (heading, message, undo) = match shown {
            Shown::Confirm => {
                let title = language.text("unsubscribe_title");
                let context = minijinja::context! { channel, center };
                return Ok(page(status, language, title, "unsubscribe.html", context));
            }
            Shown::Unsubscribed(undo) => ("unsubscribed_title", "unsubscribed", undo),
            Shown::Resubscribed => ("resubscribed_title", "resubscribed", None),
            Shown::UndoStale => ("stale_title", "undo_stale", None),
        };
        let heading = language.text(heading);
        let message = language.text(message).replace("{channel}", channel);
        let context = minijinja::context! { heading, message, role => "status", undo, center };
        Ok(page(status, language, heading, "message.html", context))
    }
}
