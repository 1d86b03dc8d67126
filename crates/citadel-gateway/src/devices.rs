//! The gateway's device endpoints, beside the sign-in ones (a device must
//! be able to enrol before it has a certificate):
//!
//! - `POST /devices/enroll` `{"token", "csr", "name"}` → 200
//!   `{"device_id", "certificate"}` (chain, PEM): the one-time token is
//!   spent and the internal CA signs the device's own key (P-256 CSR).
//!   403 `forbidden` for an unknown, expired or used token; 400
//!   `invalid_request` for an unacceptable CSR (the token is not spent).
//! - `POST /devices/posture` `{"report", "signature"}` over mTLS with the
//!   device certificate: `report` is base64 of the JSON the device signed,
//!   `signature` base64 of its ES256 signature (`r || s`) by the device
//!   key → 200 `{"device_trust"}`.
//!
//! Each outcome is an event (Account Change 3001 for enrolment, Device
//! posture as API Activity), recorded before the answer.

use std::sync::Arc;

use base64::Engine;
use citadel_core::clock::now_ms;
use citadel_core::{ErrorCode, EventClass, Outcome, SecurityEvent};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::context::{info_and_trail, RequestInfo, Trail};
use crate::events::{record_decision, request_fields};
use crate::signin::{read_json, refuse};
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, json_response, GatewayRequest, GatewayResponse};

/// The device endpoints' layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("devices", state, |s, r, n| Box::pin(endpoints(s, r, n)))
}

async fn endpoints(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let path = req.uri().path();
    if !path.starts_with("/devices/") {
        return call_next(next, req).await;
    }
    let (info, trail) = info_and_trail(&req);
    let path = path.to_owned();
    trail.update(|t| t.route = Some(path.clone()));
    match (path.as_str(), req.method() == Method::POST) {
        ("/devices/enroll", true) => enroll(state, req, info, trail).await,
        ("/devices/posture", true) => posture(state, req, info, trail).await,
        ("/devices/enroll" | "/devices/posture", false) => refuse(
            &trail,
            &info,
            ErrorCode::MethodNotAllowed,
            format!("use POST {path}"),
        ),
        _ => refuse(
            &trail,
            &info,
            ErrorCode::RouteNotFound,
            "no such device endpoint; see /devices/enroll and /devices/posture",
        ),
    }
}

fn device_event(
    info: &RequestInfo,
    req: &http::request::Parts,
    operation: &str,
    outcome: Outcome,
    reason: &str,
    device: serde_json::Value,
) -> SecurityEvent {
    let (src, http_request) = request_fields(
        info,
        &req.method,
        req.uri.path(),
        req.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let (class, activity_id, activity) = if operation == "devices.enroll" {
        (EventClass::AccountChange, 1, "Create")
    } else {
        (EventClass::ApiActivity, 3, "Update")
    };
    SecurityEvent::builder(class, activity_id, activity, outcome)
        .actor_named(
            device["uid"].as_str().unwrap_or("unknown-device"),
            device["name"].as_str().unwrap_or("device"),
            "device",
        )
        .request_id(&info.id)
        .field("src_endpoint", src)
        .field("http_request", http_request)
        .field(
            "api",
            json!({"operation": operation, "service": {"name": "gateway"}}),
        )
        .field("device", device)
        .field("status_detail", json!(reason))
        .disposition(outcome == Outcome::Success)
        .build()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    token: zeroize::Zeroizing<String>,
    csr: String,
    name: String,
}

async fn enroll(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (parts, body) = req.into_parts();
    let body: EnrollBody = match read_json(&state, &info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(&trail, &info, code, message),
    };
    let now = now_ms();
    let result = state
        .machines
        .enroll(&state.ca, &body.token, &body.csr, &body.name, now)
        .await;
    let (outcome, reason, device, answer) = match result {
        Ok(Some((device, chain))) => (
            Outcome::Success,
            "enrolled",
            json!({"uid": device.id, "name": device.name, "owner": device.user_id}),
            Ok(json!({"device_id": device.id, "certificate": chain, "not_after": device.cert_not_after})),
        ),
        Ok(None) => (
            Outcome::Failure,
            "enrollment_token_invalid",
            json!({"name": body.name}),
            Err((ErrorCode::Forbidden, "the enrolment token is unknown, expired or already used; ask for a new one (`citadel device enroll-token`)".to_owned())),
        ),
        Err(citadel_identity::machines::EnrollError::Csr(reason)) => (
            Outcome::Failure,
            "invalid_csr",
            json!({"name": body.name}),
            Err((ErrorCode::InvalidRequest, format!("{reason}; the token was not used"))),
        ),
        Err(citadel_identity::machines::EnrollError::Store(e)) => {
            tracing::error!(error = %e, "device enrolment failed on the store");
            return refuse(&trail, &info, ErrorCode::Internal, "enrolment failed; try again");
        }
    };
    let event = device_event(&info, &parts, "devices.enroll", outcome, reason, device);
    if let Err(refusal) = record_decision(&state.sink, event).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    match answer {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err((code, message)) => refuse(&trail, &info, code, message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureBody {
    report: String,
    signature: String,
}

async fn posture(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    use citadel_identity::machines::{Machine, PostureSubmitError};
    let now = now_ms();
    let device_id = match info.client_cert.as_deref().map(|cert| {
        cert.validity.map_err(|p| p.as_str()).and_then(|()| {
            state
                .machines
                .identify(&cert.facts.fingerprint, &cert.facts.uris, now)
                .map_err(|f| f.as_str())
        })
    }) {
        Some(Ok(Machine::Device { id, .. })) => id,
        Some(Ok(Machine::Workload(_))) | None => {
            return refuse(
                &trail,
                &info,
                ErrorCode::InvalidClientCertificate,
                "posture reports come over mTLS with the device's certificate",
            )
        }
        Some(Err(_)) => {
            return refuse(
                &trail,
                &info,
                ErrorCode::InvalidClientCertificate,
                "the device certificate is not valid (expired, revoked or unknown)",
            )
        }
    };
    let (parts, body) = req.into_parts();
    let body: PostureBody = match read_json(&state, &info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(&trail, &info, code, message),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(report), Ok(signature)) = (b64.decode(&body.report), b64.decode(&body.signature))
    else {
        return refuse(
            &trail,
            &info,
            ErrorCode::InvalidRequest,
            "`report` and `signature` are base64",
        );
    };
    let result = state
        .machines
        .submit_posture(&device_id, &report, &signature, now)
        .await;
    let (outcome, reason, answer) = match result {
        Ok(compliant) => (
            Outcome::Success,
            if compliant {
                "compliant"
            } else {
                "not_compliant"
            },
            Ok(
                json!({"device_id": device_id, "device_trust": if compliant { "compliant" } else { "registered" }}),
            ),
        ),
        Err(PostureSubmitError::Posture(p)) => (
            Outcome::Failure,
            match p {
                citadel_identity::machines::PostureError::BadSignature => "bad_signature",
                citadel_identity::machines::PostureError::Malformed(_) => "malformed_report",
                citadel_identity::machines::PostureError::Stale => "stale_report",
            },
            Err(p.to_string()),
        ),
        Err(PostureSubmitError::Store(e)) => {
            tracing::error!(error = %e, "posture report failed on the store");
            return refuse(
                &trail,
                &info,
                ErrorCode::Internal,
                "the report could not be recorded; try again",
            );
        }
    };
    let event = device_event(
        &info,
        &parts,
        "devices.posture",
        outcome,
        reason,
        json!({"uid": device_id}),
    );
    if let Err(refusal) = record_decision(&state.sink, event).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    match answer {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(message) => refuse(&trail, &info, ErrorCode::InvalidRequest, message),
    }
}
