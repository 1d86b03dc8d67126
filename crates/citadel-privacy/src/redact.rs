//! Redaction: findings replaced in the text. Three modes:
//!
//! - `mask`: `<EMAIL_ADDRESS>`; nothing of the value is left.
//! - `hash`: `<EMAIL_ADDRESS:9f2c4e1a0b7d3c55>`, a keyed hash (HMAC-SHA-256
//!   under the deployment's key), so equal values can be correlated without
//!   being readable, and nobody without the key can test guesses.
//! - `pseudonymize`: `<EMAIL_ADDRESS_9f2c4e1a>`, a token consistent per value
//!   (the same keyed hash), with the value kept so that the answer can be
//!   re-identified for callers whose policy allows it.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::scan::Finding;

/// How a finding is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `<TYPE>`.
    #[default]
    Mask,
    /// `<TYPE:keyed-hash>`.
    Hash,
    /// `<TYPE_token>`, reversible for callers allowed to see the value.
    Pseudonymize,
}

impl Mode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mask => "mask",
            Self::Hash => "hash",
            Self::Pseudonymize => "pseudonymize",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mask" => Ok(Self::Mask),
            "hash" => Ok(Self::Hash),
            "pseudonymize" => Ok(Self::Pseudonymize),
            other => Err(format!(
                "unknown redaction mode `{other}` (mask, hash, pseudonymize)"
            )),
        }
    }
}

/// Replaces findings in text. Holds the key for `hash` and `pseudonymize`.
pub struct Redactor {
    mode: Mode,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A value that was replaced by a pseudonym, so it can be given back.
#[derive(Clone, PartialEq, Eq)]
pub struct Pseudonym {
    /// The token now in the text.
    pub token: String,
    /// Entity type.
    pub kind: String,
    /// The original value.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value.
        f.debug_struct("Pseudonym")
            .field("token", &self.token)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Token → value, for re-identifying an answer.
#[derive(Debug, Default, Clone)]
pub struct PseudonymMap {
    by_token: HashMap<String, Pseudonym>,
}

impl PseudonymMap {
    /// Remembers a pseudonym.
    pub fn insert(&mut self, p: Pseudonym) {
        self.by_token.entry(p.token.clone()).or_insert(p);
    }

    /// The pseudonyms held.
    pub fn iter(&self) -> impl Iterator<Item = &Pseudonym> {
        self.by_token.values()
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// Replaces every token in `text` by its value.
    pub fn reidentify(&self, text: &str) -> String {
        let mut ignored = 0;
        self.reidentify_counting(text, &mut ignored)
    }

    /// [`PseudonymMap::reidentify`], adding the number of tokens replaced
    /// to `count`.
    pub fn reidentify_counting(&self, text: &str, count: &mut u64) -> String {
        if self.by_token.is_empty() || !text.contains('<') {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            match tail.find('>') {
                Some(close) => match self.by_token.get(&tail[..=close]) {
                    Some(p) => {
                        out.push_str(&p.value);
                        *count += 1;
                        rest = &tail[close + 1..];
                    }
                    None => {
                        out.push('<');
                        rest = &tail[1..];
                    }
                },
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The longest token held (for holding back streamed text).
    pub fn longest_token(&self) -> usize {
        self.by_token.keys().map(String::len).max().unwrap_or(0)
    }
}

impl Redactor {
    /// A redactor in `mode`; `key` keys the hashes and pseudonyms.
    pub fn new(mode: Mode, key: Zeroizing<Vec<u8>>) -> Self {
        Self { mode, key }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn keyed_hash(&self, kind: &str, value: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// What replaces `value` of type `kind`.
    pub fn replacement(&self, kind: &str, value: &str) -> String {
        match self.mode {
            Mode::Mask => format!("<{kind}>"),
            Mode::Hash => format!("<{kind}:{}>", self.keyed_hash(kind, value)),
            Mode::Pseudonymize => format!("<{kind}_{}>", &self.keyed_hash(kind, value)[..8]),
        }
    }

    /// `text` with each finding replaced; pseudonyms made are added to `map`.
    /// Findings must be in order and not overlap (as the scanner gives them).
    pub fn apply(&self, text: &str, findings: &[Finding], map: &mut PseudonymMap) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings {
            if f.start < at || f.end > text.len() {
                continue;
            }
            out.push_str(&text[at..f.start]);
            let value = &text[f.start..f.end];
            let token = self.replacement(&f.kind, value);
            if self.mode == Mode::Pseudonymize {
                map.insert(Pseudonym {
                    token: token.clone(),
                    kind: f.kind.to_string(),
                    value: Zeroizing::new(value.to_owned()),
                });
            }
            out.push_str(&token);
            at = f.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::class::DataClass;

    fn finding(kind: &str, start: usize, end: usize) -> Finding {
        Finding {
            kind: Arc::from(kind),
            start,
            end,
            class: DataClass::Confidential,
            confidence: 0.9,
        }
    }

    #[test]
    fn each_mode_replaces_the_value() {
        let text = "to bob@x.org now";
        let f = [finding("EMAIL_ADDRESS", 3, 12)];
        let key = || Zeroizing::new(b"k".to_vec());
        let mut map = PseudonymMap::default();
        assert_eq!(
            Redactor::new(Mode::Mask, key()).apply(text, &f, &mut map),
            "to <EMAIL_ADDRESS> now"
        );
        let hashed = Redactor::new(Mode::Hash, key()).apply(text, &f, &mut map);
        assert!(hashed.starts_with("to <EMAIL_ADDRESS:") && !hashed.contains("bob"));
        // Keyed: another key, another hash.
        let other =
            Redactor::new(Mode::Hash, Zeroizing::new(b"j".to_vec())).apply(text, &f, &mut map);
        assert_ne!(hashed, other);
        assert!(map.is_empty());

        let p = Redactor::new(Mode::Pseudonymize, key());
        let once = p.apply(text, &f, &mut map);
        let twice = p.apply(text, &f, &mut map);
        assert_eq!(once, twice, "consistent per value");
        assert_eq!(map.len(), 1);
        assert_eq!(map.reidentify(&once), text);
        assert_eq!(map.reidentify("a < b <X> <"), "a < b <X> <");
    }
}
