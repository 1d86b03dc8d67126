//! Layer 3, authenticate: who is this? Verifies the `Authorization: Bearer`
//! API key against the in-memory credential snapshot (a keyed hash and a
//! constant-time compare: microseconds, no I/O), a bearer JWT of a
//! configured identity provider against its cached JWKS, or, when no
//! `Authorization` header is sent, the browser session cookie (a hash and a
//! map lookup; the store is read once per session and replica). A refusal
//! is always 401 `invalid_credentials`, whatever the reason, so a caller
//! learns nothing about which keys or sessions exist; the reason goes into
//! the Authentication event, which is recorded before the 401 is released.
//!
//! A browser session may only change things (any method but GET, HEAD,
//! OPTIONS) with the session's CSRF token in `X-CSRF-Token` (403
//! `csrf_failed`): the cookie is `SameSite=Strict` already, and the token
//! is the second lock for browsers or proxies that get SameSite wrong.
//!
//! The client's credential (the `Authorization` header, the session
//! cookie, the CSRF header) is removed from the request here, so it can
//! never reach an upstream.

use std::sync::Arc;

use citadel_core::{clock::now_ms, ApiError, ErrorCode, SecurityEvent};
use citadel_identity::{AuthFailure, KeyRegistry, LiveSession, VerifiedKey};

use crate::config::RateLimit;
use crate::context::{info_and_trail, RequestInfo, Trail};
use crate::events::{authentication_failed, RequestView};
use crate::revocation::Credential;
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

/// The bearer token of the single `Authorization: Bearer` header, if that
/// is what the request carries.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Verifies the bearer API key in `headers`.
pub fn verify_bearer(
    registry: &KeyRegistry,
    headers: &http::HeaderMap,
) -> Result<VerifiedKey, AuthFailure> {
    if !headers.contains_key(http::header::AUTHORIZATION) {
        return Err(AuthFailure::Missing);
    }
    let token = bearer_token(headers).ok_or(AuthFailure::Malformed)?;
    registry.verify(token, now_ms())
}

/// The 401 (or the 503 when the refusal itself cannot be recorded), with its
/// Authentication event made durable first. Shared with the admin API.
pub async fn refuse_credentials(
    state: &GatewayState,
    view: &RequestView<'_>,
    failure: AuthFailure,
    service: &str,
) -> GatewayResponse {
    refuse_authentication(state, view, failure.as_str(), "Bearer API key", service).await
}

/// The 401 for any refused credential (`reason` and `protocol` go to the
/// event only).
pub async fn refuse_authentication(
    state: &GatewayState,
    view: &RequestView<'_>,
    reason: &str,
    protocol: &str,
    service: &str,
) -> GatewayResponse {
    let event = authentication_failed(view, reason, protocol, service, None);
    tracing::info!(request_id = %view.info.id, client = %view.info.client, reason, "authentication refused");
    let refusal = ApiError::new(
        ErrorCode::InvalidCredentials,
        "missing or invalid credentials; send `Authorization: Bearer <API key>`, or sign in at POST /auth/login",
    );
    refuse_recorded(state, event, refusal, &view.info.id).await
}

/// Records the refusal's event, then answers with `refusal` (or with the
/// recording's own error when the event cannot be kept: fail closed).
async fn refuse_recorded(
    state: &GatewayState,
    event: SecurityEvent,
    refusal: ApiError,
    request_id: &str,
) -> GatewayResponse {
    let refusal = match crate::events::record_decision(&state.sink, event).await {
        Ok(()) => refusal,
        Err(e) => e,
    };
    error_response(&refusal, Some(request_id))
}

/// The header a browser session's changing requests carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The cookie the OIDC sign-in hands the CSRF token to page scripts in.
pub const CSRF_COOKIE: &str = "__Host-citadel_csrf";

fn changes_something(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The browser session a request carries, if it carries a session cookie:
/// `None` without one, `Some(Err(response))` when it is refused (the event
/// recorded), `Some(Ok(session))` when it holds, with the CSRF token
/// checked for requests that change something.
pub(crate) async fn session_of(
    state: &GatewayState,
    parts: &http::request::Parts,
    info: &RequestInfo,
    trail: &Trail,
) -> Option<Result<LiveSession, GatewayResponse>> {
    let sessions = &state.signin.sessions;
    let view = RequestView::of_parts(info, &parts.method, &parts.uri, &parts.headers);
    let cookies = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let verified = match sessions.config().token_in(cookies) {
        Ok(Some(token)) => sessions.verify(token, now_ms()).await,
        Ok(None) => return None,
        Err(failure) => Err(failure),
    };
    let session = match verified {
        Ok(s) => s,
        Err(failure) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidCredentials));
            return Some(Err(refuse_authentication(
                state,
                &view,
                failure.as_str(),
                "Session cookie",
                "gateway",
            )
            .await));
        }
    };
    if changes_something(&parts.method) {
        let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !presented.is_some_and(|p| session.csrf_matches(p)) {
            trail.update(|t| t.error = Some(ErrorCode::CsrfFailed));
            let reason = if presented.is_some() {
                "csrf_token_mismatch"
            } else {
                "csrf_token_missing"
            };
            let event = authentication_failed(
                &view,
                reason,
                "Session cookie",
                "gateway",
                Some(&session.principal),
            );
            tracing::info!(request_id = %info.id, reason, "browser session request refused");
            let refusal = ApiError::new(
                ErrorCode::CsrfFailed,
                format!("send the session's CSRF token (from sign-in) in the {CSRF_HEADER} header"),
            );
            return Some(Err(refuse_recorded(state, event, refusal, &info.id).await));
        }
    }
    Some(Ok(session))
}

/// Removes the session cookie (keeping the client's other cookies) and the
/// CSRF header, so neither reaches an upstream.
fn strip_session_credentials(state: &GatewayState, headers: &mut http::HeaderMap) {
    let name = &state.signin.sessions.config().cookie_name;
    let kept: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let cookie = pair.split('=').next();
            !pair.is_empty() && cookie != Some(name.as_str()) && cookie != Some(CSRF_COOKIE)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(http::header::COOKIE, v);
        }
    }
    headers.remove(CSRF_HEADER);
}

/// A device certificate seen on the request's connection.
struct DeviceSeen {
    id: String,
    trust: citadel_identity::machines::DeviceTrust,
    owner: Option<String>,
}

/// Records the device's trust for policy once the person is known: a
/// device enrolled for someone else counts as no device at all.
fn note_device(trail: &Trail, device: Option<&DeviceSeen>) {
    if let Some(d) = device {
        trail.update(|t| {
            let owner_matches = d
                .owner
                .as_ref()
                .is_none_or(|owner| t.principal.as_ref().is_some_and(|p| &p.id == owner));
            t.device_id = Some(d.id.clone());
            t.device_trust = Some(if owner_matches {
                d.trust.as_str()
            } else {
                "unknown"
            });
        });
    }
}

async fn authenticate(
    state: Arc<GatewayState>,
    mut req: GatewayRequest,
    next: Next,
) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let mut device = None;
    if let Some(cert) = info.client_cert.clone() {
        use citadel_identity::machines::Machine;
        // The chain was judged when the connection opened; a connection
        // that outlives its certificate does not outlive its expiry.
        let still_current = if now_ms() >= cert.facts.not_after {
            Err(citadel_crypto::CertProblem::Expired)
        } else {
            cert.validity
        };
        let identified = still_current.map_err(|p| p.as_str()).and_then(|()| {
            state
                .machines
                .identify(&cert.facts.fingerprint, &cert.facts.uris, now_ms())
                .map_err(|f| f.as_str())
        });
        match identified {
            Err(reason) => {
                trail.update(|t| t.error = Some(ErrorCode::InvalidClientCertificate));
                let view = RequestView::of(&info, &req);
                let mut event = authentication_failed(
                    &view,
                    reason,
                    "mTLS client certificate",
                    "gateway",
                    None,
                );
                event.body["unmapped"] =
                    serde_json::json!({"certificate_sha256": cert.facts.fingerprint});
                tracing::info!(request_id = %info.id, reason, "client certificate refused");
                let refusal = ApiError::new(
                    ErrorCode::InvalidClientCertificate,
                    "the client certificate is not valid here (expired, not from this installation's CA, revoked, or unknown); enrol the device or re-issue the workload certificate",
                );
                return refuse_recorded(&state, event, refusal, &info.id).await;
            }
            Ok(Machine::Workload(principal)) => {
                let other_credential = req.headers().contains_key(http::header::AUTHORIZATION)
                    || state
                        .signin
                        .sessions
                        .config()
                        .token_in(
                            req.headers()
                                .get_all(http::header::COOKIE)
                                .iter()
                                .filter_map(|v| v.to_str().ok()),
                        )
                        .map_or(true, |t| t.is_some());
                if !other_credential {
                    req.extensions_mut()
                        .insert(Credential::Workload(principal.id.clone()));
                    trail.update(|t| {
                        t.principal = Some(principal.clone());
                        t.auth_method = Some("mtls");
                    });
                    return call_next(next, req).await;
                }
            }
            Ok(Machine::Device { id, trust, user_id }) => {
                req.extensions_mut()
                    .insert(crate::revocation::DeviceRef(cert.facts.fingerprint.clone()));
                device = Some(DeviceSeen {
                    id,
                    trust,
                    owner: user_id,
                });
            }
        }
    }
    if !req.headers().contains_key(http::header::AUTHORIZATION) {
        let (mut parts, body) = req.into_parts();
        let found = session_of(&state, &parts, &info, &trail).await;
        if found.is_some() {
            strip_session_credentials(&state, &mut parts.headers);
        }
        req = GatewayRequest::from_parts(parts, body);
        match found {
            Some(Ok(session)) => {
                trail.update(|t| {
                    t.principal = Some(session.principal.clone());
                    t.auth_method = Some("session");
                    t.mfa_at = session.mfa_at;
                });
                req.extensions_mut().insert(Credential::Session {
                    id: session.id.clone(),
                    expires_at: session.expires_at,
                });
                req.extensions_mut().insert(session);
                note_device(&trail, device.as_ref());
                return call_next(next, req).await;
            }
            Some(Err(refusal)) => return refusal,
            None => {}
        }
    }
    if state.signin.jwt.is_enabled() {
        if let Some(token) =
            bearer_token(req.headers()).filter(|t| citadel_identity::jwt::looks_like_jwt(t))
        {
            return match state.signin.jwt.verify(token, now_ms()).await {
                Ok(jwt) => {
                    req.headers_mut().remove(http::header::AUTHORIZATION);
                    strip_session_credentials(&state, req.headers_mut());
                    req.extensions_mut().insert(Credential::Jwt {
                        expires_at: jwt.expires_at,
                    });
                    trail.update(|t| {
                        t.principal = Some(jwt.principal.clone());
                        t.auth_method = Some("jwt");
                        t.mfa_at = jwt.mfa_at;
                    });
                    note_device(&trail, device.as_ref());
                    call_next(next, req).await
                }
                Err(failure) => {
                    trail.update(|t| t.error = Some(ErrorCode::InvalidCredentials));
                    let view = RequestView::of(&info, &req);
                    refuse_authentication(&state, &view, failure.as_str(), "Bearer JWT", "gateway")
                        .await
                }
            };
        }
    }
    match verify_bearer(&state.registry, req.headers()) {
        Ok(key) => {
            req.headers_mut().remove(http::header::AUTHORIZATION);
            strip_session_credentials(&state, req.headers_mut());
            req.extensions_mut()
                .insert(Credential::ApiKey(key.key_id.clone()));
            req.extensions_mut().insert(KeyLimits(RateLimit {
                rpm: key.rpm.map(|v| v.max(0) as u64),
                tpm: key.tpm.map(|v| v.max(0) as u64),
            }));
            trail.update(|t| {
                t.principal = Some(key.principal.clone());
                t.key_id = Some(key.key_id.clone());
                t.auth_method = Some("api_key");
            });
            note_device(&trail, device.as_ref());
            call_next(next, req).await
        }
        Err(failure) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidCredentials));
            let view = RequestView::of(&info, &req);
            refuse_credentials(&state, &view, failure, "gateway").await
        }
    }
}
