//! IAM, enforced locally from template.yaml. The emulator authorizes nothing, so a function
//! whose role lacks a grant would pass every local test and fail in AWS. Here each function
//! signs its requests with an access key id of its own, and an [`Authorizer`] in front of the
//! emulator allows only what the function's role (as SAM builds it from the template) allows,
//! answering the rest as the service answers an IAM denial.

pub mod authorizer;
pub mod policy;
pub mod request;
pub mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};

pub use authorizer::{Authorizer, Denial, Principal, Traffic, TrafficKey};

use crate::StackError;
use crate::provider_account::ProviderAccount;
use crate::provision::Deployed;
use crate::resolve::{Physical, Resolver};
use crate::template::Template;

/// The access key id a function of the stack signs with.
pub fn function_access_key_id(logical_id: &str) -> String {
    format!("LOCAL{logical_id}")
}

/// The stack's authorizer and the SDK configuration each function uses behind it.
pub struct Enforcement {
    pub authorizer: std::sync::Arc<Authorizer>,
    /// By function logical id.
    pub function_configs: BTreeMap<String, SdkConfig>,
    /// The roles services assume (the scheduler's), by role ARN: what the local stand-ins for
    /// those services sign with.
    pub service_role_configs: BTreeMap<String, SdkConfig>,
}

/// Starts enforcing the functions' roles in front of `sdk`'s endpoint, with the account's
/// provider quotas (`providers`) after them. `None` when the SDK talks to AWS itself (no
/// endpoint), which enforces IAM and its quotas on its own.
pub async fn enforce(
    sdk: &SdkConfig,
    template: &Template,
    deployed: &Deployed,
    parameters: &BTreeMap<String, String>,
    providers: Arc<ProviderAccount>,
) -> Result<Option<Enforcement>, StackError> {
    let Some(upstream) = sdk.endpoint_url() else { return Ok(None) };
    let translated = roles::translate(&template.source, &deployed.region).await?;
    let mut resolver = Resolver::new(template, parameters, &deployed.region, &deployed.stack_name)?;
    resolver.account_id = deployed.account_id.clone();
    resolver.resources = deployed.resources.clone();
    let roles::TemplateRoles { functions: roles, services: service_roles } = roles::roles(&translated, &resolver)?;

    let mut principals = BTreeMap::from([(notify::outputs::LOCAL_ADMIN_ACCESS_KEY_ID.to_string(), Principal::Admin)]);
    for spec in &deployed.spec.functions {
        let role = roles.get(&spec.logical_id).ok_or_else(|| {
            StackError::Template(format!("{}: SAM's translation gave the function no role", spec.logical_id))
        })?;
        let Some(Physical::Function { name, .. }) = deployed.resources.get(&spec.logical_id) else {
            unreachable!("deploy names every function");
        };
        principals.insert(
            function_access_key_id(&spec.logical_id),
            Principal::Function {
                logical_id: spec.logical_id.clone(),
                role_name: role.name.clone(),
                session_name: name.clone(),
                statements: role.statements.clone(),
            },
        );
    }
    for (logical_id, role) in &service_roles {
        principals.insert(
            function_access_key_id(logical_id),
            Principal::Function {
                logical_id: logical_id.clone(),
                role_name: role.name.clone(),
                session_name: "local-stack".into(),
                statements: role.statements.clone(),
            },
        );
    }
    let scope = request::Scope {
        region: deployed.region.clone(),
        account_id: deployed.account_id.clone(),
        secrets: deployed.secrets(),
    };
    let authorizer = Authorizer::start(upstream, principals, scope, providers).await?;
    let signing_as = |logical_id: &str| {
        let credentials =
            Credentials::new(function_access_key_id(logical_id), "local-stack", None, None, "local-stack");
        sdk.to_builder()
            .endpoint_url(&authorizer.url)
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    };
    let function_configs =
        deployed.spec.functions.iter().map(|spec| (spec.logical_id.clone(), signing_as(&spec.logical_id))).collect();
    let service_role_configs =
        service_roles.iter().map(|(logical_id, role)| (role.arn.clone(), signing_as(logical_id))).collect();
    Ok(Some(Enforcement { authorizer: std::sync::Arc::new(authorizer), function_configs, service_role_configs }))
}
