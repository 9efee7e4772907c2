//! Evaluating CloudFormation intrinsics (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`,
//! `Fn::Split`, `Fn::Select`, `Fn::If` and the condition functions) against the parameters and the resources created so far.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::StackError;
use crate::template::{Resource, Template};

/// What a logical id turned into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Physical {
    Queue {
        url: String,
        arn: String,
        name: String,
    },
    Table {
        name: String,
        arn: String,
        /// Its stream's, when it has one (`StreamSpecification`).
        stream_arn: Option<String>,
    },
    Topic {
        arn: String,
        name: String,
    },
    Function {
        name: String,
        arn: String,
    },
    Secret {
        name: String,
        arn: String,
    },
    /// An IAM role (named only: the local IAM layer enforces its policies).
    Role {
        name: String,
        arn: String,
    },
    ScheduleGroup {
        name: String,
        arn: String,
    },
    /// An EventBridge bus or rule.
    Events {
        name: String,
        arn: String,
    },
    /// A resource served locally without an emulator resource (the HTTP API).
    Local {
        id: String,
    },
}

pub struct Resolver<'a> {
    template: &'a Template,
    pub parameters: BTreeMap<String, String>,
    pub region: String,
    pub account_id: String,
    pub stack_name: String,
    pub resources: BTreeMap<String, Physical>,
}

impl<'a> Resolver<'a> {
    /// Parameter values: the overrides, else the template's defaults. A parameter with
    /// neither is an error naming it.
    pub fn new(
        template: &'a Template,
        overrides: &BTreeMap<String, String>,
        region: &str,
        stack_name: &str,
    ) -> Result<Self, StackError> {
        let mut parameters = BTreeMap::new();
        for (name, declaration) in &template.parameters {
            let value = overrides.get(name).cloned().or_else(|| match declaration.get("Default") {
                Some(Value::String(text)) => Some(text.clone()),
                Some(other) => Some(other.to_string()),
                None => None,
            });
            let value = value.ok_or_else(|| {
                StackError::Template(format!(
                    "parameter {name} has no default and no value was given (--parameter {name}=...)"
                ))
            })?;
            parameters.insert(name.clone(), value);
        }
        if let Some(unknown) = overrides.keys().find(|name| !template.parameters.contains_key(*name)) {
            return Err(StackError::Template(format!(
                "--parameter {unknown}: the template declares no such parameter"
            )));
        }
        Ok(Self {
            template,
            parameters,
            region: region.to_string(),
            account_id: "123456789012".to_string(),
            stack_name: stack_name.to_string(),
            resources: BTreeMap::new(),
        })
    }

    /// Whether a resource's `Condition` (if any) holds.
    pub fn is_active(&self, resource: &Resource) -> Result<bool, StackError> {
        resource.condition.as_deref().map_or(Ok(true), |name| self.condition(name))
    }

    pub fn condition(&self, name: &str) -> Result<bool, StackError> {
        let expression = self
            .template
            .conditions
            .get(name)
            .ok_or_else(|| StackError::Template(format!("condition {name} is not declared")))?;
        self.truth(expression)
    }

    fn truth(&self, expression: &Value) -> Result<bool, StackError> {
        let (function, arguments) =
            single_key(expression).ok_or_else(|| bad(format!("{expression} is not a condition")))?;
        let list = || arguments.as_array().cloned().unwrap_or_default();
        match function {
            "Fn::Equals" => {
                let items = list();
                if items.len() != 2 {
                    return Err(bad("Fn::Equals takes two values".into()));
                }
                Ok(self.resolve(&items[0])? == self.resolve(&items[1])?)
            }
            "Fn::Not" => Ok(!self.truth(list().first().ok_or_else(|| bad("Fn::Not takes one condition".into()))?)?),
            "Fn::And" => list().iter().try_fold(true, |all, item| Ok(all && self.truth(item)?)),
            "Fn::Or" => list().iter().try_fold(false, |any, item| Ok(any || self.truth(item)?)),
            "Condition" => self.condition(arguments.as_str().unwrap_or_default()),
            other => Err(bad(format!("{other} is not a condition function"))),
        }
    }

    /// Resolves every intrinsic inside `value`. `Ref: AWS::NoValue` becomes null.
    pub fn resolve(&self, value: &Value) -> Result<Value, StackError> {
        match value {
            Value::Array(items) => {
                Ok(Value::Array(items.iter().map(|item| self.resolve(item)).collect::<Result<_, _>>()?))
            }
            Value::Object(object) => {
                if let Some((function, arguments)) = single_key(value)
                    && (function == "Ref" || function.starts_with("Fn::"))
                {
                    return self.intrinsic(function, arguments);
                }
                let mut resolved = Map::new();
                for (key, item) in object {
                    resolved.insert(key.clone(), self.resolve(item)?);
                }
                Ok(Value::Object(resolved))
            }
            other => Ok(other.clone()),
        }
    }

    /// Resolves to a string (numbers and booleans as their text).
    pub fn resolve_string(&self, value: &Value) -> Result<String, StackError> {
        Ok(match self.resolve(value)? {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    fn intrinsic(&self, function: &str, arguments: &Value) -> Result<Value, StackError> {
        match function {
            "Ref" => self.reference(arguments.as_str().unwrap_or_default()),
            "Fn::GetAtt" => {
                let parts: Vec<&str> = arguments
                    .as_array()
                    .map(|items| items.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match parts.as_slice() {
                    [resource, attribute] => self.attribute(resource, attribute),
                    _ => Err(bad(format!("Fn::GetAtt {arguments} must name a resource and an attribute"))),
                }
            }
            "Fn::Sub" => {
                let (text, variables) = match arguments {
                    Value::String(text) => (text.clone(), Map::new()),
                    Value::Array(items) if items.len() == 2 => (
                        items[0].as_str().unwrap_or_default().to_string(),
                        items[1].as_object().cloned().unwrap_or_default(),
                    ),
                    other => return Err(bad(format!("Fn::Sub {other} is malformed"))),
                };
                self.substitute(&text, &variables).map(Value::String)
            }
            "Fn::Join" => {
                let items = arguments.as_array().cloned().unwrap_or_default();
                let (Some(separator), Some(list)) = (items.first().and_then(Value::as_str), items.get(1)) else {
                    return Err(bad(format!("Fn::Join {arguments} is malformed")));
                };
                let parts = match self.resolve(list)? {
                    Value::Array(parts) => parts,
                    other => return Err(bad(format!("Fn::Join needs a list, got {other}"))),
                };
                let texts: Vec<String> = parts
                    .iter()
                    .map(|part| part.as_str().map(str::to_string).unwrap_or_else(|| part.to_string()))
                    .collect();
                Ok(Value::String(texts.join(separator)))
            }
            "Fn::Split" => {
                let items = arguments.as_array().cloned().unwrap_or_default();
                let [Value::String(separator), text] = items.as_slice() else {
                    return Err(bad(format!("Fn::Split {arguments} needs [separator, text]")));
                };
                let text = self.resolve_string(text)?;
                Ok(Value::Array(text.split(separator.as_str()).map(|part| Value::String(part.to_string())).collect()))
            }
            "Fn::Select" => {
                let items = arguments.as_array().cloned().unwrap_or_default();
                let [index, list] = items.as_slice() else {
                    return Err(bad(format!("Fn::Select {arguments} needs [index, list]")));
                };
                let index = crate::spec::number(&self.resolve(index)?)
                    .ok_or_else(|| bad(format!("Fn::Select {arguments}: the index is not a number")))?;
                match self.resolve(list)? {
                    Value::Array(list) => list
                        .get(index as usize)
                        .cloned()
                        .ok_or_else(|| bad(format!("Fn::Select: index {index} is beyond the list {list:?}"))),
                    other => Err(bad(format!("Fn::Select needs a list, got {other}"))),
                }
            }
            "Fn::If" => {
                let items = arguments.as_array().cloned().unwrap_or_default();
                let [condition, then, otherwise] = items.as_slice() else {
                    return Err(bad(format!("Fn::If {arguments} needs [condition, then, else]")));
                };
                let branch = if self.condition(condition.as_str().unwrap_or_default())? { then } else { otherwise };
                self.resolve(branch)
            }
            condition if matches!(condition, "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or") => {
                let mut object = Map::new();
                object.insert(condition.to_string(), arguments.clone());
                Ok(Value::Bool(self.truth(&Value::Object(object))?))
            }
            other => Err(bad(format!("intrinsic {other} is not supported by the local stack"))),
        }
    }

    fn reference(&self, name: &str) -> Result<Value, StackError> {
        let text = match name {
            "AWS::Region" => self.region.clone(),
            "AWS::AccountId" => self.account_id.clone(),
            "AWS::StackName" => self.stack_name.clone(),
            "AWS::Partition" => "aws".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            "AWS::NoValue" => return Ok(Value::Null),
            _ => {
                if let Some(value) = self.parameters.get(name) {
                    value.clone()
                } else {
                    match self.physical(name)? {
                        Physical::Queue { url, .. } => url.clone(),
                        Physical::Table { name, .. } => name.clone(),
                        Physical::Topic { arn, .. } => arn.clone(),
                        Physical::Function { name, .. } => name.clone(),
                        Physical::Secret { arn, .. } => arn.clone(),
                        Physical::Role { name, .. }
                        | Physical::ScheduleGroup { name, .. }
                        | Physical::Events { name, .. } => name.clone(),
                        Physical::Local { id } => id.clone(),
                    }
                }
            }
        };
        Ok(Value::String(text))
    }

    fn physical(&self, logical_id: &str) -> Result<&Physical, StackError> {
        self.resources.get(logical_id).ok_or_else(|| {
            if self.template.resources.contains_key(logical_id) {
                bad(format!("{logical_id} is referenced before it exists"))
            } else {
                bad(format!("{logical_id} is referenced but is not a resource or parameter of the template"))
            }
        })
    }

    fn attribute(&self, logical_id: &str, attribute: &str) -> Result<Value, StackError> {
        let value = match (self.physical(logical_id)?, attribute) {
            (Physical::Queue { arn, .. }, "Arn") => arn,
            (Physical::Queue { name, .. }, "QueueName") => name,
            (Physical::Queue { url, .. }, "QueueUrl") => url,
            (Physical::Table { arn, .. }, "Arn") => arn,
            (Physical::Topic { arn, .. }, "TopicArn") => arn,
            (Physical::Topic { name, .. }, "TopicName") => name,
            (Physical::Function { arn, .. }, "Arn") => arn,
            (Physical::Table { stream_arn: Some(arn), .. }, "StreamArn") => arn,
            (
                Physical::Role { arn, .. } | Physical::ScheduleGroup { arn, .. } | Physical::Events { arn, .. },
                "Arn",
            ) => arn,
            (_, other) => return Err(bad(format!("{logical_id}.{other} is not an attribute the local stack knows"))),
        };
        Ok(Value::String(value.clone()))
    }

    fn substitute(&self, text: &str, variables: &Map<String, Value>) -> Result<String, StackError> {
        let mut output = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            output.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            // `${!Literal}` is written out as `${Literal}`.
            if let Some(literal) = after.strip_prefix('!') {
                output.push_str("${");
                rest = literal;
                continue;
            }
            let end = after.find('}').ok_or_else(|| bad(format!("Fn::Sub {text:?} has an unclosed ${{")))?;
            let name = &after[..end];
            let value = if let Some(value) = variables.get(name) {
                self.resolve_string(value)?
            } else if let Some((resource, attribute)) = name.split_once('.') {
                self.resolve_string(&self.attribute(resource, attribute)?)?
            } else {
                self.resolve_string(&self.reference(name)?)?
            };
            output.push_str(&value);
            rest = &after[end + 1..];
        }
        output.push_str(rest);
        Ok(output)
    }
}

fn single_key(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.iter().next().map(|(key, value)| (key.as_str(), value))
}

fn bad(message: String) -> StackError {
    StackError::Template(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Template {
        Template::parse(
            "Parameters:\n  Email: {Type: String, Default: ''}\n  Level: {Type: String}\nConditions:\n  HasEmail: !Not [!Equals [!Ref Email, '']]\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n",
        )
        .unwrap()
    }

    fn resolver(template: &Template) -> Resolver<'_> {
        let overrides = BTreeMap::from([("Level".to_string(), "debug".to_string())]);
        let mut resolver = Resolver::new(template, &overrides, "eu-west-1", "s").unwrap();
        resolver.resources.insert(
            "Q".into(),
            Physical::Queue { url: "http://q".into(), arn: "arn:aws:sqs:eu-west-1:1:q".into(), name: "q".into() },
        );
        resolver
    }

    #[test]
    fn refs_attributes_and_subs_resolve() {
        let template = template();
        let resolver = resolver(&template);
        assert_eq!(resolver.resolve(&json!({"Ref": "Q"})).unwrap(), json!("http://q"));
        assert_eq!(resolver.resolve(&json!({"Fn::GetAtt": ["Q", "Arn"]})).unwrap(), json!("arn:aws:sqs:eu-west-1:1:q"));
        assert_eq!(
            resolver.resolve(&json!({"Fn::Sub": "${AWS::Region}/${Q.QueueName}/${Level}/${!Keep}"})).unwrap(),
            json!("eu-west-1/q/debug/${Keep}")
        );
        assert_eq!(resolver.resolve(&json!({"Fn::Join": ["-", ["a", {"Ref": "Level"}]]})).unwrap(), json!("a-debug"));
        let domain = json!({"Fn::Select": [1, {"Fn::Split": ["@", "n@mail.example.com"]}]});
        assert_eq!(resolver.resolve(&domain).unwrap(), json!("mail.example.com"));
        assert!(resolver.resolve(&json!({"Fn::Select": ["2", {"Fn::Split": ["@", "a@b"]}]})).is_err());
    }

    #[test]
    fn conditions_evaluate() {
        let template = template();
        let resolver = resolver(&template);
        assert!(!resolver.condition("HasEmail").unwrap());
        assert_eq!(
            resolver.resolve(&json!({"Fn::If": ["HasEmail", "yes", {"Ref": "AWS::NoValue"}]})).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn unknown_references_and_missing_parameters_are_named() {
        let template = template();
        let resolver = resolver(&template);
        let error = resolver.resolve(&json!({"Ref": "SmsQueue"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "template.yaml: SmsQueue is referenced but is not a resource or parameter of the template"
        );
        let error = Resolver::new(&template, &BTreeMap::new(), "us-east-1", "s").err().unwrap();
        assert!(error.to_string().contains("parameter Level has no default"), "{error}");
    }
}
