//! IAM identity-based policies and their evaluation: an explicit `Deny` wins, else an `Allow`
//! whose action and resource match, else the request is implicitly denied. Actions match
//! case-insensitively, resources case-sensitively; both take `*` and `?` wildcards; `NotAction`
//! and `NotResource` match what their patterns do not.

use serde_json::Value;
use wildmatch::WildMatch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`Resource` (the listed patterns) or `NotAction`/`NotResource` (everything else).
#[derive(Clone, Debug)]
enum Patterns {
    Listed(Vec<WildMatch>),
    AllBut(Vec<WildMatch>),
}

impl Patterns {
    fn matches(&self, text: &str) -> bool {
        match self {
            Patterns::Listed(patterns) => patterns.iter().any(|pattern| pattern.matches(text)),
            Patterns::AllBut(patterns) => !patterns.iter().any(|pattern| pattern.matches(text)),
        }
    }
}

/// One statement of a role's policies, with the policy it came from (for messages).
#[derive(Clone, Debug)]
pub struct Statement {
    pub policy: String,
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
}

/// One permission a request needs: `dynamodb:GetItem` on a table's ARN.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub action: String,
    pub resource: String,
}

impl Permission {
    pub fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self { action: action.into(), resource: resource.into() }
    }
}

/// What the policies say about one permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by a statement of this policy.
    Allowed { policy: String },
    /// No statement allows it.
    ImplicitlyDenied,
    /// A `Deny` statement of this policy matches.
    ExplicitlyDenied { policy: String },
}

impl Statement {
    /// Reads the statements of a policy document whose intrinsics are resolved. A statement the
    /// local stack cannot evaluate exactly (a `Condition`) is refused rather than guessed at.
    pub fn parse_document(policy: &str, document: &Value) -> Result<Vec<Statement>, String> {
        let statements = match document.get("Statement") {
            Some(Value::Array(items)) => items.clone(),
            Some(single @ Value::Object(_)) => vec![single.clone()],
            _ => return Err(format!("policy {policy} has no Statement")),
        };
        statements.iter().map(|statement| Self::parse(policy, statement)).collect()
    }

    fn parse(policy: &str, statement: &Value) -> Result<Statement, String> {
        let problem = |what: &str| format!("policy {policy}: a statement {what}");
        if statement.get("Condition").is_some() {
            return Err(problem("has a Condition, which the local IAM layer does not evaluate"));
        }
        let effect = match statement.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            _ => return Err(problem("has no Effect of Allow or Deny")),
        };
        let patterns = |listed: &str, all_but: &str, case_insensitive: bool| -> Result<Patterns, String> {
            let read =
                |value: &Value| -> Result<Vec<WildMatch>, String> {
                    let texts: Vec<&str> = match value {
                        Value::String(text) => vec![text.as_str()],
                        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                        other => return Err(problem(&format!("has {listed} {other}, not a string or a list"))),
                    };
                    Ok(texts
                        .into_iter()
                        .map(|text| {
                            if case_insensitive { WildMatch::new_case_insensitive(text) } else { WildMatch::new(text) }
                        })
                        .collect())
                };
            match (statement.get(listed), statement.get(all_but)) {
                (Some(value), None) => Ok(Patterns::Listed(read(value)?)),
                (None, Some(value)) => Ok(Patterns::AllBut(read(value)?)),
                _ => Err(problem(&format!("needs exactly one of {listed} and {all_but}"))),
            }
        };
        Ok(Statement {
            policy: policy.to_string(),
            effect,
            actions: patterns("Action", "NotAction", true)?,
            resources: patterns("Resource", "NotResource", false)?,
        })
    }

    fn applies_to(&self, permission: &Permission) -> bool {
        self.actions.matches(&permission.action) && self.resources.matches(&permission.resource)
    }
}

/// Evaluates one permission against every statement of a principal's policies.
pub fn decide(statements: &[Statement], permission: &Permission) -> Decision {
    if let Some(deny) =
        statements.iter().find(|statement| statement.effect == Effect::Deny && statement.applies_to(permission))
    {
        return Decision::ExplicitlyDenied { policy: deny.policy.clone() };
    }
    match statements.iter().find(|statement| statement.effect == Effect::Allow && statement.applies_to(permission)) {
        Some(allow) => Decision::Allowed { policy: allow.policy.clone() },
        None => Decision::ImplicitlyDenied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statements(document: Value) -> Vec<Statement> {
        Statement::parse_document("test", &document).unwrap()
    }

    const TABLE_A: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/s-A";

    #[test]
    fn a_grant_on_one_table_does_not_reach_another() {
        let policy = statements(json!({"Statement": [{"Effect": "Allow",
            "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
            "Resource": [TABLE_A, format!("{TABLE_A}/index/*")]}]}));
        assert!(matches!(decide(&policy, &Permission::new("dynamodb:PutItem", TABLE_A)), Decision::Allowed { .. }));
        assert!(matches!(
            decide(&policy, &Permission::new("dynamodb:Query", format!("{TABLE_A}/index/pending"))),
            Decision::ImplicitlyDenied
        ));
        assert_eq!(
            decide(&policy, &Permission::new("dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/s-AB")),
            Decision::ImplicitlyDenied
        );
        assert_eq!(decide(&policy, &Permission::new("dynamodb:GetItem", TABLE_A)), Decision::ImplicitlyDenied);
    }

    #[test]
    fn actions_match_case_insensitively_with_wildcards_and_resources_case_sensitively() {
        let policy = statements(json!({"Statement": {"Effect": "Allow", "Action": "sqs:SendMessage*",
            "Resource": "arn:aws:sqs:us-east-1:123456789012:s-SmsQueue"}}));
        let queue = "arn:aws:sqs:us-east-1:123456789012:s-SmsQueue";
        assert!(matches!(decide(&policy, &Permission::new("SQS:sendmessage", queue)), Decision::Allowed { .. }));
        assert_eq!(
            decide(&policy, &Permission::new("sqs:SendMessage", queue.to_lowercase())),
            Decision::ImplicitlyDenied
        );
        assert_eq!(decide(&policy, &Permission::new("sqs:ReceiveMessage", queue)), Decision::ImplicitlyDenied);
    }

    #[test]
    fn not_resource_allows_what_it_does_not_name_and_deny_wins() {
        let policy = statements(json!({"Statement": [
            {"Effect": "Allow", "Action": "sns:Publish", "NotResource": "arn:aws:sns:*:*:*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "NotAction": ["sns:*"], "Resource": "arn:aws:dynamodb:*"}]}));
        let phone = Permission::new("sns:Publish", "+12015550123");
        assert_eq!(decide(&policy[..1], &phone), Decision::Allowed { policy: "test".into() });
        let topic = Permission::new("sns:Publish", "arn:aws:sns:us-east-1:123456789012:topic");
        assert_eq!(decide(&policy[..1], &topic), Decision::ImplicitlyDenied);
        assert_eq!(
            decide(&policy, &Permission::new("dynamodb:GetItem", "arn:aws:dynamodb:t")),
            Decision::ExplicitlyDenied { policy: "test".into() }
        );
    }

    #[test]
    fn statements_that_cannot_be_evaluated_exactly_are_refused() {
        let conditional = json!({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]});
        assert!(Statement::parse_document("p", &conditional).unwrap_err().contains("Condition"));
        let both =
            json!({"Statement": [{"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"}]});
        assert!(Statement::parse_document("p", &both).unwrap_err().contains("exactly one of Action and NotAction"));
    }
}
