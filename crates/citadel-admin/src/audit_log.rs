//! The audit log on the admin listener: the C2SP tlog-tiles read API
//! (`/audit/log/checkpoint`, `/audit/log/tile/<L>/<N>[.p/<W>]`,
//! `/audit/log/tile/entries/<N>[.p/<W>]`) and proofs under `/api/v1/audit/`.
//!
//! The checkpoint and hash tiles are served without credentials: they carry
//! only hashes and sizes, and a monitor or tlog client must be able to
//! follow the log without an account. Entry bundles are events, which name
//! people and addresses, so they need an API key allowed `audit.read`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use citadel_audit::LogError;
use citadel_core::merkle::{self, TILE_WIDTH};
use citadel_core::ErrorCode;
use serde_json::{json, Value};

use crate::api::{authorize, Caller};
use crate::{AdminError, AdminState};

impl From<LogError> for AdminError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::OutOfRange(why) => Self::new(ErrorCode::OutOfRange, why),
            LogError::NotFound(why) => Self::new(ErrorCode::NotFound, why),
            LogError::Corrupt(why) => {
                tracing::error!(%why, "the audit log is damaged");
                Self::new(
                    ErrorCode::AuditLogDamaged,
                    "the audit log is damaged; run `citadel audit verify`",
                )
            }
            LogError::Store(s) => s.into(),
            LogError::Note(n) => {
                tracing::error!(error = %n, "audit log signing failed");
                Self::new(
                    ErrorCode::Internal,
                    "audit log signing failed; see the server log",
                )
            }
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const OCTETS: &str = "application/octet-stream";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A tile or bundle address: `<N>[.p/<W>]` after the level.
fn parse_index_and_width(path: &str) -> Option<(u64, Option<u64>)> {
    let (index, width) = match path.split_once(".p/") {
        Some((index, width)) => {
            let w: u64 = width.parse().ok()?;
            if !(1..TILE_WIDTH).contains(&w) || width.starts_with('0') || width.len() > 3 {
                return None;
            }
            (index, Some(w))
        }
        None => (path, None),
    };
    Some((merkle::parse_tile_index_path(index)?, width))
}

fn bad_path(path: &str) -> AdminError {
    AdminError::new(
        ErrorCode::NotFound,
        format!(
            "{path:?} is not a tlog-tiles path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])"
        ),
    )
}

fn bytes(content_type: &'static str, cache: &'static str, body: Vec<u8>) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// `GET /audit/log/checkpoint`: the latest signed checkpoint.
pub(crate) async fn checkpoint(State(state): State<AdminState>) -> Result<Response, AdminError> {
    let latest = state.log.latest_checkpoint().await?;
    Ok(bytes(TEXT, "no-cache", latest.note.into_bytes()))
}

/// `GET /audit/log/tile/<L>/<N>[.p/<W>]`.
pub(crate) async fn tile(
    State(state): State<AdminState>,
    Path(path): Path<String>,
) -> Result<Response, AdminError> {
    let (level, rest) = path.split_once('/').ok_or_else(|| bad_path(&path))?;
    let level: u8 = level
        .parse()
        .ok()
        .filter(|l| *l < 64 && (level == "0" || !level.starts_with('0')))
        .ok_or_else(|| bad_path(&path))?;
    let (n, width) = parse_index_and_width(rest).ok_or_else(|| bad_path(&path))?;
    let body = state.log.tile(level, n, width).await?;
    Ok(bytes(OCTETS, IMMUTABLE, body))
}

/// `GET /audit/log/tile/entries/<N>[.p/<W>]` (needs `audit.read`).
pub(crate) async fn entries(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
) -> Result<Response, AdminError> {
    let (n, width) = parse_index_and_width(&path).ok_or_else(|| bad_path(&path))?;
    authorize(&state, &caller, "audit.read", "audit").await?;
    let body = state.log.entry_bundle(n, width).await?;
    Ok(bytes(OCTETS, "private, max-age=31536000, immutable", body))
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, AdminError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                AdminError::new(
                    ErrorCode::InvalidRequest,
                    format!("{name} must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

/// `GET /api/v1/audit/checkpoint`: the latest checkpoint, parsed.
pub(crate) async fn latest(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, AdminError> {
    authorize(&state, &caller, "audit.read", "audit").await?;
    let latest = state.log.latest_checkpoint().await?;
    Ok(Json(checkpoint_json(&state, latest)?))
}

/// `POST /api/v1/audit/checkpoint`: sign a checkpoint now.
pub(crate) async fn checkpoint_now(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, AdminError> {
    authorize(&state, &caller, "audit.checkpoint", "audit").await?;
    let made = state.log.checkpoint_now().await?;
    Ok(Json(checkpoint_json(&state, made)?))
}

fn checkpoint_json(
    state: &AdminState,
    stored: citadel_store::StoredCheckpoint,
) -> Result<Value, AdminError> {
    let parsed = citadel_audit::Checkpoint::open(&stored.note, &state.log.verifier())
        .map_err(|e| LogError::Corrupt(format!("latest checkpoint: {e}")))?;
    Ok(json!({
        "origin": parsed.origin,
        "size": parsed.size,
        "root": base64_of(&parsed.root),
        "note": stored.note,
        "created_at": citadel_core::clock::rfc3339(stored.created_at),
        "vkey": state.log.verifier().vkey(),
    }))
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `GET /api/v1/audit/proof/inclusion?index=I[&size=N]` (size defaults to
/// the latest checkpoint's).
pub(crate) async fn inclusion(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    let index = number(&params, "index")?
        .ok_or_else(|| AdminError::new(ErrorCode::InvalidRequest, "index is required"))?;
    let size = number(&params, "size")?;
    authorize(&state, &caller, "audit.read", "audit").await?;
    let size = match size {
        Some(size) => size,
        None => state.log.latest_checkpoint().await?.size,
    };
    let proof = state.log.inclusion_proof(index, size).await?;
    Ok(Json(serde_json::to_value(proof).unwrap_or_default()))
}

/// `GET /api/v1/audit/proof/consistency?from=M[&to=N]`.
pub(crate) async fn consistency(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, AdminError> {
    let from = number(&params, "from")?
        .ok_or_else(|| AdminError::new(ErrorCode::InvalidRequest, "from is required"))?;
    let to = number(&params, "to")?;
    authorize(&state, &caller, "audit.read", "audit").await?;
    let to = match to {
        Some(to) => to,
        None => state.log.latest_checkpoint().await?.size,
    };
    let proof = state.log.consistency_proof(from, to).await?;
    Ok(Json(serde_json::to_value(proof).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_addresses_are_parsed_strictly() {
        assert_eq!(parse_index_and_width("000"), Some((0, None)));
        assert_eq!(
            parse_index_and_width("x001/x234/067.p/89"),
            Some((1234067, Some(89)))
        );
        for bad in [
            "x001/x234/067.p/",
            "x001/x234/067.p",
            "x001/002.p/256",
            "x001/002.p/0",
            "x001/002.p/05",
            "001/002",
            "x001/0002",
            "",
        ] {
            assert_eq!(parse_index_and_width(bad), None, "{bad:?}");
        }
    }
}
