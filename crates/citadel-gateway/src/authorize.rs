//! Layer 5, authorize: may this principal do this to this resource, here
//! and now? One Cedar decision per request against the policy set in force
//! (a reload swaps it atomically, so each request is judged by one
//! consistent set). The decision event, naming the policies that decided, is
//! made durable before the request goes on (or the 403 is released); the
//! client's 403 never names the policy.
//!
//! A denial by policies annotated `@step_up("mfa")` (optionally
//! `@max_age("900")`) is answered with the RFC 9470 challenge instead: 401
//! `step_up_required` and `WWW-Authenticate: Bearer
//! error="insufficient_user_authentication", acr_values="mfa", max_age=900`,
//! so browsers, CLIs and SDKs can prove the factor and retry. The
//! thresholds are Cedar context attributes (`context.mfa`,
//! `context.mfa_age_seconds`), so policy decides.

use std::sync::Arc;

use citadel_core::{ApiError, ErrorCode};
use citadel_policy::{Action, RequestFacts, Resource};

use crate::context::{info_and_trail, RequestInfo, Trail, Verified};
use crate::events::{authorization_decision, RequestView};
use crate::route::Target;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, GatewayRequest, GatewayResponse};

/// What policy is told about a request (its context), from what the
/// layers above found.
pub(crate) fn request_facts<'a>(
    info: &RequestInfo,
    trail: &Trail,
    method: &'a str,
    path: &'a str,
    verified: &'a Verified,
) -> RequestFacts<'a> {
    RequestFacts {
        source_ip: info.client.ip(),
        method,
        path,
        auth_method: trail.auth_method(),
        mfa: trail.mfa(),
        mfa_age_seconds: trail.mfa_age_seconds(),
        device_trust: trail.device_trust(),
        verification: verified.as_facts(),
    }
}

/// The authorize layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("authorize", state, |s, r, n| Box::pin(authorize(s, r, n)))
}

async fn authorize(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let (Some(principal), Some(target)) =
        (trail.principal(), req.extensions().get::<Target>().cloned())
    else {
        // Unreachable with the layers in order; deny rather than assume.
        trail.update(|t| t.error = Some(ErrorCode::Forbidden));
        return error_response(
            &ApiError::new(ErrorCode::Forbidden, "not permitted"),
            Some(&info.id),
        );
    };
    let verified = trail.verified();
    let facts = request_facts(
        &info,
        &trail,
        req.method().as_str(),
        req.uri().path(),
        &verified,
    );
    let (action, resource, resource_json) = match &target {
        Target::Model { upstream, model } => (
            Action::InvokeModel,
            Resource::Model {
                name: model,
                upstream: &upstream.facts,
            },
            serde_json::json!({"type": "Model", "uid": model, "owner": {"name": upstream.config.name}}),
        ),
        Target::Route { upstream } => (
            Action::CallRoute,
            Resource::Route {
                prefix: upstream.prefix(),
                upstream: &upstream.facts,
            },
            serde_json::json!({"type": "Route", "uid": upstream.prefix(), "owner": {"name": upstream.config.name}}),
        ),
    };
    let decision = state
        .policy
        .authorize(&principal, action, &resource, &facts);
    let action_name = action.cedar_id();
    let view = RequestView::of(&info, &req);
    let mut event = authorization_decision(
        &view,
        &principal,
        action_name,
        resource_json,
        decision.allowed,
        &decision.policies,
        "gateway",
    );
    // What verification found is part of the story of the decision.
    // Only what says something is written: most requests carry no finding,
    // and every byte here is stored for each decision.
    let mut unmapped = serde_json::json!({"auth_method": trail.auth_method()});
    if verified != crate::context::Verified::default() {
        unmapped["verification"] = serde_json::json!(verified);
    }
    if let Some(device) = trail.device_id() {
        unmapped["device_id"] = serde_json::json!(device);
        unmapped["device_trust"] = serde_json::json!(trail.device_trust());
    }
    if !decision.errors.is_empty() {
        unmapped["policy_errors"] = serde_json::json!(decision.errors);
    }
    event.body["unmapped"] = unmapped;
    trail.update(|t| t.policies = decision.policies.clone());
    if let Err(refusal) = crate::events::record_decision(&state.sink, event).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    if let (false, Some(step_up)) = (decision.allowed, &decision.step_up) {
        tracing::info!(request_id = %info.id, principal = %principal.id, policies = ?decision.policies, acr = %step_up.acr, "step-up required by policy");
        trail.update(|t| t.error = Some(ErrorCode::StepUpRequired));
        return error_response(
            &ApiError::step_up(&step_up.acr, step_up.max_age),
            Some(&info.id),
        );
    }
    if !decision.allowed {
        tracing::info!(request_id = %info.id, principal = %principal.id, policies = ?decision.policies, "request denied by policy");
        trail.update(|t| t.error = Some(ErrorCode::Forbidden));
        return error_response(
            &ApiError::new(
                ErrorCode::Forbidden,
                "your role is not permitted to do this",
            ),
            Some(&info.id),
        );
    }
    if let Some(sighting) = req.extensions().get::<crate::verify::Sighting>() {
        state.verifier.remember(sighting);
    }
    call_next(next, req).await
}
