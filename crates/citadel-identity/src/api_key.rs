//! API key format and hashing.
//!
//! A key reads `ctd_<id>_<secret>`: `id` is 16 hex digits (public, used to
//! find the record), `secret` is 32 random bytes in base64url. Only
//! HMAC-SHA256(installation key, whole key) is stored.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Every Citadel API key starts with this, so secret scanners can find leaks.
pub const KEY_PREFIX: &str = "ctd_";
const ID_LEN: usize = 16;
const SECRET_BYTES: usize = 32;
const SECRET_LEN: usize = 43;

/// Computes and checks keyed hashes of API keys.
#[derive(Clone)]
pub struct KeyHasher {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

/// A freshly made key: the secret is shown once and then dropped (zeroized).
pub struct NewApiKey {
    /// Public id.
    pub id: String,
    /// The whole key text to hand to the client.
    pub secret: Zeroizing<String>,
    /// Hex HMAC to store.
    pub hash: String,
}

impl KeyHasher {
    /// A hasher keyed with the installation's key-hash secret.
    pub fn new(key: Zeroizing<Vec<u8>>) -> Self {
        Self { key }
    }

    fn mac(&self, text: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Makes a new random key.
    pub fn generate(&self) -> NewApiKey {
        let mut id = [0u8; ID_LEN / 2];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let id = hex::encode(id);
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        let secret = Zeroizing::new(format!(
            "{KEY_PREFIX}{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref())
        ));
        let hash = hex::encode(self.mac(&secret));
        NewApiKey { id, secret, hash }
    }

    /// The keyed hash of a presented key, raw.
    pub(crate) fn hash_of(&self, presented: &str) -> [u8; 32] {
        self.mac(presented)
    }

    /// Constant-time comparison of a presented key's hash with a stored one.
    pub(crate) fn matches(&self, presented: &str, stored: &[u8; 32]) -> bool {
        self.hash_of(presented).ct_eq(stored).into()
    }
}

/// Extracts the public id from a presented key, if it is well formed.
pub(crate) fn parse_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> KeyHasher {
        KeyHasher::new(Zeroizing::new(vec![7u8; 32]))
    }

    #[test]
    fn generated_keys_parse_and_match() {
        let h = hasher();
        let k = h.generate();
        assert_eq!(parse_id(&k.secret), Some(k.id.as_str()));
        let stored: [u8; 32] = hex::decode(&k.hash).unwrap().try_into().unwrap();
        assert!(h.matches(&k.secret, &stored));
        let mut other = k.secret.to_string();
        other.pop();
        other.push(if k.secret.ends_with('A') { 'B' } else { 'A' });
        assert!(!h.matches(&other, &stored));
    }

    #[test]
    fn hash_depends_on_installation_key() {
        let k = hasher().generate();
        let other = KeyHasher::new(Zeroizing::new(vec![8u8; 32]));
        let stored: [u8; 32] = hex::decode(&k.hash).unwrap().try_into().unwrap();
        assert!(!other.matches(&k.secret, &stored));
    }

    #[test]
    fn malformed_keys_are_rejected_before_lookup() {
        for bad in [
            "",
            "ctd_",
            "Bearer x",
            "ctd_0123456789abcdef",
            "ctd_0123456789ABCDEF_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ctd_0123456789abcdef_short",
            "ctd_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa$",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
