//! Shared by notifyctl's tests: a local stack on the test emulator with its outputs written
//! where notifyctl reads them, and running the CLI.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use local_stack::LocalStack;
use local_stack::template::Template;
use serde_json::Value;

/// The project's stack on the test emulator; returns it, its outputs file and a scratch folder.
pub async fn start() -> (LocalStack, PathBuf, PathBuf) {
    let endpoint = std::env::var("NOTIFY_TEST_ENDPOINT").expect("run the tests with scripts/test.sh");
    let sdk = local_stack::emulator_config(&endpoint).await;
    let template = Template::parse(include_str!("../../../../template.yaml")).unwrap();
    let stack_name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    let (stack, _) = local_stack::start_project(&sdk, &template, &stack_name, &BTreeMap::new(), address).await.unwrap();
    let directory = std::env::temp_dir().join(&stack_name);
    let outputs = directory.join("outputs.json");
    let mut values = stack.deployed.outputs.clone();
    values.insert(notify::outputs::LOCAL_ENDPOINT.into(), endpoint);
    notify::outputs::Outputs::write(&outputs, &values).unwrap();
    (stack, outputs, directory)
}

pub fn notifyctl(outputs: &Path, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_notifyctl"))
        .arg("--outputs")
        .arg(outputs)
        .arg("--json")
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("notifyctl runs");
    assert!(output.status.success(), "notifyctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("notifyctl --json prints JSON")
}
