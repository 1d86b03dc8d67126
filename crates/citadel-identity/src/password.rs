//! Passwords: the policy a new password must meet, and Argon2id hashing.
//!
//! Hashing is deliberately slow (by default the memory and passes of RFC
//! 9106's second recommended setting, 64 MiB and 3 passes, with one lane:
//! about 130 ms on the development machine, `bench/authn`; OWASP's minimum
//! is 19 MiB and 2 passes), so it runs on the blocking pool and at most
//! `max_concurrent_hashes` run at once: a flood of sign-ins queues (and is
//! refused past the queue) instead of taking every core.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The bundled list of common and breached passwords (`rules/passwords/`).
const BUNDLED_DENY_LIST: &str = include_str!("../../../rules/passwords/common-passwords.txt");

/// `[identity.password]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Shortest password accepted (NIST SP 800-63B: at least 8; 12 by default).
    pub min_length: usize,
    /// Longest password accepted (bounds the work one sign-in can cause).
    pub max_length: usize,
    /// More deny lists, one password per line, `#` comments.
    pub extra_deny_lists: Vec<PathBuf>,
    /// Argon2id memory, KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Hashes computed at once; more wait, and past a queue of 64 are refused.
    pub max_concurrent_hashes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 256,
            extra_deny_lists: Vec::new(),
            argon2_memory_kib: 65_536,
            argon2_iterations: 3,
            argon2_parallelism: 1,
            max_concurrent_hashes: 4,
        }
    }
}

impl PasswordConfig {
    /// Checks the settings; the Argon2 parameters they make.
    pub fn validate(&self) -> Result<Params, String> {
        if self.min_length < 8 {
            return Err(
                "identity.password.min_length: must be at least 8 (NIST SP 800-63B)".into(),
            );
        }
        if self.max_length < self.min_length || self.max_length > 4096 {
            return Err("identity.password.max_length: must be between min_length and 4096".into());
        }
        if self.max_concurrent_hashes == 0 {
            return Err("identity.password.max_concurrent_hashes: must be at least 1".into());
        }
        Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("identity.password.argon2_*: {e}"))
    }
}

/// Why a password was refused (the password itself is never in the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    /// Too short.
    #[error("the password is shorter than {0} characters")]
    TooShort(usize),
    /// Too long.
    #[error("the password is longer than {0} characters")]
    TooLong(usize),
    /// On a list of common or breached passwords.
    #[error("the password is on a list of common or breached passwords; choose another")]
    Common,
    /// Contains the user's name.
    #[error("the password contains the user name")]
    ContainsName,
    /// Control characters.
    #[error("the password contains control characters")]
    ControlCharacters,
}

/// Why hashing or checking could not be done (not "wrong password").
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many sign-ins are being checked at once.
    #[error("too many password checks in progress")]
    Busy,
    /// The configured parameters are invalid.
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    /// The stored hash is not a PHC string Citadel can read.
    #[error("stored password hash is unreadable")]
    Corrupt,
    /// The blocking task failed.
    #[error("password hashing task failed")]
    Task,
}

/// Checks new passwords against the policy and hashes and verifies them.
#[derive(Clone)]
pub struct Passwords {
    config: PasswordConfig,
    deny: Arc<HashSet<String>>,
    params: Params,
    permits: Arc<tokio::sync::Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// A hash of a random password, verified against when the user does not
    /// exist, so that unknown names take as long as wrong passwords.
    decoy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("config", &self.config)
            .field("deny_list", &self.deny.len())
            .finish_non_exhaustive()
    }
}

const MAX_WAITING: usize = 64;

fn read_deny_list(text: &str, into: &mut HashSet<String>) {
    for line in text.lines() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            into.insert(line.to_lowercase());
        }
    }
}

impl Passwords {
    /// Builds from config, reading the extra deny lists.
    pub fn new(config: PasswordConfig) -> Result<Self, String> {
        let params = config.validate()?;
        let mut deny = HashSet::new();
        read_deny_list(BUNDLED_DENY_LIST, &mut deny);
        for path in &config.extra_deny_lists {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "identity.password.extra_deny_lists: cannot read {}: {e}",
                    path.display()
                )
            })?;
            read_deny_list(&text, &mut deny);
        }
        // The decoy is a well-formed hash with the configured parameters, a
        // random salt and a random output: checking a password against it
        // costs what a real check costs and never matches. It is made
        // without hashing, so starting does not spend (or keep) the
        // memory of an Argon2 run.
        let mut output = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut output);
        let decoy = format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            SaltString::generate(&mut rand::rngs::OsRng).as_str(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(output)
        );
        PasswordHash::new(&decoy).map_err(|e| format!("identity.password: decoy hash: {e}"))?;
        Ok(Self {
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_hashes)),
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            config,
            deny: Arc::new(deny),
            params,
            decoy: Arc::new(decoy),
        })
    }

    /// Entries in the deny lists.
    pub fn deny_list_len(&self) -> usize {
        self.deny.len()
    }

    /// Checks a new password for `user_name` against the policy.
    pub fn check_policy(&self, user_name: &str, password: &str) -> Result<(), PasswordProblem> {
        let chars = password.chars().count();
        if chars < self.config.min_length {
            return Err(PasswordProblem::TooShort(self.config.min_length));
        }
        if chars > self.config.max_length {
            return Err(PasswordProblem::TooLong(self.config.max_length));
        }
        if password.chars().any(char::is_control) {
            return Err(PasswordProblem::ControlCharacters);
        }
        let lower = Zeroizing::new(password.to_lowercase());
        if self.deny.contains(lower.as_str()) {
            return Err(PasswordProblem::Common);
        }
        if user_name.chars().count() >= 3 && lower.contains(&user_name.to_lowercase()) {
            return Err(PasswordProblem::ContainsName);
        }
        Ok(())
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        use std::sync::atomic::Ordering;
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|_| HashError::Task)?;
        Ok(result)
    }

    /// Hashes a password (Argon2id, random salt): a PHC string.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, HashError> {
        let argon = self.argon();
        self.blocking(move || {
            argon
                .hash_password(
                    password.as_bytes(),
                    &SaltString::generate(&mut rand::rngs::OsRng),
                )
                .map(|h| h.to_string())
                .map_err(|e| HashError::Params(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored` (a PHC string; the parameters
    /// it was made with are used, so older hashes keep working after the
    /// configuration changes). `None` checks against a decoy and returns
    /// `false`, in the same time as a real check.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.as_ref().clone());
        let argon = self.argon();
        let matched = self
            .blocking(move || -> Result<bool, HashError> {
                let parsed = PasswordHash::new(&stored).map_err(|_| HashError::Corrupt)?;
                Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await??;
        Ok(real && matched)
    }

    /// Whether a stored hash was made with weaker parameters than the
    /// configured ones (it is re-hashed at the next successful sign-in).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || params.m_cost() < self.params.m_cost()
            || params.t_cost() < self.params.t_cost()
    }
}

/// Reads the extra deny lists' paths relative to `base`.
pub fn resolve_deny_lists(config: &mut PasswordConfig, base: &Path) {
    for p in &mut config.extra_deny_lists {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Passwords {
        Passwords::new(PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn policy_refuses_short_long_common_and_named() {
        let p = fast();
        assert!(p.deny_list_len() >= 5000, "{}", p.deny_list_len());
        assert_eq!(
            p.check_policy("alice", "short"),
            Err(PasswordProblem::TooShort(12))
        );
        assert_eq!(
            p.check_policy("alice", &"x".repeat(300)),
            Err(PasswordProblem::TooLong(256))
        );
        // With the shortest minimum allowed, the list refuses the usual suspects,
        // whatever their case.
        let eight = Passwords::new(PasswordConfig {
            min_length: 8,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            ..Default::default()
        })
        .unwrap();
        for common in [
            "password",
            "iloveyou",
            "12345678",
            "QWERTYUIOP",
            "Password1",
        ] {
            assert_eq!(
                eight.check_policy("alice", common),
                Err(PasswordProblem::Common),
                "{common}"
            );
        }
        assert_eq!(
            p.check_policy("alice", "my-Alice-secret-99"),
            Err(PasswordProblem::ContainsName)
        );
        assert_eq!(
            p.check_policy("alice", "tab\there-is-long"),
            Err(PasswordProblem::ControlCharacters)
        );
        assert_eq!(
            p.check_policy("alice", "correct horse battery staple"),
            Ok(())
        );
        // Length counts characters, not bytes.
        assert_eq!(
            p.check_policy("bob", "ééééééééééé"),
            Err(PasswordProblem::TooShort(12))
        );
    }

    #[test]
    fn config_below_the_standard_is_refused() {
        let too_short = PasswordConfig {
            min_length: 6,
            ..Default::default()
        };
        assert!(Passwords::new(too_short)
            .unwrap_err()
            .contains("min_length"));
        let bad_argon = PasswordConfig {
            argon2_memory_kib: 1,
            ..Default::default()
        };
        assert!(Passwords::new(bad_argon).unwrap_err().contains("argon2"));
    }

    #[tokio::test]
    async fn hash_verifies_the_right_password_only() {
        let p = fast();
        let hash = p
            .hash(Zeroizing::new("correct horse battery staple".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(p
            .verify(
                Zeroizing::new("correct horse battery staple".into()),
                Some(hash.clone())
            )
            .await
            .unwrap());
        assert!(!p
            .verify(
                Zeroizing::new("correct horse battery stapler".into()),
                Some(hash.clone())
            )
            .await
            .unwrap());
        // An unknown user: the decoy never matches.
        assert!(!p
            .verify(Zeroizing::new("anything at all".into()), None)
            .await
            .unwrap());
        assert!(matches!(
            p.verify(Zeroizing::new("x".into()), Some("not a phc string".into()))
                .await,
            Err(HashError::Corrupt)
        ));
        // Stronger configured parameters mark the old hash for re-hashing.
        assert!(!p.needs_rehash(&hash));
        assert!(Passwords::new(PasswordConfig::default())
            .unwrap()
            .needs_rehash(&hash));
    }

    /// The Argon2id test vector of RFC 9106 section 5.3 (through the crate
    /// we use), so the algorithm behind the PHC strings is the standard one.
    #[test]
    fn argon2id_matches_rfc_9106_vector() {
        let mut out = [0u8; 32];
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .output_len(32)
            .data(argon2::AssociatedData::new(&[4u8; 12]).unwrap())
            .build()
            .unwrap();
        let argon = Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params)
            .unwrap();
        argon
            .hash_password_into(&[1u8; 32], &[2u8; 16], &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }
}
