//! Reading template.yaml: YAML with CloudFormation's short-form tags (`!Ref`, `!GetAtt`, …)
//! becomes JSON with the long forms (`{"Ref": …}`, `{"Fn::GetAtt": […]}`), SAM's `Globals`
//! are merged into each function, and the resources this stack emulates are read into specs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::StackError;

/// A template, parsed.
#[derive(Clone, Debug)]
pub struct Template {
    /// The text it was parsed from (what SAM's translator reads).
    pub source: String,
    pub parameters: Map<String, Value>,
    pub outputs: Map<String, Value>,
    pub conditions: Map<String, Value>,
    pub resources: BTreeMap<String, Resource>,
}

#[derive(Clone, Debug)]
pub struct Resource {
    pub kind: String,
    pub properties: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub condition: Option<String>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, StackError> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|error| StackError::Template(format!("not valid YAML: {error}")))?;
        let root = to_json(yaml)?;
        let object = |key: &str| root.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        let globals =
            root.get("Globals").and_then(|g| g.get("Function")).and_then(Value::as_object).cloned().unwrap_or_default();
        let mut resources = BTreeMap::new();
        for (logical_id, resource) in object("Resources") {
            let kind = resource
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| StackError::Template(format!("resource {logical_id} has no Type")))?
                .to_string();
            let mut properties = resource.get("Properties").and_then(Value::as_object).cloned().unwrap_or_default();
            if kind == "AWS::Serverless::Function" {
                properties = merge_globals(&globals, properties);
            }
            let metadata = resource.get("Metadata").and_then(Value::as_object).cloned().unwrap_or_default();
            let condition = resource.get("Condition").and_then(Value::as_str).map(str::to_string);
            resources.insert(logical_id, Resource { kind, properties, metadata, condition });
        }
        Ok(Self {
            source: text.to_string(),
            parameters: object("Parameters"),
            outputs: object("Outputs"),
            conditions: object("Conditions"),
            resources,
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Resource)> + 'a {
        self.resources.iter().filter(move |(_, resource)| resource.kind == kind)
    }
}

/// SAM Globals: a function's own property wins; maps (such as `Environment.Variables`) merge.
fn merge_globals(globals: &Map<String, Value>, own: Map<String, Value>) -> Map<String, Value> {
    let mut merged = globals.clone();
    for (key, value) in own {
        let combined = match (merged.remove(&key), value) {
            (Some(Value::Object(global)), Value::Object(local)) => Value::Object(merge_globals(&global, local)),
            (_, local) => local,
        };
        merged.insert(key, combined);
    }
    merged
}

fn to_json(value: serde_norway::Value) -> Result<Value, StackError> {
    use serde_norway::Value as Yaml;
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => serde_json::to_value(&n).map_err(|error| StackError::Template(error.to_string()))?,
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    other => serde_norway::to_string(&other).unwrap_or_default().trim().to_string(),
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value)?;
            match name {
                "Ref" | "Condition" => single(name, inner),
                // `!GetAtt Queue.Arn` is the short form of `Fn::GetAtt: [Queue, Arn]`.
                "GetAtt" => match inner {
                    Value::String(path) => {
                        let (resource, attribute) = path
                            .split_once('.')
                            .ok_or_else(|| StackError::Template(format!("!GetAtt {path} needs Resource.Attribute")))?;
                        single("Fn::GetAtt", serde_json::json!([resource, attribute]))
                    }
                    other => single("Fn::GetAtt", other),
                },
                other => single(&format!("Fn::{other}"), inner),
            }
        }
    })
}

fn single(key: &str, value: Value) -> Value {
    let mut object = Map::new();
    object.insert(key.to_string(), value);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_form_tags_become_long_form_intrinsics() {
        let template = Template::parse(
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      A: !Ref X\n      B: !GetAtt D.Arn\n      C: !Sub 'x-${AWS::Region}'\n      E: !Not [!Equals [!Ref P, '']]\n",
        )
        .unwrap();
        let properties = &template.resources["Q"].properties;
        assert_eq!(properties["A"], json!({"Ref": "X"}));
        assert_eq!(properties["B"], json!({"Fn::GetAtt": ["D", "Arn"]}));
        assert_eq!(properties["C"], json!({"Fn::Sub": "x-${AWS::Region}"}));
        assert_eq!(properties["E"], json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]}));
    }

    #[test]
    fn function_globals_merge_with_the_function_winning() {
        let template = Template::parse(
            "Globals:\n  Function:\n    Timeout: 30\n    Environment:\n      Variables:\n        A: global\n        B: global\nResources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Timeout: 10\n      Environment:\n        Variables:\n          B: own\n",
        )
        .unwrap();
        let properties = &template.resources["F"].properties;
        assert_eq!(properties["Timeout"], json!(10));
        assert_eq!(properties["Environment"]["Variables"], json!({"A": "global", "B": "own"}));
    }

    #[test]
    fn resources_without_a_type_are_rejected() {
        let error = Template::parse("Resources:\n  Q:\n    Properties: {}\n").unwrap_err();
        assert!(error.to_string().contains("Q has no Type"), "{error}");
    }
}
