//! The key hierarchy on the admin API: data key versions with their ages,
//! and rotation (recorded; never key material).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::api::{authorize, json_body, record_change, ApiResult, Caller};
use crate::AdminState;

/// `GET /api/v1/data-keys`: every data key version with its age and root
/// (no key material), for operators and compliance checks.
pub(crate) async fn list(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "data_keys.read", "data_keys").await?;
    let keys = state.gateway.signin.factors.keys();
    keys.refresh().await.map_err(key_error)?;
    let now = citadel_core::clock::now_ms();
    let list: Vec<serde_json::Value> = keys
        .status()
        .into_iter()
        .map(|k| {
            json!({"purpose": k.purpose, "version": k.version, "current": k.current,
                   "created_at": citadel_core::clock::rfc3339(k.created_at),
                   "age_days": (now - k.created_at).max(0) / 86_400_000, "root": k.root})
        })
        .collect();
    Ok(Json(json!({"root": keys.root_id(), "keys": list})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    /// Only this purpose (default: all).
    #[serde(default)]
    purpose: Option<String>,
}

/// `POST /api/v1/data-keys/rotate` `{"purpose"?}`: new data key versions;
/// every replica seals with them from its next refresh (a minute).
pub(crate) async fn rotate(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Rotate>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "data_keys.rotate", "data_keys").await?;
    let body = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => Rotate::default(),
        other => json_body(other)?,
    };
    let keys = state.gateway.signin.factors.keys();
    let purposes: Vec<String> = match body.purpose {
        Some(p) => vec![p],
        None => keys.purposes().to_vec(),
    };
    let mut rotated = Vec::new();
    for p in &purposes {
        let version = keys.rotate(p).await.map_err(key_error)?;
        rotated.push(json!({"purpose": p, "version": version}));
    }
    record_change(
        &state,
        &caller,
        "data_keys.rotate",
        json!({"type": "DataKey", "uid": purposes.join(","), "rotated": rotated}),
    )
    .await?;
    Ok(Json(json!({"rotated": rotated})))
}

fn key_error(e: citadel_crypto::KeyError) -> crate::AdminError {
    match e {
        citadel_crypto::KeyError::UnknownPurpose(p) => crate::AdminError::new(
            citadel_core::ErrorCode::InvalidRequest,
            format!("unknown key purpose `{p}`"),
        ),
        other => {
            tracing::error!(error = %other, "data key operation failed");
            crate::AdminError::new(
                citadel_core::ErrorCode::Internal,
                "the data key operation failed; see the server log",
            )
        }
    }
}
