//! The security events the data plane and the admin API emit, built in one
//! place so every decision is described the same way (OCSF field names).

use citadel_core::{EventClass, Outcome, Principal, SecurityEvent};
use serde_json::json;

use crate::context::RequestInfo;

/// Records a decision event per the configured durability. On failure,
/// returns the refusal to send instead: 503 `audit_unavailable` when the
/// store cannot be written, 503 `overloaded` when the writer is behind.
pub async fn record_decision(
    sink: &citadel_audit::EventSink,
    event: SecurityEvent,
) -> Result<(), citadel_core::ApiError> {
    use citadel_audit::SinkError;
    use citadel_core::{ApiError, ErrorCode};
    sink.record(event).await.map_err(|e| match e {
        SinkError::QueueFull => {
            let mut e = ApiError::new(
                ErrorCode::Overloaded,
                "the gateway is at capacity; retry after the number of seconds in Retry-After",
            );
            e.retry_after = Some(1);
            e
        }
        SinkError::Unavailable => ApiError::new(
            ErrorCode::AuditUnavailable,
            "security events cannot be recorded right now, so requests are refused; try again shortly",
        ),
    })
}

/// OCSF API Activity activity id for an HTTP method (1 Create, 2 Read,
/// 3 Update, 4 Delete, 99 Other).
fn api_activity(method: &http::Method) -> (i64, &'static str) {
    match *method {
        http::Method::POST => (1, "Create"),
        http::Method::GET | http::Method::HEAD => (2, "Read"),
        http::Method::PUT | http::Method::PATCH => (3, "Update"),
        http::Method::DELETE => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// OCSF HTTP Activity activity id for an HTTP method.
fn http_activity(method: &http::Method) -> (i64, &'static str) {
    match *method {
        http::Method::CONNECT => (1, "Connect"),
        http::Method::DELETE => (2, "Delete"),
        http::Method::GET => (3, "Get"),
        http::Method::HEAD => (4, "Head"),
        http::Method::OPTIONS => (5, "Options"),
        http::Method::POST => (6, "Post"),
        http::Method::PUT => (7, "Put"),
        http::Method::TRACE => (8, "Trace"),
        _ => (99, "Other"),
    }
}

/// The request as OCSF describes it (`src_endpoint`, `http_request`). The
/// query string is left out: it may carry secrets.
pub fn request_fields(
    info: &RequestInfo,
    method: &http::Method,
    path: &str,
    user_agent: Option<&str>,
) -> (serde_json::Value, serde_json::Value) {
    let src = json!({"ip": info.client.ip().to_string(), "port": info.client.port()});
    let mut req = json!({
        "http_method": method.as_str(),
        "url": {"path": path, "scheme": if info.tls { "https" } else { "http" }},
        "uid": info.id,
    });
    if let Some(ua) = user_agent {
        req["user_agent"] = json!(ua);
    }
    (src, req)
}

/// What a request looked like, for events.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// Arrival facts.
    pub info: &'a RequestInfo,
    /// Method.
    pub method: &'a http::Method,
    /// Path (no query).
    pub path: &'a str,
    /// User agent.
    pub user_agent: Option<&'a str>,
}

impl<'a> RequestView<'a> {
    /// The view of a request as it arrived.
    pub fn of(info: &'a RequestInfo, req: &'a crate::GatewayRequest) -> Self {
        Self::of_parts(info, req.method(), req.uri(), req.headers())
    }

    /// The view from a request's parts.
    pub fn of_parts(
        info: &'a RequestInfo,
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
    ) -> Self {
        Self {
            info,
            method,
            path: uri.path(),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        }
    }

    fn fields(&self) -> (serde_json::Value, serde_json::Value) {
        request_fields(self.info, self.method, self.path, self.user_agent)
    }
}

/// A refused credential (Authentication 3002, Logon, Failure). The reason
/// is recorded for investigators; the client only hears `invalid_credentials`.
pub fn authentication_failed(
    view: &RequestView<'_>,
    reason: &str,
    protocol: &str,
    service: &str,
    principal: Option<&Principal>,
) -> SecurityEvent {
    let (src, req) = view.fields();
    let mut b = SecurityEvent::builder(EventClass::Authentication, 1, "Logon", Outcome::Failure);
    if let Some(p) = principal {
        b = b.actor(p);
    }
    b.request_id(&view.info.id)
        .field("auth_protocol", json!(protocol))
        .field("src_endpoint", src)
        .field("http_request", req)
        .field("status_detail", json!(reason))
        .field("service", json!({"name": service}))
        .disposition(false)
        .build()
}

/// What a sign-in, sign-out or step-up did, for its event.
#[derive(Debug, Clone)]
pub struct SignInFacts<'a> {
    /// OCSF activity: 1 Logon, 2 Logoff, 99 Other (step-up).
    pub activity: (i64, &'static str),
    /// Success or failure.
    pub outcome: Outcome,
    /// The person, when known.
    pub principal: Option<&'a Principal>,
    /// The name the client claimed, when the person is not known.
    pub claimed_name: Option<&'a str>,
    /// Stable reason (`wrong_password`, `replayed_code`, `logout`, …).
    pub reason: &'a str,
    /// Methods proved (`pwd`, `otp`, `recovery`).
    pub methods: &'a [String],
    /// The session made or ended: id and end, Unix ms.
    pub session: Option<(&'a str, i64)>,
    /// The throttle's lock now in force, Unix ms.
    pub locked_until: Option<i64>,
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A person's sign-in, sign-out or step-up (Authentication 3002). Never
/// carries a password, code or token: only which methods were proved.
pub fn sign_in_event(view: &RequestView<'_>, facts: &SignInFacts<'_>) -> SecurityEvent {
    let (src, req) = view.fields();
    let (activity_id, activity) = facts.activity;
    let mut b = SecurityEvent::builder(
        EventClass::Authentication,
        activity_id,
        activity,
        facts.outcome,
    )
    .request_id(&view.info.id)
    .field("auth_protocol", json!("Password"))
    .field("is_mfa", json!(facts.methods.len() > 1))
    .field("src_endpoint", src)
    .field("http_request", req)
    .field("status_detail", json!(facts.reason))
    .field("service", json!({"name": "gateway"}))
    .field(
        "unmapped",
        json!({"auth_methods": facts.methods, "locked_until": facts.locked_until}),
    )
    .disposition(facts.outcome == Outcome::Success);
    if let Some(p) = facts.principal {
        b = b.actor(p);
    } else if let Some(name) = facts.claimed_name {
        // A name no user has may be a password typed in the wrong field:
        // only a digest is kept, enough to see many attempts on one name.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name.to_lowercase().as_bytes());
        b = b.actor_named("unknown-user", "unknown", "user").field(
            "unmapped",
            json!({
                "auth_methods": facts.methods,
                "locked_until": facts.locked_until,
                "claimed_name_sha256": hex_prefix(&digest),
            }),
        );
    }
    if let Some((id, expires)) = facts.session {
        b = b.field(
            "session",
            json!({"uid": id, "expiration_time": expires, "is_mfa": facts.methods.len() > 1}),
        );
    }
    b.build()
}

/// An authorization decision (API Activity 6003): who, what, on what, which
/// policies decided.
pub fn authorization_decision(
    view: &RequestView<'_>,
    principal: &Principal,
    action: &str,
    resource: serde_json::Value,
    allowed: bool,
    policies: &[String],
    service: &str,
) -> SecurityEvent {
    let (src, req) = view.fields();
    let (activity_id, activity) = api_activity(view.method);
    let outcome = if allowed {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    SecurityEvent::builder(EventClass::ApiActivity, activity_id, activity, outcome)
        .actor(principal)
        .request_id(&view.info.id)
        .field("src_endpoint", src)
        .field("http_request", req)
        .field(
            "api",
            json!({"operation": action, "service": {"name": service}}),
        )
        .field("resources", json!([resource]))
        .field(
            "policy",
            json!({"uid": policies.join(","), "name": policies.join(","), "is_applied": true}),
        )
        .disposition(allowed)
        .build()
}

/// The outcome of a request (HTTP Activity 4002): status, sizes, timings.
#[allow(clippy::too_many_arguments)]
pub fn http_outcome(
    view: &RequestView<'_>,
    principal: Option<&Principal>,
    status: u16,
    error_code: Option<&str>,
    upstream: Option<&str>,
    model: Option<&str>,
    response_bytes: u64,
    duration_ms: f64,
    tokens: Option<u64>,
) -> SecurityEvent {
    let (src, req) = view.fields();
    let (activity_id, activity) = http_activity(view.method);
    let outcome = if status < 400 {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut b = SecurityEvent::builder(EventClass::HttpActivity, activity_id, activity, outcome)
        .request_id(&view.info.id)
        .field("src_endpoint", src)
        .field("http_request", req)
        .field("http_response", json!({"code": status, "length": response_bytes}))
        .field("duration", json!(duration_ms))
        .field(
            "unmapped",
            json!({"upstream": upstream, "model": model, "error_code": error_code, "total_tokens": tokens}),
        );
    if let Some(p) = principal {
        b = b.actor(p);
    }
    if let Some(u) = upstream {
        b = b.field("dst_endpoint", json!({"name": u}));
    }
    b.build()
}
