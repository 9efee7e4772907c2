//! The key that signs unsubscribe and tracking links is a Secrets Manager secret the stack
//! generates (never in a function's environment); links name the key that signed them, so a
//! rotation keeps every link already sent working, and a warm function learns the new key.

mod support;

use std::collections::{BTreeMap, HashMap};

use local_stack::resolve::Physical;
use notify::config::Settings;
use notify::domain::channel::Channel;
use notify::domain::user::UserId;
use notify::link_keys::LinkKeys;
use reqwest::Method;
use support::api::{Api, unique};
use support::endpoint;
use support::fault_proxy::FaultProxy;

/// The key's secret ARN and its current (value, version id).
async fn current_key(api: &Api) -> (String, String, String) {
    let Some(Physical::Secret { arn, .. }) = api.stack.deployed.resources.get("LinkSigningKey") else {
        panic!("the template has a LinkSigningKey secret")
    };
    let current = api.clients.secrets.get_secret_value().secret_id(arn).send().await.unwrap();
    (arn.clone(), current.secret_string.unwrap(), current.version_id.unwrap())
}

/// The key id a version's links carry.
fn key_id(version_id: &str) -> String {
    version_id.chars().filter(char::is_ascii_alphanumeric).take(8).collect()
}

#[tokio::test]
async fn a_rotation_keeps_links_already_sent_working_and_a_warm_intake_learns_the_new_key() {
    // Between the stack and the emulator: counts the functions' reads of the secret.
    let proxy = FaultProxy::start(&endpoint(), 0.0).await;
    let api = Api::start_with(&proxy.url, BTreeMap::new()).await;
    let (arn, first_value, first_version) = current_key(&api).await;
    for (function, environment) in &api.stack.deployed.function_environments {
        assert!(
            !environment.values().any(|value| value.contains(&first_value)),
            "{function} has the key in its environment"
        );
    }

    // An email with a tracked link and an unsubscribe link, signed with the first key.
    let id = api.tracked_email_sent("<a href=\"https://shop.example.com/\">Shop</a>").await;
    let user = api.notification(&id).await["user_id"].as_str().unwrap().to_string();
    let (clicks, _) = api.tracking_links(&id, "c").await;
    let unsubscribe = api.unsubscribe_path(&id).await;
    let first_id = key_id(&first_version);
    assert!(unsubscribe.starts_with(&format!("/v1/unsubscribe/{first_id}.")), "{unsubscribe} names its key");
    assert!(clicks[0].contains(&format!("/t/c/{first_id}.")), "{} names its key", clicks[0]);

    // On-call rotates the key.
    let rotated = api
        .clients
        .secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(unique("a-new-key-"))
        .send()
        .await
        .unwrap();
    let second_id = key_id(rotated.version_id.as_deref().unwrap());
    assert_ne!(first_id, second_id);

    // Links already sent keep working.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    assert_eq!(http.get(&clicks[0]).send().await.unwrap().status(), 302);
    assert_eq!(api.call_as(None, Method::GET, &unsubscribe, None, &[]).await.status, 200);

    // A function started after the rotation signs with the new key and still verifies the old.
    let env = HashMap::from([("LINK_SIGNING_KEY_ARN".to_string(), arn.clone())]);
    let mut settings = Settings::new(&env);
    let fresh = LinkKeys::load(api.clients.secrets.clone(), &mut settings);
    settings.finish().unwrap();
    fresh.read().await.unwrap();
    let signer = fresh.signer().await.unwrap();
    let user_id = UserId::parse(&user).unwrap();
    let new_token = signer.unsubscribe_link(&user_id, Channel::Email, notify::time::now_epoch_seconds());
    assert!(new_token.starts_with(&format!("{second_id}.")), "{new_token}");
    let old_token = unsubscribe.trim_start_matches("/v1/unsubscribe/");
    let opened = signer.open_unsubscribe_link(old_token).map(|link| (link.user_id, link.channel));
    assert_eq!(opened, Some((user_id, Channel::Email)));

    // The warm intake, which read the first key only, verifies the new link: it reads the key
    // (both versions) again. A link naming a key the secret never had is refused, and within the
    // minute costs no further read: forged links cannot make the intake hammer Secrets Manager.
    let reads = || proxy.take_operations().remove("secretsmanager:GetSecretValue").unwrap_or(0);
    reads();
    assert_eq!(api.call_as(None, Method::GET, &format!("/v1/unsubscribe/{new_token}"), None, &[]).await.status, 200);
    assert_eq!(reads(), 2, "the current and previous versions, read again once");
    let forged = new_token.replacen(&second_id, "zzzzzzzz", 1);
    for _ in 0..3 {
        assert_eq!(api.call_as(None, Method::GET, &format!("/v1/unsubscribe/{forged}"), None, &[]).await.status, 404);
    }
    assert_eq!(reads(), 0, "no read for a forged link within a minute of the last");
    assert!(api.stack.denials().is_empty(), "{:#?}", api.stack.denials());
    api.stack.stop().await;
}
