//! Signed links: an unsubscribe link names a user, a channel and when its email was sent, sealed
//! with an HMAC-SHA256, so only links this deployment issued can change anyone's preferences;
//! `seal`/`open` do the same for any payload (the tracking and preference center links). Links
//! sent before the send time was carried (`<key id>.<user>.<channel>.<tag>`) still verify. Tokens name the key that signed them
//! (`<key id>.…`): the signer holds the current key, which signs, and older ones, which still
//! verify, so rotating the key keeps every link already sent working. Tokens from before key
//! ids existed (no key id) are checked against every key.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::channel::Channel;
use super::user::UserId;

/// The tag is truncated to 128 bits: ample against forgery, and it keeps links short.
const TAG_BYTES: usize = 16;

const UNSUBSCRIBE_LINK: &str = "unsubscribe-link";

/// What an unsubscribe link names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeLink {
    #[serde(rename = "u")]
    pub user_id: UserId,
    #[serde(rename = "c")]
    pub channel: Channel,
    /// When its email was sent (epoch seconds); `None` for links sent before it was carried.
    #[serde(rename = "i")]
    pub issued: Option<i64>,
}

/// One signing key and the id links signed with it carry.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    secret: Vec<u8>,
}

impl SigningKey {
    /// `id` is kept to its letters and digits (it is part of a URL path segment and of the
    /// token's dotted syntax).
    pub fn new(id: &str, secret: &str) -> Self {
        Self { id: id.chars().filter(char::is_ascii_alphanumeric).collect(), secret: secret.as_bytes().to_vec() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn purpose_mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(payload);
        mac
    }

    /// The same bytes as before `purpose_mac` existed, so links already sent keep working.
    fn unsubscribe_mac(&self, user_id: &str, channel: &str) -> Hmac<Sha256> {
        self.purpose_mac("unsubscribe", format!("{user_id}\n{channel}").as_bytes())
    }
}

/// The keys links are signed and verified with: the first signs.
#[derive(Clone)]
pub struct LinkSigner {
    keys: Arc<[SigningKey]>,
}

impl LinkSigner {
    pub fn new(current: SigningKey, older: impl IntoIterator<Item = SigningKey>) -> Self {
        Self { keys: std::iter::once(current).chain(older).collect() }
    }

    /// Whether both hold the very same keys (one read of them, not two).
    pub fn same_keys(&self, other: &LinkSigner) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys)
    }

    fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The keys that may have signed a token: the one it names, or every key for a token
    /// without a key id. Returns the token without its key id.
    fn candidates<'a>(&'a self, token: &'a str, legacy_parts: usize) -> (Vec<&'a SigningKey>, &'a str) {
        if token.split('.').count() == legacy_parts {
            return (self.keys.iter().collect(), token);
        }
        match token.split_once('.') {
            Some((id, rest)) => (self.keys.iter().filter(|key| key.id == id).collect(), rest),
            None => (Vec::new(), token),
        }
    }

    /// The unsubscribe link token of an email to `user_id` sent at `issued` (epoch seconds).
    pub fn unsubscribe_link(&self, user_id: &UserId, channel: Channel, issued: i64) -> String {
        let link = UnsubscribeLink { user_id: user_id.clone(), channel, issued: Some(issued) };
        self.seal(UNSUBSCRIBE_LINK, &serde_json::to_vec(&link).expect("serializes"))
    }

    /// What an unsubscribe link token names, if this signer issued it (in either format).
    pub fn open_unsubscribe_link(&self, token: &str) -> Option<UnsubscribeLink> {
        let sealed = self.open(UNSUBSCRIBE_LINK, token).and_then(|payload| serde_json::from_slice(&payload).ok());
        sealed.or_else(|| {
            let (user_id, channel) = self.verify(token)?;
            Some(UnsubscribeLink { user_id, channel, issued: None })
        })
    }

    /// A token in the format links had before they carried their send time.
    #[cfg(test)]
    fn token(&self, user_id: &UserId, channel: Channel) -> String {
        let key = self.current();
        let tag = key.unsubscribe_mac(user_id.as_str(), channel.as_str()).finalize().into_bytes();
        format!(
            "{}.{}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(user_id.as_str()),
            channel,
            URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        )
    }

    /// `payload` and an HMAC of it for `purpose`: `<key id>.<base64url payload>.<base64url tag>`.
    /// A token sealed for one purpose never opens for another.
    pub fn seal(&self, purpose: &str, payload: &[u8]) -> String {
        let key = self.current();
        let tag = key.purpose_mac(purpose, payload).finalize().into_bytes();
        format!("{}.{}.{}", key.id, URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
    }

    /// The payload of a token this signer sealed for `purpose`; `None` for anything else.
    pub fn open(&self, purpose: &str, token: &str) -> Option<Vec<u8>> {
        let (keys, token) = self.candidates(token, 2);
        let (payload, tag) = token.split_once('.')?;
        let (payload, tag) = (URL_SAFE_NO_PAD.decode(payload).ok()?, URL_SAFE_NO_PAD.decode(tag).ok()?);
        if tag.len() != TAG_BYTES {
            return None;
        }
        // Constant-time comparison of the truncated tag.
        keys.iter().any(|key| key.purpose_mac(purpose, &payload).verify_truncated_left(&tag).is_ok()).then_some(payload)
    }

    /// The user and channel of a token in the format before links carried their send time.
    fn verify(&self, token: &str) -> Option<(UserId, Channel)> {
        let (keys, token) = self.candidates(token, 3);
        let mut parts = token.split('.');
        let (user, channel, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user_id = UserId::parse(&String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?).ok()?;
        let channel: Channel = channel.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        keys.iter()
            .any(|key| key.unsubscribe_mac(user_id.as_str(), channel.as_str()).verify_truncated_left(&tag).is_ok())
            .then_some((user_id, channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> SigningKey {
        SigningKey::new(id, &format!("a secret of at least thirty-two bytes for {id}"))
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let signer = LinkSigner::new(key("k1"), []);
        let user = UserId::parse("user-1").unwrap();
        let token = signer.token(&user, Channel::Email);
        assert!(token.starts_with("k1."), "{token}");
        assert_eq!(signer.verify(&token), Some((user.clone(), Channel::Email)));

        let other_user = token.replacen(&URL_SAFE_NO_PAD.encode("user-1"), &URL_SAFE_NO_PAD.encode("user-2"), 1);
        assert_eq!(signer.verify(&other_user), None);
        assert_eq!(signer.verify(&token.replace(".email.", ".sms.")), None);
        assert_eq!(signer.verify(&token[..token.len() - 2]), None);
        assert_eq!(LinkSigner::new(key("k2"), []).verify(&token), None);
        assert_eq!(signer.verify("garbage"), None);
    }

    #[test]
    fn unsubscribe_links_carry_their_send_time_and_older_links_still_open() {
        let signer = LinkSigner::new(key("k1"), []);
        let user = UserId::parse("user-1").unwrap();
        let link = signer.unsubscribe_link(&user, Channel::Email, 1_700_000_000);
        assert!(link.starts_with("k1."), "{link}");
        let opened = signer.open_unsubscribe_link(&link).unwrap();
        assert_eq!(
            (opened.user_id.clone(), opened.channel, opened.issued),
            (user.clone(), Channel::Email, Some(1_700_000_000))
        );
        let older = signer.open_unsubscribe_link(&signer.token(&user, Channel::Sms)).unwrap();
        assert_eq!((older.channel, older.issued), (Channel::Sms, None));
        assert_eq!(signer.open_unsubscribe_link(&link[..link.len() - 2]), None);
        assert_eq!(LinkSigner::new(key("k2"), []).open_unsubscribe_link(&link), None);
        assert_eq!(signer.open_unsubscribe_link(&signer.seal("other", b"{}")), None);
    }

    #[test]
    fn after_a_rotation_links_of_the_previous_key_verify_and_new_ones_use_the_current() {
        let user = UserId::parse("user-1").unwrap();
        let before = LinkSigner::new(key("k1"), []);
        let (unsubscribe, sealed) = (before.token(&user, Channel::Sms), before.seal("p", b"payload"));
        let rotated = LinkSigner::new(key("k2"), [key("k1")]);
        assert_eq!(rotated.verify(&unsubscribe), Some((user.clone(), Channel::Sms)));
        assert_eq!(rotated.open("p", &sealed).as_deref(), Some(&b"payload"[..]));
        assert!(rotated.token(&user, Channel::Sms).starts_with("k2."));
        assert_eq!(rotated.open("other purpose", &sealed), None);
        // A token naming one key is not checked against another.
        let relabelled = sealed.replacen("k1.", "k2.", 1);
        assert_eq!(rotated.open("p", &relabelled), None);
        // Two rotations later the first key is gone.
        assert_eq!(LinkSigner::new(key("k3"), [key("k2")]).verify(&unsubscribe), None);
    }

    #[test]
    fn links_from_before_key_ids_verify_against_every_key() {
        let user = UserId::parse("user-1").unwrap();
        let signer = LinkSigner::new(key("k2"), [key("k1")]);
        let unsubscribe = signer.token(&user, Channel::Email).split_once('.').unwrap().1.to_string();
        let sealed = signer.seal("p", b"x").split_once('.').unwrap().1.to_string();
        assert_eq!(signer.verify(&unsubscribe), Some((user, Channel::Email)));
        assert_eq!(signer.open("p", &sealed).as_deref(), Some(&b"x"[..]));
        let legacy_of_old_key = LinkSigner::new(key("k1"), []).seal("p", b"y").split_once('.').unwrap().1.to_string();
        assert_eq!(signer.open("p", &legacy_of_old_key).as_deref(), Some(&b"y"[..]));
    }
}
