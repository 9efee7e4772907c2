//! Each function's execution role as a deployment of the template would have it: SAM's own
//! translator builds the roles (`sam_roles.py`: policy templates expanded from SAM's published
//! definitions, event sources' permissions added as SAM adds them), and the local stack resolves
//! their intrinsics against the resources it created.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::policy::Statement;
use crate::StackError;
use crate::resolve::Resolver;

const SAM_ROLES_SCRIPT: &str = include_str!("../../sam_roles.py");

/// The documents of the AWS managed policies SAM attaches (AWS publishes them; the translator
/// names them only by ARN).
const MANAGED_POLICIES: &str = include_str!("../../managed-policies.json");

/// A function's execution role.
#[derive(Clone, Debug)]
pub struct Role {
    pub name: String,
    pub arn: String,
    pub statements: Vec<Statement>,
}

/// The Python that runs the translator: `LOCAL_STACK_PYTHON`, else the project's emulator venv
/// (`scripts/setup.sh emulator` installs aws-sam-translator there).
fn python() -> PathBuf {
    std::env::var_os("LOCAL_STACK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/emulator/bin/python")))
}

/// SAM's translation of the template's IAM resources, cached beside the translator (in the venv,
/// so a new translator version starts a new cache) by the template's and the script's hash.
pub async fn translate(source: &str, region: &str) -> Result<Value, StackError> {
    let python = python();
    let failed = |message: String| {
        StackError::Template(format!(
            "SAM's translation of the functions' roles ({} tools/local-stack/sam_roles.py): {message}",
            python.display()
        ))
    };
    let key = hex::encode(Sha256::digest([SAM_ROLES_SCRIPT, "\0", region, "\0", source].concat()));
    let cache = python.parent().and_then(|bin| bin.parent()).map(|venv| venv.join("local-stack-roles"));
    let cached = cache.as_ref().map(|dir| dir.join(format!("{key}.json")));
    if let Some(text) = cached.as_ref().and_then(|path| std::fs::read_to_string(path).ok())
        && let Ok(translated) = serde_json::from_str(&text)
    {
        return Ok(translated);
    }
    let mut child = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(SAM_ROLES_SCRIPT)
        .env("AWS_DEFAULT_REGION", region)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| failed(format!("cannot run it: {error} (run scripts/setup.sh emulator)")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(source.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no message");
        return Err(failed(format!("{} ({last})", output.status)));
    }
    let translated: Value =
        serde_json::from_slice(&output.stdout).map_err(|error| failed(format!("its output is not JSON: {error}")))?;
    if let (Some(dir), Some(path)) = (&cache, &cached) {
        // Written aside and renamed, so a concurrent stack never reads half a file.
        let partial = dir.join(format!("{key}.{}.partial", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&partial, &output.stdout))
            .and_then(|()| std::fs::rename(&partial, path));
        if let Err(error) = written {
            tracing::debug!(error = %error, "the translated roles are not cached");
        }
    }
    Ok(translated)
}

/// The template's roles: each function's, and those services assume.
pub struct TemplateRoles {
    /// By function logical id.
    pub functions: BTreeMap<String, Role>,
    /// By the role's own logical id (the scheduler's).
    pub services: BTreeMap<String, Role>,
}

/// The template's roles, their intrinsics resolved by `resolver`, which knows every resource the
/// stack created. Role names follow CloudFormation's `<stack>-<logical id>` pattern.
pub fn roles(translated: &Value, resolver: &Resolver<'_>) -> Result<TemplateRoles, StackError> {
    let bad = |message: String| StackError::Template(format!("the functions' roles: {message}"));
    let resources = translated.get("resources").and_then(Value::as_object).cloned().unwrap_or_default();
    let managed: BTreeMap<String, Value> =
        serde_json::from_str(MANAGED_POLICIES).expect("managed-policies.json is a map of ARN to document");
    let resolve = |value: &Value| resolver.resolve(value);

    let mut roles = BTreeMap::new();
    let mut not_created = Vec::new();
    for (logical_id, resource) in &resources {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::IAM::Role") {
            continue;
        }
        // The role of a function under a condition that does not hold is not created.
        if let Some(condition) = resource.get("Condition").and_then(Value::as_str)
            && !resolver.condition(condition)?
        {
            not_created.push(logical_id.clone());
            continue;
        }
        let properties = resource.get("Properties").cloned().unwrap_or(Value::Null);
        let name = format!("{}-{logical_id}", resolver.stack_name);
        let mut statements = Vec::new();
        for policy in properties.get("Policies").and_then(Value::as_array).cloned().unwrap_or_default() {
            // A policy under a condition (`Fn::If`) resolves to itself, or to nothing.
            let policy = resolve(&policy)?;
            if policy.is_null() {
                continue;
            }
            let policy_name = resolver.resolve_string(policy.get("PolicyName").unwrap_or(&Value::Null))?;
            let document = resolve(policy.get("PolicyDocument").unwrap_or(&Value::Null))?;
            statements.extend(Statement::parse_document(&policy_name, &document).map_err(bad)?);
        }
        for arn in resolve(properties.get("ManagedPolicyArns").unwrap_or(&Value::Array(Vec::new())))?
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let arn = arn.as_str().unwrap_or_default();
            let document = managed.get(arn).ok_or_else(|| {
                bad(format!(
                    "{logical_id} attaches managed policy {arn}, whose document tools/local-stack/managed-policies.json does not have"
                ))
            })?;
            statements.extend(Statement::parse_document(arn, document).map_err(bad)?);
        }
        let arn = format!("arn:aws:iam::{}:role/{name}", resolver.account_id);
        roles.insert(logical_id.clone(), Role { name, arn, statements });
    }
    // Inline policies attached to roles by resources of their own.
    for (logical_id, resource) in &resources {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::IAM::Policy") {
            continue;
        }
        let properties = resource.get("Properties").cloned().unwrap_or(Value::Null);
        let document = resolve(properties.get("PolicyDocument").unwrap_or(&Value::Null))?;
        for role in properties.get("Roles").and_then(Value::as_array).cloned().unwrap_or_default() {
            let role_id = role.get("Ref").and_then(Value::as_str).unwrap_or_default();
            let role = roles.get_mut(role_id).ok_or_else(|| {
                bad(format!("policy {logical_id} is attached to {role}, which is not a role of the template"))
            })?;
            role.statements.extend(Statement::parse_document(logical_id, &document).map_err(bad)?);
        }
    }

    let mut by_function = BTreeMap::new();
    let functions = translated.get("functions").and_then(Value::as_object).cloned().unwrap_or_default();
    for (function, role) in functions {
        let role_id = role
            .pointer("/Fn::GetAtt/0")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{function}'s Role is {role}, not one of the template's roles")))?;
        if not_created.iter().any(|id| id == role_id) {
            continue;
        }
        let role = roles.get(role_id).cloned().ok_or_else(|| bad(format!("{function}'s role {role_id} is missing")))?;
        by_function.insert(function, role);
    }
    let function_roles: Vec<String> = by_function.values().map(|role| role.name.clone()).collect();
    roles.retain(|_, role| !function_roles.contains(&role.name));
    Ok(TemplateRoles { functions: by_function, services: roles })
}
