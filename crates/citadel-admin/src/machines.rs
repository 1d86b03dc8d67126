//! Devices and workloads on the admin API: enrolment tokens, the enrolled
//! devices and their posture, revocation of devices and workloads.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use citadel_core::clock;
use serde::Deserialize;
use serde_json::json;

use crate::api::{authorize, json_body, record_change, ApiResult, Caller};
use crate::{AdminError, AdminState};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// Owner (name or id).
    #[serde(default)]
    user: Option<String>,
}

/// `POST /api/v1/devices/enroll-tokens`: a one-time token, shown once.
pub(crate) async fn enroll_token(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "devices.enroll", "devices").await?;
    let body = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => NewToken::default(),
        other => json_body(other)?,
    };
    let owner = match &body.user {
        Some(u) => Some(state.store.find_user(u).await?),
        None => None,
    };
    let (token, id, expires_at) = state
        .gateway
        .machines
        .new_enrollment_token(owner.as_ref().map(|u| u.id.as_str()), clock::now_ms())
        .await?;
    record_change(
        &state,
        &caller,
        "devices.enroll_token",
        json!({"type": "DeviceEnrollmentToken", "uid": id}),
    )
    .await?;
    Ok(Json(json!({
        "token": token.as_str(),
        "id": id,
        "user": owner.map(|u| u.name),
        "expires_at": expires_at,
    })))
}

/// `GET /api/v1/devices`.
pub(crate) async fn list_devices(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "devices.list", "devices").await?;
    Ok(Json(json!({"devices": state.store.list_devices().await?})))
}

/// `POST /api/v1/devices/{id}/revoke`: effective on the next request.
pub(crate) async fn revoke_device(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "devices.revoke", "devices").await?;
    let revoked = state.store.revoke_device(&id, clock::now_ms()).await?;
    refresh(&state).await;
    record_change(
        &state,
        &caller,
        "devices.revoke",
        json!({"type": "Device", "uid": id}),
    )
    .await?;
    Ok(Json(json!({"device_id": id, "revoked": revoked})))
}

/// `GET /api/v1/workloads`.
pub(crate) async fn list_workloads(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "workloads.list", "workloads").await?;
    Ok(Json(
        json!({"workloads": state.store.list_workloads().await?}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkloadRef {
    spiffe_id: String,
}

/// `POST /api/v1/workloads/revoke` `{"spiffe_id"}`.
pub(crate) async fn revoke_workload(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<WorkloadRef>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "workloads.revoke", "workloads").await?;
    let body = json_body(body)?;
    let revoked = state
        .store
        .revoke_workload(&body.spiffe_id, clock::now_ms())
        .await?;
    if !revoked
        && !state
            .store
            .list_workloads()
            .await?
            .iter()
            .any(|w| w.spiffe_id == body.spiffe_id)
    {
        return Err(AdminError::new(
            citadel_core::ErrorCode::NotFound,
            format!("workload {} does not exist", body.spiffe_id),
        ));
    }
    refresh(&state).await;
    record_change(
        &state,
        &caller,
        "workloads.revoke",
        json!({"type": "Workload", "uid": body.spiffe_id}),
    )
    .await?;
    Ok(Json(
        json!({"spiffe_id": body.spiffe_id, "revoked": revoked}),
    ))
}

async fn refresh(state: &AdminState) {
    if let Err(e) = state.gateway.machines.refresh().await {
        tracing::warn!(error = %e, "device refresh after an admin change failed; the poller will retry");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RiskQuery {
    principal: String,
}

/// `GET /api/v1/risk?principal=…`: the current (decayed) score.
pub(crate) async fn get_risk(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(query): axum::extract::Query<RiskQuery>,
) -> ApiResult {
    authorize(&state, &caller, "risk.read", "risk").await?;
    let id = citadel_identity::risk::resolve_subject(&state.store, &query.principal)
        .await?
        .id;
    let score = state.gateway.verifier.risk.score(&id, clock::now_ms());
    Ok(Json(json!({"principal": id, "risk_score": score})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRisk {
    principal: String,
    score: i64,
    reason: String,
}

/// `PUT /api/v1/risk` `{"principal", "score", "reason"}`: sets a score
/// (0..100); every replica uses it from its next request.
pub(crate) async fn set_risk(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SetRisk>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "risk.set", "risk").await?;
    let body = json_body(body)?;
    if !(0..=100).contains(&body.score) || body.reason.trim().is_empty() {
        return Err(AdminError::new(
            citadel_core::ErrorCode::InvalidRequest,
            "score is 0 to 100 and a reason is required",
        ));
    }
    let subject = citadel_identity::risk::resolve_subject(&state.store, &body.principal).await?;
    // Changing a person's score changes what they may do: the caller must
    // be allowed to grant each of their roles (an operator cannot clear an
    // administrator's score).
    if let Some(roles) = &subject.user_roles {
        crate::api::authorize_grants(&state, &caller, roles).await?;
    }
    let id = subject.id;
    let record = state
        .gateway
        .verifier
        .risk
        .set(&id, body.score, &body.reason, clock::now_ms())
        .await?;
    record_change(
        &state,
        &caller,
        "risk.set",
        json!({"type": "Principal", "uid": id, "score": record.score, "reason": record.reason}),
    )
    .await?;
    Ok(Json(
        json!({"principal": id, "risk_score": record.score, "reason": record.reason}),
    ))
}
