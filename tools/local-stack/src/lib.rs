//! The local stack: template.yaml's queues, tables, topics, routes, event-source mappings and
//! schedules, against a local AWS emulator (or any endpoint), running the project's real
//! handler functions in-process. Nothing here lists resources: everything comes from the
//! template.

pub mod api;
pub mod demo;
pub mod functions;
pub mod iam;
pub mod lambda_api;
pub mod loopback;
pub mod poller;
pub mod provider_account;
pub mod provision;
pub mod relay;
pub mod resolve;
pub mod scheduler;
pub mod schedules;
pub mod spec;
pub mod stream_poller;
pub mod template;
pub mod twilio;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::task::JoinSet;

use crate::functions::{LocalFunction, Registry};
use crate::provider_account::{ProviderAccount, Quotas};
use crate::provision::Deployed;
use crate::resolve::Physical;
use crate::template::Template;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("cannot reach AWS at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("{action}: {message}")]
    Aws { action: String, message: String },
    #[error("{function}: {message}")]
    Function { function: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl StackError {
    /// The message without its prefix, for embedding in another message.
    pub fn detail(&self) -> String {
        match self {
            StackError::Template(message) => message.clone(),
            other => other.to_string(),
        }
    }
}

/// The SDK clients the stack itself uses to provision and poll.
pub struct Clients {
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub region: String,
    pub endpoint: String,
}

impl Clients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            sesv2: aws_sdk_sesv2::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            scheduler: aws_sdk_scheduler::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            region: sdk.region().map(|region| region.to_string()).unwrap_or_else(|| "us-east-1".into()),
            endpoint: sdk.endpoint_url().unwrap_or("the default AWS endpoints").to_string(),
        }
    }

    /// Fails fast, naming the endpoint, when nothing answers there (or credentials are refused).
    pub async fn check_reachable(&self) -> Result<(), StackError> {
        let call = self.sqs.list_queues().max_results(1).send();
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(StackError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
            }),
            Err(_) => Err(StackError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: "no answer within 10 s".into(),
            }),
        }
    }
}

/// The template parameter that names the API's public URL; locally, the local API server's.
const PUBLIC_API_URL: &str = "PublicApiUrl";

pub struct StackOptions {
    /// Prefix of every physical name; unique per test so tests can share one emulator.
    pub stack_name: String,
    pub parameters: BTreeMap<String, String>,
    /// Where the HTTP API listens (port 0 picks a free port).
    pub api_address: SocketAddr,
    pub registry: Registry,
    /// The account's provider quotas (SES's sending rate, SNS's SMS and Publish rates).
    pub quotas: Quotas,
    /// The local Twilio the stack's parameters point at, if they do (kept running with it).
    pub twilio: Option<twilio::TwilioMock>,
}

/// A running stack. Dropping it stops the API server, the pollers and the schedules.
pub struct LocalStack {
    pub deployed: Deployed,
    pub api_url: String,
    /// Where the local Lambda API (Invoke) listens: the endpoint for aws-sdk-lambda.
    pub lambda_url: String,
    pub functions: BTreeMap<String, Arc<LocalFunction>>,
    /// The IAM authorizer every function's AWS requests go through (none against AWS itself).
    pub authorizer: Option<Arc<iam::Authorizer>>,
    /// The providers' side of the account: its quotas, and the sends they accepted and refused.
    pub providers: Arc<ProviderAccount>,
    /// The local Twilio, when the stack sends through one.
    pub twilio: Option<twilio::TwilioMock>,
    tasks: JoinSet<()>,
}

impl LocalStack {
    /// Provisions the template and starts serving it. Every function gets `sdk`, signed with its
    /// own identity and authorized against its role (see [`iam`]).
    pub async fn start(sdk: &SdkConfig, template: &Template, options: StackOptions) -> Result<Self, StackError> {
        let clients = Clients::new(sdk);
        clients.check_reachable().await?;
        // Bound first, so links the functions build (PublicApiUrl) point at this server.
        let listener = tokio::net::TcpListener::bind(options.api_address).await?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let lambda_listener = tokio::net::TcpListener::bind((options.api_address.ip(), 0)).await?;
        let lambda_url = format!("http://{}", lambda_listener.local_addr()?);
        let mut parameters = options.parameters.clone();
        if template.parameters.contains_key(PUBLIC_API_URL) && !parameters.contains_key(PUBLIC_API_URL) {
            parameters.insert(PUBLIC_API_URL.into(), api_url.clone());
        }
        let deployed = provision::deploy(&clients, template, &options.stack_name, &parameters).await?;
        let providers = Arc::new(ProviderAccount::new(options.quotas));
        let enforcement = iam::enforce(sdk, template, &deployed, &parameters, providers.clone()).await?;
        if enforcement.is_none() {
            tracing::warn!("no AWS endpoint configured: the functions use these credentials, and AWS enforces IAM");
        }
        let authorizer = enforcement.as_ref().map(|enforcement| enforcement.authorizer.clone());
        let function_sdk = |logical_id: &str| {
            enforcement
                .as_ref()
                .map_or_else(|| sdk.clone(), |enforcement| enforcement.function_configs[logical_id].clone())
        };

        let mut functions = BTreeMap::new();
        for spec in &deployed.spec.functions {
            let environment = &deployed.function_environments[&spec.logical_id];
            let fail = |message: String| StackError::Function { function: spec.logical_id.clone(), message };
            let handler = options
                .registry
                .build(&spec.binary, &function_sdk(&spec.logical_id), environment)
                .await
                .ok_or_else(|| fail(format!("no cargo binary {:?} is registered with the local stack", spec.binary)))?
                .map_err(|error| fail(error.to_string()))?;
            let handler: Arc<dyn functions::Invoke> = match &authorizer {
                Some(authorizer) => Arc::new(functions::Authorized { handler, authorizer: authorizer.clone() }),
                None => handler,
            };
            let Some(Physical::Function { name, arn }) = deployed.resources.get(&spec.logical_id).cloned() else {
                unreachable!("deploy names every function");
            };
            let function =
                LocalFunction { logical_id: spec.logical_id.clone(), name, arn, timeout: spec.timeout, handler };
            functions.insert(spec.logical_id.clone(), Arc::new(function));
        }

        let mut tasks = JoinSet::new();
        let mut routes = api::Routes::new(&deployed.account_id);
        for spec in &deployed.spec.functions {
            let function = &functions[&spec.logical_id];
            for route in &spec.http_routes {
                routes.add(&route.method, &route.path, function.clone())?;
            }
            for mapping in &spec.sqs_mappings {
                let (queue_url, queue_arn) = deployed.queue(&mapping.queue).expect("checked by StackSpec::read");
                let source = poller::Source {
                    queue_url: queue_url.into(),
                    queue_arn: queue_arn.into(),
                    region: deployed.region.clone(),
                };
                // Lambda polls the queue with the function's execution role.
                let sqs = aws_sdk_sqs::Client::new(&function_sdk(&spec.logical_id));
                for _ in 0..poller::pollers(mapping) {
                    tasks.spawn(poller::run(sqs.clone(), function.clone(), mapping.clone(), source.clone()));
                }
            }
            for mapping in &spec.stream_mappings {
                let Some(Physical::Table { stream_arn: Some(stream_arn), .. }) = deployed.resources.get(&mapping.table)
                else {
                    return Err(StackError::Template(format!(
                        "{} event {}: table {} has no stream (StreamSpecification)",
                        spec.logical_id, mapping.event_name, mapping.table
                    )));
                };
                let source = stream_poller::Source { stream_arn: stream_arn.clone(), region: deployed.region.clone() };
                // Lambda reads the stream with the function's execution role.
                let streams = aws_sdk_dynamodbstreams::Client::new(&function_sdk(&spec.logical_id));
                tasks.spawn(stream_poller::run(streams, function.clone(), mapping.clone(), source));
            }
            for schedule in &spec.schedules {
                tasks.spawn(scheduler::run(
                    function.clone(),
                    schedule.clone(),
                    deployed.region.clone(),
                    deployed.account_id.clone(),
                ));
            }
        }
        // The emulator stores one-time schedules; the local stack fires them (as AWS would).
        if let Some(enforcement) = &enforcement {
            let groups: Vec<String> = deployed
                .resources
                .values()
                .filter_map(|physical| match physical {
                    Physical::ScheduleGroup { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let queue_urls = deployed
                .resources
                .values()
                .filter_map(|physical| match physical {
                    Physical::Queue { url, arn, .. } => Some((arn.clone(), url.clone())),
                    _ => None,
                })
                .collect();
            let senders = enforcement
                .service_role_configs
                .iter()
                .map(|(arn, config)| (arn.clone(), aws_sdk_sqs::Client::new(config)))
                .collect();
            if !groups.is_empty() {
                let firing = schedules::Firing { scheduler: clients.scheduler.clone(), groups, senders, queue_urls };
                tasks.spawn(schedules::run(firing));
            }
        }
        let routes = Arc::new(routes);
        tasks.spawn(async move {
            if let Err(error) = api::serve(listener, routes).await {
                tracing::error!(error = %error, "the local API server stopped");
            }
        });
        let invocable = Arc::new(lambda_api::Functions::new(functions.values()));
        tasks.spawn(async move {
            if let Err(error) = lambda_api::serve(lambda_listener, invocable).await {
                tracing::error!(error = %error, "the local Lambda API server stopped");
            }
        });
        Ok(Self { deployed, api_url, lambda_url, functions, authorizer, providers, twilio: options.twilio, tasks })
    }

    /// The stack's outputs as the deployed stack has them, plus where its local endpoints are:
    /// what notifyctl reads. Its AWS endpoint is the authorizer's (where notifyctl signs as the
    /// stack's operator), else `aws_endpoint`.
    pub fn outputs(&self, aws_endpoint: Option<&str>) -> BTreeMap<String, String> {
        let mut outputs = self.deployed.outputs.clone();
        outputs.insert("ApiUrl".into(), self.api_url.clone());
        outputs.insert(notify::outputs::LOCAL_LAMBDA_ENDPOINT.into(), self.lambda_url.clone());
        if let Some(endpoint) = self.authorizer.as_ref().map(|authorizer| authorizer.url.as_str()).or(aws_endpoint) {
            outputs.insert(notify::outputs::LOCAL_ENDPOINT.into(), endpoint.to_string());
        }
        if let Some(twilio) = &self.twilio {
            outputs.insert(TWILIO_MOCK_URL.into(), twilio.url.clone());
        }
        outputs
    }

    /// Every AWS request of the stack's functions that their roles did not allow, so far.
    pub fn denials(&self) -> Vec<iam::Denial> {
        self.authorizer.as_ref().map(|authorizer| authorizer.denials()).unwrap_or_default()
    }

    pub fn function(&self, logical_id: &str) -> Option<&Arc<LocalFunction>> {
        self.functions.get(logical_id)
    }

    /// Stops everything the stack runs.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// SDK configuration for an emulator: it accepts any credentials, and static ones keep the
/// SDK from probing for others.
pub async fn emulator_config(endpoint: &str) -> SdkConfig {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "local-stack"))
        .load()
        .await
}

/// Starts the project's functions on `template` in an account with `quotas`: creates the
/// resources behind its deployment parameters (see [`local_parameters`]), then provisions and
/// serves it.
pub async fn start_project(
    sdk: &SdkConfig,
    template: &Template,
    stack_name: &str,
    given: &BTreeMap<String, String>,
    api_address: SocketAddr,
    quotas: Quotas,
) -> Result<(LocalStack, Clients), StackError> {
    let clients = Clients::new(sdk);
    clients.check_reachable().await?;
    let mut parameters = local_parameters(&clients, template, stack_name, given).await?;
    let twilio = local_twilio(&clients, template, stack_name, &mut parameters).await?;
    let options = StackOptions {
        stack_name: stack_name.to_string(),
        parameters,
        api_address,
        registry: Registry::project(),
        quotas,
        twilio,
    };
    Ok((LocalStack::start(sdk, template, options).await?, clients))
}

/// The output naming the local Twilio (its List Messages shows what it received).
pub const TWILIO_MOCK_URL: &str = "TwilioMockUrl";

/// A timeout fault holds the local Twilio's answer longer than the SMS function waits for it.
const TWILIO_HANG: Duration = Duration::from_secs(12);

/// The local Twilio, when the template can send through Twilio and no credentials were given:
/// its account's credentials in a secret of the emulator (as a deployer stores theirs), and the
/// parameters naming the secret, a sender and the local Twilio's URL.
async fn local_twilio(
    clients: &Clients,
    template: &Template,
    stack_name: &str,
    parameters: &mut BTreeMap<String, String>,
) -> Result<Option<twilio::TwilioMock>, StackError> {
    const SECRET: &str = "TwilioCredentialsSecretArn";
    if !template.parameters.contains_key(SECRET) || parameters.contains_key(SECRET) {
        return Ok(None);
    }
    let mock = twilio::TwilioMock::start(twilio::TwilioAccount::generate(), TWILIO_HANG).await?;
    let account = mock.account();
    let credentials = serde_json::json!({"account_sid": account.sid, "auth_token": account.auth_token});
    let name = format!("{stack_name}-twilio");
    let failed = |error: &dyn std::error::Error| StackError::Aws {
        action: "storing the local Twilio's credentials".into(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
    };
    let created = clients.secrets.create_secret().name(&name).secret_string(credentials.to_string()).send().await;
    let arn = match created {
        Ok(created) => created.arn,
        // The stack started again on the same emulator: the new Twilio's account becomes the
        // secret's current version, as a rotation would make it.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
            let put = clients.secrets.put_secret_value().secret_id(&name).secret_string(credentials.to_string());
            put.send().await.map_err(|error| failed(&error))?.arn
        }
        Err(error) => return Err(failed(&error)),
    };
    parameters.insert(SECRET.into(), arn.unwrap_or_default());
    parameters.entry("TwilioSender".into()).or_insert_with(|| twilio::SENDER.into());
    parameters.insert("TwilioApiUrl".into(), mock.url.clone());
    Ok(Some(mock))
}

/// Values for the template parameters that name resources a deployment brings with it: the
/// SNS platform applications for APNs and FCM and the verified sender address. Locally they
/// are created in the emulator; parameters already given are left alone.
pub async fn local_parameters(
    clients: &Clients,
    template: &Template,
    stack_name: &str,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StackError> {
    let mut parameters = given.clone();
    let wanted = |name: &str| template.parameters.contains_key(name) && !given.contains_key(name);
    for (parameter, platform) in [("ApnsPlatformApplicationArn", "APNS"), ("FcmPlatformApplicationArn", "GCM")] {
        if !wanted(parameter) {
            continue;
        }
        let created = clients
            .sns
            .create_platform_application()
            .name(format!("{stack_name}-{}", platform.to_lowercase()))
            .platform(platform)
            .attributes("PlatformCredential", "local-credential")
            .attributes("PlatformPrincipal", "local-principal")
            .send()
            .await
            .map_err(|error| StackError::Aws {
                action: format!("creating the {platform} platform application"),
                message: aws_sdk_sns::error::DisplayErrorContext(error).to_string(),
            })?;
        parameters.insert(parameter.to_string(), created.platform_application_arn.unwrap_or_default());
    }
    // Locally every event also lands in the events queue, where anyone (and the tests) reads them.
    if wanted("EventsQueue") {
        parameters.insert("EventsQueue".into(), "enabled".into());
    }
    if wanted("EmailFromAddress") {
        // SES sends only from verified identities; the emulator verifies at once. A sender
        // given as a parameter is the deployer's, already verified.
        let domain = format!("{stack_name}.example.com");
        let created = clients.sesv2.create_email_identity().email_identity(&domain).send().await;
        if let Err(error) = created
            && !error.as_service_error().is_some_and(|e| e.is_already_exists_exception())
        {
            return Err(StackError::Aws {
                action: format!("verifying the sender identity {domain}"),
                message: aws_sdk_sesv2::error::DisplayErrorContext(error).to_string(),
            });
        }
        parameters.insert("EmailFromAddress".into(), format!("notifications@{domain}"));
    }
    Ok(parameters)
}
