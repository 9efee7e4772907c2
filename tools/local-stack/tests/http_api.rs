//! The local HTTP API builds the same payload-2.0 event API Gateway sends, and turns the
//! function's answer back into HTTP, checked with an echoing function on a fixture template.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::LambdaEvent;
use local_stack::LocalStack;
use local_stack::functions::Registry;
use local_stack::template::Template;
use notify::function::Function;
use serde_json::{Value, json};
use support::{options, sdk, unique_stack_name};

const FIXTURE: &str = r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  Echo:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: echo
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      Events:
        GetItem:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/items/{item_id}", Method: GET}
        Upload:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/files/{proxy+}", Method: ANY}
"#;

/// Answers with the event it received, parsed as the typed API Gateway request, plus a cookie.
struct Echo;

impl Function for Echo {
    type Event = Value;
    type Output = Value;

    async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let typed: ApiGatewayV2httpRequest = serde_json::from_value(event.payload.clone())?;
        assert_eq!(typed.request_context.http.method.as_str(), event.payload["requestContext"]["http"]["method"]);
        Ok(json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-echo": "yes"},
            "cookies": ["session=1; HttpOnly"],
            "body": event.payload.to_string(),
        }))
    }
}

async fn start() -> LocalStack {
    let mut registry = Registry::empty();
    registry.register("echo", |_, _| Ok(Arc::new(Echo)));
    let template = Template::parse(FIXTURE).unwrap();
    LocalStack::start(&sdk().await, &template, options(&unique_stack_name(), BTreeMap::new(), registry)).await.unwrap()
}

#[tokio::test]
async fn a_request_becomes_an_api_gateway_v2_event() {
    let stack = start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/items/42?tag=a&tag=b&q=x%20y", stack.api_url))
        .header("Cookie", "a=1; b=2")
        .header("X-Custom", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.headers()["set-cookie"], "session=1; HttpOnly");
    let event: Value = response.json().await.unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "GET /items/{item_id}");
    assert_eq!(event["requestContext"]["routeKey"], "GET /items/{item_id}");
    assert_eq!(event["requestContext"]["stage"], "$default");
    assert_eq!(event["rawPath"], "/items/42");
    assert_eq!(event["rawQueryString"], "tag=a&tag=b&q=x%20y");
    assert_eq!(event["pathParameters"], json!({"item_id": "42"}));
    assert_eq!(event["queryStringParameters"], json!({"tag": "a,b", "q": "x y"}));
    assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(event["headers"]["x-custom"], "one");
    assert!(event["headers"].get("cookie").is_none());
    assert_eq!(event["isBase64Encoded"], false);
    stack.stop().await;
}

#[tokio::test]
async fn binary_bodies_are_base64_encoded_and_greedy_paths_match() {
    let stack = start().await;
    let response = reqwest::Client::new()
        .put(format!("{}/files/a/b.bin", stack.api_url))
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    let event: Value = response.json().await.unwrap();
    assert_eq!(event["routeKey"], "ANY /files/{proxy+}");
    assert_eq!(event["pathParameters"], json!({"proxy": "a/b.bin"}));
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], "AJ+Slg==");
    stack.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_api_gateways_404() {
    let stack = start().await;
    let response = reqwest::Client::new().post(format!("{}/items/42", stack.api_url)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Not Found"}));
    stack.stop().await;
}
