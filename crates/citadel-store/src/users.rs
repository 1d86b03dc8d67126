//! Users and roles.

use serde::Serialize;
use sqlx::Row;

use crate::{bump_enforcement_version, json_list, map_unique, Result, Store, StoreError};

/// A person known to Citadel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Stable id.
    pub id: String,
    /// Unique login name.
    pub name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// A disabled user's credentials stop working on the next request.
    pub disabled: bool,
    /// Unix ms.
    pub created_at: i64,
}

/// A role (a Cedar group principals belong to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleRecord {
    /// Unique name.
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// Built-in roles cannot be deleted.
    pub builtin: bool,
    /// Unix ms.
    pub created_at: i64,
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        roles: json_list(&row.try_get::<String, _>("roles")?)?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates a user; `Conflict` if the name is taken.
    pub async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO users (id, name, roles, disabled, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(serde_json::to_string(&user.roles).unwrap_or_default())
        .bind(user.disabled as i64)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("user {}", user.name)))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows =
            sqlx::query("SELECT id, name, roles, disabled, created_at FROM users ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// One user by name or id.
    pub async fn find_user(&self, name_or_id: &str) -> Result<UserRecord> {
        let row = sqlx::query(
            "SELECT id, name, roles, disabled, created_at FROM users WHERE name = $1 OR id = $1",
        )
        .bind(name_or_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user {name_or_id}")))?;
        user_from_row(&row)
    }

    /// Erases what names a user: the account is disabled, renamed to
    /// `erased-<id prefix>`, its password and authenticators are deleted,
    /// its sessions ended and its API keys revoked. The id stays, so
    /// pseudonymous references in the audit log still line up.
    pub async fn erase_user(&self, name_or_id: &str, at: i64) -> Result<UserRecord> {
        let user = self.find_user(name_or_id).await?;
        let name = format!("erased-{}", &user.id[..user.id.len().min(8)]);
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE users SET disabled = 1, name = $1, password_hash = NULL WHERE id = $2")
            .bind(&name)
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, owner_name = $2 WHERE owner_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(&name)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        for table in [
            "totp_authenticators",
            "recovery_codes",
            "webauthn_credentials",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM external_identities WHERE user_id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        // A risk score's reason is free text that may name the person.
        sqlx::query("DELETE FROM risk_scores WHERE principal_id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        crate::identity::revoke_user_sessions(&mut tx, &user.id, "erased", at).await?;
        // Where the person signed in from names them too. (The throttle's
        // counters hold only a digest of the name.)
        sqlx::query(
            "UPDATE sessions SET source_ip = 'erased', user_agent = NULL WHERE user_id = $1",
        )
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;

        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(UserRecord {
            name,
            disabled: true,
            ..user
        })
    }

    /// Disables or re-enables a user.
    pub async fn set_user_disabled(&self, name_or_id: &str, disabled: bool) -> Result<UserRecord> {
        let user = self.find_user(name_or_id).await?;
        self.change_enforcement(
            sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
                .bind(disabled as i64)
                .bind(&user.id),
        )
        .await?;
        Ok(UserRecord { disabled, ..user })
    }

    /// The user linked to an external identity (`provider`, `subject`).
    pub async fn linked_user(&self, provider: &str, subject: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM external_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Creates `user` linked to an external identity, in one transaction.
    pub async fn create_linked_user(
        &self,
        user: &UserRecord,
        provider: &str,
        subject: &str,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO users (id, name, roles, disabled, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(serde_json::to_string(&user.roles).unwrap_or_default())
        .bind(user.disabled as i64)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("user {}", user.name)))?;
        sqlx::query(
            "INSERT INTO external_identities (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(provider)
        .bind(subject)
        .bind(&user.id)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, "external identity"))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a user's roles (an external identity's groups changed).
    pub async fn set_user_roles(&self, user_id: &str, roles: &[String]) -> Result<()> {
        self.change_enforcement(
            sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
                .bind(serde_json::to_string(roles).unwrap_or_default())
                .bind(user_id),
        )
        .await?;
        Ok(())
    }

    /// Creates a role; `Conflict` if it exists.
    pub async fn create_role(&self, role: &RoleRecord) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO roles (name, description, builtin, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&role.name)
        .bind(&role.description)
        .bind(role.builtin as i64)
        .bind(role.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("role {}", role.name)))?;
        bump_enforcement_version(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// All roles, by name.
    pub async fn list_roles(&self) -> Result<Vec<RoleRecord>> {
        let rows =
            sqlx::query("SELECT name, description, builtin, created_at FROM roles ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                Ok(RoleRecord {
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    builtin: row.try_get::<i64, _>("builtin")? != 0,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}
