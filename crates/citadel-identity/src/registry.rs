//! The in-memory view of credentials the gateway verifies against.
//!
//! A snapshot of all keys (and their owners' state) is swapped in atomically
//! whenever the store's enforcement version moves, so a revocation made by
//! any process — CLI, admin API, another replica — is seen within one poll
//! interval, and one made through this process's admin API at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use citadel_core::{Principal, PrincipalKind};
use citadel_store::Store;
use parking_lot::Mutex;

use crate::api_key::{parse_id, KeyHasher};

/// Why a credential was refused. Recorded in events; never told to the client,
/// which only hears `invalid_credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was presented.
    Missing,
    /// The credential is not shaped like a Citadel key.
    Malformed,
    /// No key has that id.
    UnknownKey,
    /// The id exists but the secret does not match.
    WrongSecret,
    /// The key has expired.
    Expired,
    /// The key was revoked.
    Revoked,
    /// The key's owner is disabled.
    OwnerDisabled,
}

impl AuthFailure {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_credentials",
            Self::Malformed => "malformed_credentials",
            Self::UnknownKey => "unknown_key",
            Self::WrongSecret => "wrong_secret",
            Self::Expired => "expired_key",
            Self::Revoked => "revoked_key",
            Self::OwnerDisabled => "owner_disabled",
        }
    }
}

/// A key that passed verification.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    /// The key id.
    pub key_id: String,
    /// Who the key acts as.
    pub principal: Arc<Principal>,
    /// Requests-per-minute limit set on the key.
    pub rpm: Option<i64>,
    /// Tokens-per-minute limit set on the key.
    pub tpm: Option<i64>,
}

struct CachedKey {
    hash: [u8; 32],
    verified: VerifiedKey,
    expires_at: Option<i64>,
    revoked: bool,
    owner_disabled: bool,
}

/// Verifies presented API keys against the latest snapshot.
pub struct KeyRegistry {
    hasher: KeyHasher,
    store: Store,
    keys: ArcSwap<HashMap<String, CachedKey>>,
    version: Mutex<i64>,
    last_used: Mutex<HashMap<String, i64>>,
    /// One refresh at a time, so an older snapshot never replaces a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRegistry").finish_non_exhaustive()
    }
}

impl KeyRegistry {
    /// Loads the first snapshot.
    pub async fn load(store: Store, hasher: KeyHasher) -> citadel_store::Result<Arc<Self>> {
        let registry = Arc::new(Self {
            hasher,
            store,
            keys: ArcSwap::from_pointee(HashMap::new()),
            version: Mutex::new(-1),
            last_used: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        });
        registry.refresh().await?;
        Ok(registry)
    }

    /// The hasher, for issuing keys.
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// Rebuilds the snapshot from the store.
    pub async fn refresh(&self) -> citadel_store::Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let version = self.store.enforcement_version().await?;
        let disabled: std::collections::HashSet<String> = self
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| u.disabled)
            .map(|u| u.id)
            .collect();
        let mut map = HashMap::new();
        for k in self.store.list_api_keys().await? {
            let Some(hash) = hex::decode(&k.hash)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                tracing::error!(key_id = %k.id, "stored key hash is corrupt; key refused");
                continue;
            };
            let kind = PrincipalKind::parse(&k.owner_kind).unwrap_or(PrincipalKind::ServiceAccount);
            let principal = Principal {
                id: k.owner_id.clone(),
                kind,
                name: k.owner_name.clone(),
                roles: k.roles.clone(),
                credential: format!("api_key:{}", k.id),
            };
            map.insert(
                k.id.clone(),
                CachedKey {
                    hash,
                    owner_disabled: disabled.contains(&k.owner_id),
                    verified: VerifiedKey {
                        key_id: k.id,
                        principal: Arc::new(principal),
                        rpm: k.rpm,
                        tpm: k.tpm,
                    },
                    expires_at: k.expires_at,
                    revoked: k.revoked_at.is_some(),
                },
            );
        }
        self.keys.store(Arc::new(map));
        *self.version.lock() = version;
        Ok(())
    }

    /// Refreshes only if the store's enforcement version moved.
    pub async fn refresh_if_changed(&self) -> citadel_store::Result<bool> {
        let version = self.store.enforcement_version().await?;
        if version == *self.version.lock() {
            return Ok(false);
        }
        self.refresh().await?;
        Ok(true)
    }

    /// Verifies a presented key at time `now` (Unix ms). The secret is
    /// checked (in constant time) before expiry and revocation, so the
    /// failure reason is only known for a holder of the right secret.
    pub fn verify(&self, presented: &str, now: i64) -> Result<VerifiedKey, AuthFailure> {
        let id = parse_id(presented).ok_or(AuthFailure::Malformed)?;
        let keys = self.keys.load();
        let Some(entry) = keys.get(id) else {
            // Spend the same work as a real check so that unknown ids do
            // not answer measurably faster.
            let _ = self.hasher.matches(presented, &[0u8; 32]);
            return Err(AuthFailure::UnknownKey);
        };
        if !self.hasher.matches(presented, &entry.hash) {
            return Err(AuthFailure::WrongSecret);
        }
        if entry.revoked {
            return Err(AuthFailure::Revoked);
        }
        if entry.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthFailure::Expired);
        }
        if entry.owner_disabled {
            return Err(AuthFailure::OwnerDisabled);
        }
        self.last_used
            .lock()
            .insert(entry.verified.key_id.clone(), now);
        Ok(entry.verified.clone())
    }

    /// Whether a key that was verified earlier still holds at `now`: not
    /// revoked, not expired, its owner not disabled, per the latest
    /// snapshot. For a long request (a streamed answer) started with it.
    pub fn still_valid(&self, key_id: &str, now: i64) -> Result<(), AuthFailure> {
        let keys = self.keys.load();
        let entry = keys.get(key_id).ok_or(AuthFailure::UnknownKey)?;
        if entry.revoked {
            return Err(AuthFailure::Revoked);
        }
        if entry.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthFailure::Expired);
        }
        if entry.owner_disabled {
            return Err(AuthFailure::OwnerDisabled);
        }
        Ok(())
    }

    /// Writes pending last-used times to the store.
    pub async fn flush_last_used(&self) -> citadel_store::Result<()> {
        let used: Vec<(String, i64)> = self.last_used.lock().drain().collect();
        self.store.touch_api_keys(&used).await
    }

    /// Runs forever: follows the store's enforcement version every `poll`
    /// and flushes last-used times every second. Spawn it.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh_if_changed().await {
                tracing::warn!(error = %e, "credential refresh failed; keeping the last snapshot");
            }
            if last_flush.elapsed() >= Duration::from_secs(1) {
                last_flush = tokio::time::Instant::now();
                if let Err(e) = self.flush_last_used().await {
                    tracing::warn!(error = %e, "could not record key last-used times");
                }
            }
        }
    }
}
