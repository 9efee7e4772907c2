//! Signed links: an unsubscribe token names a user and a channel and carries an HMAC-SHA256 of
//! both, so only links this deployment issued can change anyone's preferences; `seal`/`open`
//! do the same for any payload (the tracking links).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::channel::Channel;
use super::user::UserId;

/// The tag is truncated to 128 bits: ample against forgery, and it keeps links short.
const TAG_BYTES: usize = 16;

#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().to_vec() }
    }

    /// The same bytes as before `purpose_mac` existed, so links already sent keep working.
    fn mac(&self, user_id: &str, channel: &str) -> Hmac<Sha256> {
        self.purpose_mac("unsubscribe", format!("{user_id}\n{channel}").as_bytes())
    }

    pub fn token(&self, user_id: &UserId, channel: Channel) -> String {
        let tag = self.mac(user_id.as_str(), channel.as_str()).finalize().into_bytes();
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(user_id.as_str()),
            channel,
            URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        )
    }

    /// `payload` and an HMAC of it for `purpose`: `<base64url payload>.<base64url tag>`. A token
    /// sealed for one purpose never opens for another.
    pub fn seal(&self, purpose: &str, payload: &[u8]) -> String {
        let tag = self.purpose_mac(purpose, payload).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
    }

    /// The payload of a token this signer sealed for `purpose`; `None` for anything else.
    pub fn open(&self, purpose: &str, token: &str) -> Option<Vec<u8>> {
        let (payload, tag) = token.split_once('.')?;
        let (payload, tag) = (URL_SAFE_NO_PAD.decode(payload).ok()?, URL_SAFE_NO_PAD.decode(tag).ok()?);
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.purpose_mac(purpose, &payload).verify_truncated_left(&tag).ok()?;
        Some(payload)
    }

    fn purpose_mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(payload);
        mac
    }

    /// The user and channel of a token this signer issued; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<(UserId, Channel)> {
        let mut parts = token.split('.');
        let (user, channel, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user_id = UserId::parse(&String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?).ok()?;
        let channel: Channel = channel.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time comparison of the truncated tag.
        self.mac(user_id.as_str(), channel.as_str()).verify_truncated_left(&tag).ok()?;
        (tag.len() == TAG_BYTES).then_some((user_id, channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let signer = LinkSigner::new("a secret of at least thirty-two bytes");
        let user = UserId::parse("user-1").unwrap();
        let token = signer.token(&user, Channel::Email);
        assert_eq!(signer.verify(&token), Some((user.clone(), Channel::Email)));

        let other_user = token.replacen(&URL_SAFE_NO_PAD.encode("user-1"), &URL_SAFE_NO_PAD.encode("user-2"), 1);
        assert_eq!(signer.verify(&other_user), None);
        assert_eq!(signer.verify(&token.replace(".email.", ".sms.")), None);
        assert_eq!(signer.verify(&token[..token.len() - 2]), None);
        assert_eq!(LinkSigner::new("another secret").verify(&token), None);
        assert_eq!(signer.verify("garbage"), None);
    }
}
