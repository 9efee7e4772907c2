//! template.yaml read as plain YAML, without the local stack's own reader, for the tests that
//! check the template itself (included by path: the support module is shared with notifyctl's
//! tests, which read no YAML).
#![allow(dead_code)] // each test binary uses a different part of this module

use serde_norway::Value as Yaml;

pub fn parse(text: &str) -> Yaml {
    serde_norway::from_str(text).unwrap()
}

pub fn project() -> Yaml {
    parse(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap())
}

/// The template's resources of one type, by logical id.
pub fn resources<'a>(root: &'a Yaml, kind: &str) -> Vec<(String, &'a Yaml)> {
    root["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, resource)| resource["Type"].as_str() == Some(kind))
        .map(|(id, resource)| (id.as_str().unwrap().to_string(), resource))
        .collect()
}
