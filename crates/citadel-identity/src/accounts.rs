//! Creating users, roles and keys: the one place the CLI and the admin API
//! both call, so both say and check the same things.

use citadel_core::{clock::now_ms, PrincipalKind, BUILTIN_ROLES};
use citadel_store::{ApiKeyRecord, RoleRecord, Store, StoreError, UserRecord};

use crate::api_key::{KeyHasher, NewApiKey};

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A named role does not exist.
    #[error("unknown role `{0}`; list roles with `citadel role list`")]
    UnknownRole(String),
    /// A name is empty or has characters outside `[A-Za-z0-9._@-]`.
    #[error("invalid name `{0}`: use 1–64 letters, digits, `.`, `_`, `@` or `-`")]
    InvalidName(String),
    /// No role was given.
    #[error("at least one role is required")]
    NoRole,
    /// A user-owned key may only carry roles its user holds.
    #[error("user `{user}` does not hold role `{role}`; a user's key cannot carry more than the user's roles")]
    RoleNotHeld {
        /// The owning user.
        user: String,
        /// The role asked for.
        role: String,
    },
    /// The password does not meet the policy.
    #[error("{0}")]
    WeakPassword(#[from] crate::password::PasswordProblem),
    /// The password could not be hashed.
    #[error(transparent)]
    Hash(#[from] crate::password::HashError),
    /// Storage refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.to_owned()))
    }
}

async fn check_roles(store: &Store, roles: &[String]) -> Result<(), AccountError> {
    if roles.is_empty() {
        return Err(AccountError::NoRole);
    }
    let custom = store.list_roles().await?;
    for role in roles {
        let known =
            BUILTIN_ROLES.contains(&role.as_str()) || custom.iter().any(|r| &r.name == role);
        if !known {
            return Err(AccountError::UnknownRole(role.clone()));
        }
    }
    Ok(())
}

/// Every role, built in first, then custom ones by name.
pub async fn all_role_names(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut roles: Vec<String> = BUILTIN_ROLES.iter().map(|r| r.to_string()).collect();
    for r in store.list_roles().await? {
        if !roles.contains(&r.name) {
            roles.push(r.name);
        }
    }
    Ok(roles)
}

/// Creates a user with roles.
pub async fn create_user(
    store: &Store,
    name: &str,
    roles: Vec<String>,
) -> Result<UserRecord, AccountError> {
    check_name(name)?;
    check_roles(store, &roles).await?;
    let user = UserRecord {
        id: format!("u-{}", uuid::Uuid::new_v4().simple()),
        name: name.to_owned(),
        roles,
        disabled: false,
        created_at: now_ms(),
    };
    store.create_user(&user).await?;
    Ok(user)
}

/// Sets (or replaces) a user's password after checking it against the
/// policy. Ends the user's sessions; returns how many.
pub async fn set_password(
    store: &Store,
    passwords: &crate::Passwords,
    name_or_id: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<(UserRecord, u64), AccountError> {
    let user = store.find_user(name_or_id).await?;
    passwords.check_policy(&user.name, &password)?;
    let hash = passwords.hash(password).await?;
    let ended = store.set_password_hash(&user.id, &hash, now_ms()).await?;
    Ok((user, ended))
}

/// Creates a custom role.
pub async fn create_role(
    store: &Store,
    name: &str,
    description: &str,
) -> Result<RoleRecord, AccountError> {
    check_name(name)?;
    if BUILTIN_ROLES.contains(&name) {
        return Err(StoreError::Conflict(format!("role {name} is built in")).into());
    }
    let role = RoleRecord {
        name: name.to_owned(),
        description: description.to_owned(),
        builtin: false,
        created_at: now_ms(),
    };
    store.create_role(&role).await?;
    Ok(role)
}

/// What a new key should be.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    /// Key name (also the service account's name when no user owns it).
    pub name: String,
    /// Roles the key acts with.
    pub roles: Vec<String>,
    /// Owning user (name or id); `None` makes a service-account key.
    pub user: Option<String>,
    /// Lifetime in milliseconds.
    pub expires_in_ms: Option<i64>,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
}

/// Creates an API key; the returned secret is shown once and never stored.
pub async fn create_api_key(
    store: &Store,
    hasher: &KeyHasher,
    request: KeyRequest,
) -> Result<(ApiKeyRecord, NewApiKey), AccountError> {
    check_name(&request.name)?;
    check_roles(store, &request.roles).await?;
    let new = hasher.generate();
    let (owner_kind, owner_id, owner_name) = match &request.user {
        Some(user) => {
            let u = store.find_user(user).await?;
            if let Some(role) = request.roles.iter().find(|r| !u.roles.contains(r)) {
                return Err(AccountError::RoleNotHeld {
                    user: u.name,
                    role: role.clone(),
                });
            }
            (PrincipalKind::User, u.id, u.name)
        }
        None => (
            PrincipalKind::ServiceAccount,
            format!("sa-{}", new.id),
            request.name.clone(),
        ),
    };
    let now = now_ms();
    let record = ApiKeyRecord {
        id: new.id.clone(),
        name: request.name,
        owner_kind: owner_kind.as_str().to_owned(),
        owner_id,
        owner_name,
        roles: request.roles,
        hash: new.hash.clone(),
        created_at: now,
        expires_at: request.expires_in_ms.map(|d| now.saturating_add(d)),
        revoked_at: None,
        last_used_at: None,
        rpm: request.rpm,
        tpm: request.tpm,
    };
    store.insert_api_key(&record).await?;
    Ok((record, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthFailure, KeyRegistry};
    use zeroize::Zeroizing;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    fn hasher() -> KeyHasher {
        KeyHasher::new(Zeroizing::new(vec![1u8; 32]))
    }

    #[tokio::test]
    async fn key_lifecycle_create_verify_revoke_expire_disable() {
        let (store, _d) = store().await;
        let registry = KeyRegistry::load(store.clone(), hasher()).await.unwrap();
        let (rec, new) = create_api_key(
            &store,
            registry.hasher(),
            KeyRequest {
                name: "ci".into(),
                roles: vec!["service".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(registry.refresh_if_changed().await.unwrap());
        let now = now_ms();
        let ok = registry.verify(&new.secret, now).unwrap();
        assert_eq!(ok.principal.roles, vec!["service"]);
        assert_eq!(ok.principal.credential, format!("api_key:{}", rec.id));

        // Wrong secret with the right id.
        let mut wrong = new.secret.to_string();
        wrong.replace_range(wrong.len() - 4.., "AAAA");
        assert_eq!(
            registry.verify(&wrong, now).unwrap_err(),
            AuthFailure::WrongSecret
        );

        store.revoke_api_key(&rec.id, now).await.unwrap();
        registry.refresh_if_changed().await.unwrap();
        assert_eq!(
            registry.verify(&new.secret, now).unwrap_err(),
            AuthFailure::Revoked
        );

        let (_, short) = create_api_key(
            &store,
            registry.hasher(),
            KeyRequest {
                name: "short".into(),
                roles: vec!["developer".into()],
                expires_in_ms: Some(1_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        registry.refresh_if_changed().await.unwrap();
        assert!(registry.verify(&short.secret, now_ms()).is_ok());
        assert_eq!(
            registry
                .verify(&short.secret, now_ms() + 2_000)
                .unwrap_err(),
            AuthFailure::Expired
        );

        let alice = create_user(&store, "alice", vec!["developer".into()])
            .await
            .unwrap();
        let (_, hers) = create_api_key(
            &store,
            registry.hasher(),
            KeyRequest {
                name: "alice-laptop".into(),
                roles: vec!["developer".into()],
                user: Some("alice".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        registry.refresh_if_changed().await.unwrap();
        assert_eq!(
            registry.verify(&hers.secret, now).unwrap().principal.id,
            alice.id
        );
        store.set_user_disabled("alice", true).await.unwrap();
        registry.refresh_if_changed().await.unwrap();
        assert_eq!(
            registry.verify(&hers.secret, now).unwrap_err(),
            AuthFailure::OwnerDisabled
        );

        registry.flush_last_used().await.unwrap();
        assert!(store
            .get_api_key(&short.id)
            .await
            .unwrap()
            .last_used_at
            .is_some());
    }

    #[tokio::test]
    async fn bad_requests_change_nothing() {
        let (store, _d) = store().await;
        let h = hasher();
        let bad_role = KeyRequest {
            name: "x".into(),
            roles: vec!["wizard".into()],
            ..Default::default()
        };
        assert!(matches!(
            create_api_key(&store, &h, bad_role).await,
            Err(AccountError::UnknownRole(_))
        ));
        assert!(matches!(
            create_user(&store, "bad name!", vec!["admin".into()]).await,
            Err(AccountError::InvalidName(_))
        ));
        assert!(matches!(
            create_user(&store, "bob", vec![]).await,
            Err(AccountError::NoRole)
        ));
        assert!(store.list_api_keys().await.unwrap().is_empty());
        assert!(store.list_users().await.unwrap().is_empty());
        create_role(&store, "analyst", "reads reports")
            .await
            .unwrap();
        create_user(&store, "carol", vec!["analyst".into()])
            .await
            .unwrap();
        assert!(create_role(&store, "admin", "").await.is_err());
    }
}
