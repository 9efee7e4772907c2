//! `notifyctl users import`: good rows are written as the API writes them, bad rows are
//! reported (line, field, reason) and write nothing, and the exit status says so.

mod support;

use std::process::Command;

use notify::domain::user::UserId;
use notify::store::users::UserStore;
use serde_json::json;
use support::try_notifyctl;

#[tokio::test]
async fn good_rows_are_imported_and_bad_rows_are_reported_one_by_one() {
    let (stack, outputs, directory) = support::start().await;
    let ios = "ab".repeat(32);
    let csv = format!(
        "user_id,email,phone,locale,timezone,devices,push_opt_in,sms_opt_in,email_opt_in\n\
         ada,ada@example.com,+12015550123,en-GB,Europe/London,ios:{ios},,no,\n\
         bad-phone,,12345,,,,,,\n\
         ,grace@example.com,,,,,,,\n\
         \"quoted,id\",,,,,,maybe,,\n\
         linus,,,,,android:short,,,\n\
         alan,alan@example.com,,,,,,,false\n"
    );
    let file = directory.join("users.csv");
    std::fs::write(&file, csv).unwrap();

    let (succeeded, report, stderr) = try_notifyctl(&outputs, &["users", "import", file.to_str().unwrap()]).await;
    assert!(!succeeded, "rejected rows make the import exit 1");
    assert!(stderr.contains("4 rows were rejected"), "{stderr}");
    assert_eq!((report["imported"].clone(), report["rejected_rows"].clone()), (json!(2), json!(4)), "{report}");
    let rejections: Vec<(u64, String, String)> = report["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["user_id"].as_str().unwrap_or("").into(),
                r["field"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        (3, "bad-phone", "phone"),
        (4, "", "user_id"),
        (5, "quoted,id", "user_id"),
        (5, "quoted,id", "push_opt_in"),
        (6, "linus", "devices"),
    ];
    let expected: Vec<(u64, String, String)> =
        expected.iter().map(|(line, user, field)| (*line, user.to_string(), field.to_string())).collect();
    assert_eq!(rejections, expected, "{report}");

    let sdk = local_stack::emulator_config(&std::env::var("NOTIFY_TEST_ENDPOINT").unwrap()).await;
    let users =
        UserStore::new(aws_sdk_dynamodb::Client::new(&sdk), local_stack::demo::tables(&stack.deployed).unwrap().users);
    let ada = users.get(&UserId::parse("ada").unwrap()).await.unwrap().expect("ada imported");
    assert_eq!(ada.phone.as_ref().map(|p| p.as_str()), Some("+12015550123"));
    assert_eq!(ada.timezone.as_ref().map(|t| t.as_str()), Some("Europe/London"));
    assert_eq!((ada.preferences.push, ada.preferences.sms, ada.preferences.email), (true, false, true));
    assert_eq!(ada.active_devices().map(|d| d.token.clone()).collect::<Vec<_>>(), vec![ios]);
    let alan = users.get(&UserId::parse("alan").unwrap()).await.unwrap().expect("alan imported");
    assert!(!alan.preferences.email);
    for rejected in ["bad-phone", "linus"] {
        assert!(users.get(&UserId::parse(rejected).unwrap()).await.unwrap().is_none(), "{rejected} wrote nothing");
    }

    // The file fixed and imported again: the rows already there are written again, idempotently.
    let fixed = format!("user_id,phone,devices\nada,+12015550123,ios:{}\nlinus,+12015550124,\n", "ab".repeat(32));
    std::fs::write(&file, fixed).unwrap();
    let (succeeded, report, stderr) = try_notifyctl(&outputs, &["users", "import", file.to_str().unwrap()]).await;
    assert!(succeeded, "{stderr}");
    assert_eq!(report, json!({"imported": 2, "rejected_rows": 0, "rejections": []}));
    let ada = users.get(&UserId::parse("ada").unwrap()).await.unwrap().unwrap();
    assert_eq!((ada.devices.len(), ada.email.is_none()), (1, true), "contacts replaced, device kept once");
    stack.stop().await;
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn a_file_with_an_unknown_column_is_refused_before_any_row_is_written() {
    let directory = std::env::temp_dir().join(format!("import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("users.csv");
    std::fs::write(&file, "user_id,e-mail\nada,ada@example.com\n").unwrap();
    let outputs = directory.join("outputs.json");
    notify::outputs::Outputs::write(&outputs, &[("UsersTableName".to_string(), "unused".to_string())].into()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_notifyctl"))
        .arg("--outputs")
        .arg(&outputs)
        .args(["users", "import"])
        .arg(&file)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("unknown column \"e-mail\""), "{message}");
    let _ = std::fs::remove_dir_all(directory);
}
