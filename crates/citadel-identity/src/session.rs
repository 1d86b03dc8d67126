//! Browser sessions: made at sign-in, carried in a cookie, checked on every
//! request, ended by sign-out, by an operator, by expiry or by idleness.
//!
//! The cookie holds a 256-bit random token; the database keeps only its
//! SHA-256 (a fast hash is enough for a random secret of that size, and a
//! stolen database yields no usable cookie). Each replica keeps the
//! sessions it has seen in memory, so a request costs a hash and a map
//! lookup; the cache is dropped whenever the store's enforcement version
//! moves (a sign-out, a revocation, a disabled user on any replica), so an
//! ended session stops working everywhere within one poll interval, and at
//! once on the replica that ended it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use citadel_core::{Principal, PrincipalKind};
use citadel_store::{SessionRecord, Store, UserRecord};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Every session cookie's token starts with this.
pub const SESSION_TOKEN_PREFIX: &str = "cts_";
const TOKEN_BYTES: usize = 32;
const TOKEN_TEXT_LEN: usize = 43;
const CACHE_MAX: usize = 100_000;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `[identity.sessions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session ends this long after sign-in, however active.
    #[serde(deserialize_with = "duration")]
    pub lifetime: Duration,
    /// A session ends after this long without a request.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// The cookie's name. The `__Host-` prefix makes browsers refuse it
    /// unless it is `Secure`, host-only and for path `/`.
    pub cookie_name: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            cookie_name: "__Host-citadel_session".into(),
        }
    }
}

impl SessionConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.lifetime < Duration::from_secs(60) {
            return Err("identity.sessions.lifetime: at least 1m".into());
        }
        if self.idle_timeout < Duration::from_secs(10) || self.idle_timeout > self.lifetime {
            return Err("identity.sessions.idle_timeout: between 10s and the lifetime".into());
        }
        let name_ok = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err("identity.sessions.cookie_name: letters, digits, `_` and `-` only".into());
        }
        Ok(())
    }

    /// The session token in a request's `Cookie` headers, if any. More than
    /// one cookie of our name is refused (`Err`), as a fixation attempt.
    pub fn token_in<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a str>,
    ) -> Result<Option<&'a str>, SessionFailure> {
        let mut found = None;
        for header in cookie_headers {
            for pair in header.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name == self.cookie_name {
                    if found.is_some() {
                        return Err(SessionFailure::Malformed);
                    }
                    found = Some(value);
                }
            }
        }
        Ok(found)
    }
}

/// Why a session cookie was refused. Recorded in events; the client only
/// hears `invalid_credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFailure {
    /// Not shaped like a session token.
    Malformed,
    /// No session has that token.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// Unused for longer than the idle timeout.
    Idle,
    /// Signed out or revoked.
    Revoked,
    /// The user is disabled.
    UserDisabled,
    /// The store could not be asked (fail closed).
    Unavailable,
}

impl SessionFailure {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_session",
            Self::Unknown => "unknown_session",
            Self::Expired => "expired_session",
            Self::Idle => "idle_session",
            Self::Revoked => "revoked_session",
            Self::UserDisabled => "user_disabled",
            Self::Unavailable => "session_store_unavailable",
        }
    }
}

/// A session that passed the checks.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Public id.
    pub id: String,
    /// The user, as a principal (`credential` = `session:<id>`).
    pub principal: Arc<Principal>,
    /// How the user proved who they are.
    pub methods: Vec<String>,
    /// When a second factor was last proved.
    pub mfa_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// The address the session was made from.
    pub source_ip: String,
    csrf_hash: [u8; 32],
}

impl LiveSession {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        sha256(presented.as_bytes()).ct_eq(&self.csrf_hash).into()
    }
}

/// A session just made: the cookie token and CSRF token are shown once.
pub struct NewSession {
    /// The stored record.
    pub record: SessionRecord,
    /// The cookie's value.
    pub token: Zeroizing<String>,
    /// The token browsers send back in `X-CSRF-Token` on changing requests.
    pub csrf_token: Zeroizing<String>,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

struct Cached {
    session: LiveSession,
    revoked: bool,
    user_disabled: bool,
    last_seen: AtomicI64,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn random_token() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()))
}

fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(SESSION_TOKEN_PREFIX)
        .is_some_and(|rest| {
            rest.len() == TOKEN_TEXT_LEN
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// How a session is being made.
#[derive(Debug, Clone)]
pub struct SessionStart<'a> {
    /// The user.
    pub user: &'a UserRecord,
    /// Methods proved (`pwd`, `otp`, `recovery`, …).
    pub methods: Vec<String>,
    /// When a second factor was proved, if one was.
    pub mfa_at: Option<i64>,
    /// Client address.
    pub source_ip: String,
    /// Client's user agent.
    pub user_agent: Option<String>,
}

/// Makes, checks and ends sessions.
pub struct Sessions {
    store: Store,
    config: SessionConfig,
    cache: Mutex<HashMap<[u8; 32], Arc<Cached>>>,
    version: Mutex<i64>,
    seen: Mutex<HashMap<String, i64>>,
    /// Moves whenever sessions may have ended (a local revocation, or the
    /// store's enforcement version moving), for watchers of long requests.
    generation: AtomicU64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions in `store`.
    pub async fn new(store: Store, config: SessionConfig) -> Result<Arc<Self>, String> {
        config.validate()?;
        let version = store
            .enforcement_version()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            store,
            config,
            cache: Mutex::new(HashMap::new()),
            version: Mutex::new(version),
            seen: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }))
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Starts a session.
    pub async fn create(
        &self,
        start: SessionStart<'_>,
        now: i64,
    ) -> citadel_store::Result<NewSession> {
        let new = self.new_record(start, now);
        self.store.create_session(&new.record).await?;
        Ok(new)
    }

    fn new_record(&self, start: SessionStart<'_>, now: i64) -> NewSession {
        let token = Zeroizing::new(format!("{SESSION_TOKEN_PREFIX}{}", random_token().as_str()));
        let csrf_token = random_token();
        let record = SessionRecord {
            id: format!("s-{}", uuid::Uuid::new_v4().simple()),
            token_hash: hex::encode(sha256(token.as_bytes())),
            csrf_hash: hex::encode(sha256(csrf_token.as_bytes())),
            user_id: start.user.id.clone(),
            methods: start.methods,
            created_at: now,
            expires_at: now.saturating_add(self.config.lifetime.as_millis() as i64),
            last_seen_at: now,
            mfa_at: start.mfa_at,
            source_ip: start.source_ip,
            user_agent: start.user_agent,
            revoked_at: None,
            revoked_reason: None,
        };
        NewSession {
            record,
            token,
            csrf_token,
        }
    }

    /// Replaces `old` with a new session (new cookie, new CSRF token) after
    /// a privilege change such as a step-up; the old cookie stops working.
    /// The new session keeps the old one's absolute end.
    pub async fn rotate(
        &self,
        old: &LiveSession,
        start: SessionStart<'_>,
        now: i64,
    ) -> citadel_store::Result<NewSession> {
        let mut new = self.new_record(start, now);
        new.record.expires_at = old.expires_at;
        new.record.created_at = old.created_at;
        self.store.rotate_session(&old.id, &new.record, now).await?;
        self.forget_all();
        Ok(new)
    }

    /// Checks a presented cookie token at `now`.
    pub async fn verify(&self, token: &str, now: i64) -> Result<LiveSession, SessionFailure> {
        if !well_formed(token) {
            return Err(SessionFailure::Malformed);
        }
        let hash = sha256(token.as_bytes());
        let cached = self.cache.lock().get(&hash).cloned();
        let cached = match cached {
            Some(c) => c,
            None => {
                let loaded = self.load(&hash).await?;
                let mut cache = self.cache.lock();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(hash, loaded.clone());
                loaded
            }
        };
        if cached.revoked {
            return Err(SessionFailure::Revoked);
        }
        if cached.user_disabled {
            return Err(SessionFailure::UserDisabled);
        }
        if now >= cached.session.expires_at {
            return Err(SessionFailure::Expired);
        }
        let last = cached.last_seen.load(Ordering::Acquire);
        if now.saturating_sub(last) > self.config.idle_timeout.as_millis() as i64 {
            return Err(SessionFailure::Idle);
        }
        cached.last_seen.fetch_max(now, Ordering::AcqRel);
        self.seen.lock().insert(cached.session.id.clone(), now);
        Ok(cached.session.clone())
    }

    async fn load(&self, hash: &[u8; 32]) -> Result<Arc<Cached>, SessionFailure> {
        let unavailable = |e: citadel_store::StoreError| {
            tracing::warn!(error = %e, "session lookup failed; refusing the session");
            SessionFailure::Unavailable
        };
        let record = self
            .store
            .session_by_token_hash(&hex::encode(hash))
            .await
            .map_err(unavailable)?
            .ok_or(SessionFailure::Unknown)?;
        let user = self
            .store
            .find_user(&record.user_id)
            .await
            .map_err(unavailable)?;
        let csrf_hash = hex::decode(&record.csrf_hash)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or(SessionFailure::Unknown)?;
        let last_seen = record
            .last_seen_at
            .max(self.seen.lock().get(&record.id).copied().unwrap_or(0));
        Ok(Arc::new(Cached {
            revoked: record.revoked_at.is_some(),
            user_disabled: user.disabled,
            last_seen: AtomicI64::new(last_seen),
            session: LiveSession {
                principal: Arc::new(Principal {
                    id: user.id,
                    kind: PrincipalKind::User,
                    name: user.name,
                    roles: user.roles,
                    credential: format!("session:{}", record.id),
                }),
                id: record.id,
                methods: record.methods,
                mfa_at: record.mfa_at,
                created_at: record.created_at,
                expires_at: record.expires_at,
                source_ip: record.source_ip,
                csrf_hash,
            },
        }))
    }

    /// Ends one session.
    pub async fn revoke(&self, id: &str, reason: &str, now: i64) -> citadel_store::Result<bool> {
        let ended = self.store.revoke_session(id, reason, now).await?;
        self.forget_all();
        Ok(ended)
    }

    /// Ends every session of a user ("sign out everywhere").
    pub async fn revoke_all_for(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> citadel_store::Result<u64> {
        let ended = self.store.revoke_sessions_for(user_id, reason, now).await?;
        self.forget_all();
        Ok(ended)
    }

    /// Drops every cached session (the next request of each reads the store).
    pub fn forget_all(&self) {
        self.cache.lock().clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A number that moves whenever a session may have ended; a watcher
    /// re-checks its session only when it moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether session `id` still holds at `now` (not revoked, not expired,
    /// its user not disabled), read from the store. For a long request (a
    /// streamed answer) started with it; `Err` when the store cannot say.
    pub async fn still_valid(&self, id: &str, now: i64) -> Result<(), SessionFailure> {
        let record = self
            .store
            .session_by_id(id)
            .await
            .map_err(|_| SessionFailure::Unavailable)?
            .ok_or(SessionFailure::Unknown)?;
        if record.revoked_at.is_some() {
            return Err(SessionFailure::Revoked);
        }
        if record.expires_at <= now {
            return Err(SessionFailure::Expired);
        }
        let user = self
            .store
            .find_user(&record.user_id)
            .await
            .map_err(|_| SessionFailure::Unavailable)?;
        if user.disabled {
            return Err(SessionFailure::UserDisabled);
        }
        Ok(())
    }

    /// Drops the cache if the store's enforcement version moved.
    pub async fn refresh_if_changed(&self) -> citadel_store::Result<bool> {
        let version = self.store.enforcement_version().await?;
        let mut current = self.version.lock();
        if *current == version {
            return Ok(false);
        }
        *current = version;
        drop(current);
        self.forget_all();
        Ok(true)
    }

    /// Writes last-seen times to the store, so other replicas apply the
    /// idle timeout from the latest request anywhere.
    pub async fn flush_last_seen(&self) -> citadel_store::Result<()> {
        let seen: Vec<(String, i64)> = self.seen.lock().drain().collect();
        self.store.touch_sessions(&seen).await
    }

    /// Runs forever: follows the enforcement version every `poll` and
    /// flushes last-seen times every few seconds. Spawn it.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh_if_changed().await {
                tracing::warn!(error = %e, "session refresh failed; dropping cached sessions");
                self.forget_all();
            }
            if last_flush.elapsed() >= Duration::from_secs(5) {
                last_flush = tokio::time::Instant::now();
                if let Err(e) = self.flush_last_seen().await {
                    tracing::warn!(error = %e, "could not record session last-seen times");
                }
            }
        }
    }

    /// The `Set-Cookie` value that hands a session's cookie to the browser:
    /// `Secure`, `HttpOnly`, `SameSite=Strict`, host-only, for the whole
    /// site, kept no longer than the session lasts.
    pub fn set_cookie(&self, session: &NewSession, now: i64) -> Zeroizing<String> {
        let seconds = (session.record.expires_at - now).max(0) / 1000;
        Zeroizing::new(format!(
            "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={seconds}",
            self.config.cookie_name,
            session.token.as_str()
        ))
    }

    /// The `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
            self.config.cookie_name
        )
    }
}

#[cfg(test)]
mod tests;
