//! Sealing the fields of security events that identify a person, each
//! person under a key of their own, so that erasing a person (destroying
//! their key) leaves the Merkle log whole: the leaves commit to the
//! ciphertext, which stays; only its meaning goes.
//!
//! A subject is a principal of type `user` (people; service accounts and
//! the system are not data subjects). Sealed are the actor's name, the
//! source address and port, the user agent and forwarded-for chain. The
//! actor's uid, a random id, stays readable so detection and correlation
//! keep working; once the person is erased nothing links it to them.
//! In place of the sealed fields the event carries
//! `unmapped.sealed_subject = {ref, data}`: `ref` is a keyed hash of the
//! subject id (stable, not reversible without the installation key) and
//! `data` is AES-256-GCM over the fields, bound to the event's id and ref.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use citadel_core::SecurityEvent;
use citadel_crypto::{SealingKey, KEY_LEN};
use citadel_store::{Store, StoreError};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// The fields sealed, as JSON pointers into the OCSF event.
pub const SEALED_FIELDS: &[&str] = &[
    "/actor/user/name",
    "/src_endpoint/ip",
    "/src_endpoint/port",
    "/http_request/user_agent",
    "/http_request/x_forwarded_for",
];

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made, wrapped or unwrapped.
    #[error("subject key: {0}")]
    Key(#[from] citadel_crypto::SealError),
    /// The root secret is not the one this database's keys were made with.
    #[error(
        "keys/subject-root.key is not the one this database's subject keys were made with; \
         every replica must use the same file"
    )]
    RootMismatch,
}

/// The `subject_keys` row that proves which root secret a database uses
/// (subject references are hex, so it cannot collide with one).
const ROOT_CHECK_REF: &str = "citadel:root-check";

/// Subject keys: made on first use, cached, destroyed on erasure.
pub struct SubjectVault {
    store: Store,
    kek: SealingKey,
    ref_key: Zeroizing<[u8; 32]>,
    /// `ref` → key; `None` for a shredded key.
    cache: Mutex<HashMap<String, Option<Arc<SealingKey>>>>,
    /// Bumped whenever keys may have been destroyed (here or in another
    /// process): a key read from the store before the bump is not cached.
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SubjectVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectVault(..)")
    }
}

/// The outcome of opening an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was sealed.
    Plain,
    /// The sealed fields are back in place.
    Restored,
    /// The subject was erased: the fields are gone for good.
    Erased,
}

impl SubjectVault {
    /// A vault over `store` with a 64-byte root secret (32 bytes of
    /// key-encryption key, 32 of reference key).
    pub fn new(store: Store, root: &[u8]) -> Result<Arc<Self>, VaultError> {
        if root.len() != 2 * KEY_LEN {
            return Err(VaultError::Key(citadel_crypto::SealError::Key));
        }
        let mut ref_key = Zeroizing::new([0u8; 32]);
        ref_key.copy_from_slice(&root[KEY_LEN..]);
        Ok(Arc::new(Self {
            store,
            kek: SealingKey::from_bytes(&root[..KEY_LEN])?,
            ref_key,
            cache: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches `key` for `subject_ref` unless keys were destroyed since
    /// `read_at` (the generation when it was read).
    fn remember(&self, subject_ref: String, key: Option<Arc<SealingKey>>, read_at: u64) {
        let mut cache = self.cache.lock();
        if self.generation() == read_at {
            cache.insert(subject_ref, key);
        }
    }

    /// Checks that this root secret is the one the database's subject keys
    /// were made with (recording it on first use), so a replica started
    /// with another file is refused instead of sealing under keys the
    /// others cannot open and erasure cannot reach.
    pub async fn check_root(&self) -> Result<(), VaultError> {
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&*self.ref_key).expect("any key length");
        mac.update(b"citadel-root-check");
        let expected = mac.finalize().into_bytes();
        let check = [ROOT_CHECK_REF.to_owned()];
        for _attempt in 0..2 {
            if let Some(Some(wrapped)) = self.store.subject_keys(&check).await?.get(ROOT_CHECK_REF)
            {
                let plain = self
                    .kek
                    .open(ROOT_CHECK_REF.as_bytes(), wrapped)
                    .map_err(|_| VaultError::RootMismatch)?;
                return if plain.as_slice() == expected.as_slice() {
                    Ok(())
                } else {
                    Err(VaultError::RootMismatch)
                };
            }
            let sealed = self.kek.seal(ROOT_CHECK_REF.as_bytes(), &expected)?;
            self.store
                .insert_subject_key(ROOT_CHECK_REF, &sealed)
                .await?;
        }
        Err(VaultError::RootMismatch)
    }

    /// The pseudonymous reference of a subject id.
    pub fn subject_ref(&self, subject_id: &str) -> String {
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&*self.ref_key).expect("any key length");
        mac.update(subject_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The subject an event is about, if it is a person.
    pub fn subject_of(event: &SecurityEvent) -> Option<&str> {
        let user = &event.body["actor"]["user"];
        (user["type"] == "user")
            .then(|| user["uid"].as_str())
            .flatten()
    }

    fn cached(&self, subject_ref: &str) -> Option<Option<Arc<SealingKey>>> {
        self.cache.lock().get(subject_ref).cloned()
    }

    /// Seals the event's subject fields if its key is in memory. Returns
    /// false when the key has to be fetched first ([`SubjectVault::seal`]).
    pub fn try_seal(&self, event: &mut SecurityEvent) -> Result<bool, VaultError> {
        let Some(subject) = Self::subject_of(event) else {
            return Ok(true);
        };
        let subject_ref = self.subject_ref(subject);
        match self.cached(&subject_ref) {
            Some(Some(key)) => {
                seal_fields(event, &subject_ref, &key)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Seals the events' subject fields, making keys for new subjects.
    pub async fn seal(&self, events: &mut [SecurityEvent]) -> Result<(), VaultError> {
        let refs: Vec<String> = events
            .iter()
            .filter_map(Self::subject_of)
            .map(|s| self.subject_ref(s))
            .collect();
        self.ensure_keys(&refs).await?;
        for event in events.iter_mut() {
            if !self.try_seal(event)? {
                // Shredded a moment ago and not yet re-made: make it now.
                let subject_ref = Self::subject_of(event)
                    .map(|s| self.subject_ref(s))
                    .unwrap_or_default();
                self.cache.lock().remove(&subject_ref);
                self.ensure_keys(&[subject_ref]).await?;
                if !self.try_seal(event)? {
                    return Err(VaultError::Key(citadel_crypto::SealError::Key));
                }
            }
        }
        Ok(())
    }

    /// Loads (or makes) the keys of these subjects into the cache.
    async fn ensure_keys(&self, refs: &[String]) -> Result<(), VaultError> {
        let mut missing: Vec<String> = {
            let cache = self.cache.lock();
            refs.iter()
                .filter(|r| !matches!(cache.get(*r), Some(Some(_))))
                .cloned()
                .collect()
        };
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let read_at = self.generation();
        let mut stored = self.store.subject_keys(&missing).await?;
        let fresh: Vec<&String> = missing
            .iter()
            .filter(|r| !matches!(stored.get(*r), Some(Some(_))))
            .collect();
        if !fresh.is_empty() {
            for subject_ref in &fresh {
                let (_, bytes) = SealingKey::generate()?;
                let wrapped = self.kek.wrap(subject_ref.as_bytes(), &bytes)?;
                self.store.insert_subject_key(subject_ref, &wrapped).await?;
            }
            // Read back: if another writer made one first, its key is the key.
            let owned: Vec<String> = fresh.into_iter().cloned().collect();
            stored.extend(self.store.subject_keys(&owned).await?);
        }
        for subject_ref in missing {
            if let Some(Some(wrapped)) = stored.get(&subject_ref) {
                let key = self.kek.unwrap_key(subject_ref.as_bytes(), wrapped)?;
                self.remember(subject_ref, Some(Arc::new(key)), read_at);
            }
        }
        Ok(())
    }

    /// Puts sealed fields back in a stored event body (for reading), or
    /// marks it erased if the subject's key is gone.
    pub async fn open(&self, body: &mut Value) -> Result<Opened, VaultError> {
        let Some(sealed) = body["unmapped"]["sealed_subject"].as_object() else {
            return Ok(Opened::Plain);
        };
        let subject_ref = sealed
            .get("ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let data = sealed
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| B64.decode(d).ok())
            .unwrap_or_default();
        // A key known to be gone is looked up again: the subject may have a
        // new key since (events after an erasure).
        let key = match self.cached(&subject_ref) {
            Some(Some(key)) => Some(key),
            _ => {
                let stored = self
                    .store
                    .subject_keys(std::slice::from_ref(&subject_ref))
                    .await?;
                let key = match stored.get(&subject_ref) {
                    Some(Some(wrapped)) => Some(Arc::new(
                        self.kek.unwrap_key(subject_ref.as_bytes(), wrapped)?,
                    )),
                    _ => None,
                };
                self.cache.lock().insert(subject_ref.clone(), key.clone());
                key
            }
        };
        let id = body["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let opened = key.and_then(|k| k.open(&aad(&id, &subject_ref), &data).ok());
        let Some(plain) = opened else {
            body["unmapped"]["sealed_subject"]["erased"] = Value::Bool(true);
            return Ok(Opened::Erased);
        };
        let fields: Map<String, Value> = serde_json::from_slice(&plain).unwrap_or_default();
        for (pointer, value) in fields {
            set_pointer(body, &pointer, value);
        }
        if let Some(unmapped) = body["unmapped"].as_object_mut() {
            unmapped.remove("sealed_subject");
            if unmapped.is_empty() {
                body.as_object_mut().map(|b| b.remove("unmapped"));
            }
        }
        Ok(Opened::Restored)
    }

    /// Seals `plaintext` under `subject_id`'s key (made on first use),
    /// bound to `context` (the record it belongs to). Returns the
    /// subject's reference and the sealed bytes. Erasing the subject makes
    /// it unreadable, like their events' fields.
    pub async fn seal_for(
        &self,
        subject_id: &str,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<(String, Vec<u8>), VaultError> {
        let subject_ref = self.subject_ref(subject_id);
        for _ in 0..2 {
            self.ensure_keys(std::slice::from_ref(&subject_ref)).await?;
            if let Some(Some(key)) = self.cached(&subject_ref) {
                return Ok((
                    subject_ref.clone(),
                    key.seal(&record_aad(&subject_ref, context), plaintext)?,
                ));
            }
            // Shredded a moment ago: make the new key.
            self.cache.lock().remove(&subject_ref);
        }
        Err(VaultError::Key(citadel_crypto::SealError::Key))
    }

    /// Opens what [`SubjectVault::seal_for`] sealed; `None` once the
    /// subject was erased (the key is gone).
    pub async fn open_for(
        &self,
        subject_ref: &str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let stored = self.store.subject_keys(&[subject_ref.to_owned()]).await?;
        let Some(Some(wrapped)) = stored.get(subject_ref) else {
            return Ok(None);
        };
        let key = self.kek.unwrap_key(subject_ref.as_bytes(), wrapped)?;
        Ok(key.open(&record_aad(subject_ref, context), sealed).ok())
    }

    /// Erases a subject: destroys their key, so every sealed field of every
    /// event about them is unreadable from now on, everywhere it was copied.
    pub async fn erase(&self, subject_id: &str) -> Result<bool, VaultError> {
        let subject_ref = self.subject_ref(subject_id);
        let shredded = self.store.shred_subject_key(&subject_ref).await?;
        self.forget_cached();
        Ok(shredded)
    }

    /// Forgets cached keys: another process may have destroyed one. The
    /// server calls this whenever the enforcement state changes (an erasure
    /// anywhere bumps it).
    pub fn forget_cached(&self) {
        let mut cache = self.cache.lock();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.clear();
    }
}

fn record_aad(subject_ref: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = format!("citadel-subject-record-v1|{subject_ref}|").into_bytes();
    aad.extend_from_slice(context);
    aad
}

fn aad(event_id: &str, subject_ref: &str) -> Vec<u8> {
    format!("citadel-subject-v1|{event_id}|{subject_ref}").into_bytes()
}

fn seal_fields(
    event: &mut SecurityEvent,
    subject_ref: &str,
    key: &SealingKey,
) -> Result<(), VaultError> {
    let mut fields = Map::new();
    for pointer in SEALED_FIELDS {
        if let Some(value) = take_pointer(&mut event.body, pointer) {
            fields.insert((*pointer).to_owned(), value);
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    let plain = Zeroizing::new(serde_json::to_vec(&fields).unwrap_or_default());
    let sealed = key.seal(&aad(&event.id, subject_ref), &plain)?;
    let body = &mut event.body;
    if !body["unmapped"].is_object() {
        body["unmapped"] = Value::Object(Map::new());
    }
    body["unmapped"]["sealed_subject"] = serde_json::json!({
        "ref": subject_ref,
        "data": B64.encode(sealed),
    });
    Ok(())
}

fn take_pointer(body: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, last) = pointer.rsplit_once('/')?;
    let parent = if parent.is_empty() {
        Some(body)
    } else {
        body.pointer_mut(parent)
    }?;
    parent.as_object_mut()?.remove(last)
}

fn set_pointer(body: &mut Value, pointer: &str, value: Value) {
    let mut at = body;
    let mut parts = pointer.split('/').skip(1).peekable();
    while let Some(part) = parts.next() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let map = at.as_object_mut().expect("object");
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        at = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}
