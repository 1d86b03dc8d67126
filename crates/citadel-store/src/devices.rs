//! Devices (enrolment tokens, certificates, posture) and workload
//! identities. Every change to what may authenticate bumps the enforcement
//! version, so each replica's snapshot follows within its poll interval.

use serde::Serialize;
use sqlx::Row;

use crate::{bump_enforcement_version, json_list, map_unique, Result, Store, StoreError};

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// Stable id (`d-…`).
    pub id: String,
    /// A name for people.
    pub name: String,
    /// The owner, if the enrolment token named one.
    pub user_id: Option<String>,
    /// SHA-256 of its certificate, hex.
    pub fingerprint: String,
    /// Its public key (base64 of the uncompressed P-256 point).
    pub public_key: String,
    /// Unix ms.
    pub created_at: i64,
    /// When its certificate expires, Unix ms.
    pub cert_not_after: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// The latest posture report it signed (JSON).
    pub posture: Option<serde_json::Value>,
    /// When that report was accepted, Unix ms.
    pub posture_at: Option<i64>,
    /// Whether that report met the posture requirements.
    pub compliant: bool,
}

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadRecord {
    /// `spiffe://trust-domain/path`.
    pub spiffe_id: String,
    /// Roles it acts with.
    pub roles: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
    /// When it was revoked (its certificates stop working).
    pub revoked_at: Option<i64>,
}

const DEVICE_COLUMNS: &str =
    "id, name, user_id, fingerprint, public_key, created_at, cert_not_after, \
     revoked_at, posture, posture_at, compliant";

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<DeviceRecord> {
    let posture: Option<String> = row.try_get("posture")?;
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user_id: row.try_get("user_id")?,
        fingerprint: row.try_get("fingerprint")?,
        public_key: row.try_get("public_key")?,
        created_at: row.try_get("created_at")?,
        cert_not_after: row.try_get("cert_not_after")?,
        revoked_at: row.try_get("revoked_at")?,
        posture: posture
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        posture_at: row.try_get("posture_at")?,
        compliant: row.try_get::<i64, _>("compliant")? != 0,
    })
}

impl Store {
    /// Stores a new enrolment token (its hash).
    pub async fn insert_enrollment_token(
        &self,
        id: &str,
        token_hash: &str,
        user_id: Option<&str>,
        created_at: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_enrollment_tokens (id, token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(token_hash)
        .bind(user_id)
        .bind(created_at)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .map_err(|e| map_unique(e, "enrolment token"))?;
        Ok(())
    }

    /// Whether an enrolment token is usable now (unused, unexpired); it is
    /// spent only by [`Store::enroll_device`].
    pub async fn enrollment_token_usable(&self, token_hash: &str, now: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_enrollment_tokens \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(n == 1)
    }

    /// Uses an enrolment token for `device` in one transaction: the token
    /// must exist, be unexpired and unused; the device is stored with it.
    /// `Ok(None)` when the token is unknown, expired or used.
    pub async fn enroll_device(
        &self,
        token_hash: &str,
        now: i64,
        device: &DeviceRecord,
    ) -> Result<Option<DeviceRecord>> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT id, user_id FROM device_enrollment_tokens \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let token_id: String = row.try_get("id")?;
        let user_id: Option<String> = row.try_get("user_id")?;
        let used = sqlx::query(
            "UPDATE device_enrollment_tokens SET used_at = $1, device_id = $2 \
             WHERE id = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&device.id)
        .bind(&token_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if used != 1 {
            return Ok(None);
        }
        let device = DeviceRecord {
            user_id,
            ..device.clone()
        };
        sqlx::query(&format!(
            "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&device.id)
        .bind(&device.name)
        .bind(&device.user_id)
        .bind(&device.fingerprint)
        .bind(&device.public_key)
        .bind(device.created_at)
        .bind(device.cert_not_after)
        .bind(device.revoked_at)
        .bind(device.posture.as_ref().map(|p| p.to_string()))
        .bind(device.posture_at)
        .bind(device.compliant as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, "device"))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(device))
    }

    /// All devices, newest first.
    pub async fn list_devices(&self) -> Result<Vec<DeviceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at DESC"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// One device by id.
    pub async fn get_device(&self, id: &str) -> Result<DeviceRecord> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("device {id}")))?;
        device_from_row(&row)
    }

    /// Records a posture report a device signed.
    pub async fn set_device_posture(
        &self,
        id: &str,
        posture: &serde_json::Value,
        compliant: bool,
        at: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(
            "UPDATE devices SET posture = $1, posture_at = $2, compliant = $3 \
             WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(posture.to_string())
        .bind(at)
        .bind(compliant as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("active device {id}")));
        }
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a device; whether it was active.
    pub async fn revoke_device(&self, id: &str, at: i64) -> Result<bool> {
        let n = self
            .change_enforcement(
                sqlx::query(
                    "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(at)
                .bind(id),
            )
            .await?;
        if n == 0 {
            // Distinguish "no such device" from "already revoked".
            self.get_device(id).await?;
        }
        Ok(n > 0)
    }

    /// Creates or updates a workload's roles (not if it was revoked).
    pub async fn upsert_workload(
        &self,
        spiffe_id: &str,
        roles: &[String],
        at: i64,
    ) -> Result<WorkloadRecord> {
        let mut tx = self.pool().begin().await?;
        let roles_json = serde_json::to_string(roles).unwrap_or_default();
        let existing = sqlx::query("SELECT revoked_at FROM workloads WHERE spiffe_id = $1")
            .bind(spiffe_id)
            .fetch_optional(&mut *tx)
            .await?;
        match existing {
            Some(row) => {
                if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "workload {spiffe_id} was revoked; it cannot be issued certificates again"
                    )));
                }
                sqlx::query("UPDATE workloads SET roles = $1 WHERE spiffe_id = $2")
                    .bind(&roles_json)
                    .bind(spiffe_id)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO workloads (spiffe_id, roles, created_at) VALUES ($1, $2, $3)",
                )
                .bind(spiffe_id)
                .bind(&roles_json)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(WorkloadRecord {
            spiffe_id: spiffe_id.to_owned(),
            roles: roles.to_vec(),
            created_at: at,
            revoked_at: None,
        })
    }

    /// All workloads.
    pub async fn list_workloads(&self) -> Result<Vec<WorkloadRecord>> {
        let rows = sqlx::query(
            "SELECT spiffe_id, roles, created_at, revoked_at FROM workloads ORDER BY spiffe_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkloadRecord {
                    spiffe_id: row.try_get("spiffe_id")?,
                    roles: json_list(&row.try_get::<String, _>("roles")?)?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Unrevoked workloads with their roles: `(SPIFFE ID, roles)`.
    pub async fn active_workloads(&self) -> Result<Vec<(String, Vec<String>)>> {
        Ok(self
            .list_workloads()
            .await?
            .into_iter()
            .filter(|w| w.revoked_at.is_none())
            .map(|w| (w.spiffe_id, w.roles))
            .collect())
    }

    /// Revokes a workload: its certificates stop working.
    pub async fn revoke_workload(&self, spiffe_id: &str, at: i64) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE workloads SET revoked_at = $1 WHERE spiffe_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(spiffe_id);
        let n = self.change_enforcement(query).await?;
        Ok(n > 0)
    }
}

/// A principal's risk score as last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskRecord {
    /// The principal.
    pub principal_id: String,
    /// 0..100 at `updated_at` (it decays from there).
    pub score: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Why (`failed_sign_ins`, an operator's note, a detection finding).
    pub reason: String,
}

impl Store {
    /// Every stored risk score.
    pub async fn risk_scores(&self) -> Result<Vec<RiskRecord>> {
        let rows = sqlx::query("SELECT principal_id, score, updated_at, reason FROM risk_scores")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RiskRecord {
                    principal_id: row.try_get("principal_id")?,
                    score: row.try_get("score")?,
                    updated_at: row.try_get("updated_at")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Sets a principal's risk score.
    pub async fn set_risk(&self, record: &RiskRecord) -> Result<()> {
        self.change_enforcement(
            sqlx::query(
                "INSERT INTO risk_scores (principal_id, score, updated_at, reason) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (principal_id) DO UPDATE SET score = $2, updated_at = $3, reason = $4",
            )
            .bind(&record.principal_id)
            .bind(record.score)
            .bind(record.updated_at)
            .bind(&record.reason),
        )
        .await?;
        Ok(())
    }
}
