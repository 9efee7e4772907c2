//! Where the stack's resources are: its CloudFormation outputs, in the JSON that
//! `sam list stack-outputs --output json` prints (the local stack writes the same file).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    output_key: String,
    output_value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    #[error(
        "cannot read stack outputs from {path}: {reason} (write them with `sam list stack-outputs --stack-name <stack> --output json > {path}`, or start the local stack)"
    )]
    Unreadable { path: String, reason: String },
    #[error("the stack outputs in {path} have no {key}")]
    Missing { path: String, key: String },
}

pub struct Outputs {
    path: String,
    values: BTreeMap<String, String>,
}

impl Outputs {
    pub fn read(path: &Path) -> Result<Self, OutputsError> {
        let shown = path.display().to_string();
        let unreadable = |reason: String| OutputsError::Unreadable { path: shown.clone(), reason };
        let text = std::fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
        let outputs: Vec<Output> = serde_json::from_str(&text).map_err(|error| unreadable(error.to_string()))?;
        Ok(Self {
            path: shown,
            values: outputs.into_iter().map(|output| (output.output_key, output.output_value)).collect(),
        })
    }

    pub fn get(&self, key: &str) -> Result<&str, OutputsError> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| OutputsError::Missing { path: self.path.clone(), key: key.to_string() })
    }

    /// Writes outputs in the same format (the local stack does, for notifyctl).
    pub fn write(path: &Path, values: &BTreeMap<String, String>) -> std::io::Result<()> {
        let outputs: Vec<Output> =
            values.iter().map(|(key, value)| Output { output_key: key.clone(), output_value: value.clone() }).collect();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&outputs).expect("outputs serialize"))
    }

    /// The AWS endpoint the local stack ran against, if these are a local stack's outputs.
    pub fn local_endpoint(&self) -> Option<&str> {
        self.values.get(LOCAL_ENDPOINT).map(String::as_str)
    }

    /// The local stack's Lambda API (it runs the functions in-process), if these are its outputs.
    pub fn local_lambda_endpoint(&self) -> Option<&str> {
        self.values.get(LOCAL_LAMBDA_ENDPOINT).map(String::as_str)
    }
}

/// The output naming a channel's dead-letter queue.
pub fn dead_letter_queue_url(channel: crate::domain::channel::Channel) -> &'static str {
    match channel {
        crate::domain::channel::Channel::Push => "PushDeadLetterQueueUrl",
        crate::domain::channel::Channel::Sms => "SmsDeadLetterQueueUrl",
        crate::domain::channel::Channel::Email => "EmailDeadLetterQueueUrl",
    }
}

/// The extra output a local stack writes: the URL of its AWS endpoint (the emulator behind the
/// stack's IAM authorizer).
pub const LOCAL_ENDPOINT: &str = "LocalAwsEndpoint";

/// The access key id of the local stack's operator: its authorizer allows this identity every
/// action, as an administrator's credentials would in AWS (notifyctl is not a function).
pub const LOCAL_ADMIN_ACCESS_KEY_ID: &str = "LOCALADMIN";

/// The extra output a local stack writes: its Lambda API's URL, for invoking its functions.
pub const LOCAL_LAMBDA_ENDPOINT: &str = "LocalLambdaEndpoint";
