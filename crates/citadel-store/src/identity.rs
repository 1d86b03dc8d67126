//! People's credentials and sessions: password hashes, TOTP authenticators
//! (sealed seeds only), recovery-code hashes, browser sessions and the
//! sign-in throttle. No secret is stored in the clear: the callers hash or
//! seal before anything reaches this module.

use serde::Serialize;
use sqlx::Row;

use crate::{
    bump_enforcement_version, json_list, map_unique, Result, Store, StoreError, UserRecord,
};

/// A user with the hash of their password, for signing in.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: UserRecord,
    /// Argon2id PHC string, if a password is set.
    pub password_hash: Option<String>,
}

/// A TOTP authenticator as stored (the seed sealed by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// Owner.
    pub user_id: String,
    /// Sealed seed, base64.
    pub sealed_seed: String,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// 6 to 8.
    pub digits: i64,
    /// Seconds per step.
    pub period: i64,
    /// The highest time step accepted so far.
    pub last_step: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    /// Public id (for listing and revoking; not the cookie).
    pub id: String,
    /// SHA-256 of the cookie token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// SHA-256 of the CSRF token, hex.
    #[serde(skip)]
    pub csrf_hash: String,
    /// The user.
    pub user_id: String,
    /// How the user proved who they are (`pwd`, `otp`, `recovery`, …).
    pub methods: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Absolute end, Unix ms.
    pub expires_at: i64,
    /// Last request seen (as last written; replicas flush every few seconds).
    pub last_seen_at: i64,
    /// When a second factor was last proved.
    pub mfa_at: Option<i64>,
    /// Address the session was made from.
    pub source_ip: String,
    /// Browser that made it.
    pub user_agent: Option<String>,
    /// When it was ended.
    pub revoked_at: Option<i64>,
    /// Why (`logout`, `sign_out_everywhere`, `rotated`, `password_changed`, …).
    pub revoked_reason: Option<String>,
}

/// One throttle counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Failures counted.
    pub failures: i64,
    /// Unix ms until which sign-in is refused.
    pub locked_until: i64,
}

const SESSION_COLUMNS: &str =
    "id, token_hash, csrf_hash, user_id, methods, created_at, expires_at, \
     last_seen_at, mfa_at, source_ip, user_agent, revoked_at, revoked_reason";

const TOTP_COLUMNS: &str = "user_id, sealed_seed, algorithm, digits, period, last_step, created_at";

fn totp_from_row(row: &sqlx::any::AnyRow) -> Result<TotpRecord> {
    Ok(TotpRecord {
        user_id: row.try_get("user_id")?,
        sealed_seed: row.try_get("sealed_seed")?,
        algorithm: row.try_get("algorithm")?,
        digits: row.try_get("digits")?,
        period: row.try_get("period")?,
        last_step: row.try_get("last_step")?,
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        csrf_hash: row.try_get("csrf_hash")?,
        user_id: row.try_get("user_id")?,
        methods: json_list(&row.try_get::<String, _>("methods")?)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        mfa_at: row.try_get("mfa_at")?,
        source_ip: row.try_get("source_ip")?,
        user_agent: row.try_get("user_agent")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

async fn insert_session<'c, E>(executor: E, s: &SessionRecord) -> Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&s.id)
    .bind(&s.token_hash)
    .bind(&s.csrf_hash)
    .bind(&s.user_id)
    .bind(serde_json::to_string(&s.methods).unwrap_or_default())
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.last_seen_at)
    .bind(s.mfa_at)
    .bind(&s.source_ip)
    .bind(&s.user_agent)
    .bind(s.revoked_at)
    .bind(&s.revoked_reason)
    .execute(executor)
    .await
    .map_err(|e| map_unique(e, "session"))?;
    Ok(())
}

impl Store {
    /// A user and their password hash, by name or id.
    pub async fn find_user_credentials(&self, name_or_id: &str) -> Result<UserCredentials> {
        let user = self.find_user(name_or_id).await?;
        let password_hash: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                .bind(&user.id)
                .fetch_one(self.pool())
                .await?;
        Ok(UserCredentials {
            user,
            password_hash,
        })
    }

    /// Sets a user's password hash and ends their sessions (a changed
    /// password signs the user out everywhere).
    pub async fn set_password_hash(&self, user_id: &str, hash: &str, at: i64) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3",
        )
        .bind(hash)
        .bind(at)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        let ended = revoke_user_sessions(&mut tx, user_id, "password_changed", at).await?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Replaces a password hash with a stronger hash of the same password
    /// (after a sign-in); nothing else changes, and nothing if the hash was
    /// changed meanwhile.
    pub async fn upgrade_password_hash(&self, user_id: &str, old: &str, new: &str) -> Result<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new)
            .bind(user_id)
            .bind(old)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Replaces a user's TOTP authenticator.
    pub async fn put_totp(&self, record: &TotpRecord) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM totp_authenticators WHERE user_id = $1")
            .bind(&record.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO totp_authenticators (user_id, sealed_seed, algorithm, digits, period, last_step, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.user_id)
        .bind(&record.sealed_seed)
        .bind(&record.algorithm)
        .bind(record.digits)
        .bind(record.period)
        .bind(record.last_step)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user's TOTP authenticator, if enrolled.
    pub async fn get_totp(&self, user_id: &str) -> Result<Option<TotpRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOTP_COLUMNS} FROM totp_authenticators WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(totp_from_row).transpose()
    }

    /// Replaces a TOTP seed's sealing (re-encrypted under a newer key)
    /// if it is still `old`: the seed, its settings and its replay guard
    /// stay as they are. Whether it was replaced.
    pub async fn reseal_totp(&self, user_id: &str, old: &str, new: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE totp_authenticators SET sealed_seed = $1 WHERE user_id = $2 AND sealed_seed = $3",
        )
        .bind(new)
        .bind(user_id)
        .bind(old)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The users who have a TOTP authenticator.
    pub async fn totp_user_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM totp_authenticators ORDER BY user_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("user_id")?)).collect()
    }

    /// Any one TOTP authenticator (to check the sealing key against).
    pub async fn any_totp(&self) -> Result<Option<TotpRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOTP_COLUMNS} FROM totp_authenticators ORDER BY user_id LIMIT 1"
        ))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(totp_from_row).transpose()
    }

    /// Removes a user's TOTP authenticator; whether there was one.
    pub async fn delete_totp(&self, user_id: &str) -> Result<bool> {
        let n = self
            .change_enforcement(
                sqlx::query("DELETE FROM totp_authenticators WHERE user_id = $1").bind(user_id),
            )
            .await?;
        Ok(n > 0)
    }

    /// Marks time step `step` used, if it is later than every step used
    /// before: one atomic update, so a code is accepted once even when two
    /// replicas see it at the same moment. `false` means replayed.
    pub async fn consume_totp_step(&self, user_id: &str, step: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE totp_authenticators SET last_step = $1 \
             WHERE user_id = $2 AND (last_step IS NULL OR last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Replaces a user's recovery codes with new hashes.
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        at: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for h in hashes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(h)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_unique(e, "recovery code"))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Uses a recovery code: `true` once, `false` if unknown or used.
    pub async fn consume_recovery_code(&self, user_id: &str, hash: &str, at: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(at)
        .bind(user_id)
        .bind(hash)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Recovery codes a user has left.
    pub async fn unused_recovery_codes(&self, user_id: &str) -> Result<i64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        Ok(n)
    }

    /// Stores a new session.
    pub async fn create_session(&self, session: &SessionRecord) -> Result<()> {
        insert_session(self.pool(), session).await
    }

    /// Replaces session `old_id` with `new` (a new cookie after a privilege
    /// change), in one transaction.
    pub async fn rotate_session(&self, old_id: &str, new: &SessionRecord, at: i64) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = 'rotated' \
             WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(old_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("session {old_id}")));
        }
        insert_session(&mut *tx, new).await?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session whose cookie hashes to `token_hash`.
    pub async fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// One session by its public id.
    pub async fn session_by_id(&self, id: &str) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// A user's sessions, newest first; `active_at` keeps only those live then.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        active_at: Option<i64>,
    ) -> Result<Vec<SessionRecord>> {
        let rows = match active_at {
            Some(now) => {
                sqlx::query(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
                     AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC"
                ))
                .bind(user_id)
                .bind(now)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC"
                ))
                .bind(user_id)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(session_from_row).collect()
    }

    /// Writes last-seen times (the latest wins).
    pub async fn touch_sessions(&self, seen: &[(String, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for (id, at) in seen {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1",
            )
            .bind(*at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends one session; whether it was live.
    pub async fn revoke_session(&self, id: &str, reason: &str, at: i64) -> Result<bool> {
        let n = self
            .change_enforcement(
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL",
                )
                .bind(at)
                .bind(reason)
                .bind(id),
            )
            .await?;
        Ok(n > 0)
    }

    /// Ends every live session of a user ("sign out everywhere"); how many.
    pub async fn revoke_sessions_for(&self, user_id: &str, reason: &str, at: i64) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let n = revoke_user_sessions(&mut tx, user_id, reason, at).await?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The throttle counters for `keys` (missing keys are not returned).
    pub async fn throttle_states(&self, keys: &[String]) -> Result<Vec<(String, ThrottleState)>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let row =
                sqlx::query("SELECT failures, locked_until FROM login_throttle WHERE key = $1")
                    .bind(key)
                    .fetch_optional(self.pool())
                    .await?;
            if let Some(row) = row {
                out.push((
                    key.clone(),
                    ThrottleState {
                        failures: row.try_get("failures")?,
                        locked_until: row.try_get("locked_until")?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Counts one failure for `key` and sets the lock `lock_for(failures)`
    /// (ms, 0 for none) from the new count. A counter last moved before
    /// `forget_before` starts again from one. The increment is atomic, so
    /// concurrent failures on several replicas are all counted.
    pub async fn record_throttle_failure(
        &self,
        key: &str,
        now: i64,
        forget_before: i64,
        lock_for: impl Fn(i64) -> i64,
    ) -> Result<ThrottleState> {
        let mut tx = self.pool().begin().await?;
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO login_throttle (key, failures, locked_until, updated_at) VALUES ($1, 1, 0, $2) \
             ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN login_throttle.updated_at < $3 \
             THEN 1 ELSE login_throttle.failures + 1 END, updated_at = $2 \
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .bind(forget_before)
        .fetch_one(&mut *tx)
        .await?;
        let lock = lock_for(failures);
        let locked_until = if lock > 0 {
            now.saturating_add(lock)
        } else {
            0
        };
        sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE key = $2")
            .bind(locked_until)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ThrottleState {
            failures,
            locked_until,
        })
    }

    /// Forgets every counter whose key starts with `prefix`, and `exact`;
    /// how many.
    pub async fn clear_throttle_prefix(&self, prefix: &str, exact: &str) -> Result<u64> {
        // LIKE's `_` also matches other characters; the exact filter below
        // keeps only true prefixes.
        let candidates: Vec<String> =
            sqlx::query_scalar("SELECT key FROM login_throttle WHERE key LIKE $1 OR key = $2")
                .bind(format!("{prefix}%"))
                .bind(exact)
                .fetch_all(self.pool())
                .await?;
        let keys: Vec<String> = candidates
            .into_iter()
            .filter(|k| k.starts_with(prefix) || k == exact)
            .collect();
        self.clear_throttle(&keys).await?;
        Ok(keys.len() as u64)
    }

    /// Forgets the counters for `keys` (after a successful sign-in, or an
    /// operator's unlock).
    pub async fn clear_throttle(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                .bind(key)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }
}

pub(crate) async fn revoke_user_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    reason: &str,
    at: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(reason)
    .bind(user_id)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// A stored passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyRecord {
    /// Credential id, base64url.
    pub credential_id: String,
    /// Owner.
    pub user_id: String,
    /// A name for people.
    pub name: String,
    /// The webauthn-rs passkey (public key and counter), JSON.
    #[serde(skip)]
    pub passkey: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_used_at: Option<i64>,
}

impl Store {
    /// Stores a new passkey.
    pub async fn insert_passkey(&self, p: &PasskeyRecord) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO webauthn_credentials (credential_id, user_id, name, passkey, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&p.credential_id)
        .bind(&p.user_id)
        .bind(&p.name)
        .bind(&p.passkey)
        .bind(p.created_at)
        .bind(p.last_used_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, "passkey"))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user's passkeys.
    pub async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        let rows = sqlx::query(
            "SELECT credential_id, user_id, name, passkey, created_at, last_used_at \
             FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PasskeyRecord {
                    credential_id: row.try_get("credential_id")?,
                    user_id: row.try_get("user_id")?,
                    name: row.try_get("name")?,
                    passkey: row.try_get("passkey")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Removes one of a user's passkeys; whether it existed.
    pub async fn delete_passkey(&self, user_id: &str, credential_id: &str) -> Result<bool> {
        let n = self
            .change_enforcement(
                sqlx::query(
                    "DELETE FROM webauthn_credentials WHERE user_id = $1 AND credential_id = $2",
                )
                .bind(user_id)
                .bind(credential_id),
            )
            .await?;
        Ok(n > 0)
    }

    /// Saves a passkey's new state (its counter) after a use.
    pub async fn update_passkey(&self, credential_id: &str, passkey: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE webauthn_credentials SET passkey = $1, last_used_at = $2 WHERE credential_id = $3",
        )
        .bind(passkey)
        .bind(at)
        .bind(credential_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores a ceremony's server-side state until `expires_at`.
    pub async fn put_ceremony(
        &self,
        id: &str,
        user_id: &str,
        kind: &str,
        state: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id, user_id, kind, state, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user_id)
        .bind(kind)
        .bind(state)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes expired ceremonies and says how many of `kind` are pending.
    pub async fn pending_ceremonies(&self, kind: &str, now: i64) -> Result<i64> {
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM webauthn_ceremonies WHERE kind = $1")
                .bind(kind)
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Takes a ceremony (it can be finished once): `(user_id, state)` if it
    /// exists, is of `kind` and has not expired.
    pub async fn take_ceremony(
        &self,
        id: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        // One DELETE … RETURNING: of two concurrent finishes, one gets the row.
        let row = sqlx::query(
            "DELETE FROM webauthn_ceremonies WHERE id = $1 RETURNING user_id, kind, state, expires_at",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (found_kind, expires): (String, i64) =
            (row.try_get("kind")?, row.try_get("expires_at")?);
        if found_kind != kind || expires < now {
            return Ok(None);
        }
        Ok(Some((row.try_get("user_id")?, row.try_get("state")?)))
    }
}
