//! Wrapped data keys of the key hierarchy (`citadel-crypto`'s keyring):
//! one row per purpose and version. Versions only grow; a key is never
//! changed except to re-wrap it under another root.

use serde::Serialize;
use sqlx::Row;

use crate::{map_unique, Result, Store};

/// A data key as stored: wrapped, never in the clear.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct DataKeyRecord {
    /// What it encrypts (`authenticator`, …).
    pub purpose: String,
    /// Its version within the purpose (1, 2, …).
    pub version: i64,
    /// The key wrapped by the root key (format set by the root).
    #[serde(skip)]
    pub wrapped: String,
    /// Which root wrapped it (`file:…`, `env:…`, `vault-transit:…`).
    pub root: String,
    /// When it was made, Unix ms.
    pub created_at: i64,
}

impl std::fmt::Debug for DataKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyRecord")
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .field("root", &self.root)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Every data key, by purpose and version.
    pub async fn data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        let rows = sqlx::query(
            "SELECT purpose, version, wrapped, root, created_at FROM data_keys \
             ORDER BY purpose, version",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DataKeyRecord {
                    purpose: row.try_get("purpose")?,
                    version: row.try_get("version")?,
                    wrapped: row.try_get("wrapped")?,
                    root: row.try_get("root")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Stores a new data key version; `Conflict` if that version exists
    /// (another replica rotated at the same time).
    pub async fn insert_data_key(&self, record: &DataKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO data_keys (purpose, version, wrapped, root, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&record.purpose)
        .bind(record.version)
        .bind(&record.wrapped)
        .bind(&record.root)
        .bind(record.created_at)
        .execute(self.pool())
        .await
        .map_err(|e| map_unique(e, "data key version"))?;
        Ok(())
    }

    /// Replaces a data key's wrapping (after re-wrapping it under another
    /// root); the key itself is unchanged.
    pub async fn rewrap_data_key(
        &self,
        purpose: &str,
        version: i64,
        wrapped: &str,
        root: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE data_keys SET wrapped = $1, root = $2 WHERE purpose = $3 AND version = $4",
        )
        .bind(wrapped)
        .bind(root)
        .bind(purpose)
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
