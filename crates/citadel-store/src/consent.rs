//! Consent of data subjects to purposes. Subjects are stored only as a
//! keyed hash of their id (the caller computes it); each grant is a row,
//! and withdrawal closes the open ones, so the rows are the receipts.

use serde::Serialize;
use sqlx::Row;

use crate::{Result, Store};

/// One grant of consent (and its withdrawal, if withdrawn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRecord {
    /// Receipt id (`c-…`).
    pub id: String,
    /// Keyed hash of the subject's id.
    pub subject_ref: String,
    /// The purpose consented to.
    pub purpose: String,
    /// The version of the consent text agreed to.
    pub version: String,
    /// SHA-256 of that text, hex.
    pub text_sha256: String,
    /// When it was given, Unix ms.
    pub granted_at: i64,
    /// Where it was given (a form, an app, an operator).
    pub source: String,
    /// When it was withdrawn, Unix ms.
    pub withdrawn_at: Option<i64>,
    /// Where it was withdrawn.
    pub withdrawn_source: Option<String>,
}

const COLUMNS: &str = "id, subject_ref, purpose, version, text_sha256, granted_at, source, \
                       withdrawn_at, withdrawn_source";

fn from_row(row: &sqlx::any::AnyRow) -> Result<ConsentRecord> {
    Ok(ConsentRecord {
        id: row.try_get("id")?,
        subject_ref: row.try_get("subject_ref")?,
        purpose: row.try_get("purpose")?,
        version: row.try_get("version")?,
        text_sha256: row.try_get("text_sha256")?,
        granted_at: row.try_get("granted_at")?,
        source: row.try_get("source")?,
        withdrawn_at: row.try_get("withdrawn_at")?,
        withdrawn_source: row.try_get("withdrawn_source")?,
    })
}

impl Store {
    /// Records a grant. A grant for a purpose the subject already holds
    /// (same version, not withdrawn) is not repeated: the open one is
    /// returned instead.
    pub async fn grant_consent(&self, record: &ConsentRecord) -> Result<ConsentRecord> {
        // One statement: another open grant (the unique index on open
        // grants) makes it do nothing, on any backend and replica.
        sqlx::query(
            "INSERT INTO consents (id, subject_ref, purpose, version, text_sha256, granted_at, source) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&record.id)
        .bind(&record.subject_ref)
        .bind(&record.purpose)
        .bind(&record.version)
        .bind(&record.text_sha256)
        .bind(record.granted_at)
        .bind(&record.source)
        .execute(self.pool())
        .await?;
        self.current_consent(&record.subject_ref, &record.purpose, &record.version)
            .await?
            .ok_or_else(|| crate::StoreError::NotFound("the consent just granted".into()))
    }

    /// Withdraws every open grant of `purpose` by the subject; returns how
    /// many were open.
    pub async fn withdraw_consent(
        &self,
        subject_ref: &str,
        purpose: &str,
        at: i64,
        source: &str,
    ) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE consents SET withdrawn_at = $1, withdrawn_source = $2 \
             WHERE subject_ref = $3 AND purpose = $4 AND withdrawn_at IS NULL",
        )
        .bind(at)
        .bind(source)
        .bind(subject_ref)
        .bind(purpose)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The subject's open grant of `purpose` at `version`, if any.
    pub async fn current_consent(
        &self,
        subject_ref: &str,
        purpose: &str,
        version: &str,
    ) -> Result<Option<ConsentRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM consents WHERE subject_ref = $1 AND purpose = $2 \
             AND version = $3 AND withdrawn_at IS NULL ORDER BY granted_at DESC LIMIT 1"
        ))
        .bind(subject_ref)
        .bind(purpose)
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every grant the subject ever gave, oldest first.
    pub async fn consents_of(&self, subject_ref: &str) -> Result<Vec<ConsentRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM consents WHERE subject_ref = $1 ORDER BY granted_at, id"
        ))
        .bind(subject_ref)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }
}
