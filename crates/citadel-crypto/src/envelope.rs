//! Envelope encryption with AES-256-GCM (ring): a key-encryption key wraps
//! data keys, data keys seal records. Every ciphertext carries its own
//! random 96-bit nonce and is bound by associated data to where it belongs
//! (a subject, a record), so a ciphertext moved elsewhere does not open.
//! Destroying a wrapped data key makes everything it sealed unreadable
//! (crypto-shredding).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// Why sealing or opening failed. Deliberately says nothing more: a wrong
/// key, a moved ciphertext and a tampered one look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The ciphertext does not open with this key and associated data.
    #[error("the ciphertext does not open (wrong key, wrong record, or altered)")]
    Open,
    /// The key bytes are not a valid key.
    #[error("invalid key")]
    Key,
    /// The system random number generator failed.
    #[error("no randomness available")]
    Random,
}

/// An AES-256-GCM key. The raw bytes live only in ring's key schedule.
pub struct SealingKey(LessSafeKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Key)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// A fresh random key and its bytes (to be wrapped for storage).
    pub fn generate() -> Result<(Self, Zeroizing<[u8; KEY_LEN]>), SealError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut *bytes)
            .map_err(|_| SealError::Random)?;
        Ok((Self::from_bytes(&*bytes)?, bytes))
    }

    /// Seals `plaintext` bound to `aad`: `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        self.seal_append(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// [`SealingKey::seal`], appending `nonce || ciphertext || tag` to
    /// `out` (one copy of the plaintext, encrypted in place).
    pub fn seal_append(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        out.reserve(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| SealError::Open)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens what [`SealingKey::seal`] made with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Open);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| SealError::Open)?;
        let mut body = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SealError::Open)?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Wraps a data key under this key-encryption key, bound to `aad`.
    pub fn wrap(&self, aad: &[u8], data_key: &[u8; KEY_LEN]) -> Result<Vec<u8>, SealError> {
        self.seal(aad, data_key)
    }

    /// Unwraps a data key wrapped with the same `aad`.
    pub fn unwrap_key(&self, aad: &[u8], wrapped: &[u8]) -> Result<SealingKey, SealError> {
        let bytes = self.open(aad, wrapped)?;
        SealingKey::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_binding() {
        let (key, _) = SealingKey::generate().unwrap();
        let sealed = key.seal(b"event-1", b"alice").unwrap();
        assert_eq!(&**key.open(b"event-1", &sealed).unwrap(), b"alice");
        // Moved to another record: refused.
        assert_eq!(key.open(b"event-2", &sealed), Err(SealError::Open));
        // Altered: refused.
        let mut altered = sealed.clone();
        altered[14] ^= 1;
        assert_eq!(key.open(b"event-1", &altered), Err(SealError::Open));
        // Another key: refused.
        let (other, _) = SealingKey::generate().unwrap();
        assert_eq!(other.open(b"event-1", &sealed), Err(SealError::Open));
        // Same plaintext twice: different ciphertexts (fresh nonces).
        assert_ne!(key.seal(b"event-1", b"alice").unwrap(), sealed);
        assert_eq!(key.open(b"", &[0; 10]), Err(SealError::Open));
    }

    #[test]
    fn data_keys_wrap_under_the_key_encryption_key() {
        let (kek, _) = SealingKey::generate().unwrap();
        let (data, bytes) = SealingKey::generate().unwrap();
        let wrapped = kek.wrap(b"subject-7", &bytes).unwrap();
        let unwrapped = kek.unwrap_key(b"subject-7", &wrapped).unwrap();
        let sealed = data.seal(b"r", b"x").unwrap();
        assert_eq!(&**unwrapped.open(b"r", &sealed).unwrap(), b"x");
        assert!(kek.unwrap_key(b"subject-8", &wrapped).is_err());
    }

    /// NIST SP 800-38D / McGrew-Viega GCM test case 16 (AES-256, 96-bit IV,
    /// with AAD): our framing is `nonce || ciphertext || tag`.
    #[test]
    fn aes_256_gcm_matches_the_gcm_spec_test_vector() {
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv = hex("cafebabefacedbaddecaf888");
        let pt = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let ct = hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662");
        let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
        let key = SealingKey::from_bytes(&key).unwrap();
        let mut sealed = iv.clone();
        sealed.extend_from_slice(&ct);
        sealed.extend_from_slice(&tag);
        assert_eq!(&**key.open(&aad, &sealed).unwrap(), &pt[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
