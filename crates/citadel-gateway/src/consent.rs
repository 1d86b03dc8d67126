//! Layer 6a, consent: a route configured with a purpose (`purpose =
//! "inference"` on its upstream) serves only requests that name a data
//! subject (the `[privacy] subject_header`, `X-Data-Subject` by default)
//! who holds current consent for that purpose — consent to the purpose's
//! current text version, not withdrawn. Otherwise: 400 `subject_required`
//! or 403 `consent_required`, and nothing is forwarded.
//!
//! It sits after authorization (only callers allowed to use the route
//! learn whether a subject consented) and before inspection (no scanning
//! for a request that will not go). The check is one indexed read,
//! remembered for a second, so a withdrawal anywhere applies within one.

use std::sync::Arc;

use citadel_core::{ApiError, ErrorCode};
use citadel_privacy::ConsentError;

use crate::context::info_and_trail;
use crate::route::Target;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, GatewayRequest, GatewayResponse};

/// The consent layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("consent", state, |s, r, n| Box::pin(consent(s, r, n)))
}

async fn consent(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let Some(purpose) = req
        .extensions()
        .get::<Target>()
        .and_then(|t| t.upstream().config.purpose.clone())
    else {
        return call_next(next, req).await;
    };
    let (info, trail) = info_and_trail(&req);
    let refuse = |code: ErrorCode, message: String| {
        trail.update(|t| t.error = Some(code));
        error_response(&ApiError::new(code, message), Some(&info.id))
    };
    let header = &state.privacy.config.subject_header;
    let Some(subject) = req
        .headers()
        .get(header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return refuse(
            ErrorCode::SubjectRequired,
            format!("this route serves the purpose `{purpose}`: name the data subject in the {header} header"),
        );
    };
    match state.consents.holds(subject, &purpose).await {
        Ok(true) => call_next(next, req).await,
        Ok(false) => {
            tracing::info!(request_id = %info.id, %purpose, "refused: no current consent");
            let version = state
                .consents
                .purpose(&purpose)
                .map(|p| p.version.clone())
                .unwrap_or_default();
            refuse(
                ErrorCode::ConsentRequired,
                format!("the data subject has not consented to the purpose `{purpose}` (consent text version {version}); record their consent first"),
            )
        }
        Err(ConsentError::BadSubject) => refuse(
            ErrorCode::SubjectRequired,
            format!("the {header} header must be 1 to 256 bytes without control characters"),
        ),
        Err(e) => {
            // Fail closed: no answer about consent, no request.
            tracing::error!(request_id = %info.id, error = %e, "consent check failed; request refused");
            refuse(
                ErrorCode::Internal,
                "consent could not be checked; try again".into(),
            )
        }
    }
}
