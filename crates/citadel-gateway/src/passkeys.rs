//! Passkey (WebAuthn) endpoints under `/auth/webauthn/`, reached through
//! the sign-in layer:
//!
//! - `POST /auth/webauthn/register/start` (a signed-in session, with its
//!   CSRF token) → `{"ceremony", "options"}` for `navigator.credentials.create()`;
//! - `POST /auth/webauthn/register/finish` `{"ceremony", "credential", "name"}`
//!   → the passkey is stored;
//! - `POST /auth/webauthn/login/start` `{"username"}` → `{"ceremony",
//!   "options"}` for `navigator.credentials.get()`;
//! - `POST /auth/webauthn/login/finish` `{"ceremony", "credential"}` → a
//!   session, as `POST /auth/login` gives (methods `["webauthn"]`, which is
//!   multi-factor).
//!
//! A response for another origin, with a bad signature, or from a cloned
//! authenticator (its counter went back) is refused with
//! `invalid_credentials` and an Authentication event naming the reason; a
//! clone also raises the person's risk score.

use std::sync::Arc;

use citadel_core::clock::now_ms;
use citadel_core::{ErrorCode, Outcome, Principal, PrincipalKind};
use citadel_identity::passkeys::{
    PasskeyFailure, PublicKeyCredential, RegisterPublicKeyCredential,
};
use citadel_identity::session::SessionStart;
use citadel_policy::{Action, RequestFacts, Resource};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::context::{RequestInfo, Trail};
use crate::events::{record_decision, sign_in_event, RequestView, SignInFacts};
use crate::signin::{read_json, refuse, required_session, session_response};
use crate::state::GatewayState;
use crate::{error_response, json_response, GatewayRequest, GatewayResponse};

/// Risk added to a person whose passkey shows signs of cloning.
const CLONED_AUTHENTICATOR_RISK: i64 = 50;

/// Dispatches `/auth/webauthn/…` (POST only; the sign-in layer checked the method).
pub(crate) async fn endpoint(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    match req.uri().path() {
        "/auth/webauthn/register/start" => register_start(state, req, info, trail).await,
        "/auth/webauthn/register/finish" => register_finish(state, req, info, trail).await,
        "/auth/webauthn/login/start" => login_start(state, req, info, trail).await,
        "/auth/webauthn/login/finish" => login_finish(state, req, info, trail).await,
        _ => refuse(
            &trail,
            &info,
            ErrorCode::RouteNotFound,
            "no such passkey endpoint; see /auth/webauthn/{register,login}/{start,finish}",
        ),
    }
}

fn internal(trail: &Trail, info: &RequestInfo, e: impl std::fmt::Display) -> GatewayResponse {
    tracing::error!(error = %e, "passkey ceremony failed");
    refuse(
        trail,
        info,
        ErrorCode::Internal,
        "the passkey ceremony failed; try again",
    )
}

async fn register_start(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (parts, _body) = req.into_parts();
    let session = match required_session(&state, &parts, &info, &trail).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let user = match state.signin.store().find_user(&session.principal.id).await {
        Ok(u) => u,
        Err(e) => return internal(&trail, &info, e),
    };
    // A person who already has a second factor must have proved it in the
    // last five minutes: otherwise a stolen password would be enough to add
    // an attacker's passkey, which then counts as multi-factor. (The first
    // factor of someone who has none is added from a password session.)
    let now = now_ms();
    let has_factor = match (
        state.signin.factors.has_totp(&user.id).await,
        state.signin.store().passkeys_of(&user.id).await,
    ) {
        (Ok(totp), Ok(keys)) => totp || !keys.is_empty(),
        (Err(e), _) => return internal(&trail, &info, e),
        (_, Err(e)) => return internal(&trail, &info, e),
    };
    let fresh = session.mfa_at.is_some_and(|at| now - at <= 300_000);
    if has_factor && !fresh {
        trail.update(|t| t.error = Some(ErrorCode::StepUpRequired));
        return error_response(
            &citadel_core::ApiError::step_up("mfa", Some(300)),
            Some(&info.id),
        );
    }
    match state.signin.passkeys.start_registration(&user, now).await {
        Ok((ceremony, options)) => json_response(
            StatusCode::OK,
            &json!({"ceremony": ceremony, "options": options}),
        ),
        Err(e) => internal(&trail, &info, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

async fn register_finish(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (parts, body) = req.into_parts();
    let session = match required_session(&state, &parts, &info, &trail).await {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let body: RegisterFinish = match read_json(&state, &info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(&trail, &info, code, message),
    };
    let name = body.name.unwrap_or_else(|| "passkey".into());
    let now = now_ms();
    let result = match state
        .signin
        .passkeys
        .finish_registration(
            &session.principal.id,
            &body.ceremony,
            &body.credential,
            &name,
            now,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&trail, &info, e),
    };
    let (outcome, reason) = match &result {
        Ok(_) => (Outcome::Success, "passkey_registered"),
        Err(f) => (Outcome::Failure, f.as_str()),
    };
    let event = citadel_core::SecurityEvent::change(
        "users.mfa_enroll",
        "gateway",
        json!({"type": "User", "uid": session.principal.id, "factor": "passkey"}),
    )
    .actor(&session.principal)
    .request_id(&info.id)
    .field("status_detail", json!(reason))
    .build();
    let event = if outcome == Outcome::Failure {
        let mut e = event;
        e.body["status_id"] = json!(2);
        e.body["status"] = json!("Failure");
        e
    } else {
        event
    };
    if let Err(refusal) = record_decision(&state.sink, event).await {
        return error_response(&refusal, Some(&info.id));
    }
    match result {
        Ok(record) => json_response(
            StatusCode::OK,
            &json!({"credential_id": record.credential_id, "name": record.name}),
        ),
        Err(f) => refuse(
            &trail,
            &info,
            ErrorCode::InvalidRequest,
            format!(
                "the passkey was not registered ({}); start again",
                f.as_str()
            ),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginStart {
    username: String,
}

async fn login_start(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (_parts, body) = req.into_parts();
    let body: LoginStart = match read_json(&state, &info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(&trail, &info, code, message),
    };
    let now = now_ms();
    match state
        .signin
        .throttle
        .locked_until(&body.username, info.client.ip(), now)
        .await
    {
        Ok(None) => {}
        Ok(Some(until)) => {
            let mut e = citadel_core::ApiError::new(
                ErrorCode::LoginLocked,
                "too many failed sign-ins; wait for the number of seconds in Retry-After",
            );
            e.retry_after = Some(((until - now).max(0) as u64).div_ceil(1000).max(1));
            trail.update(|t| t.error = Some(ErrorCode::LoginLocked));
            return error_response(&e, Some(&info.id));
        }
        Err(e) => return internal(&trail, &info, e),
    }
    let user = match state.signin.store().find_user(&body.username).await {
        Ok(u) if u.name == body.username && !u.disabled => Some(u),
        Ok(_) | Err(citadel_store::StoreError::NotFound(_)) => None,
        Err(e) => return internal(&trail, &info, e),
    };
    let started = match &user {
        Some(u) => match state.signin.passkeys.start_authentication(u, now).await {
            Ok(r) => r.ok(),
            Err(e) => return internal(&trail, &info, e),
        },
        None => None,
    };
    match started {
        Some((ceremony, options)) => json_response(
            StatusCode::OK,
            &json!({"ceremony": ceremony, "options": options}),
        ),
        None => refuse(
            &trail,
            &info,
            ErrorCode::InvalidCredentials,
            "no passkey sign-in for this user; sign in with a password",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFinish {
    ceremony: String,
    credential: PublicKeyCredential,
}

async fn login_finish(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect::<String>());
    let (parts, body) = req.into_parts();
    let view = RequestView::of_parts(&info, &parts.method, &parts.uri, &parts.headers);
    let body: LoginFinish = match read_json(&state, &info, body, false).await {
        Ok(b) => b,
        Err((code, message)) => return refuse(&trail, &info, code, message),
    };
    let now = now_ms();
    let checked = match state
        .signin
        .passkeys
        .finish_authentication(&body.ceremony, &body.credential, now)
        .await
    {
        Ok(r) => r,
        Err(e) => return internal(&trail, &info, e),
    };
    let methods = vec!["webauthn".to_owned()];
    let (user_id, failure) = match checked {
        Ok((user_id, _credential)) => (Some(user_id), None),
        Err((user_id, failure)) => (user_id, Some(failure)),
    };
    let user = match &user_id {
        Some(id) => state.signin.store().find_user(id).await.ok(),
        None => None,
    };
    let principal = user.as_ref().map(|u| Principal {
        id: u.id.clone(),
        kind: PrincipalKind::User,
        name: u.name.clone(),
        roles: u.roles.clone(),
        credential: "passkey".into(),
    });
    // Policy has the last word, as for password sign-in; a passkey is multi-factor.
    let failure = failure.or_else(|| {
        let (u, p) = (user.as_ref()?, principal.as_ref()?);
        if u.disabled {
            return Some(PasskeyFailure::UserDisabled);
        }
        let allowed = state
            .policy
            .authorize(
                p,
                Action::SignIn,
                &Resource::Listener("gateway"),
                &RequestFacts {
                    source_ip: info.client.ip(),
                    method: "POST",
                    path: "/auth/webauthn/login/finish",
                    auth_method: "passkey",
                    mfa: true,
                    mfa_age_seconds: 0,
                    device_trust: "unknown",
                    verification: Default::default(),
                },
            )
            .allowed;
        (!allowed).then_some(PasskeyFailure::PolicyDenied)
    });
    let session = match (&failure, &user) {
        (None, Some(u)) => {
            let start = SessionStart {
                user: u,
                methods: methods.clone(),
                mfa_at: Some(now),
                source_ip: info.client.ip().to_string(),
                user_agent,
            };
            match state.signin.sessions.create(start, now).await {
                Ok(s) => Some(s),
                Err(e) => return internal(&trail, &info, e),
            }
        }
        _ => None,
    };
    if let (Some(f), Some(u)) = (&failure, &user) {
        if *f == PasskeyFailure::ClonedAuthenticator {
            crate::verify::raise_risk(
                &state,
                &u.id,
                CLONED_AUTHENTICATOR_RISK,
                None,
                "cloned_authenticator",
                &info.id,
            )
            .await;
        } else if f.is_wrong_credential() {
            let _ = state
                .signin
                .throttle
                .failed(&u.name, info.client.ip(), now)
                .await;
        }
    }
    let reason = match &failure {
        None => "signed_in",
        Some(f) => f.as_str(),
    };
    let principal_for_event = principal.as_ref().map(|p| Principal {
        credential: match &session {
            Some(s) => format!("session:{}", s.record.id),
            None => "passkey".into(),
        },
        ..p.clone()
    });
    let mut event = sign_in_event(
        &view,
        &SignInFacts {
            activity: (1, "Logon"),
            outcome: if session.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            principal: principal_for_event.as_ref(),
            claimed_name: None,
            reason,
            methods: &methods,
            session: session
                .as_ref()
                .map(|s| (s.record.id.as_str(), s.record.expires_at)),
            locked_until: None,
        },
    );
    event.body["auth_protocol"] = json!("WebAuthn");
    event.body["is_mfa"] = json!(true);
    tracing::info!(request_id = %info.id, reason, "passkey sign-in");
    let made = session.as_ref().map(|s| s.record.id.as_str());
    if let Err(refusal) = crate::signin::record_session_event(&state, event, made, now).await {
        return error_response(&refusal, Some(&info.id));
    }
    match (session, principal_for_event) {
        (Some(s), Some(p)) => {
            trail.update(|t| {
                t.principal = Some(Arc::new(p.clone()));
                t.auth_method = Some("passkey");
                t.mfa_at = Some(now);
            });
            session_response(&state, &s, &p)
        }
        _ if failure == Some(PasskeyFailure::PolicyDenied) => refuse(
            &trail,
            &info,
            ErrorCode::Forbidden,
            "you may not sign in here",
        ),
        _ => refuse(
            &trail,
            &info,
            ErrorCode::InvalidCredentials,
            "the passkey was not accepted; start again",
        ),
    }
}
