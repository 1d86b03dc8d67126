//! The gateway's own sign-in endpoints, between intake and authenticate
//! (signing in is how a person *gets* a credential, so it cannot sit behind
//! the layer that demands one):
//!
//! - `POST /auth/login` `{"username", "password", "totp"?, "recovery_code"?}`
//!   → 200 with the session cookie and a CSRF token; 401
//!   `invalid_credentials`, `mfa_required`, `mfa_failed`; 403
//!   `mfa_enrollment_required`; 429 `login_locked` with `Retry-After`.
//! - `POST /auth/logout` `{"everywhere"?: bool}` → ends this session (or
//!   all of the person's sessions) and deletes the cookie.
//! - `GET /auth/session` → who the session is, how it was proved, when it ends.
//! - `POST /auth/step-up` `{"totp" | "recovery_code" | "webauthn"}` → proves a second
//!   factor again: the session is replaced by a new one (new cookie, new
//!   CSRF token) marked with the time of the proof.
//!
//! Each outcome is one Authentication event, recorded before the answer
//! (and its cookie) is released. Passwords and codes live in zeroized
//! buffers and never reach an event or a log.

use std::sync::Arc;

use citadel_core::clock::now_ms;
use citadel_core::{ApiError, ErrorCode, Outcome, Principal, PrincipalKind};
use citadel_identity::session::SessionStart;
use citadel_identity::{
    FactorCheck, LiveSession, NewSession, SignInFailure, SignInRequest, SignInResult,
};
use citadel_policy::{Action, RequestFacts, Resource};
use citadel_store::UserRecord;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::authenticate::session_of;
use crate::context::{info_and_trail, RequestInfo, Trail};
use crate::events::{record_decision, sign_in_event, RequestView, SignInFacts};
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, json_response, GatewayRequest, GatewayResponse};

/// The highest risk score failed sign-ins alone can give a person.
const FAILED_SIGN_IN_RISK_CAP: i64 = 60;

/// Largest sign-in body read.
const MAX_AUTH_BODY: usize = 16 * 1024;

/// Records the event of a sign-in (or step-up) that made `session`; when
/// the event cannot be recorded the session is ended rather than handed
/// out unrecorded (fail closed), and the recording's error comes back.
pub(crate) async fn record_session_event(
    state: &GatewayState,
    event: citadel_core::SecurityEvent,
    session: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    let refusal = match record_decision(&state.sink, event).await {
        Ok(()) => return Ok(()),
        Err(refusal) => refusal,
    };
    if let Some(id) = session {
        let _ = state.signin.sessions.revoke(id, "unrecorded", now).await;
    }
    Err(refusal)
}

/// The sign-in endpoints' layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("sign-in", state, |s, r, n| Box::pin(endpoints(s, r, n)))
}

async fn endpoints(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let path = req.uri().path();
    if !path.starts_with("/auth/") {
        return call_next(next, req).await;
    }
    let (info, trail) = info_and_trail(&req);
    let path = path.to_owned();
    trail.update(|t| t.route = Some(path.clone()));
    let method = req.method().clone();
    let mut response = match (path.as_str(), &method) {
        ("/auth/login", &Method::POST) => {
            login(state.clone(), req, info.clone(), trail.clone()).await
        }
        ("/auth/logout", &Method::POST) => {
            logout(state.clone(), req, info.clone(), trail.clone()).await
        }
        ("/auth/session", &Method::GET) => whoami(state.clone(), req).await,
        ("/auth/step-up", &Method::POST) => {
            step_up(state.clone(), req, info.clone(), trail.clone()).await
        }
        (p, &Method::GET) if p.starts_with("/auth/oidc/") => {
            crate::oidc::endpoint(state.clone(), req, info.clone(), trail.clone()).await
        }
        (p, &Method::POST) if p.starts_with("/auth/webauthn/") => {
            crate::passkeys::endpoint(state.clone(), req, info.clone(), trail.clone()).await
        }
        ("/auth/login" | "/auth/logout" | "/auth/step-up", _) => refuse(
            &trail,
            &info,
            ErrorCode::MethodNotAllowed,
            format!("use POST {path}"),
        ),
        ("/auth/session", _) => refuse(
            &trail,
            &info,
            ErrorCode::MethodNotAllowed,
            "use GET /auth/session",
        ),
        _ => refuse(
            &trail,
            &info,
            ErrorCode::RouteNotFound,
            "no such sign-in endpoint; see /auth/login, /auth/logout, /auth/session, /auth/step-up",
        ),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn refuse(
    trail: &Trail,
    info: &RequestInfo,
    code: ErrorCode,
    message: impl Into<String>,
) -> GatewayResponse {
    trail.update(|t| t.error = Some(code));
    error_response(&ApiError::new(code, message), Some(&info.id))
}

/// Reads a small JSON body (`MAX_AUTH_BODY`) within the request deadline.
pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    state: &GatewayState,
    info: &RequestInfo,
    body: crate::GatewayBody,
    allow_empty: bool,
) -> Result<T, (ErrorCode, String)> {
    let left = state
        .config
        .limits
        .request_timeout
        .saturating_sub(info.started.elapsed());
    let bytes = match tokio::time::timeout(left, collect_capped(body, MAX_AUTH_BODY)).await {
        Err(_) => {
            return Err((
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time".into(),
            ))
        }
        Ok(Err(ErrorCode::PayloadTooLarge)) => {
            return Err((
                ErrorCode::PayloadTooLarge,
                format!("sign-in bodies are at most {MAX_AUTH_BODY} bytes"),
            ))
        }
        Ok(Err(code)) => return Err((code, "the request body could not be read".into())),
        Ok(Ok(b)) => b,
    };
    let bytes: &[u8] = if bytes.is_empty() && allow_empty {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field, never echoes a value.
        (
            ErrorCode::InvalidJson,
            format!("the body must be a JSON object as documented: {e}"),
        )
    })
}

/// Reads a body frame by frame, refusing it once it passes `max` bytes.
/// The copy is zeroized when dropped (it holds a password).
async fn collect_capped(
    mut body: crate::GatewayBody,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, ErrorCode> {
    let mut buf = Zeroizing::new(Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ErrorCode::PayloadTooLarge
            } else {
                ErrorCode::InvalidRequest
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ErrorCode::PayloadTooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: Zeroizing<String>,
    #[serde(default)]
    totp: Option<Zeroizing<String>>,
    #[serde(default)]
    recovery_code: Option<Zeroizing<String>>,
}

fn principal_of(user: &UserRecord, credential: String) -> Principal {
    Principal {
        id: user.id.clone(),
        kind: PrincipalKind::User,
        name: user.name.clone(),
        roles: user.roles.clone(),
        credential,
    }
}

/// Asks Cedar whether a person may sign in on the gateway, with or without
/// a second factor proved (`sign_in` on `Listener::"gateway"`).
struct SignInByPolicy {
    policy: Arc<citadel_policy::PolicyEngine>,
    source_ip: std::net::IpAddr,
}

impl citadel_identity::signin::SignInPolicy for SignInByPolicy {
    fn permits(&self, user: &UserRecord, mfa: bool) -> bool {
        self.policy
            .authorize(
                &principal_of(user, "password".into()),
                Action::SignIn,
                &Resource::Listener("gateway"),
                &RequestFacts {
                    source_ip: self.source_ip,
                    method: "POST",
                    path: "/auth/login",
                    auth_method: "password",
                    mfa,
                    mfa_age_seconds: if mfa { 0 } else { i64::MAX },
                    device_trust: "unknown",
                    verification: Default::default(),
                },
            )
            .allowed
    }
}

/// The session cookie and CSRF token handed over, with who it is for.
pub(crate) fn session_response(
    state: &GatewayState,
    session: &NewSession,
    principal: &Principal,
) -> GatewayResponse {
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "user": {"id": principal.id, "name": principal.name, "roles": principal.roles},
            "session": {
                "id": session.record.id,
                "expires_at": session.record.expires_at,
                "idle_timeout_seconds": state.signin.sessions.config().idle_timeout.as_secs(),
                "methods": session.record.methods,
                "mfa_at": session.record.mfa_at,
            },
            "csrf_token": session.csrf_token.as_str(),
        }),
    );
    if let Ok(cookie) = HeaderValue::from_str(&state.signin.sessions.set_cookie(session, now_ms()))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn login(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (info, trail) = (&info, &trail);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    let (parts, body) = req.into_parts();
    let view = RequestView::of_parts(info, &parts.method, &parts.uri, &parts.headers);
    let body: LoginBody = match read_json(&state, info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(trail, info, code, message),
    };
    let claimed = body.username.clone();
    let request = SignInRequest {
        username: body.username,
        password: body.password,
        totp: body.totp,
        recovery_code: body.recovery_code,
        source_ip: info.client.ip(),
        user_agent,
    };
    let policy = SignInByPolicy {
        policy: state.policy.clone(),
        source_ip: info.client.ip(),
    };
    let result = match state.signin.sign_in(request, &policy).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed on the store; refused");
            return refuse(
                trail,
                info,
                ErrorCode::Internal,
                "sign-in is unavailable right now; try again shortly",
            );
        }
    };
    let SignInResult {
        outcome,
        user,
        methods,
        locked_until,
    } = result;
    let principal = user.as_ref().map(|u| {
        principal_of(
            u,
            match &outcome {
                Ok(s) => format!("session:{}", s.record.id),
                Err(_) => "password".into(),
            },
        )
    });
    let reason = match &outcome {
        Ok(_) => "signed_in",
        Err(f) => f.as_str(),
    };
    let event = sign_in_event(
        &view,
        &SignInFacts {
            activity: (1, "Logon"),
            outcome: if outcome.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            principal: principal.as_ref(),
            claimed_name: if principal.is_none() {
                Some(&claimed)
            } else {
                None
            },
            reason,
            methods: &methods,
            session: outcome
                .as_ref()
                .ok()
                .map(|s| (s.record.id.as_str(), s.record.expires_at)),
            locked_until,
        },
    );
    tracing::info!(request_id = %info.id, client = %info.client, reason, "sign-in");
    // A burst of failures that just locked a person's account raises their
    // risk, to at most FAILED_SIGN_IN_RISK_CAP: enough for the default
    // policy to ask their browser sessions for a fresh second factor, never
    // enough for it to deny them, since anyone can fail sign-ins to anyone's
    // account. (A person with no second factor cannot step up; the score
    // halves every `risk_half_life`.)
    let just_locked = matches!(&outcome, Err(f) if *f != SignInFailure::Locked);
    if let (Some(user), true, Some(_)) = (&user, just_locked, locked_until) {
        let delta = state.verifier.failed_sign_in_risk;
        if delta > 0 {
            crate::verify::raise_risk(
                &state,
                &user.id,
                delta,
                Some(FAILED_SIGN_IN_RISK_CAP),
                "failed_sign_ins",
                &info.id,
            )
            .await;
        }
    }
    let made = outcome.as_ref().ok().map(|s| s.record.id.as_str());
    if let Err(refusal) = record_session_event(&state, event, made, now_ms()).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    match outcome {
        Ok(session) => {
            let principal = principal.expect("a session has a user");
            trail.update(|t| {
                t.principal = Some(Arc::new(principal.clone()));
                t.auth_method = Some("password");
                t.mfa_at = session.record.mfa_at;
            });
            session_response(&state, &session, &principal)
        }
        Err(failure) => {
            if let Some(p) = principal {
                trail.update(|t| t.principal = Some(Arc::new(p)));
            }
            let (code, message) = match failure {
                SignInFailure::Locked => (
                    ErrorCode::LoginLocked,
                    "too many failed sign-ins; wait for the number of seconds in Retry-After",
                ),
                SignInFailure::MfaRequired => (
                    ErrorCode::MfaRequired,
                    "a second factor is required: send `totp` (or `recovery_code`) with the password",
                ),
                SignInFailure::Factor(_) => (
                    ErrorCode::MfaFailed,
                    "the second factor was not accepted (wrong, malformed, or already used); use the next code",
                ),
                SignInFailure::MfaNotEnrolled => (
                    ErrorCode::MfaEnrollmentRequired,
                    "your role must sign in with a second factor and you have none; ask an administrator to enrol one (`citadel user mfa totp enroll`)",
                ),
                SignInFailure::PolicyDenied => (
                    ErrorCode::Forbidden,
                    "you may not sign in here",
                ),
                SignInFailure::Busy => (
                    ErrorCode::Overloaded,
                    "too many sign-ins at once; retry after the number of seconds in Retry-After",
                ),
                SignInFailure::MalformedName
                | SignInFailure::UnknownUser
                | SignInFailure::NoPassword
                | SignInFailure::WrongPassword
                | SignInFailure::UserDisabled => (
                    ErrorCode::InvalidCredentials,
                    "wrong user name or password",
                ),
            };
            trail.update(|t| t.error = Some(code));
            let mut error = ApiError::new(code, message);
            if let Some(until) = locked_until.filter(|_| failure == SignInFailure::Locked) {
                error.retry_after = Some(((until - now_ms()).max(0) as u64).div_ceil(1000).max(1));
            }
            if failure == SignInFailure::Busy {
                error.retry_after = Some(1);
            }
            error_response(&error, Some(&info.id))
        }
    }
}

/// The session a sign-in endpoint acts on, or the refusal to send.
pub(crate) async fn required_session(
    state: &GatewayState,
    parts: &http::request::Parts,
    info: &RequestInfo,
    trail: &Trail,
) -> Result<LiveSession, GatewayResponse> {
    match session_of(state, parts, info, trail).await {
        Some(result) => {
            if let Ok(s) = &result {
                trail.update(|t| {
                    t.principal = Some(s.principal.clone());
                    t.auth_method = Some("session");
                    t.mfa_at = s.mfa_at;
                });
            }
            result
        }
        None => Err(refuse(
            trail,
            info,
            ErrorCode::InvalidCredentials,
            "no session; sign in at POST /auth/login",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    everywhere: bool,
}

async fn logout(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (info, trail) = (&info, &trail);
    let (parts, body) = req.into_parts();
    let session = match required_session(&state, &parts, info, trail).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let view = RequestView::of_parts(info, &parts.method, &parts.uri, &parts.headers);
    let body: LogoutBody = match read_json(&state, info, body, true).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(trail, info, code, message),
    };
    let now = now_ms();
    let sessions = &state.signin.sessions;
    let ended = if body.everywhere {
        sessions
            .revoke_all_for(&session.principal.id, "sign_out_everywhere", now)
            .await
    } else {
        sessions
            .revoke(&session.id, "logout", now)
            .await
            .map(u64::from)
    };
    let ended = match ended {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "sign-out failed on the store");
            return refuse(
                trail,
                info,
                ErrorCode::Internal,
                "sign-out failed; try again",
            );
        }
    };
    let reason = if body.everywhere {
        "sign_out_everywhere"
    } else {
        "logout"
    };
    let event = sign_in_event(
        &view,
        &SignInFacts {
            activity: (2, "Logoff"),
            outcome: Outcome::Success,
            principal: Some(&session.principal),
            claimed_name: None,
            reason,
            methods: &session.methods,
            session: Some((&session.id, session.expires_at)),
            locked_until: None,
        },
    );
    if let Err(refusal) = record_decision(&state.sink, event).await {
        // Signed out all the same; say the record is missing.
        tracing::error!(error = %refusal, "sign-out could not be recorded");
    }
    let mut response = json_response(
        StatusCode::OK,
        &json!({"signed_out": true, "sessions_ended": ended}),
    );
    let clear_csrf = format!(
        "{}=; Path=/; Secure; SameSite=Strict; Max-Age=0",
        crate::authenticate::CSRF_COOKIE
    );
    for clear in [sessions.clear_cookie(), clear_csrf] {
        if let Ok(v) = HeaderValue::from_str(&clear) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn whoami(state: Arc<GatewayState>, req: GatewayRequest) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let (parts, _body) = req.into_parts();
    let session = match required_session(&state, &parts, &info, &trail).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    json_response(
        StatusCode::OK,
        &json!({
            "user": {"id": session.principal.id, "name": session.principal.name, "roles": session.principal.roles},
            "session": {
                "id": session.id,
                "created_at": session.created_at,
                "expires_at": session.expires_at,
                "methods": session.methods,
                "mfa_at": session.mfa_at,
            },
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepUpBody {
    #[serde(default)]
    totp: Option<Zeroizing<String>>,
    #[serde(default)]
    recovery_code: Option<Zeroizing<String>>,
    /// A passkey assertion for a ceremony started with
    /// `POST /auth/webauthn/login/start` for the session's own user.
    #[serde(default)]
    webauthn: Option<StepUpPasskey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepUpPasskey {
    ceremony: String,
    credential: citadel_identity::passkeys::PublicKeyCredential,
}

async fn step_up(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (info, trail) = (&info, &trail);
    let (parts, body) = req.into_parts();
    let session = match required_session(&state, &parts, info, trail).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    let view = RequestView::of_parts(info, &parts.method, &parts.uri, &parts.headers);
    let body: StepUpBody = match read_json(&state, info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(trail, info, code, message),
    };
    let now = now_ms();
    let locked = match state
        .signin
        .throttle
        .locked_until(&session.principal.name, info.client.ip(), now)
        .await
    {
        Ok(locked) => locked,
        Err(e) => {
            tracing::error!(error = %e, "throttle unavailable; step-up refused");
            return refuse(
                trail,
                info,
                ErrorCode::Internal,
                "step-up is unavailable right now; try again shortly",
            );
        }
    };
    if let Some(until) = locked {
        trail.update(|t| t.error = Some(ErrorCode::LoginLocked));
        let mut e = ApiError::new(
            ErrorCode::LoginLocked,
            "too many failed attempts; wait for the number of seconds in Retry-After",
        );
        e.retry_after = Some(((until - now).max(0) as u64).div_ceil(1000).max(1));
        return error_response(&e, Some(&info.id));
    }
    let factors = &state.signin.factors;
    let user_id = &session.principal.id;
    let checked = match (&body.totp, &body.recovery_code, &body.webauthn) {
        (Some(code), None, None) => factors
            .check_totp(user_id, code, now)
            .await
            .map(|c| ("otp", c)),
        (None, Some(code), None) => factors
            .check_recovery_code(user_id, code, now)
            .await
            .map(|c| ("recovery", c)),
        (None, None, Some(passkey)) => {
            match state
                .signin
                .passkeys
                .finish_authentication(&passkey.ceremony, &passkey.credential, now)
                .await
            {
                // The passkey must be the session's own person's.
                Ok(Ok((owner, _))) if &owner == user_id => Ok(("webauthn", FactorCheck::Accepted)),
                Ok(_) => Ok(("webauthn", FactorCheck::Wrong)),
                Err(e) => {
                    tracing::error!(error = %e, "passkey step-up failed");
                    return refuse(
                        trail,
                        info,
                        ErrorCode::Internal,
                        "step-up failed; try again",
                    );
                }
            }
        }
        _ => {
            return refuse(
                trail,
                info,
                ErrorCode::InvalidJson,
                "send exactly one of `totp`, `recovery_code` or `webauthn`",
            )
        }
    };
    let (method, check) = match checked {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "second factor could not be checked");
            return refuse(
                trail,
                info,
                ErrorCode::Internal,
                "the second factor could not be checked; try again shortly",
            );
        }
    };
    let mut methods = session.methods.clone();
    let rotated = if check == FactorCheck::Accepted {
        if !methods.iter().any(|m| m == method) {
            methods.push(method.into());
        }
        let user = UserRecord {
            id: session.principal.id.clone(),
            name: session.principal.name.clone(),
            roles: session.principal.roles.clone(),
            disabled: false,
            created_at: session.created_at,
        };
        let start = SessionStart {
            user: &user,
            methods: methods.clone(),
            mfa_at: Some(now),
            source_ip: info.client.ip().to_string(),
            user_agent,
        };
        match state.signin.sessions.rotate(&session, start, now).await {
            Ok(new) => Some(new),
            Err(e) => {
                tracing::error!(error = %e, "session rotation failed");
                return refuse(
                    trail,
                    info,
                    ErrorCode::Internal,
                    "step-up failed; try again",
                );
            }
        }
    } else {
        let _ = state
            .signin
            .throttle
            .failed(&session.principal.name, info.client.ip(), now)
            .await;
        None
    };
    let principal = Principal {
        credential: match &rotated {
            Some(new) => format!("session:{}", new.record.id),
            None => session.principal.credential.clone(),
        },
        ..(*session.principal).clone()
    };
    let event = sign_in_event(
        &view,
        &SignInFacts {
            activity: (99, "Step-up"),
            outcome: if rotated.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            principal: Some(&principal),
            claimed_name: None,
            reason: check.as_str(),
            methods: &methods,
            session: rotated
                .as_ref()
                .map(|s| (s.record.id.as_str(), s.record.expires_at)),
            locked_until: None,
        },
    );
    let made = rotated.as_ref().map(|s| s.record.id.as_str());
    if let Err(refusal) = record_session_event(&state, event, made, now).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    match rotated {
        Some(new) => {
            trail.update(|t| t.mfa_at = new.record.mfa_at);
            session_response(&state, &new, &principal)
        }
        None => refuse(
            trail,
            info,
            ErrorCode::MfaFailed,
            "the second factor was not accepted (wrong, malformed, or already used); use the next code",
        ),
    }
}
