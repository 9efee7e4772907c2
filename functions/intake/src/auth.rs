//! HTTP Basic authentication of apps (`Authorization: Basic base64(appKey:appSecret)`).

use aws_lambda_events::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use notify::cache::TtlCache;
use notify::domain::app::{AppKey, AppRecord, Scope};
use notify::store::apps::AppStore;

use crate::problem::ApiError;

/// The app key and secret presented by a request.
pub(crate) struct Credentials {
    app_key: String,
    secret: String,
}

pub(crate) fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let header = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (app_key, secret) = decoded.split_once(':')?;
    Some(Credentials { app_key: app_key.to_string(), secret: secret.to_string() })
}

/// The app behind the request, if its credentials are valid and it holds `scope`. A key that is
/// not of the issued format is refused before any lookup (no read for guessing or garbage).
pub async fn authenticate(
    apps: &AppStore,
    cache: &TtlCache<String, Option<AppRecord>>,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<AppRecord, ApiError> {
    let credentials = credentials(headers).ok_or(ApiError::Unauthorized)?;
    let key = AppKey::parse(&credentials.app_key).ok_or(ApiError::Unauthorized)?;
    let app = cache.get_or_load(&credentials.app_key, apps.get(key.as_str())).await?.ok_or(ApiError::Unauthorized)?;
    if !app.verify(&credentials.secret) {
        return Err(ApiError::Unauthorized);
    }
    if !app.allows(scope) {
        return Err(ApiError::Forbidden(scope));
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_read() {
        let encoded = STANDARD.encode("ak_1:sk_secret:with:colons");
        let parsed = credentials(&headers(&format!("Basic {encoded}"))).unwrap();
        assert_eq!(parsed.app_key, "ak_1");
        assert_eq!(parsed.secret, "sk_secret:with:colons");
    }

    /// An app store whose every read fails (nothing listens at its endpoint).
    fn unreachable_apps() -> AppStore {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("x", "x", None, None, "test"),
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        AppStore::new(aws_sdk_dynamodb::Client::new(&sdk), "apps")
    }

    #[tokio::test]
    async fn a_key_not_of_the_issued_format_is_refused_without_a_lookup() {
        let cache = TtlCache::new(std::time::Duration::from_secs(5), 10);
        for key in ["admin", "ak_' OR 1=1", "ak_0123456789ABCDEF0123"] {
            let basic = headers(&format!("Basic {}", STANDARD.encode(format!("{key}:sk_x"))));
            let refused = authenticate(&unreachable_apps(), &cache, &basic, Scope::Send).await;
            assert!(matches!(refused, Err(ApiError::Unauthorized)), "{key}");
        }
        // A key of the format is looked up: here the lookup fails, which is no 401.
        let issued = headers(&format!("Basic {}", STANDARD.encode("ak_0123456789abcdef0123:sk_x")));
        let looked_up = authenticate(&unreachable_apps(), &cache, &issued, Scope::Send).await;
        assert!(matches!(looked_up, Err(ApiError::Dependency(_))), "{looked_up:?}");
    }

    #[test]
    fn other_schemes_and_garbage_are_not_credentials() {
        assert!(credentials(&HeaderMap::new()).is_none());
        assert!(credentials(&headers("Bearer abc")).is_none());
        assert!(credentials(&headers("Basic !!!")).is_none());
        assert!(credentials(&headers(&format!("Basic {}", STANDARD.encode("no-colon")))).is_none());
    }
}
