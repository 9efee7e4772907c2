//! Bad configuration fails at start with a message naming what is wrong.

mod support;

use std::collections::{BTreeMap, HashMap};

use local_stack::functions::Registry;
use local_stack::template::Template;
use local_stack::{Clients, LocalStack, local_parameters};
use support::{options, project_template, project_template_text, sdk, sdk_for, start_project_stack, unique_stack_name};

async fn start_error(template: &Template) -> String {
    match start_project_stack(template).await {
        Ok(_) => panic!("the stack started"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named() {
    let sdk = sdk_for("http://127.0.0.1:9").await;
    let options = options(&unique_stack_name(), BTreeMap::new(), Registry::project());
    let error =
        LocalStack::start(&sdk, &project_template(), options).await.err().expect("no stack without an endpoint");
    assert!(error.to_string().starts_with("cannot reach AWS at http://127.0.0.1:9"), "{error}");
}

#[tokio::test]
async fn a_template_without_a_required_resource_is_named() {
    let text = project_template_text();
    let start = text.find("\n  SmsQueue:\n    Type: AWS::SQS::Queue").expect("the template declares SmsQueue");
    let end = start + text[start..].find("\n  SmsDeadLetterQueue:\n").expect("and its DLQ after it");
    let without_queue = format!("{}{}", &text[..start], &text[end..]);
    let error = start_error(&Template::parse(&without_queue).unwrap()).await;
    assert!(error.contains("SmsQueue"), "{error}");
    assert!(error.contains("not a queue in the template") || error.contains("not a resource"), "{error}");
}

#[tokio::test]
async fn a_function_missing_an_environment_variable_is_named() {
    let text = project_template_text().replace("          SMS_QUEUE_URL: !Ref SmsQueue\n", "");
    let error = start_error(&Template::parse(&text).unwrap()).await;
    assert!(error.contains("missing environment variable SMS_QUEUE_URL"), "{error}");
    assert!(error.starts_with("IntakeFunction") || error.starts_with("RetryFunction"), "{error}");
}

#[tokio::test]
async fn a_parameter_without_a_value_is_named() {
    let sdk = sdk().await;
    let clients = Clients::new(&sdk);
    let template = project_template();
    let mut parameters = local_parameters(&clients, &template, &unique_stack_name(), &BTreeMap::new()).await.unwrap();
    parameters.remove("ApnsPlatformApplicationArn");
    let error = LocalStack::start(&sdk, &template, options(&unique_stack_name(), parameters, Registry::project()))
        .await
        .err()
        .expect("no stack without the parameter");
    assert!(error.to_string().contains("parameter ApnsPlatformApplicationArn has no default"), "{error}");
}

#[tokio::test]
async fn each_function_names_its_missing_variables() {
    let sdk = aws_config::SdkConfig::builder().build();
    let empty = HashMap::new();
    let intake = intake::Intake::load(&sdk, &empty).await.err().unwrap().to_string();
    assert!(
        intake.contains("APPS_TABLE") && intake.contains("SMS_QUEUE_URL") && intake.contains("LINK_SIGNING_KEY_ARN"),
        "{intake}"
    );
    let push = dispatch_push::load(&sdk, &empty).err().unwrap().to_string();
    assert!(push.contains("APNS_PLATFORM_APPLICATION_ARN") && push.contains("SEND_RATE"), "{push}");
    let email = dispatch_email::load(&sdk, &empty).await.err().unwrap().to_string();
    assert!(email.contains("EMAIL_FROM_ADDRESS"), "{email}");
    let retry = retry::Retry::load(&sdk, &empty).err().unwrap().to_string();
    assert!(retry.contains("SMS_DLQ_URL"), "{retry}");
    let sms_type = HashMap::from([("SMS_TYPE".to_string(), "Loud".to_string())]);
    let sms = dispatch_sms::load(&sdk, &sms_type).await.err().unwrap().to_string();
    assert!(sms.contains("SMS_TYPE=\"Loud\" is invalid"), "{sms}");
}

#[tokio::test]
async fn sms_routes_that_do_not_parse_or_name_twilio_without_its_credentials_fail_the_init() {
    let sdk = aws_config::SdkConfig::builder().build();
    let routes = |text: &str| HashMap::from([("SMS_ROUTES".to_string(), text.to_string())]);
    for (text, problem) in [
        ("+82=carrier-pigeon;*=sns", "unknown SMS provider \"carrier-pigeon\""),
        ("+82=twilio", "no default route"),
        ("82=sns;*=sns", "is not a calling code prefix"),
        ("+82=;*=sns", "names no provider"),
        ("+82=twilio,sns;*=sns", "names twilio, but TWILIO_SECRET_ARN"),
    ] {
        let sms = dispatch_sms::load(&sdk, &routes(text)).await.err().unwrap().to_string();
        assert!(sms.contains(problem), "{text}: {sms}");
    }
}

#[tokio::test]
async fn a_send_rate_that_is_not_a_positive_number_fails_the_dispatcher_at_init_naming_it() {
    let sdk = aws_config::SdkConfig::builder().build();
    for rate in ["0", "-3", "NaN", "fast", "1e9"] {
        let env = HashMap::from([("SEND_RATE".to_string(), rate.to_string())]);
        let sms = dispatch_sms::load(&sdk, &env).await.err().unwrap().to_string();
        assert!(sms.contains(&format!("SEND_RATE={rate:?} is invalid")), "{sms}");
    }
    let env = HashMap::from([("SEND_RATE".to_string(), "0.5".to_string())]);
    let sms = dispatch_sms::load(&sdk, &env).await.err().unwrap().to_string();
    assert!(!sms.contains("SEND_RATE"), "half a send per second is a rate: {sms}");
}
