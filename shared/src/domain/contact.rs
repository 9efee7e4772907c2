//! Contact points: phone numbers normalised to E.164 and email addresses.

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+14155550123`), the only form SNS accepts.
///
/// Read back from a record or a queue message it is checked for E.164 form only (every one
/// stored came through [`PhoneNumber::parse`]): the numbering-plan metadata `parse` needs takes
/// about 200 ms to load, which every dispatcher's cold start would otherwise pay.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses any international notation (`+44 20 7946 0958`, `+1 (415) 555-0123`) and
    /// normalises it; numbers without a country code are rejected rather than guessed.
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if !trimmed.starts_with('+') {
            return Err("must be in international format, starting with + and the country code".into());
        }
        let number = phonenumber::parse(None, trimmed).map_err(|error| format!("is not a phone number: {error}"))?;
        if !phonenumber::is_valid(&number) {
            return Err("is not a valid phone number for its country".into());
        }
        Ok(Self(number.format().mode(phonenumber::Mode::E164).to_string()))
    }

    /// A number already in E.164 form: `+`, then 2 to 15 digits not starting with 0.
    pub fn from_e164(input: &str) -> Result<Self, String> {
        let digits = input.strip_prefix('+').unwrap_or_default();
        let valid = (2..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|byte| byte.is_ascii_digit());
        if valid { Ok(Self(input.to_string())) } else { Err(format!("{input:?} is not an E.164 phone number")) }
    }
}

super::validated_string!(PhoneNumber, from_e164);

/// An email address that SES will accept: RFC 5322 syntax, at most 254 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        let parsed: email_address::EmailAddress =
            trimmed.parse().map_err(|error| format!("is not an email address: {error}"))?;
        if !parsed.domain().contains('.') {
            return Err("must have a domain with a dot".into());
        }
        Ok(Self(parsed.to_string()))
    }
}

super::validated_string!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalise_to_e164() {
        assert_eq!(PhoneNumber::parse(" +1 (201) 555-0123 ").unwrap().as_str(), "+12015550123");
        assert_eq!(PhoneNumber::parse("+44 20 7946 0958").unwrap().as_str(), "+442079460958");
    }

    #[test]
    fn phone_numbers_without_country_or_validity_are_rejected() {
        assert!(PhoneNumber::parse("2015550123").unwrap_err().contains("international format"));
        assert!(PhoneNumber::parse("+1 000").is_err());
        assert!(PhoneNumber::parse("+not a number").is_err());
    }

    #[test]
    fn stored_numbers_are_read_back_in_e164_form_only() {
        let stored: PhoneNumber = serde_json::from_str("\"+12015550123\"").unwrap();
        assert_eq!(stored, PhoneNumber::parse("+12015550123").unwrap());
        for corrupt in ["\"12015550123\"", "\"+1 201 555 0123\"", "\"+0123\"", "\"+\"", "\"+1234567890123456\""] {
            assert!(serde_json::from_str::<PhoneNumber>(corrupt).is_err(), "{corrupt}");
        }
    }

    #[test]
    fn email_addresses_are_checked() {
        assert_eq!(EmailAddress::parse("ada@example.com").unwrap().as_str(), "ada@example.com");
        assert!(EmailAddress::parse("ada").is_err());
        assert!(EmailAddress::parse("ada@localhost").is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).unwrap_err().contains("254"));
    }
}
