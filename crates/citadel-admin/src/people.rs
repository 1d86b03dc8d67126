//! People's credentials on the admin API: passwords, second factors,
//! sessions and sign-in locks. Changing a person's credentials is a way to
//! become them, so on top of the operation itself the caller must be
//! allowed to grant every role the person holds (`grant_role`): an
//! operator cannot reset an administrator's password or factors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use citadel_core::{clock, ErrorCode};
use citadel_store::UserRecord;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::api::{authorize, authorize_grants, json_body, record_change, ApiResult, Caller};
use crate::{AdminError, AdminState};

/// Authorizes `operation` on a person's credentials and returns the person.
async fn credentials_of(
    state: &AdminState,
    caller: &Caller,
    operation: &'static str,
    name: &str,
) -> Result<UserRecord, AdminError> {
    authorize(state, caller, operation, "users").await?;
    let user = state.store.find_user(name).await?;
    authorize_grants(state, caller, &user.roles).await?;
    Ok(user)
}

fn factor_error(e: citadel_identity::mfa::MfaError) -> AdminError {
    match e {
        citadel_identity::mfa::MfaError::Store(s) => s.into(),
        other => {
            tracing::error!(error = %other, "second-factor operation failed");
            AdminError::new(
                ErrorCode::Internal,
                "the operation failed; see the server log",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPassword {
    password: Zeroizing<String>,
}

/// `PUT /api/v1/users/{name}/password`: sets a password (policy-checked)
/// and ends the person's sessions.
pub(crate) async fn set_password(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<NewPassword>, JsonRejection>,
) -> ApiResult {
    let body = json_body(body)?;
    let user = credentials_of(&state, &caller, "users.password", &name).await?;
    let (user, ended) = citadel_identity::set_password(
        &state.store,
        &state.gateway.signin.passwords,
        &user.id,
        body.password,
    )
    .await?;
    state.gateway.signin.sessions.forget_all();
    record_change(
        &state,
        &caller,
        "users.password",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(
        json!({"user": user.name, "password_set": true, "sessions_ended": ended}),
    ))
}

/// `POST /api/v1/users/{name}/mfa/totp`: makes (or replaces) the person's
/// TOTP authenticator; the answer holds the `otpauth://` URI, the secret and
/// an SVG QR code, shown this once.
pub(crate) async fn enroll_totp(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.mfa_enroll", &name).await?;
    let enrollment = state
        .gateway
        .signin
        .factors
        .enroll_totp(&user)
        .await
        .map_err(factor_error)?;
    record_change(
        &state,
        &caller,
        "users.mfa_enroll",
        json!({"type": "User", "uid": user.id, "factor": "totp"}),
    )
    .await?;
    Ok(Json(json!({
        "user": user.name,
        "otpauth_uri": enrollment.otpauth_uri.as_str(),
        "secret": enrollment.secret.as_str(),
        "algorithm": enrollment.algorithm,
        "digits": enrollment.digits,
        "period": enrollment.period,
        "qr_svg": enrollment.qr_svg.as_str(),
    })))
}

/// `DELETE /api/v1/users/{name}/mfa/totp`.
pub(crate) async fn remove_totp(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.mfa_remove", &name).await?;
    let removed = state
        .gateway
        .signin
        .factors
        .remove_totp(&user.id)
        .await
        .map_err(factor_error)?;
    record_change(
        &state,
        &caller,
        "users.mfa_remove",
        json!({"type": "User", "uid": user.id, "factor": "totp"}),
    )
    .await?;
    Ok(Json(json!({"user": user.name, "removed": removed})))
}

/// `POST /api/v1/users/{name}/mfa/recovery-codes`: a new set, shown once.
pub(crate) async fn new_recovery_codes(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.mfa_enroll", &name).await?;
    let codes = state
        .gateway
        .signin
        .factors
        .new_recovery_codes(&user.id)
        .await
        .map_err(factor_error)?;
    record_change(
        &state,
        &caller,
        "users.mfa_enroll",
        json!({"type": "User", "uid": user.id, "factor": "recovery_codes"}),
    )
    .await?;
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    Ok(Json(json!({"user": user.name, "recovery_codes": codes})))
}

/// `GET /api/v1/users/{name}/mfa`: which factors the person has.
pub(crate) async fn mfa_status(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "users.list", "users").await?;
    let user = state.store.find_user(&name).await?;
    let factors = &state.gateway.signin.factors;
    let totp = factors.has_totp(&user.id).await.map_err(factor_error)?;
    let left = factors
        .recovery_codes_left(&user.id)
        .await
        .map_err(factor_error)?;
    let passkeys = state.store.passkeys_of(&user.id).await?;
    Ok(Json(
        json!({"user": user.name, "totp": totp, "recovery_codes_left": left, "passkeys": passkeys}),
    ))
}

/// `DELETE /api/v1/users/{name}/mfa/passkeys/{credential_id}`: removes a
/// lost or replaced authenticator.
pub(crate) async fn remove_passkey(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path((name, credential_id)): Path<(String, String)>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.mfa_remove", &name).await?;
    if !state.store.delete_passkey(&user.id, &credential_id).await? {
        return Err(AdminError::new(
            ErrorCode::NotFound,
            format!("{} has no passkey {credential_id}", user.name),
        ));
    }
    record_change(
        &state,
        &caller,
        "users.mfa_remove",
        json!({"type": "User", "uid": user.id, "factor": "passkey", "credential_id": credential_id}),
    )
    .await?;
    Ok(Json(json!({"user": user.name, "removed": true})))
}

/// `GET /api/v1/users/{name}/sessions`: live sessions, newest first.
pub(crate) async fn list_sessions(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "users.sessions", "users").await?;
    let user = state.store.find_user(&name).await?;
    let sessions = state
        .store
        .list_sessions(&user.id, Some(clock::now_ms()))
        .await?;
    Ok(Json(json!({"user": user.name, "sessions": sessions})))
}

/// `POST /api/v1/users/{name}/sign-out`: ends every session of the person,
/// on every replica at their next request.
pub(crate) async fn sign_out(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.sign_out", &name).await?;
    let ended = state
        .gateway
        .signin
        .sessions
        .revoke_all_for(&user.id, "sign_out_everywhere", clock::now_ms())
        .await?;
    record_change(
        &state,
        &caller,
        "users.sign_out",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(json!({"user": user.name, "sessions_ended": ended})))
}

/// `POST /api/v1/users/{name}/unlock`: lifts sign-in locks on the account.
pub(crate) async fn unlock(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let user = credentials_of(&state, &caller, "users.unlock", &name).await?;
    let cleared = state
        .gateway
        .signin
        .throttle
        .unlock_account(&user.name)
        .await?;
    record_change(
        &state,
        &caller,
        "users.unlock",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(json!({"user": user.name, "locks_cleared": cleared})))
}
