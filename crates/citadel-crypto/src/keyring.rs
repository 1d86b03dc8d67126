//! The key hierarchy: one root key-encryption key wraps data keys, one set
//! of versioned data keys per purpose (`authenticator`, …). Records are
//! sealed with their purpose's current data key (AES-256-GCM), bound by
//! associated data to the purpose, the key version and the record, so a
//! ciphertext moved to another record, table or purpose does not open.
//!
//! - **Root key** ([`RootKey`]): a key file (default `DATA/keys/root.key`,
//!   generated, refused when others may read it), a base64 key in an
//!   environment variable, or HashiCorp Vault's Transit engine, which wraps
//!   and unwraps data keys over HTTP so the root never leaves the KMS.
//! - **Rotation**: [`Keyring::rotate`] makes a new version; new writes use
//!   it, old versions keep opening what they sealed, and callers re-seal
//!   old records lazily or all at once ([`Keyring::needs_reseal`]).
//!   [`rewrap_data_keys`] re-wraps every data key under a new root (after
//!   moving to another key file or KMS, or after the KMS rotated its key).
//!   Key ages are in [`Keyring::status`].
//! - **In memory**: data keys are unwrapped once, at load, and held only
//!   as ring AES keys; the raw bytes are zeroized as soon as the key is
//!   built. An unreachable KMS or a wrong root fails the load: nothing is
//!   served with keys that cannot be checked.
//!
//! Sealed layout: `0xC1 0x7A || version (u32, big-endian) || nonce (12) ||
//! ciphertext || tag (16)`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use citadel_store::{DataKeyRecord, Store, StoreError};
use parking_lot::RwLock;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::envelope::{SealError, SealingKey, KEY_LEN};

const MAGIC: [u8; 2] = [0xC1, 0x7A];
const HEADER: usize = 2 + 4;

/// Why a key operation failed. Says what to do next; never shows a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The root key could not be read (file, environment).
    #[error("root key: {0}")]
    Root(String),
    /// The external KMS could not be reached or refused.
    #[error("key management service: {0}; nothing is served without it (check the address, token and network)")]
    Kms(String),
    /// A stored data key does not unwrap under this root.
    #[error("data key {purpose} v{version} does not unwrap under the root key {root} (it was wrapped by {wrapped_by}); use the root key this database's keys were made with")]
    WrongRoot {
        /// Purpose.
        purpose: String,
        /// Version.
        version: i64,
        /// The root in force.
        root: String,
        /// The root that wrapped it.
        wrapped_by: String,
    },
    /// Sealing or opening failed (wrong key, wrong record, altered or
    /// truncated ciphertext).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The ciphertext names a key version this keyring does not hold.
    #[error("no data key {purpose} v{version}")]
    UnknownVersion {
        /// Purpose.
        purpose: String,
        /// Version.
        version: u32,
    },
    /// No such purpose.
    #[error("unknown key purpose `{0}`")]
    UnknownPurpose(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// HashiCorp Vault Transit: data keys are wrapped by a named Transit key.
pub struct VaultTransit {
    client: reqwest::Client,
    addr: String,
    key_name: String,
    token: Zeroizing<String>,
}

/// The root key-encryption key.
pub enum RootKey {
    /// A key held in this process (from a key file or an environment variable).
    Local {
        /// The key (boxed: ring's key schedule is large).
        key: Box<SealingKey>,
        /// `file:<fingerprint>` or `env:<variable>:<fingerprint>`.
        id: String,
    },
    /// Vault Transit.
    Vault(VaultTransit),
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RootKey").field(&self.id()).finish()
    }
}

/// A short public fingerprint of a key (not reversible; tells two keys apart).
fn fingerprint(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"citadel root key fingerprint\0");
    h.update(bytes);
    hex::encode(&h.finalize()[..6])
}

impl RootKey {
    /// The key in `path` (32 bytes, mode 0600), made on first use.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = crate::load_or_create_secret(path, KEY_LEN)
            .map_err(|e| KeyError::Root(e.to_string()))?;
        Ok(Self::Local {
            key: Box::new(SealingKey::from_bytes(&bytes)?),
            id: format!("file:{}", fingerprint(&bytes)),
        })
    }

    /// A random root held only in this process (tests and benchmarks:
    /// what it wraps is lost with it).
    pub fn generated() -> Result<Self, KeyError> {
        let (key, bytes) = SealingKey::generate()?;
        Ok(Self::Local {
            key: Box::new(key),
            id: format!("memory:{}", fingerprint(&*bytes)),
        })
    }

    /// The key in environment variable `var`: 32 bytes, base64.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|_| {
            KeyError::Root(format!(
                "environment variable {var} is not set (32 random bytes, base64: `openssl rand -base64 32`)"
            ))
        })?);
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Root(format!("{var} is not base64")))?,
        );
        if bytes.len() != KEY_LEN {
            return Err(KeyError::Root(format!(
                "{var} must hold 32 bytes, it holds {}",
                bytes.len()
            )));
        }
        Ok(Self::Local {
            key: Box::new(SealingKey::from_bytes(&bytes)?),
            id: format!("env:{var}:{}", fingerprint(&bytes)),
        })
    }

    /// Vault Transit at `addr` (e.g. `https://vault:8200`) with the Transit
    /// key `key_name`, authenticated by `token`; `ca_pem` to trust a
    /// private CA.
    pub fn vault_transit(
        addr: &str,
        key_name: &str,
        token: Zeroizing<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, KeyError> {
        let mut builder = reqwest::Client::builder()
            // A redirect would carry the token (and a key) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| KeyError::Kms(format!("the CA file does not parse: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| KeyError::Kms(e.to_string()))?;
        Ok(Self::Vault(VaultTransit {
            client,
            addr: addr.trim_end_matches('/').to_owned(),
            key_name: key_name.to_owned(),
            token,
        }))
    }

    /// Which root this is, for the record kept with each wrapped key.
    pub fn id(&self) -> String {
        match self {
            Self::Local { id, .. } => id.clone(),
            Self::Vault(v) => format!("vault-transit:{}/{}", v.addr, v.key_name),
        }
    }

    async fn wrap(&self, aad: &[u8], key: &[u8; KEY_LEN]) -> Result<String, KeyError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Self::Local { key: root, .. } => Ok(b64.encode(root.wrap(aad, key)?)),
            Self::Vault(v) => {
                let plaintext = Zeroizing::new(b64.encode(key));
                let body = json!({"plaintext": &*plaintext, "associated_data": b64.encode(aad)});
                let reply = v.call("encrypt", &body).await?;
                reply["data"]["ciphertext"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| KeyError::Kms("encrypt answered without a ciphertext".into()))
            }
        }
    }

    async fn unwrap_bytes(
        &self,
        aad: &[u8],
        wrapped: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bytes = match self {
            Self::Local { key: root, .. } => {
                let sealed = b64.decode(wrapped).map_err(|_| SealError::Open)?;
                root.open(aad, &sealed)?
            }
            Self::Vault(v) => {
                let body = json!({"ciphertext": wrapped, "associated_data": b64.encode(aad)});
                let reply = v.call("decrypt", &body).await?;
                let plaintext = Zeroizing::new(
                    reply["data"]["plaintext"]
                        .as_str()
                        .ok_or_else(|| {
                            KeyError::Kms("decrypt answered without a plaintext".into())
                        })?
                        .to_owned(),
                );
                Zeroizing::new(
                    b64.decode(plaintext.as_bytes())
                        .map_err(|_| SealError::Open)?,
                )
            }
        };
        if bytes.len() != KEY_LEN {
            return Err(SealError::Key.into());
        }
        Ok(bytes)
    }

    async fn unwrap(&self, aad: &[u8], wrapped: &str) -> Result<SealingKey, KeyError> {
        Ok(SealingKey::from_bytes(
            &self.unwrap_bytes(aad, wrapped).await?,
        )?)
    }
}

impl VaultTransit {
    /// `POST /v1/transit/{op}/{key}`; errors say whether Vault was
    /// unreachable or refused.
    async fn call(
        &self,
        op: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, KeyError> {
        let url = format!("{}/v1/transit/{op}/{}", self.addr, self.key_name);
        let reply = self
            .client
            .post(&url)
            .header("X-Vault-Token", self.token.as_str())
            .json(body)
            .send()
            .await
            .map_err(|e| KeyError::Kms(format!("Vault at {} is unreachable: {e}", self.addr)))?;
        let status = reply.status();
        // Bounded: a wrap or unwrap answer is small.
        let mut reply = reply;
        let mut bytes = Vec::new();
        while let Some(chunk) = reply
            .chunk()
            .await
            .map_err(|e| KeyError::Kms(format!("Vault's answer broke off: {e}")))?
        {
            if bytes.len() + chunk.len() > 64 * 1024 {
                return Err(KeyError::Kms("Vault's answer is too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = Zeroizing::new(bytes);
        if status == reqwest::StatusCode::BAD_REQUEST && op == "decrypt" {
            // Transit answers 400 to a ciphertext that does not open.
            return Err(SealError::Open.into());
        }
        if !status.is_success() {
            return Err(KeyError::Kms(format!(
                "Vault refused {op} with HTTP {status} (check the token's policy for transit/{op}/{})",
                self.key_name
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| KeyError::Kms(format!("Vault's {op} answer is not JSON")))
    }
}

/// One data key version, in memory.
struct Version {
    key: Arc<SealingKey>,
    created_at: i64,
    root: String,
}

/// A purpose's key versions.
#[derive(Default)]
struct PurposeKeys {
    versions: BTreeMap<u32, Version>,
}

impl PurposeKeys {
    fn current(&self) -> Option<(u32, &Version)> {
        self.versions.iter().next_back().map(|(v, k)| (*v, k))
    }
}

/// A data key's state, for operators and compliance checks (no key material).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyStatus {
    /// Purpose.
    pub purpose: String,
    /// Version.
    pub version: u32,
    /// Whether new writes use it.
    pub current: bool,
    /// When it was made, Unix ms.
    pub created_at: i64,
    /// Which root wraps it.
    pub root: String,
}

/// The data keys of every purpose, unwrapped, and the root that wraps them.
pub struct Keyring {
    store: Store,
    root: RootKey,
    purposes: Vec<String>,
    keys: RwLock<HashMap<String, PurposeKeys>>,
    /// Versions this process made (at load), for the caller to record.
    made: parking_lot::Mutex<Vec<(String, u32)>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("root", &self.root.id())
            .field("purposes", &self.purposes)
            .finish_non_exhaustive()
    }
}

/// The associated data a data key is wrapped with: its purpose and version.
fn wrap_aad(purpose: &str, version: u32) -> Vec<u8> {
    format!("citadel data key\0{purpose}\0{version}").into_bytes()
}

/// The associated data a record is sealed with.
fn record_aad(purpose: &str, version: u32, context: &[u8]) -> Vec<u8> {
    let mut aad = format!("citadel record\0{purpose}\0{version}\0").into_bytes();
    aad.extend_from_slice(context);
    aad
}

impl Keyring {
    /// Loads every data key from the store and unwraps it under `root`
    /// (failing closed if any does not unwrap), and makes version 1 of
    /// each purpose that has none. `legacy` gives, per purpose, a key
    /// that sealed records before the keyring existed: it becomes that
    /// purpose's version 1.
    pub async fn load(
        store: Store,
        root: RootKey,
        purposes: &[&str],
        legacy: &[(&str, Zeroizing<Vec<u8>>)],
    ) -> Result<Arc<Self>, KeyError> {
        let ring = Arc::new(Self {
            store,
            root,
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
            keys: RwLock::new(HashMap::new()),
            made: parking_lot::Mutex::new(Vec::new()),
        });
        ring.refresh().await?;
        for purpose in purposes {
            if ring
                .keys
                .read()
                .get(*purpose)
                .is_some_and(|k| !k.versions.is_empty())
            {
                continue;
            }
            let bytes = match legacy.iter().find(|(p, _)| p == purpose) {
                Some((_, bytes)) => {
                    let mut key = Zeroizing::new([0u8; KEY_LEN]);
                    if bytes.len() != KEY_LEN {
                        return Err(KeyError::Root(format!(
                            "the earlier {purpose} key must be 32 bytes"
                        )));
                    }
                    key.copy_from_slice(bytes);
                    key
                }
                None => SealingKey::generate()?.1,
            };
            match ring.add_version(purpose, 1, &bytes).await {
                Ok(()) => ring.made.lock().push(((*purpose).to_owned(), 1)),
                Err(KeyError::Store(StoreError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(purpose, "made data key version 1");
        }
        ring.refresh().await?;
        Ok(ring)
    }

    /// The key versions made when this keyring was loaded (each is a key
    /// operation to record); taken once.
    pub fn take_made(&self) -> Vec<(String, u32)> {
        std::mem::take(&mut *self.made.lock())
    }

    /// Rotates every purpose whose current key is older than `max_age`;
    /// returns `(purpose, new version)` for each rotated.
    pub async fn rotate_due(
        &self,
        max_age: std::time::Duration,
        now_ms: i64,
    ) -> Result<Vec<(String, u32)>, KeyError> {
        self.refresh().await?;
        let due: Vec<String> = self
            .status()
            .into_iter()
            .filter(|k| k.current && now_ms - k.created_at >= max_age.as_millis() as i64)
            .map(|k| k.purpose)
            .collect();
        let mut rotated = Vec::new();
        for purpose in due {
            match self.rotate(&purpose).await {
                Ok(v) => rotated.push((purpose, v)),
                // Another replica rotated it at the same moment.
                Err(KeyError::Store(StoreError::Conflict(_))) => self.refresh().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(rotated)
    }

    /// The purposes this keyring serves.
    pub fn purposes(&self) -> &[String] {
        &self.purposes
    }

    /// The root in force.
    pub fn root_id(&self) -> String {
        self.root.id()
    }

    async fn add_version(
        &self,
        purpose: &str,
        version: u32,
        key: &[u8; KEY_LEN],
    ) -> Result<(), KeyError> {
        let wrapped = self.root.wrap(&wrap_aad(purpose, version), key).await?;
        self.store
            .insert_data_key(&DataKeyRecord {
                purpose: purpose.to_owned(),
                version: i64::from(version),
                wrapped,
                root: self.root.id(),
                created_at: citadel_core::clock::now_ms(),
            })
            .await?;
        Ok(())
    }

    /// Reads the store again: versions made elsewhere (another replica, the
    /// CLI) are unwrapped and added.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let records = self.store.data_keys().await?;
        for r in records {
            let version = u32::try_from(r.version).unwrap_or(0);
            let known = self
                .keys
                .read()
                .get(&r.purpose)
                .is_some_and(|k| k.versions.contains_key(&version));
            if known {
                continue;
            }
            let key = self
                .root
                .unwrap(&wrap_aad(&r.purpose, version), &r.wrapped)
                .await
                .map_err(|e| match e {
                    KeyError::Seal(_) => KeyError::WrongRoot {
                        purpose: r.purpose.clone(),
                        version: r.version,
                        root: self.root.id(),
                        wrapped_by: r.root.clone(),
                    },
                    other => other,
                })?;
            self.keys
                .write()
                .entry(r.purpose.clone())
                .or_default()
                .versions
                .insert(
                    version,
                    Version {
                        key: Arc::new(key),
                        created_at: r.created_at,
                        root: r.root,
                    },
                );
        }
        Ok(())
    }

    /// A new version of `purpose`'s data key; new writes use it from now
    /// on (other replicas from their next refresh). Returns the version.
    pub async fn rotate(&self, purpose: &str) -> Result<u32, KeyError> {
        if !self.purposes.iter().any(|p| p == purpose) {
            return Err(KeyError::UnknownPurpose(purpose.to_owned()));
        }
        self.refresh().await?;
        let next = self.current_version(purpose)? + 1;
        let (_, bytes) = SealingKey::generate()?;
        self.add_version(purpose, next, &bytes).await?;
        self.refresh().await?;
        Ok(next)
    }

    /// The current version of `purpose`.
    pub fn current_version(&self, purpose: &str) -> Result<u32, KeyError> {
        self.keys
            .read()
            .get(purpose)
            .and_then(|k| k.current().map(|(v, _)| v))
            .ok_or_else(|| KeyError::UnknownPurpose(purpose.to_owned()))
    }

    fn key(&self, purpose: &str, version: u32) -> Result<Arc<SealingKey>, KeyError> {
        self.keys
            .read()
            .get(purpose)
            .and_then(|k| k.versions.get(&version))
            .map(|v| v.key.clone())
            .ok_or(KeyError::UnknownVersion {
                purpose: purpose.to_owned(),
                version,
            })
    }

    /// Seals `plaintext` for `purpose` under its current key, bound to
    /// `context` (the record and table it belongs to).
    pub fn seal(
        &self,
        purpose: &str,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let version = self.current_version(purpose)?;
        let key = self.key(purpose, version)?;
        let mut out = Vec::with_capacity(HEADER + 12 + plaintext.len() + 16);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        key.seal_append(&record_aad(purpose, version, context), plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens what [`Keyring::seal`] made for `purpose` and `context`;
    /// returns the plaintext and the key version that sealed it. A record
    /// sealed before the keyring existed (no header) is opened with
    /// version 1 and `context` alone as associated data.
    pub fn open(
        &self,
        purpose: &str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), KeyError> {
        let mut unknown = None;
        if sealed.len() > HEADER && sealed[..2] == MAGIC {
            let version = u32::from_be_bytes(sealed[2..6].try_into().expect("4 bytes"));
            match self.key(purpose, version) {
                Ok(key) => {
                    if let Ok(plain) =
                        key.open(&record_aad(purpose, version, context), &sealed[HEADER..])
                    {
                        return Ok((plain, version));
                    }
                }
                Err(e) => unknown = Some(e),
            }
        }
        // Before the keyring: sealed under what is now version 1.
        let legacy = self
            .key(purpose, 1)
            .ok()
            .and_then(|key| key.open(context, sealed).ok());
        match (legacy, unknown) {
            (Some(plain), _) => Ok((plain, 0)),
            // A version made elsewhere since this keyring last read the
            // store: the caller may refresh and try again.
            (None, Some(unknown)) => Err(unknown),
            (None, None) => Err(SealError::Open.into()),
        }
    }

    /// Whether a record opened at `version` should be sealed again under
    /// the current key (lazy re-encryption after a rotation).
    pub fn needs_reseal(&self, purpose: &str, version: u32) -> bool {
        self.current_version(purpose)
            .is_ok_and(|current| version != current)
    }

    /// Every key version with its age and root (no key material).
    pub fn status(&self) -> Vec<KeyStatus> {
        let keys = self.keys.read();
        let mut out = Vec::new();
        for purpose in &self.purposes {
            if let Some(k) = keys.get(purpose) {
                let current = k.current().map(|(v, _)| v);
                for (version, v) in &k.versions {
                    out.push(KeyStatus {
                        purpose: purpose.clone(),
                        version: *version,
                        current: Some(*version) == current,
                        created_at: v.created_at,
                        root: v.root.clone(),
                    });
                }
            }
        }
        out
    }
}

/// Re-wraps the stored data keys under `to`, the root in force from now
/// on. A key wrapped by another root is unwrapped with `from` (the root it
/// moves away from: the old key file or KMS); a key already under `to` is
/// re-wrapped by the KMS to its newest Transit key version (Vault), or
/// left as it is (a local root has one version). Returns how many changed.
pub async fn rewrap_data_keys(
    store: &Store,
    from: Option<&RootKey>,
    to: &RootKey,
) -> Result<usize, KeyError> {
    let to_id = to.id();
    let mut changed = 0;
    for r in store.data_keys().await? {
        let version = u32::try_from(r.version).unwrap_or(0);
        let aad = wrap_aad(&r.purpose, version);
        let wrapped = if r.root == to_id {
            match to {
                RootKey::Vault(v) => {
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let body =
                        json!({"ciphertext": r.wrapped, "associated_data": b64.encode(&aad)});
                    let reply = v.call("rewrap", &body).await?;
                    match reply["data"]["ciphertext"].as_str() {
                        Some(c) if c != r.wrapped => c.to_owned(),
                        _ => continue,
                    }
                }
                RootKey::Local { .. } => continue,
            }
        } else {
            let Some(from) = from else {
                return Err(KeyError::WrongRoot {
                    purpose: r.purpose.clone(),
                    version: r.version,
                    root: to_id,
                    wrapped_by: r.root.clone(),
                });
            };
            let bytes = from
                .unwrap_bytes(&aad, &r.wrapped)
                .await
                .map_err(|e| match e {
                    KeyError::Seal(_) => KeyError::WrongRoot {
                        purpose: r.purpose.clone(),
                        version: r.version,
                        root: from.id(),
                        wrapped_by: r.root.clone(),
                    },
                    other => other,
                })?;
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(&bytes);
            to.wrap(&aad, &key).await?
        };
        store
            .rewrap_data_key(&r.purpose, r.version, &wrapped, &to_id)
            .await?;
        changed += 1;
    }
    Ok(changed)
}
