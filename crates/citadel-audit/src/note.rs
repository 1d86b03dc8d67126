//! C2SP signed-note with Ed25519 keys, and C2SP tlog-checkpoint bodies.
//!
//! Signing and verifying are ed25519-dalek's; this module only lays out the
//! text the standards define: a note is its text, a blank line, and lines
//! `— <key name> <base64(key id || signature)>`, where the key id is the
//! first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//! Verifier keys are written `<name>+<key id hex>+<base64(0x01 || public key)>`
//! as golang.org/x/mod/sumdb/note does, so standard tools read them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use citadel_core::merkle::Hash;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The signature type byte of Ed25519 in signed-note.
const ED25519: u8 = 0x01;

/// Why a note, key or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The verifier key string is malformed.
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    /// The key name is not allowed (empty, spaces, `+`).
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    BadName(String),
    /// The note is not in signed-note form.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// No signature of the expected key verifies.
    #[error("the note carries no valid signature by {0}")]
    Unverified(String),
    /// The checkpoint body is malformed.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadName(name.to_owned()));
    }
    Ok(())
}

/// The log's signing key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` (the log's origin) from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8]) -> Result<Self, NoteError> {
        check_name(name)?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.try_into()
                .map_err(|_| NoteError::BadKey("an Ed25519 seed is 32 bytes".into()))?,
        );
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, &key.verifying_key());
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *seed);
        Self::from_seed(name, &*seed)
    }

    /// The key in Go's `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`
    /// form, for the key file.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(vec![ED25519]);
        bytes.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(&*bytes)
        ))
    }

    /// Parses a Go-style `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::BadKey("expected PRIVATE+KEY+…".into()))?;
        let (name, id, key) = split_key(rest)?;
        let bytes = Zeroizing::new(
            B64.decode(key)
                .map_err(|_| NoteError::BadKey("key is not base64".into()))?,
        );
        if bytes.len() != 33 || bytes[0] != ED25519 {
            return Err(NoteError::BadKey("not an Ed25519 key".into()));
        }
        let signer = Self::from_seed(name, &bytes[1..])?;
        if hex::encode(signer.id) != id {
            return Err(NoteError::BadKey("key id does not match the key".into()));
        }
        Ok(signer)
    }

    /// The key name (the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    /// Signs `text` (which must end in a newline) into a signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

fn split_key(s: &str) -> Result<(&str, &str, &str), NoteError> {
    let mut parts = s.splitn(3, '+');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(id), Some(key))
            if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            check_name(name)?;
            Ok((name, id, key))
        }
        _ => Err(NoteError::BadKey(
            "expected <name>+<8 hex digits>+<key>".into(),
        )),
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline".into()));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "text must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// A public key that checks notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    id: [u8; 4],
}

impl NoteVerifier {
    /// Parses `<name>+<id hex>+<base64(0x01 || public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, id, key) = split_key(vkey.trim())?;
        let bytes = B64
            .decode(key)
            .map_err(|_| NoteError::BadKey("key is not base64".into()))?;
        if bytes.len() != 33 || bytes[0] != ED25519 {
            return Err(NoteError::BadKey("not an Ed25519 verifier key".into()));
        }
        let public: [u8; 32] = bytes[1..].try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::BadKey("not a valid Ed25519 point".into()))?;
        let verifier = Self {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        };
        if hex::encode(verifier.id) != id {
            return Err(NoteError::BadKey("key id does not match the key".into()));
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key in vkey form.
    pub fn vkey(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(bytes)
        )
    }

    /// Checks a signed note and returns its text. Signatures by other keys
    /// are ignored (cosigners, witnesses); a signature that claims to be
    /// this key's and does not verify refuses the note.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        check_text(text)?;
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature lines must end with a newline".into(),
            ));
        }
        let mut verified = false;
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed("signature too short".into()));
            }
            if name != self.name || blob[..4] != self.id {
                continue;
            }
            let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError::Unverified(self.name.clone()))?;
            self.key
                .verify(text.as_bytes(), &signature)
                .map_err(|_| NoteError::Unverified(self.name.clone()))?;
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(NoteError::Unverified(self.name.clone()))
        }
    }
}

/// A C2SP tlog-checkpoint: origin, tree size, root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// RFC 6962 root of the tree of that size.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body (the note text).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint body; extension lines are allowed and ignored.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = |why: &str| NoteError::BadCheckpoint(why.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("tree size is not a decimal number"));
        }
        let size = size.parse().map_err(|_| bad("tree size too large"))?;
        let root = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of base64"))?;
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Checks a signed checkpoint note with `verifier` and parses it; the
    /// origin must be the key's name.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, NoteError> {
        let checkpoint = Self::parse(verifier.open(note)?)?;
        if checkpoint.origin != verifier.name() {
            return Err(NoteError::BadCheckpoint(format!(
                "origin {:?} is not the key's log {:?}",
                checkpoint.origin,
                verifier.name()
            )));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note, note_test.go.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn signs_and_verifies_the_go_note_vectors() {
        let signer = NoteSigner::from_skey(SKEY).unwrap();
        assert_eq!(signer.verifier().vkey(), VKEY);
        assert_eq!(*signer.to_skey(), SKEY);
        assert_eq!(signer.sign(TEXT).unwrap(), SIGNED);
        let verifier = NoteVerifier::parse(VKEY).unwrap();
        assert_eq!(verifier.open(SIGNED).unwrap(), TEXT);
        // Another key's signature next to ours is ignored.
        let cosigned = format!("{SIGNED}{ENOCH}");
        assert_eq!(verifier.open(&cosigned).unwrap(), TEXT);
        // Only another key's signature: unverified.
        let enoch_only = format!("{TEXT}\n{ENOCH}");
        assert!(matches!(
            verifier.open(&enoch_only),
            Err(NoteError::Unverified(_))
        ));
    }

    #[test]
    fn tampered_or_malformed_notes_are_refused() {
        let verifier = NoteVerifier::parse(VKEY).unwrap();
        let changed = SIGNED.replace("problem,", "problem;");
        assert!(matches!(
            verifier.open(&changed),
            Err(NoteError::Unverified(_))
        ));
        for bad in [
            TEXT,
            &SIGNED[..SIGNED.len() - 1],
            &SIGNED.replace('\u{2014}', "-"),
            "\n\n",
        ] {
            assert!(verifier.open(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checkpoints_follow_tlog_checkpoint() {
        // The C2SP tlog-checkpoint example body.
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::parse(body).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(c.body(), body);
        assert!(Checkpoint::parse(&format!("{body}ext\n")).is_ok());
        for bad in [
            "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n12\nCsUYap==\n",
            "\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        let signer = NoteSigner::from_seed("citadel.test/log", &[7; 32]).unwrap();
        let note = signer.sign(&c.body()).unwrap();
        // Origin must be the key's name.
        assert!(Checkpoint::open(&note, &signer.verifier()).is_err());
        let ours = Checkpoint {
            origin: "citadel.test/log".into(),
            ..c
        };
        let note = signer.sign(&ours.body()).unwrap();
        assert_eq!(Checkpoint::open(&note, &signer.verifier()).unwrap(), ours);
    }
}
