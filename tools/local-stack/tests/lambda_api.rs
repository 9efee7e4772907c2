//! The local Lambda API answers Invoke as Lambda does, so aws-sdk-lambda callers (notifyctl)
//! work locally: the function's output, a failed invocation flagged with
//! `X-Amz-Function-Error`, and service errors typed in `x-amzn-errortype`.

mod support;

use serde_json::{Value, json};
use support::api::Api;

#[tokio::test]
async fn invoke_answers_with_the_output_a_flagged_function_error_or_a_typed_service_error() {
    let api = Api::start().await;
    let retry = api.stack.function("RetryFunction").unwrap();
    let http = reqwest::Client::new();
    let invoke = |function: String, payload: &'static str| {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", api.stack.lambda_url);
        let request = http.post(url).body(payload);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
            let (function_error, error_type) = (header("x-amz-function-error"), header("x-amzn-errortype"));
            (status, function_error, error_type, response.json::<Value>().await.unwrap())
        }
    };

    let (status, function_error, _, output) =
        invoke(retry.name.clone(), r#"{"action": "redrive", "channel": "sms", "dry_run": true}"#).await;
    assert_eq!((status, function_error), (200, None));
    assert_eq!(output["dead_letters"], json!(0), "{output}");

    // By ARN too, as Invoke accepts; an event the function cannot read fails the invocation.
    let (status, function_error, _, output) = invoke(retry.arn.clone(), r#"{"action": "explode"}"#).await;
    assert_eq!((status, function_error.as_deref()), (200, Some("Unhandled")));
    assert!(output["errorMessage"].as_str().unwrap().contains("unknown variant"), "{output}");

    let (status, _, error_type, _) = invoke("no-such-function".into(), "{}").await;
    assert_eq!((status, error_type.as_deref()), (404, Some("ResourceNotFoundException")));
    let (status, _, error_type, _) = invoke(retry.name.clone(), "not json").await;
    assert_eq!((status, error_type.as_deref()), (400, Some("InvalidRequestContentException")));
    api.stack.stop().await;
}
