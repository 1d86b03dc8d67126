//! Browser sign-in through an OIDC provider, under `/auth/oidc/<name>/`,
//! reached through the sign-in layer:
//!
//! - `GET /auth/oidc/<name>/login` → 302 to the provider's authorization
//!   endpoint (code flow, PKCE S256, state, nonce); the state is also put in
//!   a short-lived `__Host-citadel_oidc` cookie, so the callback can only be
//!   completed by the browser that started it (login CSRF).
//! - `GET /auth/oidc/<name>/callback?code=…&state=…` → the code is
//!   exchanged and the ID token verified; policy's `sign_in` decides as for
//!   any sign-in; a small page that moves on to the provider's
//!   `after_login` path (so the navigation is same-site and the
//!   `SameSite=Strict` session cookie goes with it), with the session
//!   cookie and a `__Host-citadel_csrf` cookie page scripts read to send
//!   `X-CSRF-Token`.

use std::sync::Arc;

use citadel_core::clock::now_ms;
use citadel_core::{ApiError, ErrorCode, Outcome, Principal, PrincipalKind};
use citadel_identity::session::SessionStart;
use citadel_policy::{Action, RequestFacts, Resource};
use http::{header, HeaderValue, StatusCode};
use subtle::ConstantTimeEq;

use crate::context::{RequestInfo, Trail};
use crate::events::{record_decision, sign_in_event, RequestView, SignInFacts};
use crate::signin::refuse;
use crate::state::GatewayState;
use crate::{error_response, full, GatewayRequest, GatewayResponse};

const STATE_COOKIE: &str = "__Host-citadel_oidc";
use crate::authenticate::CSRF_COOKIE;

fn redirect(location: &str) -> GatewayResponse {
    let mut response = http::Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Dispatches `/auth/oidc/<name>/{login,callback}` (GET).
pub(crate) async fn endpoint(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let path = req.uri().path().to_owned();
    let rest = path.trim_start_matches("/auth/oidc/");
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) if state.signin.oidc.has(n) => (n.to_owned(), a.to_owned()),
        _ => {
            return refuse(
                &trail,
                &info,
                ErrorCode::RouteNotFound,
                "no such OIDC provider; see identity.oidc in the configuration",
            )
        }
    };
    match action.as_str() {
        "login" => login(state, &name, info, trail).await,
        "callback" => callback(state, req, &name, info, trail).await,
        _ => refuse(
            &trail,
            &info,
            ErrorCode::RouteNotFound,
            "use /auth/oidc/<provider>/login",
        ),
    }
}

async fn login(
    state: Arc<GatewayState>,
    name: &str,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    match state.signin.oidc.begin(name, now_ms()).await {
        Ok((url, login_state)) => {
            let mut response = redirect(&url);
            // Lax: the provider's redirect back is a cross-site navigation.
            let cookie = format!(
                "{STATE_COOKIE}={login_state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=300"
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(f) => {
            tracing::warn!(
                provider = name,
                reason = f.as_str(),
                "OIDC sign-in could not start"
            );
            refuse(
                &trail,
                &info,
                ErrorCode::UpstreamUnavailable,
                "the identity provider cannot be reached; try again shortly",
            )
        }
    }
}

async fn callback(
    state: Arc<GatewayState>,
    req: GatewayRequest,
    name: &str,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (parts, _body) = req.into_parts();
    let view = RequestView::of_parts(&info, &parts.method, &parts.uri, &parts.headers);
    let query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let now = now_ms();
    let browser_state = cookie_value(&parts.headers, STATE_COOKIE).unwrap_or("");
    let query_state = query.get("state").map(String::as_str).unwrap_or("");
    let bound = !query_state.is_empty()
        && bool::from(browser_state.as_bytes().ct_eq(query_state.as_bytes()));
    let outcome = if let Some(error) = query.get("error") {
        Err(citadel_identity::oidc::OidcFailure::ProviderError(
            error.chars().take(64).collect(),
        ))
    } else if !bound {
        Err(citadel_identity::oidc::OidcFailure::BadState)
    } else {
        let code = query.get("code").map(String::as_str).unwrap_or("");
        state.signin.oidc.finish(name, code, query_state, now).await
    };
    // A first sign-in made a user: on record whether or not policy now
    // lets them in.
    if let Ok(identity) = &outcome {
        if identity.created {
            let made = citadel_core::SecurityEvent::change(
                "users.create",
                "gateway",
                serde_json::json!({"type": "User", "uid": identity.user.id, "provider": name}),
            )
            .actor_named("system", "citadel", "system")
            .request_id(&info.id)
            .build();
            if let Err(refusal) = record_decision(&state.sink, made).await {
                return error_response(&refusal, Some(&info.id));
            }
        }
    }
    let outcome = outcome.and_then(|identity| {
        let principal = Principal {
            id: identity.user.id.clone(),
            kind: PrincipalKind::User,
            name: identity.user.name.clone(),
            roles: identity.user.roles.clone(),
            credential: format!("oidc:{name}"),
        };
        let allowed = state
            .policy
            .authorize(
                &principal,
                Action::SignIn,
                &Resource::Listener("gateway"),
                &RequestFacts {
                    source_ip: info.client.ip(),
                    method: "GET",
                    path: "/auth/oidc/callback",
                    auth_method: "oidc",
                    mfa: identity.mfa,
                    mfa_age_seconds: if identity.mfa {
                        (now - identity.authenticated_at).max(0) / 1000
                    } else {
                        i64::MAX
                    },
                    device_trust: "unknown",
                    verification: Default::default(),
                },
            )
            .allowed;
        if allowed {
            Ok(identity)
        } else {
            Err(citadel_identity::oidc::OidcFailure::Invalid(
                "policy does not let this user sign in (a second factor at the provider may be required)".into(),
            ))
        }
    });
    // The provider's own second factor (its `amr`) counts as one here.
    let mut methods = vec!["oidc".to_owned()];
    if outcome.as_ref().is_ok_and(|i| i.mfa) {
        methods.push("mfa".to_owned());
    }
    let session = match &outcome {
        Ok(identity) => {
            if let Err(e) = state.signin.oidc.apply_roles(&identity.user).await {
                tracing::error!(error = %e, "roles from the provider could not be stored");
                return refuse(
                    &trail,
                    &info,
                    ErrorCode::Internal,
                    "sign-in failed; try again",
                );
            }
            let start = SessionStart {
                user: &identity.user,
                methods: methods.clone(),
                // When the provider says the factor was proved, so a
                // provider's long single-sign-on session is not "fresh".
                mfa_at: identity.mfa.then_some(identity.authenticated_at),
                source_ip: info.client.ip().to_string(),
                user_agent: parts
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.chars().take(512).collect()),
            };
            match state.signin.sessions.create(start, now).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "session could not be made after OIDC sign-in");
                    return refuse(
                        &trail,
                        &info,
                        ErrorCode::Internal,
                        "sign-in failed; try again",
                    );
                }
            }
        }
        Err(_) => None,
    };
    let principal = outcome.as_ref().ok().map(|identity| Principal {
        id: identity.user.id.clone(),
        kind: PrincipalKind::User,
        name: identity.user.name.clone(),
        roles: identity.user.roles.clone(),
        credential: session
            .as_ref()
            .map(|s| format!("session:{}", s.record.id))
            .unwrap_or_default(),
    });
    let reason = match &outcome {
        Ok(_) => "signed_in",
        Err(f) => f.as_str(),
    };
    let mut event = sign_in_event(
        &view,
        &SignInFacts {
            activity: (1, "Logon"),
            outcome: if session.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            principal: principal.as_ref(),
            claimed_name: None,
            reason,
            methods: &methods,
            session: session
                .as_ref()
                .map(|s| (s.record.id.as_str(), s.record.expires_at)),
            locked_until: None,
        },
    );
    event.body["auth_protocol"] = serde_json::json!("OpenID Connect");
    event.body["unmapped"]["provider"] = serde_json::json!(name);
    tracing::info!(request_id = %info.id, provider = name, reason, "OIDC sign-in");
    let made = session.as_ref().map(|s| s.record.id.as_str());
    if let Err(refusal) = crate::signin::record_session_event(&state, event, made, now).await {
        return error_response(&refusal, Some(&info.id));
    }
    let clear_state = format!("{STATE_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    match (outcome, session) {
        (Ok(identity), Some(session)) => {
            trail.update(|t| {
                t.principal = principal.map(Arc::new);
                t.auth_method = Some("oidc");
            });
            // A small page that moves on to `after_login` itself: the
            // browser arrived here from the provider (cross-site), so a
            // redirect would still be cross-site and the SameSite=Strict
            // session cookie would not go with it; a navigation started by
            // this page is same-site, and it does.
            let target = html_escape(&identity.after_login);
            let mut response = http::Response::new(full(format!(
                "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={target}\"><title>Signed in</title><p>Signed in. <a href=\"{target}\">Continue</a></p>"
            )));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            let csrf = format!(
                "{CSRF_COOKIE}={}; Path=/; Secure; SameSite=Strict; Max-Age={}",
                session.csrf_token.as_str(),
                (session.record.expires_at - now).max(0) / 1000
            );
            for cookie in [
                state.signin.sessions.set_cookie(&session, now).to_string(),
                csrf,
                clear_state,
            ] {
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
        (Err(failure), _) => {
            let code = match failure {
                citadel_identity::oidc::OidcFailure::Unavailable(_) => {
                    ErrorCode::UpstreamUnavailable
                }
                citadel_identity::oidc::OidcFailure::NoRoles
                | citadel_identity::oidc::OidcFailure::UserDisabled => ErrorCode::Forbidden,
                _ => ErrorCode::InvalidCredentials,
            };
            trail.update(|t| t.error = Some(code));
            let mut response = error_response(
                &ApiError::new(
                    code,
                    "sign-in through the identity provider failed; start again",
                ),
                Some(&info.id),
            );
            if let Ok(v) = HeaderValue::from_str(&clear_state) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        (Ok(_), None) => refuse(
            &trail,
            &info,
            ErrorCode::Internal,
            "sign-in failed; try again",
        ),
    }
}
