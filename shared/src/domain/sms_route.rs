//! Which SMS providers serve a destination, in order: a route per E.164 country calling code
//! prefix (the longest matching prefix wins) and a default (`*`) for every other number.
//!
//! Written as `+82=twilio,sns;*=sns,twilio`: the form of the `SmsRoutes` template parameter and
//! of `notifyctl routes set`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::contact::PhoneNumber;

/// An SMS provider the SMS dispatcher can send through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SmsProvider {
    /// Amazon SNS `Publish` to a phone number.
    Sns,
    /// Twilio Programmable Messaging.
    Twilio,
}

impl SmsProvider {
    pub const ALL: [SmsProvider; 2] = [SmsProvider::Sns, SmsProvider::Twilio];

    pub fn as_str(self) -> &'static str {
        match self {
            SmsProvider::Sns => "sns",
            SmsProvider::Twilio => "twilio",
        }
    }
}

impl FromStr for SmsProvider {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|provider| provider.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|provider| provider.as_str()).collect();
            format!("unknown SMS provider {name:?} (known: {})", known.join(", "))
        })
    }
}

impl fmt::Display for SmsProvider {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The providers of one route, in the order they are tried: never empty, each provider once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route(Vec<SmsProvider>);

impl Route {
    pub fn providers(&self) -> &[SmsProvider] {
        &self.0
    }
}

/// A country calling code prefix of a route: `+` and 1 to 6 digits, not starting with 0
/// (`+1`, `+44`, `+1684`: a prefix may name part of a numbering plan).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Prefix(String);

impl FromStr for Prefix {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.strip_prefix('+').unwrap_or_default();
        let valid =
            (1..=6).contains(&digits.len()) && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit());
        if valid {
            Ok(Self(text.to_string()))
        } else {
            Err(format!("{text:?} is not a calling code prefix (+ and 1 to 6 digits, or * for the default)"))
        }
    }
}

/// Every route: the default and one per prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsRoutes {
    default: Route,
    by_prefix: BTreeMap<Prefix, Route>,
}

impl SmsRoutes {
    /// Every number through SNS: the routes of a stack without another provider.
    pub fn sns_only() -> Self {
        Self { default: Route(vec![SmsProvider::Sns]), by_prefix: BTreeMap::new() }
    }

    /// The route of `number`: its longest matching prefix's, else the default.
    pub fn route(&self, number: &PhoneNumber) -> &Route {
        let number = number.as_str();
        self.by_prefix
            .iter()
            .filter(|(prefix, _)| number.starts_with(prefix.0.as_str()))
            .max_by_key(|(prefix, _)| prefix.0.len())
            .map_or(&self.default, |(_, route)| route)
    }

    /// Every provider some route names (the ones whose credentials the dispatcher needs).
    pub fn providers(&self) -> Vec<SmsProvider> {
        let mut named: Vec<SmsProvider> =
            self.by_prefix.values().chain([&self.default]).flat_map(|route| route.0.iter().copied()).collect();
        named.sort();
        named.dedup();
        named
    }
}

impl FromStr for SmsRoutes {
    type Err = String;

    /// `PREFIX=PROVIDER,PROVIDER;…` with exactly one `*` route; spaces around the parts are
    /// ignored. Each error names the rule it is about.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut default = None;
        let mut by_prefix = BTreeMap::new();
        for rule in text.split(';').map(str::trim).filter(|rule| !rule.is_empty()) {
            let (prefix, providers) =
                rule.split_once('=').ok_or_else(|| format!("rule {rule:?}: expected PREFIX=PROVIDER[,PROVIDER…]"))?;
            let mut route = Vec::new();
            for name in providers.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                let provider: SmsProvider = name.parse().map_err(|error| format!("rule {rule:?}: {error}"))?;
                if route.contains(&provider) {
                    return Err(format!("rule {rule:?}: {provider} is listed twice"));
                }
                route.push(provider);
            }
            if route.is_empty() {
                return Err(format!("rule {rule:?}: names no provider"));
            }
            let twice = match prefix.trim() {
                "*" => default.replace(Route(route)).is_some(),
                prefix => {
                    let prefix: Prefix = prefix.parse().map_err(|error| format!("rule {rule:?}: {error}"))?;
                    by_prefix.insert(prefix, Route(route)).is_some()
                }
            };
            if twice {
                return Err(format!("rule {rule:?}: its prefix has a route already"));
            }
        }
        let default = default.ok_or("no default route (`*=PROVIDER,…`) for the numbers no prefix matches")?;
        Ok(Self { default, by_prefix })
    }
}

impl fmt::Display for SmsRoutes {
    /// The form [`SmsRoutes::from_str`] reads: prefixes in order, then the default.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = |route: &Route| route.0.iter().map(|provider| provider.as_str()).collect::<Vec<_>>().join(",");
        for (prefix, providers) in &self.by_prefix {
            write!(formatter, "{}={};", prefix.0, route(providers))?;
        }
        write!(formatter, "*={}", route(&self.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> PhoneNumber {
        PhoneNumber::from_e164(text).unwrap()
    }

    #[test]
    fn the_longest_matching_prefix_wins_and_the_default_takes_the_rest() {
        let routes: SmsRoutes = "+1=sns; +1684=twilio; +82=twilio,sns; *=sns,twilio".parse().unwrap();
        let providers = |text| routes.route(&number(text)).providers().to_vec();
        assert_eq!(providers("+16845550123"), [SmsProvider::Twilio]);
        assert_eq!(providers("+14155550123"), [SmsProvider::Sns]);
        assert_eq!(providers("+821012345678"), [SmsProvider::Twilio, SmsProvider::Sns]);
        assert_eq!(providers("+447700900123"), [SmsProvider::Sns, SmsProvider::Twilio]);
        assert_eq!(routes.providers(), [SmsProvider::Sns, SmsProvider::Twilio]);
    }

    #[test]
    fn routes_read_back_what_they_write() {
        let routes: SmsRoutes = " +82 = twilio , sns ;*=sns;".parse().unwrap();
        assert_eq!(routes.to_string(), "+82=twilio,sns;*=sns");
        assert_eq!(routes.to_string().parse::<SmsRoutes>().unwrap(), routes);
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_and_the_reason() {
        for (text, reason) in [
            ("", "no default route"),
            ("+82=twilio", "no default route"),
            ("*=sns;+82=nexmo", "rule \"+82=nexmo\": unknown SMS provider \"nexmo\" (known: sns, twilio)"),
            ("*=sns;82=twilio", "rule \"82=twilio\": \"82\" is not a calling code prefix"),
            ("*=sns;+082=twilio", "is not a calling code prefix"),
            ("*=sns;+1234567=twilio", "is not a calling code prefix"),
            ("*=sns;+8a=twilio", "is not a calling code prefix"),
            ("*=", "rule \"*=\": names no provider"),
            ("*=sns;+82= , ", "names no provider"),
            ("*=sns,sns", "sns is listed twice"),
            ("*=sns;*=twilio", "rule \"*=twilio\": its prefix has a route already"),
            ("*=sns;+82=sns;+82=twilio", "its prefix has a route already"),
            ("*", "expected PREFIX=PROVIDER"),
        ] {
            let error = text.parse::<SmsRoutes>().unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
