//! SDK configuration and the mapping of SDK errors onto [`DependencyError`].

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

use crate::error::{DependencyError, FailureClass};

/// The root certificates every AWS service endpoint's certificate chains to: Amazon Trust
/// Services' Amazon Root CA 1–4 and the Starfield Services G2 root that cross-signs them
/// (<https://www.amazontrust.com/repository/>). The functions call AWS endpoints only, so they
/// trust these five, bundled, instead of the system store: the SDK's default reads the whole
/// store at every cold start (5 ms of init on a Debian-style host; BENCHMARKS.md, section 1)
/// and would trust every public CA.
const AWS_ENDPOINT_ROOTS_PEM: &[u8] = include_bytes!("../certs/aws-endpoint-roots.pem");

/// The SDK configuration for a function: credentials from the environment, the standard region
/// chain, and `AWS_ENDPOINT_URL` when set (which is how the same code talks to a local
/// emulator). Lambda always puts the execution role's credentials in the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and building the default
/// chain would build an STS client for its web-identity provider at every cold start: a fifth
/// of the intake's init instructions (BENCHMARKS.md, section 1).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new())
        .http_client(aws_endpoint_https_client())
        .load()
        .await
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxies from the environment) trusting
/// [`AWS_ENDPOINT_ROOTS_PEM`] only.
fn aws_endpoint_https_client() -> SharedHttpClient {
    let trust_store = TrustStore::empty().with_pem_certificate(AWS_ENDPOINT_ROOTS_PEM);
    let tls_context =
        TlsContext::builder().with_trust_store(trust_store).build().expect("a trust store is all it holds");
    Builder::new().build_with_connector_fn(move |settings, runtime_components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls_context.clone());
        connector.set_connector_settings(settings.cloned());
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.build()
    })
}

/// The configuration for provider clients (SNS, SES): no SDK-level retries. A failed send is
/// retried through the queue with backoff (see `dispatch`), which neither holds the rest of the
/// batch for seconds nor hides the attempt from the delivery's record.
pub fn provider_config(sdk: &SdkConfig) -> SdkConfig {
    sdk.to_builder().retry_config(aws_config::retry::RetryConfig::disabled()).build()
}

/// Errors about the request itself, the same on every attempt whatever the service: a request
/// the service refuses as malformed (a DynamoDB expression, an item over 400 KB) or one the SDK
/// could not build.
const MALFORMED_REQUEST_CODES: [&str; 2] = ["ValidationException", "Construction"];

/// Classifies an SDK error. Errors whose code is in `permanent_codes` (the target or content is
/// at fault) or names a malformed request are permanent: retrying cannot help. Everything else,
/// including throttling, 5xx, timeouts, network failures and codes we do not know, is
/// transient: a wrongly transient error costs a few retries and ends in a DLQ with an alarm, a
/// wrongly permanent one silently drops a notification.
pub fn classify<E, R>(
    service: &'static str,
    operation: &'static str,
    error: SdkError<E, R>,
    permanent_codes: &[&str],
) -> DependencyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            (
                service_error.code().unwrap_or("Unknown").to_string(),
                service_error.message().map(str::to_string).unwrap_or_else(|| service_error.to_string()),
            )
        }
        SdkError::TimeoutError(_) => ("Timeout".to_string(), DisplayErrorContext(&error).to_string()),
        SdkError::DispatchFailure(_) => ("Dispatch".to_string(), DisplayErrorContext(&error).to_string()),
        SdkError::ResponseError(_) => ("Response".to_string(), DisplayErrorContext(&error).to_string()),
        SdkError::ConstructionFailure(_) => ("Construction".to_string(), DisplayErrorContext(&error).to_string()),
        _ => ("Unknown".to_string(), DisplayErrorContext(&error).to_string()),
    };
    let permanent = permanent_codes.contains(&code.as_str()) || MALFORMED_REQUEST_CODES.contains(&code.as_str());
    let class = if permanent { FailureClass::Permanent } else { FailureClass::Transient };
    DependencyError { class, service, operation, code, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

    fn service_error(code: &str) -> SdkError<UpdateItemError, ()> {
        SdkError::service_error(UpdateItemError::generic(ErrorMetadata::builder().code(code).build()), ())
    }

    #[test]
    fn the_bundled_roots_are_the_five_aws_endpoint_trust_anchors() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let roots: Vec<CertificateDer> =
            CertificateDer::pem_slice_iter(AWS_ENDPOINT_ROOTS_PEM).collect::<Result<_, _>>().unwrap();
        assert_eq!(roots.len(), 5);
        // The HTTP client adds them the same way and panics on the first connection if one fails.
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root).unwrap();
        }
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn a_malformed_request_is_permanent_and_unknown_codes_are_transient() {
        let class = |error| classify("dynamodb", "UpdateItem", error, &[]).class;
        assert_eq!(class(service_error("ValidationException")), FailureClass::Permanent);
        assert_eq!(class(SdkError::construction_failure("no table name")), FailureClass::Permanent);
        assert_eq!(class(service_error("ProvisionedThroughputExceededException")), FailureClass::Transient);
        assert_eq!(class(service_error("SomethingNew")), FailureClass::Transient);
        assert_eq!(
            classify("sns", "Publish", service_error("InvalidParameter"), &["InvalidParameter"]).class,
            FailureClass::Permanent
        );
    }
}
