//! API keys. Only a keyed hash of each secret is stored.

use serde::Serialize;
use sqlx::Row;

use crate::{bump_enforcement_version, json_list, map_unique, Result, Store, StoreError};

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Public key id (also embedded in the secret's text).
    pub id: String,
    /// Human name.
    pub name: String,
    /// `user` or `service_account`.
    pub owner_kind: String,
    /// Owner principal id.
    pub owner_id: String,
    /// Owner display name.
    pub owner_name: String,
    /// Roles the key acts with.
    pub roles: Vec<String>,
    /// HMAC-SHA256 of the secret under the installation's key-hash key, hex.
    #[serde(skip)]
    pub hash: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which the key stops working.
    pub expires_at: Option<i64>,
    /// Unix ms when revoked.
    pub revoked_at: Option<i64>,
    /// Unix ms of the last request it authenticated (updated in batches).
    pub last_used_at: Option<i64>,
    /// Requests-per-minute limit for this key.
    pub rpm: Option<i64>,
    /// Tokens-per-minute limit for this key.
    pub tpm: Option<i64>,
}

const KEY_COLUMNS: &str = "id, name, owner_kind, owner_id, owner_name, roles, hash, created_at, \
     expires_at, revoked_at, last_used_at, rpm, tpm";

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner_kind: row.try_get("owner_kind")?,
        owner_id: row.try_get("owner_id")?,
        owner_name: row.try_get("owner_name")?,
        roles: json_list(&row.try_get::<String, _>("roles")?)?,
        hash: row.try_get("hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rpm: row.try_get("rpm")?,
        tpm: row.try_get("tpm")?,
    })
}

impl Store {
    /// Stores a new key.
    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.owner_kind)
        .bind(&key.owner_id)
        .bind(&key.owner_name)
        .bind(serde_json::to_string(&key.roles).unwrap_or_default())
        .bind(&key.hash)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(key.last_used_at)
        .bind(key.rpm)
        .bind(key.tpm)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("api key {}", key.id)))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// All keys, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// One key by id.
    pub async fn get_api_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("api key {id}")))?;
        key_from_row(&row)
    }

    /// Revokes a key (idempotent: the first revocation time is kept).
    pub async fn revoke_api_key(&self, id: &str, at: i64) -> Result<ApiKeyRecord> {
        let mut tx = self.pool().begin().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("api key {id}")));
        }
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        self.get_api_key(id).await
    }

    /// Records last-used times, in one transaction (called in batches, off
    /// the request path). Does not bump the enforcement version.
    pub async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
