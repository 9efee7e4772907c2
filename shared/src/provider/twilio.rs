//! Twilio Programmable Messaging: the signature Twilio puts on the requests it sends (status
//! callbacks), `X-Twilio-Signature`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header Twilio signs its requests with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// The signature of a request to `url` (as Twilio called it, query string included) with the
/// form `params`: the base64 HMAC-SHA1, keyed with the account's auth token, of the URL followed
/// by each parameter's name and value, sorted by name (then value, for a repeated name).
pub fn signature<'a>(auth_token: &str, url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `signature` is the request's, compared in constant time.
pub fn verify<'a>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    signature: &str,
) -> bool {
    let Ok(given) = STANDARD.decode(signature) else { return false };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

fn mac<'a>(auth_token: &str, url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Hmac<Sha1> {
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_unstable();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's webhook security guide.
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn signs_as_twilios_guide_does() {
        let mut shuffled = PARAMS;
        shuffled.reverse();
        assert_eq!(signature("12345", URL, shuffled), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify("12345", URL, PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
    }

    #[test]
    fn a_changed_parameter_url_or_token_or_a_malformed_signature_does_not_verify() {
        let good = signature("12345", URL, PARAMS);
        let mut changed = PARAMS;
        changed[2].1 = "1235";
        assert!(!verify("12345", URL, changed, &good));
        assert!(!verify("12345", "https://mycompany.com/myapp.php?foo=1", PARAMS, &good));
        assert!(!verify("54321", URL, PARAMS, &good));
        assert!(!verify("12345", URL, PARAMS, "not base64!"));
        assert!(!verify("12345", URL, PARAMS, ""));
    }
}
