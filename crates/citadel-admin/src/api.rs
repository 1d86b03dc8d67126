//! Routes and handlers of the admin API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use citadel_core::{clock, ErrorCode, EventClass, Outcome, Principal};
use citadel_gateway::authenticate::{refuse_credentials, verify_bearer};
use citadel_gateway::context::RequestInfo;
use citadel_gateway::events::{authorization_decision, RequestView};
use citadel_identity::KeyRequest;
use citadel_policy::{Action, RequestFacts, Resource, ADMIN_OPERATIONS};
use citadel_store::EventQuery;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    audit_log, consent, data_keys, machines, people, subjects, AdminError, AdminState, OPENAPI,
};

pub(crate) type ApiResult = Result<Json<Value>, AdminError>;

/// The authenticated caller of an admin request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    principal: Arc<Principal>,
    info: RequestInfo,
    method: http::Method,
    path: String,
}

impl Caller {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            info: &self.info,
            method: &self.method,
            path: &self.path,
            user_agent: None,
        }
    }
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    let authenticated = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/users/{name}/erase", post(erase_user))
        .route("/api/v1/users/{name}/password", put(people::set_password))
        .route("/api/v1/users/{name}/mfa", get(people::mfa_status))
        .route(
            "/api/v1/users/{name}/mfa/totp",
            post(people::enroll_totp).delete(people::remove_totp),
        )
        .route(
            "/api/v1/users/{name}/mfa/recovery-codes",
            post(people::new_recovery_codes),
        )
        .route(
            "/api/v1/users/{name}/mfa/passkeys/{credential_id}",
            axum::routing::delete(people::remove_passkey),
        )
        .route("/api/v1/users/{name}/sessions", get(people::list_sessions))
        .route("/api/v1/users/{name}/sign-out", post(people::sign_out))
        .route("/api/v1/users/{name}/unlock", post(people::unlock))
        .route("/api/v1/roles", get(list_roles).post(create_role))
        .route("/api/v1/keys", get(list_keys).post(create_key))
        .route("/api/v1/keys/{id}/revoke", post(revoke_key))
        .route("/api/v1/upstreams", get(list_upstreams))
        .route("/api/v1/policies", get(list_policies))
        .route("/api/v1/segments", get(segments))
        .route("/api/v1/devices", get(machines::list_devices))
        .route(
            "/api/v1/devices/enroll-tokens",
            post(machines::enroll_token),
        )
        .route("/api/v1/devices/{id}/revoke", post(machines::revoke_device))
        .route("/api/v1/workloads", get(machines::list_workloads))
        .route("/api/v1/workloads/revoke", post(machines::revoke_workload))
        .route(
            "/api/v1/risk",
            get(machines::get_risk).put(machines::set_risk),
        )
        .route("/api/v1/subjects/export", post(subjects::export_api))
        .route("/api/v1/subjects/erase", post(subjects::erase_api))
        .route("/api/v1/privacy/purge", post(subjects::purge_api))
        .route("/api/v1/privacy", get(subjects::settings_api))
        .route("/api/v1/privacy/scan", post(subjects::scan_api))
        .route("/api/v1/data-keys", get(data_keys::list))
        .route("/api/v1/data-keys/rotate", post(data_keys::rotate))
        .route("/api/v1/consent/purposes", get(consent::purposes))
        .route("/api/v1/consent/receipt", post(consent::receipt))
        .route("/api/v1/consent/grant", post(consent::grant))
        .route("/api/v1/consent/withdraw", post(consent::withdraw))
        .route("/api/v1/policies/validate", post(validate_policies))
        .route("/api/v1/policies/reload", post(reload_policies))
        .route("/api/v1/events", get(list_events))
        .route(
            "/api/v1/audit/checkpoint",
            get(audit_log::latest).post(audit_log::checkpoint_now),
        )
        .route("/api/v1/audit/proof/inclusion", get(audit_log::inclusion))
        .route(
            "/api/v1/audit/proof/consistency",
            get(audit_log::consistency),
        )
        .route("/audit/log/tile/entries/{*path}", get(audit_log::entries))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi))
        .route("/audit/log/checkpoint", get(audit_log::checkpoint))
        .route("/audit/log/tile/{*path}", get(audit_log::tile))
        .merge(authenticated)
        .fallback(|| async {
            AdminError::new(
                ErrorCode::RouteNotFound,
                "no such admin endpoint; see /openapi.json",
            )
        })
        .with_state(state)
}

fn request_info(req: &Request) -> RequestInfo {
    req.extensions()
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or_else(|| RequestInfo {
            id: uuid_v7(),
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            started: std::time::Instant::now(),
            client_cert: None,
        })
}

fn uuid_v7() -> String {
    // The server always inserts RequestInfo; this is only for in-process callers.
    format!("admin-{}", clock::now_ms())
}

async fn authenticate(State(state): State<AdminState>, mut req: Request, next: Next) -> Response {
    let info = request_info(&req);
    if !state.sink.is_healthy() {
        return AdminError::new(
            ErrorCode::AuditUnavailable,
            "security events cannot be recorded right now, so admin calls are refused",
        )
        .into_response();
    }
    match verify_bearer(&state.registry, req.headers()) {
        Ok(key) => {
            let caller = Caller {
                principal: key.principal,
                method: req.method().clone(),
                path: req.uri().path().to_owned(),
                info,
            };
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(failure) => {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let view = RequestView {
                info: &info,
                method: &method,
                path: &path,
                user_agent: None,
            };
            refuse_credentials(&state.gateway, &view, failure, "admin")
                .await
                .map(axum::body::Body::new)
        }
    }
}

/// Decides an admin operation and records the decision durably first.
pub(crate) async fn authorize(
    state: &AdminState,
    caller: &Caller,
    operation: &'static str,
    area: &str,
) -> Result<(), AdminError> {
    debug_assert!(ADMIN_OPERATIONS.contains(&operation));
    decide(
        state,
        caller,
        Action::Admin(operation),
        &Resource::AdminApi(area),
        json!({"type": "AdminApi", "uid": area}),
    )
    .await
}

/// Asks, per role, whether the caller may hand it out (`grant_role`), so an
/// operator cannot mint a key or user more privileged than policy allows.
pub(crate) async fn authorize_grants(
    state: &AdminState,
    caller: &Caller,
    roles: &[String],
) -> Result<(), AdminError> {
    for role in roles {
        decide(
            state,
            caller,
            Action::GrantRole,
            &Resource::Role(role),
            json!({"type": "Role", "uid": role}),
        )
        .await?;
    }
    Ok(())
}

/// One Cedar decision on the admin API, recorded durably before it takes effect.
async fn decide(
    state: &AdminState,
    caller: &Caller,
    action: Action,
    resource: &Resource<'_>,
    resource_json: Value,
) -> Result<(), AdminError> {
    let facts = RequestFacts {
        source_ip: caller.info.client.ip(),
        method: caller.method.as_str(),
        path: &caller.path,
        auth_method: "api_key",
        mfa: false,
        mfa_age_seconds: i64::MAX,
        device_trust: "unknown",
        verification: citadel_policy::Verification {
            risk_score: state
                .gateway
                .verifier
                .risk
                .score(&caller.principal.id, clock::now_ms()),
            ..Default::default()
        },
    };
    let decision = state
        .policy
        .authorize(&caller.principal, action, resource, &facts);
    let event = authorization_decision(
        &caller.view(),
        &caller.principal,
        action.cedar_id(),
        resource_json,
        decision.allowed,
        &decision.policies,
        "admin",
    );
    if state.sink.record_decision_durable(event).await.is_err() {
        return Err(AdminError::new(
            ErrorCode::AuditUnavailable,
            "security events cannot be recorded right now, so admin calls are refused",
        ));
    }
    if !decision.allowed {
        tracing::info!(principal = %caller.principal.id, action = action.cedar_id(), "admin call denied by policy");
        return Err(AdminError::new(
            ErrorCode::Forbidden,
            "your role is not permitted to do this",
        ));
    }
    Ok(())
}

/// Records what a permitted change did (Account Change for identities).
pub(crate) async fn record_change(
    state: &AdminState,
    caller: &Caller,
    operation: &str,
    resource: Value,
) -> Result<(), AdminError> {
    let event = citadel_core::SecurityEvent::change(operation, "admin", resource)
        .actor(&caller.principal)
        .request_id(&caller.info.id)
        .build();
    state.sink.record_durable(event).await.map_err(|_| {
        AdminError::new(
            ErrorCode::AuditUnavailable,
            "the change was made but could not be recorded",
        )
    })
}

pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AdminError> {
    body.map(|Json(v)| v)
        .map_err(|e| AdminError::new(ErrorCode::InvalidJson, e.body_text()))
}

async fn health(State(state): State<AdminState>) -> Response {
    let healthy = state.sink.is_healthy();
    let body = json!({"status": if healthy { "ok" } else { "degraded" }, "audit": if healthy { "ok" } else { "unavailable" }});
    let status = if healthy {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, AdminError> {
    authorize(&state, &caller, "metrics.read", "metrics").await?;
    state.metrics.event_sink_lag.set(state.sink.lag());
    state.metrics.events_written.set(state.sink.written());
    audit_gauges(&state).await?;
    Ok((
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response())
}

/// The audit log's gauges, read at scrape time: its size, the latest
/// checkpoint's size and age, and how far behind each exporter is (a stuck
/// exporter shows as a growing lag).
async fn audit_gauges(state: &AdminState) -> Result<(), AdminError> {
    let m = &state.metrics;
    let size = state.store.log_size().await?;
    m.audit_log_entries.set(size as i64);
    if let Some(c) = state.store.latest_checkpoint().await? {
        m.audit_checkpoint_size.set(c.size as i64);
        m.audit_checkpoint_age_seconds
            .set((clock::now_ms() - c.created_at).max(0) / 1000);
    }
    for name in &state.exporters {
        let next = state.store.export_cursor(name).await?;
        m.audit_export_lag
            .get_or_create(&citadel_gateway::metrics::ExporterLabels {
                exporter: name.clone(),
            })
            .set(size.saturating_sub(next) as i64);
    }
    Ok(())
}

async fn list_users(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "users.list", "users").await?;
    Ok(Json(json!({"users": state.store.list_users().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    roles: Vec<String>,
    /// Optional: checked against the password policy before the user is made.
    #[serde(default)]
    password: Option<zeroize::Zeroizing<String>>,
}

async fn create_user(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "users.create", "users").await?;
    let body = json_body(body)?;
    authorize_grants(&state, &caller, &body.roles).await?;
    let passwords = &state.gateway.signin.passwords;
    let hash = match body.password {
        Some(password) => {
            passwords
                .check_policy(&body.name, &password)
                .map_err(citadel_identity::AccountError::from)?;
            Some(
                passwords
                    .hash(password)
                    .await
                    .map_err(citadel_identity::AccountError::from)?,
            )
        }
        None => None,
    };
    let user = citadel_identity::create_user(&state.store, &body.name, body.roles).await?;
    if let Some(hash) = &hash {
        state
            .store
            .set_password_hash(&user.id, hash, clock::now_ms())
            .await?;
    }
    record_change(
        &state,
        &caller,
        "users.create",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(json!(user)))
}

async fn disable_user(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "users.disable", "users").await?;
    let user = state.store.set_user_disabled(&name, true).await?;
    refresh_credentials(&state).await;
    record_change(
        &state,
        &caller,
        "users.disable",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(json!(user)))
}

/// Erases a person: their account is disabled and renamed, their keys
/// revoked, and their subject key destroyed, so the fields that named them
/// in every recorded event are unreadable while the audit log still verifies.
async fn erase_user(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "users.erase", "users").await?;
    // The key first: if destroying it fails, nothing has changed and the
    // same call can be made again; if renaming fails after, erase by id.
    let found = state.store.find_user(&name).await?;
    let shredded = state.vault.erase(&found.id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot destroy a subject key");
        AdminError::new(
            ErrorCode::Internal,
            "the subject key could not be destroyed; nothing was changed, retry",
        )
    })?;
    let user = state.store.erase_user(&found.id, clock::now_ms()).await?;
    refresh_credentials(&state).await;
    record_change(
        &state,
        &caller,
        "users.erase",
        json!({"type": "User", "uid": user.id}),
    )
    .await?;
    Ok(Json(
        json!({"user": user, "subject_key_destroyed": shredded}),
    ))
}

async fn list_roles(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "roles.list", "roles").await?;
    let custom = state.store.list_roles().await?;
    let builtin: Vec<Value> = citadel_core::BUILTIN_ROLES
        .iter()
        .map(|r| json!({"name": r, "builtin": true}))
        .collect();
    Ok(Json(json!({"builtin": builtin, "custom": custom})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_role(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewRole>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "roles.create", "roles").await?;
    let body = json_body(body)?;
    let role = citadel_identity::create_role(&state.store, &body.name, &body.description).await?;
    record_change(
        &state,
        &caller,
        "roles.create",
        json!({"type": "Role", "uid": role.name}),
    )
    .await?;
    Ok(Json(json!(role)))
}

async fn list_keys(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "keys.list", "keys").await?;
    Ok(Json(json!({"keys": state.store.list_api_keys().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    /// Lifetime such as `30d`.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    rpm: Option<i64>,
    #[serde(default)]
    tpm: Option<i64>,
}

async fn create_key(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "keys.create", "keys").await?;
    let body = json_body(body)?;
    let mut roles = body.roles;
    roles.extend(body.role);
    authorize_grants(&state, &caller, &roles).await?;
    if let Some(user) = &body.user {
        // A key that acts as someone else needs its own permission.
        let own = user == &caller.principal.id || user == &caller.principal.name;
        if !own || caller.principal.kind != citadel_core::PrincipalKind::User {
            authorize(&state, &caller, "keys.create_for_user", "keys").await?;
        }
    }
    let expires_in_ms = body
        .expires
        .as_deref()
        .map(clock::parse_duration)
        .transpose()
        .map_err(|e| AdminError::new(ErrorCode::InvalidRequest, e))?
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if body.rpm.is_some_and(|v| v < 1) || body.tpm.is_some_and(|v| v < 1) {
        return Err(AdminError::new(
            ErrorCode::InvalidRequest,
            "rpm and tpm must be at least 1",
        ));
    }
    let (record, new) = citadel_identity::create_api_key(
        &state.store,
        state.registry.hasher(),
        KeyRequest {
            name: body.name,
            roles,
            user: body.user,
            expires_in_ms,
            rpm: body.rpm,
            tpm: body.tpm,
        },
    )
    .await?;
    refresh_credentials(&state).await;
    record_change(
        &state,
        &caller,
        "keys.create",
        json!({"type": "ApiKey", "uid": record.id, "name": record.name}),
    )
    .await?;
    let mut out = json!(record);
    out["secret"] = json!(new.secret.as_str());
    Ok(Json(out))
}

async fn revoke_key(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    authorize(&state, &caller, "keys.revoke", "keys").await?;
    let record = state.store.revoke_api_key(&id, clock::now_ms()).await?;
    refresh_credentials(&state).await;
    record_change(
        &state,
        &caller,
        "keys.revoke",
        json!({"type": "ApiKey", "uid": record.id}),
    )
    .await?;
    Ok(Json(json!(record)))
}

async fn refresh_credentials(state: &AdminState) {
    if let Err(e) = state.registry.refresh().await {
        tracing::warn!(error = %e, "credential refresh after an admin change failed; the poller will retry");
    }
}

async fn list_upstreams(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "upstreams.list", "upstreams").await?;
    let upstreams: Vec<Value> = state
        .gateway
        .config
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "url": u.url,
                "kind": u.kind.as_str(),
                "models": u.models,
                "prefix": u.prefix,
                "placement": u.placement.as_str(),
            })
        })
        .collect();
    Ok(Json(json!({"upstreams": upstreams})))
}

async fn list_policies(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "policies.read", "policies").await?;
    let policies: Vec<Value> = state
        .policy
        .policy_origins()
        .into_iter()
        .map(|(id, file)| json!({"id": id, "file": file}))
        .collect();
    Ok(Json(
        json!({"directory": state.policy.dir().display().to_string(), "policies": policies}),
    ))
}

fn problems_json(problems: &citadel_policy::PolicyProblems) -> Vec<Value> {
    problems
        .0
        .iter()
        .map(|p| json!({"file": p.file, "line": p.line, "column": p.column, "reason": p.reason}))
        .collect()
}

/// `GET /api/v1/segments[?source=IP]`: the effective reachability matrix.
async fn segments(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    authorize(&state, &caller, "policies.read", "policies").await?;
    let source = match params.get("source") {
        Some(text) => text.parse().map_err(|_| {
            AdminError::new(ErrorCode::InvalidRequest, "source must be an IP address")
        })?,
        None => std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let roles = citadel_identity::all_role_names(&state.store).await?;
    let workloads = state.store.active_workloads().await?;
    let matrix = citadel_policy::segments::reachability(
        &state.policy,
        &roles,
        &workloads,
        citadel_gateway::config::segment_targets(&state.gateway.config.upstreams),
        source,
    );
    Ok(Json(json!(matrix)))
}

async fn validate_policies(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "policies.validate", "policies").await?;
    Ok(Json(match state.policy.check() {
        Ok(loaded) => json!({"valid": true, "policies": loaded.origins.len(), "problems": []}),
        Err(problems) => json!({"valid": false, "problems": problems_json(&problems)}),
    }))
}

async fn reload_policies(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, AdminError> {
    authorize(&state, &caller, "policies.reload", "policies").await?;
    match state.policy.reload() {
        Ok(count) => {
            record_change(
                &state,
                &caller,
                "policies.reload",
                json!({"type": "PolicySet", "uid": "active", "data": {"policies": count}}),
            )
            .await?;
            Ok(Json(json!({"reloaded": true, "policies": count})).into_response())
        }
        Err(problems) => Err(AdminError::new(
            ErrorCode::InvalidPolicy,
            format!("policies not reloaded; the previous set stays in force: {problems}"),
        )
        .with_detail("problems", json!(problems_json(&problems)))),
    }
}

/// Parses the `/api/v1/events` query, refusing unknown parameters.
pub(crate) fn parse_event_query(params: &HashMap<String, String>) -> Result<EventQuery, String> {
    let mut q = EventQuery::default();
    for (name, value) in params {
        match name.as_str() {
            "since" => q.since = Some(clock::parse_since(value)?),
            "until" => q.until = Some(clock::parse_since(value)?),
            "principal" => q.principal = Some(value.clone()),
            "request_id" => q.request_id = Some(value.clone()),
            "type" | "class" => {
                q.class = Some(EventClass::parse(value).ok_or_else(|| {
                    format!("unknown event type `{value}`; use authentication, account_change, http_activity, api_activity or a class_uid")
                })?)
            }
            "outcome" => {
                q.outcome = Some(match value.as_str() {
                    "success" => Outcome::Success,
                    "failure" => Outcome::Failure,
                    _ => return Err(format!("outcome must be success or failure, not `{value}`")),
                })
            }
            "limit" => {
                let n: i64 = value.parse().map_err(|_| format!("limit must be a number, not `{value}`"))?;
                if !(1..=1000).contains(&n) {
                    return Err("limit must be between 1 and 1000".into());
                }
                q.limit = Some(n);
            }
            "cursor" => {
                q.after_seq = Some(value.parse().map_err(|_| format!("invalid cursor `{value}`"))?)
            }
            // Read by the handler; checked here so a typo is refused.
            "proofs" if value == "true" || value == "false" => {}
            "proofs" => return Err(format!("proofs must be true or false, not `{value}`")),
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(q)
}

async fn list_events(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    authorize(&state, &caller, "events.read", "events").await?;
    let query =
        parse_event_query(&params).map_err(|e| AdminError::new(ErrorCode::InvalidRequest, e))?;
    if params.get("proofs").map(String::as_str) == Some("true") {
        return events_with_proofs(&state, &query).await;
    }
    let (events, cursor) = state.store.query_events(&query).await?;
    let mut bodies = Vec::with_capacity(events.len());
    for e in events {
        bodies.push(opened(&state, e.body).await?);
    }
    let events = bodies;
    Ok(Json(
        json!({"events": events, "next_cursor": cursor.map(|c| c.to_string())}),
    ))
}

/// An event as its reader sees it: a person's sealed fields opened, or
/// marked erased.
async fn opened(state: &AdminState, mut body: Value) -> Result<Value, AdminError> {
    state.vault.open(&mut body).await.map_err(|e| {
        tracing::error!(error = %e, "cannot open sealed event fields");
        AdminError::new(
            ErrorCode::Internal,
            "cannot open sealed event fields; see the server log",
        )
    })?;
    Ok(body)
}

/// Events with their log index, stored bytes and inclusion proof against
/// the latest checkpoint (`null` for events newer than it).
async fn events_with_proofs(state: &AdminState, query: &EventQuery) -> ApiResult {
    let checkpoint = state.log.latest_checkpoint().await?;
    let (found, cursor) = state.store.query_log_events(query).await?;
    let proved: Vec<u64> = found
        .iter()
        .map(|e| e.log_index)
        .filter(|&i| i < checkpoint.size)
        .collect();
    let mut proofs: HashMap<u64, citadel_audit::InclusionProof> = state
        .log
        .inclusion_proofs(&proved, checkpoint.size)
        .await?
        .into_iter()
        .map(|p| (p.index, p))
        .collect();
    let mut events = Vec::with_capacity(found.len());
    for e in found {
        let proof = proofs.remove(&e.log_index);
        events.push(json!({
            "log_index": e.log_index,
            "entry": e.entry,
            "event": opened(state, e.event.body).await?,
            "inclusion_proof": proof,
        }));
    }
    Ok(Json(json!({
        "events": events,
        "checkpoint": checkpoint.note,
        "next_cursor": cursor.map(|c| c.to_string()),
    })))
}
