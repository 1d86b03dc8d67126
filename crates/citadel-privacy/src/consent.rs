//! Consent: data subjects, purposes with versioned consent texts, grants
//! and withdrawals with time and source, the check a route with a purpose
//! makes, and receipts.
//!
//! A subject is whoever the data is about (a customer, a patient), named
//! by the caller; Citadel stores only a keyed hash of the name, so the
//! consent table holds no personal identifier. A grant counts for the
//! purpose's *current* text version: publishing a new text (a new
//! `version`) asks everyone again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use citadel_core::clock::{now_ms, rfc3339};
use citadel_store::{ConsentRecord, Store, StoreError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How long a replica trusts a consent check it made (a withdrawal
/// elsewhere takes effect within this).
pub const CONSENT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Longest subject name accepted.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// `[[privacy.purpose]]`: something data may be used for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PurposeConfig {
    /// Name (`inference`, `fine_tuning`, `analytics`, …).
    pub name: String,
    /// What it means, for people.
    #[serde(default)]
    pub description: String,
    /// Version of the consent text; a new version needs new consent.
    pub version: String,
    /// The consent text people agree to.
    pub text: String,
}

impl PurposeConfig {
    /// SHA-256 of the consent text, hex (kept in each receipt).
    pub fn text_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }
}

/// Checks the purposes: names well formed and unique, version and text set.
pub fn validate_purposes(purposes: &[PurposeConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for p in purposes {
        if p.name.is_empty()
            || p.name.len() > 64
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "privacy.purpose name {:?} must be 1-64 characters of a-z, 0-9 and _",
                p.name
            ));
        }
        if !seen.insert(&p.name) {
            return Err(format!("privacy.purpose {:?} is defined twice", p.name));
        }
        if p.version.trim().is_empty() || p.text.trim().is_empty() {
            return Err(format!(
                "privacy.purpose {:?} needs a version and a text",
                p.name
            ));
        }
    }
    Ok(())
}

/// Why a consent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// No such purpose is configured.
    #[error("unknown purpose `{0}`; the configured purposes are: {1}")]
    UnknownPurpose(String, String),
    /// The subject name is empty, too long or has control characters.
    #[error("the subject must be 1 to 256 bytes without control characters")]
    BadSubject,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Consent for the configured purposes, kept in the store.
pub struct Consents {
    store: Store,
    purposes: BTreeMap<String, PurposeConfig>,
    key: Zeroizing<Vec<u8>>,
    checked: Mutex<HashMap<(String, String), (bool, Instant)>>,
}

impl std::fmt::Debug for Consents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consents")
            .field("purposes", &self.purposes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A checked subject name.
fn check_subject(subject: &str) -> Result<&str, ConsentError> {
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || subject.chars().any(char::is_control)
    {
        return Err(ConsentError::BadSubject);
    }
    Ok(subject)
}

impl Consents {
    /// Consent over `store` for `purposes`; `key` keys subject hashes.
    pub fn new(store: Store, purposes: &[PurposeConfig], key: Zeroizing<Vec<u8>>) -> Self {
        Self {
            store,
            purposes: purposes
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            key,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The configured purposes.
    pub fn purposes(&self) -> impl Iterator<Item = &PurposeConfig> {
        self.purposes.values()
    }

    /// A configured purpose.
    pub fn purpose(&self, name: &str) -> Result<&PurposeConfig, ConsentError> {
        self.purposes.get(name).ok_or_else(|| {
            ConsentError::UnknownPurpose(
                name.to_owned(),
                self.purposes.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }

    /// The keyed hash a subject is stored under.
    pub fn subject_ref(&self, subject: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(b"citadel consent subject\0");
        mac.update(subject.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn forget(&self, subject_ref: &str, purpose: &str) {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(subject_ref.to_owned(), purpose.to_owned()));
    }

    /// Records `subject`'s consent to the current text of `purpose`.
    pub async fn grant(
        &self,
        subject: &str,
        purpose: &str,
        source: &str,
    ) -> Result<ConsentRecord, ConsentError> {
        let subject = check_subject(subject)?;
        let p = self.purpose(purpose)?;
        let subject_ref = self.subject_ref(subject);
        let record = ConsentRecord {
            id: format!("c-{}", uuid::Uuid::now_v7().simple()),
            subject_ref: subject_ref.clone(),
            purpose: p.name.clone(),
            version: p.version.clone(),
            text_sha256: p.text_sha256(),
            granted_at: now_ms(),
            source: source.to_owned(),
            withdrawn_at: None,
            withdrawn_source: None,
        };
        let stored = self.store.grant_consent(&record).await?;
        self.forget(&subject_ref, purpose);
        Ok(stored)
    }

    /// Withdraws `subject`'s consent to `purpose`; returns how many open
    /// grants it closed.
    pub async fn withdraw(
        &self,
        subject: &str,
        purpose: &str,
        source: &str,
    ) -> Result<u64, ConsentError> {
        let subject = check_subject(subject)?;
        let p = self.purpose(purpose)?;
        let subject_ref = self.subject_ref(subject);
        let n = self
            .store
            .withdraw_consent(&subject_ref, &p.name, now_ms(), source)
            .await?;
        self.forget(&subject_ref, purpose);
        Ok(n)
    }

    /// Whether `subject` holds current consent for `purpose` (remembered
    /// for [`CONSENT_CACHE_TTL`]).
    pub async fn holds(&self, subject: &str, purpose: &str) -> Result<bool, ConsentError> {
        let subject = check_subject(subject)?;
        let p = self.purpose(purpose)?;
        let key = (self.subject_ref(subject), p.name.clone());
        if let Some((held, at)) = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if at.elapsed() < CONSENT_CACHE_TTL {
                return Ok(*held);
            }
        }
        let held = self
            .store
            .current_consent(&key.0, &p.name, &p.version)
            .await?
            .is_some();
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.len() > 100_000 {
            checked.clear();
        }
        checked.insert(key, (held, Instant::now()));
        Ok(held)
    }

    /// Everything `subject` consented to and withdrew, as a receipt.
    pub async fn receipt(&self, subject: &str) -> Result<serde_json::Value, ConsentError> {
        let subject = check_subject(subject)?;
        let records = self.store.consents_of(&self.subject_ref(subject)).await?;
        let consents: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let purpose = self.purposes.get(&r.purpose);
                json!({
                    "receipt_id": r.id,
                    "purpose": r.purpose,
                    "purpose_description": purpose.map(|p| p.description.as_str()),
                    "version": r.version,
                    "text_sha256": r.text_sha256,
                    "granted_at": rfc3339(r.granted_at),
                    "source": r.source,
                    "withdrawn_at": r.withdrawn_at.map(rfc3339),
                    "withdrawn_source": r.withdrawn_source,
                    "current": r.withdrawn_at.is_none()
                        && purpose.is_some_and(|p| p.version == r.version),
                })
            })
            .collect();
        Ok(json!({
            "receipt_format": "citadel-consent-receipt/1",
            "subject": subject,
            "generated_at": rfc3339(now_ms()),
            "consents": consents,
        }))
    }
}

/// What a consent change's security event names as its resource: the
/// receipt, the purpose and text version, the source and the subject's
/// keyed hash (never the subject's name).
pub fn consent_resource(
    subject_ref: &str,
    purpose: &PurposeConfig,
    source: &str,
    receipt_id: Option<&str>,
) -> serde_json::Value {
    json!({
        "type": "Consent",
        "uid": receipt_id,
        "subject_ref": subject_ref,
        "purpose": purpose.name,
        "version": purpose.version,
        "source": source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purpose(version: &str) -> PurposeConfig {
        PurposeConfig {
            name: "inference".into(),
            description: "Answering requests with a model".into(),
            version: version.into(),
            text: format!("I agree ({version})"),
        }
    }

    async fn consents(dir: &std::path::Path, version: &str) -> Consents {
        let url = format!("sqlite://{}", dir.join("c.db").display());
        let store = Store::open(&url).await.unwrap();
        Consents::new(store, &[purpose(version)], Zeroizing::new(vec![9; 32]))
    }

    #[tokio::test]
    async fn grant_withdraw_and_a_new_text_version_asks_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = consents(dir.path(), "1").await;
        assert!(!c.holds("cust-42", "inference").await.unwrap());
        c.grant("cust-42", "inference", "web-form").await.unwrap();
        assert!(c.holds("cust-42", "inference").await.unwrap());
        assert!(!c.holds("cust-43", "inference").await.unwrap());
        assert_eq!(c.withdraw("cust-42", "inference", "app").await.unwrap(), 1);
        assert!(
            !c.holds("cust-42", "inference").await.unwrap(),
            "not cached past a withdrawal"
        );
        c.grant("cust-42", "inference", "web-form").await.unwrap();

        // The store keeps no subject name.
        let all = c
            .store
            .consents_of(&c.subject_ref("cust-42"))
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|r| !r.subject_ref.contains("cust")));

        // A new consent text: the old grant no longer counts.
        let v2 = consents(dir.path(), "2").await;
        assert!(!v2.holds("cust-42", "inference").await.unwrap());
        let receipt = v2.receipt("cust-42").await.unwrap();
        assert_eq!(receipt["subject"], "cust-42");
        let list = receipt["consents"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["withdrawn_source"], "app");
        assert_eq!(list[1]["current"], false, "granted for version 1");
        assert_eq!(list[1]["text_sha256"], purpose("1").text_sha256());
    }

    #[tokio::test]
    async fn unknown_purposes_and_bad_subjects_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = consents(dir.path(), "1").await;
        let err = c.grant("cust-1", "marketing", "x").await.unwrap_err();
        assert!(matches!(err, ConsentError::UnknownPurpose(..)));
        assert!(err.to_string().contains("inference"));
        for bad in ["", "a\nb", &"x".repeat(300)] {
            assert!(matches!(
                c.grant(bad, "inference", "x").await,
                Err(ConsentError::BadSubject)
            ));
        }
        assert!(c
            .store
            .consents_of(&c.subject_ref("cust-1"))
            .await
            .unwrap()
            .is_empty());
        assert!(validate_purposes(&[purpose("1"), purpose("2")]).is_err());
        let mut p = purpose("1");
        p.name = "Bad Name".into();
        assert!(validate_purposes(&[p]).is_err());
    }
}
