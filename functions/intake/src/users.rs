//! `/v1/users/{user_id}`: contact data, devices and preferences (scope `users`).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use notify::domain::delivery::Platform;
use notify::domain::user::{ContactsInput, Device, DeviceToken, MAX_DEVICES, PreferencesPatch, UserId, UserProfile};
use notify::store::users::Registration;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Intake;
use crate::problem::{ApiError, empty_response, json_response};
use crate::request::{parsed_path_parameter, typed};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceInput {
    pub(crate) platform: Platform,
    pub(crate) token: String,
}

/// A user as the API shows it.
fn user_body(profile: &UserProfile) -> Value {
    let mut body = json!({
        "user_id": profile.user_id,
        "preferences": profile.preferences,
        "devices": profile.devices.values().map(device_body).collect::<Vec<_>>(),
        "updated_at": profile.updated_at,
    });
    for (name, value) in [
        ("email", profile.email.as_ref().map(|v| v.as_str())),
        ("phone", profile.phone.as_ref().map(|v| v.as_str())),
        ("locale", profile.locale.as_ref().map(|v| v.as_str())),
        ("timezone", profile.timezone.as_ref().map(|v| v.as_str())),
    ] {
        if let Some(value) = value {
            body[name] = json!(value);
        }
    }
    body
}

/// A device as the API shows it (its SNS endpoint is internal).
fn device_body(device: &Device) -> Value {
    json!({"platform": device.platform, "token": device.token, "active": device.active, "created_at": device.created_at})
}

fn user_id(request: &ApiGatewayV2httpRequest) -> Result<UserId, ApiError> {
    parsed_path_parameter(request, "user_id", UserId::parse)
}

fn no_such_user(user_id: &UserId) -> ApiError {
    ApiError::NotFound(format!("no user {user_id}"))
}

impl Intake {
    pub(crate) async fn put_user(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let contacts = typed::<ContactsInput>(body)?.check().map_err(ApiError::Validation)?;
        let (profile, created) = self.users.put_contacts(&user_id, &contacts, &notify::time::now_rfc3339()).await?;
        self.user_cache.invalidate(&user_id);
        Ok(json_response(if created { 201 } else { 200 }, "application/json", &user_body(&profile)))
    }

    pub(crate) async fn get_user(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let profile = self.users.get(&user_id).await?.ok_or_else(|| no_such_user(&user_id))?;
        Ok(json_response(200, "application/json", &user_body(&profile)))
    }

    pub(crate) async fn delete_user(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        self.users.delete(&user_id).await?;
        self.user_cache.invalidate(&user_id);
        Ok(empty_response(204))
    }

    pub(crate) async fn register_device(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let input: DeviceInput = typed(body)?;
        let token =
            DeviceToken::parse(input.platform, &input.token).map_err(|message| ApiError::invalid("token", message))?;
        let now = notify::time::now_rfc3339();
        let device = Device::registered(input.platform, &token, &now);
        let registration = self.users.register_device(&user_id, &token, device, &now).await?;
        self.user_cache.invalidate(&user_id);
        match registration {
            Registration::Added(device) => Ok(json_response(201, "application/json", &device_body(&device))),
            Registration::AlreadyRegistered(device) => {
                Ok(json_response(200, "application/json", &device_body(&device)))
            }
            Registration::NoSuchUser => Err(no_such_user(&user_id)),
            Registration::TooManyDevices => {
                Err(ApiError::Conflict(format!("the user already has {MAX_DEVICES} devices; remove one first")))
            }
        }
    }

    pub(crate) async fn delete_device(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let raw = crate::request::path_parameter(request, "token")?;
        // The platform is not in the path; a token valid for either platform is accepted.
        let token = DeviceToken::parse(Platform::Ios, raw)
            .or_else(|_| DeviceToken::parse(Platform::Android, raw))
            .map_err(|message| ApiError::invalid("token", message))?;
        self.users.remove_device(&user_id, &token).await?;
        self.user_cache.invalidate(&user_id);
        Ok(empty_response(204))
    }

    pub(crate) async fn get_preferences(
        &self,
        request: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let profile = self.users.get(&user_id).await?.ok_or_else(|| no_such_user(&user_id))?;
        Ok(json_response(200, "application/json", &json!(profile.preferences)))
    }

    pub(crate) async fn put_preferences(
        &self,
        request: &ApiGatewayV2httpRequest,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let user_id = user_id(request)?;
        let patch: PreferencesPatch = typed(body)?;
        if patch == PreferencesPatch::default() {
            return Err(ApiError::invalid("body", "give at least one of push, sms, email, quiet_hours"));
        }
        let preferences = self
            .users
            .set_preferences(&user_id, patch, &notify::time::now_rfc3339(), None)
            .await?
            .ok_or_else(|| no_such_user(&user_id))?
            .preferences;
        self.user_cache.invalidate(&user_id);
        Ok(json_response(200, "application/json", &json!(preferences)))
    }
}
