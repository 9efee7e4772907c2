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

/// What each service calls an IAM denial (SNS: `AuthorizationError`; SQS keeps its query-era
/// `AccessDenied`), and a KMS key policy's denial of the queue's or topic's key.
const ACCESS_DENIED_CODES: [&str; 5] =
    ["AccessDeniedException", "AccessDenied", "AuthorizationError", "KMSAccessDeniedException", "KmsAccessDenied"];

/// What the services answer when a caller goes over a rate: SNS `Publish` and the query
/// protocol `Throttling` ("Rate exceeded"), SES v2 `TooManyRequestsException` (429, "Maximum
/// sending rate exceeded."), SNS's SMS operations `Throttled`, and the JSON protocols' own.
const THROTTLING_CODES: [&str; 7] = [
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "Throttled",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
];

/// What the services answer for a failure on their side while handling the request (500): it
/// may have been carried out.
const INTERNAL_ERROR_CODES: [&str; 3] = ["InternalError", "InternalFailure", "InternalServerError"];

/// Classifies an SDK error. Errors whose code is in `permanent_codes` (the target or content is
/// at fault) or names a malformed request are permanent: retrying cannot help. An IAM denial is
/// access denied (reported: see [`report_access_denied`]); a rate refusal is throttled.
/// A failure that may have come after the service carried the request out (a timeout, an
/// unreadable or missing response, an internal error) is ambiguous; only a connection refused
/// is known not to have reached the service. Everything else, including other 5xx and codes we
/// do not know, is transient: a wrongly transient error costs a few retries and ends in a DLQ
/// with an alarm, a wrongly permanent one silently drops a notification.
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
    let ambiguous = match &error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => {
            !failure.as_connector_error().is_some_and(|error| connection_refused(error))
        }
        _ => INTERNAL_ERROR_CODES.contains(&code.as_str()),
    };
    let class = if ACCESS_DENIED_CODES.contains(&code.as_str()) {
        report_access_denied(service, operation, &message);
        FailureClass::AccessDenied
    } else if permanent_codes.contains(&code.as_str()) || MALFORMED_REQUEST_CODES.contains(&code.as_str()) {
        FailureClass::Permanent
    } else if THROTTLING_CODES.contains(&code.as_str()) {
        FailureClass::Throttled
    } else if ambiguous {
        FailureClass::Ambiguous
    } else {
        FailureClass::Transient
    };
    DependencyError { class, service, operation, code, message }
}

/// `error` and its sources, as one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// Whether `error` is, at its root, a connection the endpoint refused: nothing was sent.
fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// What an IAM denial names: who (the role's session: Lambda names it after the function), which
/// action, on what.
#[derive(Debug, PartialEq, Eq)]
pub struct Denied<'a> {
    pub function: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
}

impl<'a> Denied<'a> {
    /// Reads `User: arn:aws:sts::…:assumed-role/<role>/<session> is not authorized to perform:
    /// <action> on resource: <resource> because …`, and SES's older
    /// ``User `<arn>' is not authorized to perform `<action>' on resource `<resource>'``.
    pub fn parse(message: &'a str) -> Option<Self> {
        let unquote = |text: &'a str| text.trim().trim_matches(|c| c == '`' || c == '\'');
        let rest = message.strip_prefix("User")?.trim_start_matches(':');
        let (caller, rest) = rest.split_once(" is not authorized to perform")?;
        let (action, rest) = rest.trim_start_matches(':').split_once(" on resource")?;
        let resource = rest.trim_start_matches(':').trim_start();
        let resource = resource.split_once(" because ").map_or(resource, |(resource, _)| resource);
        let resource = resource.split_once(" with an explicit deny").map_or(resource, |(resource, _)| resource);
        Some(Self {
            function: unquote(caller).rsplit('/').next().unwrap_or_default(),
            action: unquote(action),
            resource: unquote(resource),
        })
    }
}

/// Every denial counts in the `AccessDenied` metric (alarmed); each distinct one is logged once
/// per cold start, naming the function, action and resource: what on-call needs to add the grant.
fn report_access_denied(service: &str, operation: &str, message: &str) {
    static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    crate::metrics::access_denied();
    let first = {
        let mut logged = LOGGED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = !logged.iter().any(|seen| seen == message);
        if first {
            logged.push(message.to_string());
        }
        first
    };
    if !first {
        return;
    }
    match Denied::parse(message) {
        Some(denied) => tracing::error!(
            function = denied.function,
            action = denied.action,
            resource = denied.resource,
            "access denied: the function's role does not allow this call (RUNBOOK.md#access-denied)"
        ),
        None => tracing::error!(
            service,
            operation,
            detail = message,
            "access denied: the function's role does not allow this call (RUNBOOK.md#access-denied)"
        ),
    }
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
    fn iam_denials_are_access_denied_whatever_the_service_calls_them() {
        let class = |code| classify("dynamodb", "GetItem", service_error(code), &["AccessDeniedException"]).class;
        for code in ["AccessDeniedException", "AccessDenied", "AuthorizationError"] {
            assert_eq!(class(code), FailureClass::AccessDenied, "{code}");
        }
    }

    #[test]
    fn a_denial_names_the_function_action_and_resource_in_either_wording() {
        let current = "User: arn:aws:sts::123456789012:assumed-role/s-DispatchSmsFunctionRole/s-DispatchSmsFunction is not \
                       authorized to perform: dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/s-R \
                       because no identity-based policy allows the dynamodb:GetItem action";
        assert_eq!(
            Denied::parse(current),
            Some(Denied {
                function: "s-DispatchSmsFunction",
                action: "dynamodb:GetItem",
                resource: "arn:aws:dynamodb:us-east-1:123456789012:table/s-R"
            })
        );
        let ses = "User `arn:aws:sts::1:assumed-role/r/s-DispatchEmailFunction' is not authorized to perform \
                   `ses:SendRawEmail' on resource `arn:aws:ses:us-east-1:1:identity/example.com'";
        let denied = Denied::parse(ses).unwrap();
        assert_eq!(
            (denied.function, denied.action, denied.resource),
            ("s-DispatchEmailFunction", "ses:SendRawEmail", "arn:aws:ses:us-east-1:1:identity/example.com")
        );
        assert_eq!(Denied::parse("Rate exceeded"), None);
    }

    #[test]
    fn an_answer_that_may_follow_the_call_being_carried_out_is_ambiguous() {
        let class = |error| classify("sns", "Publish", error, &[]).class;
        assert_eq!(class(service_error("InternalError")), FailureClass::Ambiguous);
        assert_eq!(class(SdkError::timeout_error("read timed out")), FailureClass::Ambiguous);
        let io = |kind| {
            let error = std::io::Error::new(kind, "socket");
            SdkError::dispatch_failure(aws_sdk_dynamodb::error::ConnectorError::io(error.into()))
        };
        assert_eq!(class(io(std::io::ErrorKind::ConnectionReset)), FailureClass::Ambiguous);
        assert_eq!(class(io(std::io::ErrorKind::ConnectionRefused)), FailureClass::Transient);
    }

    #[test]
    fn a_malformed_request_is_permanent_a_rate_refusal_throttled_and_unknown_codes_are_transient() {
        let class = |error| classify("dynamodb", "UpdateItem", error, &[]).class;
        assert_eq!(class(service_error("ValidationException")), FailureClass::Permanent);
        assert_eq!(class(SdkError::construction_failure("no table name")), FailureClass::Permanent);
        for throttling in ["ProvisionedThroughputExceededException", "Throttling", "TooManyRequestsException"] {
            assert_eq!(class(service_error(throttling)), FailureClass::Throttled, "{throttling}");
        }
        assert_eq!(class(service_error("SomethingNew")), FailureClass::Transient);
        assert_eq!(class(service_error("ServiceUnavailable")), FailureClass::Transient);
        assert_eq!(
            classify("sns", "Publish", service_error("InvalidParameter"), &["InvalidParameter"]).class,
            FailureClass::Permanent
        );
    }
}
