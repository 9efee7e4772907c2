//! Shared by notifyctl's tests: a local stack on the test emulator with its outputs written
//! where notifyctl reads them, and running the CLI.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    let (stack, _) =
        local_stack::start_project(&sdk, &template, &stack_name, &BTreeMap::new(), address, Default::default())
            .await
            .unwrap();
    let (outputs, directory) = write_outputs(&stack, &endpoint);
    (stack, outputs, directory)
}

/// Writes `stack`'s outputs (with `endpoint` as its AWS endpoint) to a scratch folder of its
/// own; returns the file and the folder.
pub fn write_outputs(stack: &LocalStack, endpoint: &str) -> (PathBuf, PathBuf) {
    let directory = std::env::temp_dir().join(&stack.deployed.stack_name);
    let outputs = directory.join("outputs.json");
    notify::outputs::Outputs::write(&outputs, &stack.outputs(Some(endpoint))).unwrap();
    (outputs, directory)
}

/// Runs `notifyctl --json <args>` (without blocking the runtime: the stack under test runs in
/// this process and answers the CLI); returns whether it succeeded and what it printed.
pub async fn try_notifyctl(outputs: &Path, args: &[&str]) -> (bool, Value, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_notifyctl"))
        .arg("--outputs")
        .arg(outputs)
        .arg("--json")
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .await
        .expect("notifyctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    // A refusal may print nothing but its reason (on stderr).
    let printed = match serde_json::from_slice(&output.stdout) {
        Ok(printed) => printed,
        Err(_) if !output.status.success() && output.stdout.is_empty() => Value::Null,
        Err(error) => panic!("notifyctl {args:?} printed no JSON ({error}): {stderr}"),
    };
    (output.status.success(), printed, stderr)
}

/// Runs `notifyctl --json <args>`, which must succeed, and returns what it printed.
pub async fn notifyctl(outputs: &Path, args: &[&str]) -> Value {
    let (succeeded, printed, stderr) = try_notifyctl(outputs, args).await;
    assert!(succeeded, "notifyctl {args:?} failed: {stderr}");
    printed
}
