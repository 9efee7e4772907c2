//! notifyctl against a local stack: an app created, rotated and disabled with the CLI is
//! accepted and refused by the real intake exactly as its state says.

mod support;

use std::process::Command;

use serde_json::json;
use support::notifyctl;

#[tokio::test]
async fn apps_created_rotated_and_disabled_with_the_cli_are_honoured_by_the_api() {
    let (stack, outputs, directory) = support::start().await;

    let created = notifyctl(&outputs, &["apps", "create", "--name", "billing", "--scopes", "users,status"]).await;
    let key = created["app_key"].as_str().unwrap().to_string();
    let first_secret = created["app_secret"].as_str().unwrap().to_string();
    assert_eq!(created["scopes"], json!(["users", "status"]));

    let listed = notifyctl(&outputs, &["apps", "list"]).await;
    let app = listed.as_array().unwrap().iter().find(|app| app["app_key"] == key.as_str()).expect("listed");
    assert_eq!(
        (app["name"].clone(), app["active_secrets"].clone(), app["disabled"].clone()),
        (json!("billing"), json!(1), json!(false))
    );
    assert!(app.get("secrets").is_none() && !listed.to_string().contains(&first_secret), "no secret is ever listed");

    let second_secret =
        notifyctl(&outputs, &["apps", "rotate", &key]).await["app_secret"].as_str().unwrap().to_string();
    let third_secret = notifyctl(&outputs, &["apps", "rotate", &key]).await["app_secret"].as_str().unwrap().to_string();

    let http = reqwest::Client::new();
    let get_user = |secret: String| {
        let request = http.get(format!("{}/v1/users/anyone", stack.api_url)).basic_auth(&key, Some(secret));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get_user(first_secret.clone()).await, 401, "two rotations revoke the first secret");
    assert_eq!(get_user(second_secret.clone()).await, 404, "the previous secret works during the rotation");
    assert_eq!(get_user(third_secret.clone()).await, 404, "the new secret works");

    // A disabled app is refused once the intake's app cache (CACHE_TTL_SECONDS, 5 s) expires.
    notifyctl(&outputs, &["apps", "disable", &key]).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while get_user(third_secret.clone()).await != 401 {
        assert!(tokio::time::Instant::now() < deadline, "the disabled app is refused within the cache TTL");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn a_missing_outputs_file_is_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_notifyctl"))
        .args(["--outputs", "/nonexistent/outputs.json", "apps", "list"])
        .output()
        .expect("notifyctl runs");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("cannot read stack outputs from /nonexistent/outputs.json"), "{message}");
    assert!(message.contains("sam list stack-outputs"), "{message}");
}

#[test]
fn an_unknown_scope_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_notifyctl"))
        .args(["apps", "create", "--name", "x", "--scopes", "send,admin"])
        .output()
        .expect("notifyctl runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scope \"admin\""));
}
