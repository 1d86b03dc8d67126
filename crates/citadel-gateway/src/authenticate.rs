//! Layer 3, authenticate: who is this? Verifies the `Authorization: Bearer`
//! API key against the in-memory credential snapshot (a keyed hash and a
//! constant-time compare: microseconds, no I/O). A refusal is always 401
//! `invalid_credentials`, whatever the reason, so a caller learns nothing
//! about which keys exist; the reason goes into the Authentication event,
//! which is recorded before the 401 is released.
//!
//! The client's credential is removed from the request here, so it can
//! never reach an upstream.

use std::sync::Arc;

use citadel_core::{clock::now_ms, ApiError, ErrorCode};
use citadel_identity::{AuthFailure, KeyRegistry, VerifiedKey};

use crate::config::RateLimit;
use crate::context::info_and_trail;
use crate::events::{authentication_failed, RequestView};
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, GatewayRequest, GatewayResponse};

/// The key's own rate limits, for the rate-limit layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyLimits(pub(crate) RateLimit);

/// The authenticate layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("authenticate", state, |s, r, n| {
        Box::pin(authenticate(s, r, n))
    })
}

/// Verifies the bearer API key in `headers`.
pub fn verify_bearer(
    registry: &KeyRegistry,
    headers: &http::HeaderMap,
) -> Result<VerifiedKey, AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Malformed);
    }
    let text = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed);
    }
    registry.verify(token.trim(), now_ms())
}

/// The 401 (or the 503 when the refusal itself cannot be recorded), with its
/// Authentication event made durable first. Shared with the admin API.
pub async fn refuse_credentials(
    state: &GatewayState,
    view: &RequestView<'_>,
    failure: AuthFailure,
    service: &str,
) -> GatewayResponse {
    let event = authentication_failed(view, failure, service);
    tracing::info!(request_id = %view.info.id, client = %view.info.client, reason = failure.as_str(), "authentication refused");
    let refusal = match crate::events::record_decision(&state.sink, event).await {
        Ok(()) => ApiError::new(
            ErrorCode::InvalidCredentials,
            "missing or invalid credentials; send `Authorization: Bearer <API key>`",
        ),
        Err(e) => e,
    };
    error_response(&refusal, Some(&view.info.id))
}

async fn authenticate(
    state: Arc<GatewayState>,
    mut req: GatewayRequest,
    next: Next,
) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    match verify_bearer(&state.registry, req.headers()) {
        Ok(key) => {
            req.headers_mut().remove(http::header::AUTHORIZATION);
            req.extensions_mut().insert(KeyLimits(RateLimit {
                rpm: key.rpm.map(|v| v.max(0) as u64),
                tpm: key.tpm.map(|v| v.max(0) as u64),
            }));
            trail.update(|t| {
                t.principal = Some(key.principal.clone());
                t.key_id = Some(key.key_id.clone());
            });
            call_next(next, req).await
        }
        Err(failure) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidCredentials));
            let view = RequestView::of(&info, &req);
            refuse_credentials(&state, &view, failure, "gateway").await
        }
    }
}
