//! Captured prompts and answers, and stored pseudonyms: content sealed by
//! the caller under the data subject's key, filed under the subject's
//! keyed hash. Retention purges content first, rows later.

use serde::Serialize;
use sqlx::Row;

use crate::{Result, Store};

/// A captured prompt or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaptureRecord {
    /// Id (`cap-…`).
    pub id: String,
    /// The request it belongs to.
    pub request_id: String,
    /// The data subject's keyed hash.
    pub subject_ref: String,
    /// `prompt` or `answer`.
    pub kind: String,
    /// The route (`/v1/chat/completions`, …).
    pub route: String,
    /// The model.
    pub model: String,
    /// The request's data class.
    pub data_class: String,
    /// Unix ms.
    pub created_at: i64,
    /// Sealed content (base64); `None` once purged.
    #[serde(skip)]
    pub sealed: Option<String>,
    /// When the content was purged.
    pub purged_at: Option<i64>,
}

/// A pseudonym and its sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudonymRecord {
    /// The token (`<EMAIL_ADDRESS_1a2b3c4d>`).
    pub token: String,
    /// The data subject's keyed hash.
    pub subject_ref: String,
    /// Entity type.
    pub kind: String,
    /// The value, sealed (base64).
    pub sealed: String,
    /// Unix ms.
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, request_id, subject_ref, kind, route, model, data_class, created_at, sealed, purged_at";

impl Store {
    /// Stores a capture.
    pub async fn insert_capture(&self, r: &CaptureRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO captures ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&r.id)
        .bind(&r.request_id)
        .bind(&r.subject_ref)
        .bind(&r.kind)
        .bind(&r.route)
        .bind(&r.model)
        .bind(&r.data_class)
        .bind(r.created_at)
        .bind(&r.sealed)
        .bind(r.purged_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A subject's captures, oldest first.
    pub async fn captures_of(&self, subject_ref: &str) -> Result<Vec<CaptureRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM captures WHERE subject_ref = $1 ORDER BY created_at, id"
        ))
        .bind(subject_ref)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CaptureRecord {
                    id: row.try_get("id")?,
                    request_id: row.try_get("request_id")?,
                    subject_ref: row.try_get("subject_ref")?,
                    kind: row.try_get("kind")?,
                    route: row.try_get("route")?,
                    model: row.try_get("model")?,
                    data_class: row.try_get("data_class")?,
                    created_at: row.try_get("created_at")?,
                    sealed: row.try_get("sealed")?,
                    purged_at: row.try_get("purged_at")?,
                })
            })
            .collect()
    }

    /// Purges the content of captures of `kind` (and of `data_class`, if
    /// given) made before `before`; returns how many.
    pub async fn purge_capture_content(
        &self,
        kind: &str,
        data_class: Option<&str>,
        before: i64,
        now: i64,
    ) -> Result<u64> {
        let class = if data_class.is_some() {
            " AND data_class = $4"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE captures SET sealed = NULL, purged_at = $1 \
             WHERE kind = $2 AND created_at < $3 AND sealed IS NOT NULL{class}"
        );
        let mut q = sqlx::query(&sql).bind(now).bind(kind).bind(before);
        if let Some(c) = data_class {
            q = q.bind(c);
        }
        Ok(q.execute(self.pool()).await?.rows_affected())
    }

    /// Deletes capture rows (metadata) made before `before` (and of
    /// `data_class`, if given); returns how many.
    pub async fn delete_captures(&self, data_class: Option<&str>, before: i64) -> Result<u64> {
        let class = if data_class.is_some() {
            " AND data_class = $2"
        } else {
            ""
        };
        let sql = format!("DELETE FROM captures WHERE created_at < $1{class}");
        let mut q = sqlx::query(&sql).bind(before);
        if let Some(c) = data_class {
            q = q.bind(c);
        }
        Ok(q.execute(self.pool()).await?.rows_affected())
    }

    /// Stores a pseudonym unless the subject has it already.
    pub async fn insert_pseudonym(&self, r: &PseudonymRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO pseudonyms (token, subject_ref, kind, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token, subject_ref) DO NOTHING",
        )
        .bind(&r.token)
        .bind(&r.subject_ref)
        .bind(&r.kind)
        .bind(&r.sealed)
        .bind(r.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes pseudonyms stored before `before`; returns how many.
    pub async fn delete_pseudonyms(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM pseudonyms WHERE created_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    /// A subject's pseudonyms.
    pub async fn pseudonyms_of(&self, subject_ref: &str) -> Result<Vec<PseudonymRecord>> {
        let rows = sqlx::query(
            "SELECT token, subject_ref, kind, sealed, created_at FROM pseudonyms \
             WHERE subject_ref = $1 ORDER BY created_at, token",
        )
        .bind(subject_ref)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PseudonymRecord {
                    token: row.try_get("token")?,
                    subject_ref: row.try_get("subject_ref")?,
                    kind: row.try_get("kind")?,
                    sealed: row.try_get("sealed")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Deletes everything filed under a subject: captures, pseudonyms and
    /// consent records (after their key was destroyed). Returns the counts.
    pub async fn delete_subject_records(
        &self,
        subject_ref: &str,
        consent_ref: &str,
    ) -> Result<(u64, u64, u64)> {
        let mut tx = self.pool().begin().await?;
        let c = sqlx::query("DELETE FROM captures WHERE subject_ref = $1")
            .bind(subject_ref)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let p = sqlx::query("DELETE FROM pseudonyms WHERE subject_ref = $1")
            .bind(subject_ref)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let k = sqlx::query("DELETE FROM consents WHERE subject_ref = $1")
            .bind(consent_ref)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((c, p, k))
    }
}
