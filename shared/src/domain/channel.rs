use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A way of reaching a user; each has its own queue, DLQ and dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Push,
    Sms,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Push, Channel::Sms, Channel::Email];

    /// The AWS service that sends the channel's messages, the first provider of its route:
    /// SNS (mobile push, SMS) and SES (email).
    pub fn aws_provider(self) -> &'static str {
        match self {
            Channel::Push | Channel::Sms => "sns",
            Channel::Email => "ses",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.as_str() == value)
            .ok_or_else(|| format!("unknown channel {value:?}; expected one of push, sms, email"))
    }
}
