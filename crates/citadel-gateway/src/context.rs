//! What the layers learn about a request as it goes down the stack, kept in
//! the request's extensions so the record layer can tell the whole story
//! once the response is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use citadel_core::{ErrorCode, Principal};
use parking_lot::Mutex;

/// Facts fixed when the request arrives.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Request id (`X-Request-Id` from the client if well formed, else a new UUIDv7).
    pub id: String,
    /// The client's address.
    pub client: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// When the request arrived.
    pub started: Instant,
    /// The client certificate of the connection, if one was presented
    /// (judged against the internal CA after the handshake).
    pub client_cert: Option<Arc<citadel_crypto::ClientCert>>,
}

/// What the layers decided, filled in as the request goes down.
#[derive(Debug, Default, Clone)]
pub struct TrailData {
    /// Authenticated principal.
    pub principal: Option<Arc<Principal>>,
    /// The API key used.
    pub key_id: Option<String>,
    /// How the caller authenticated (`api_key`, `session`).
    pub auth_method: Option<&'static str>,
    /// When the caller's credential last proved a second factor (Unix ms).
    pub mfa_at: Option<i64>,
    /// The client device's trust, from its certificate (`unknown` without one).
    pub device_trust: Option<&'static str>,
    /// The client device's id, if it presented a device certificate.
    pub device_id: Option<String>,
    /// What continuous verification found (the verify layer).
    pub verified: Verified,
    /// Upstream chosen.
    pub upstream: Option<String>,
    /// Model requested.
    pub model: Option<String>,
    /// Route label for metrics (`/v1/chat/completions`, `/data-api`, …).
    pub route: Option<String>,
    /// Policies that decided.
    pub policies: Vec<String>,
    /// The refusal code, if refused.
    pub error: Option<ErrorCode>,
    /// Seconds until the upstream's response headers arrived.
    pub upstream_seconds: Option<f64>,
    /// Tokens the answer used (from its `usage`).
    pub tokens: Option<u64>,
    /// What inspection found and did (counts and classes, never values).
    pub privacy: Option<PrivacyTrail>,
}

/// What inspection found in a request and its answer, and what it did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrivacyTrail {
    /// Highest data class found in the request.
    pub data_class: &'static str,
    /// Findings in the request, by type.
    pub request_findings: std::collections::BTreeMap<String, u64>,
    /// Findings in the answer, by type (when answers are inspected).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub answer_findings: std::collections::BTreeMap<String, u64>,
    /// The redaction applied (`mask`, `hash`, `pseudonymize`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<&'static str>,
    /// Pseudonyms given back in the answer.
    #[serde(skip_serializing_if = "is_zero")]
    pub reidentified: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What continuous verification found about a request.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// The principal's risk score now, 0..100.
    pub risk_score: i64,
    /// The client's network differs from the session's or last request's.
    pub network_changed: bool,
    /// Speed implied by this and the previous request's locations, km/h.
    pub travel_kmh: i64,
    /// ISO country of the client address ("" when unknown).
    pub country: String,
}

impl Verified {
    /// The findings as policy context.
    pub fn as_facts(&self) -> citadel_policy::Verification<'_> {
        citadel_policy::Verification {
            risk_score: self.risk_score,
            network_changed: self.network_changed,
            travel_kmh: self.travel_kmh,
            country: &self.country,
        }
    }
}

/// Shared, lockable trail (one per request).
#[derive(Debug, Default, Clone)]
pub struct Trail(pub Arc<Mutex<TrailData>>);

impl Trail {
    /// Updates the trail.
    pub fn update(&self, f: impl FnOnce(&mut TrailData)) {
        f(&mut self.0.lock());
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<Arc<Principal>> {
        self.0.lock().principal.clone()
    }

    /// How the caller authenticated (`none` before authentication).
    pub fn auth_method(&self) -> &'static str {
        self.0.lock().auth_method.unwrap_or("none")
    }

    /// Whether a second factor was proved.
    pub fn mfa(&self) -> bool {
        self.0.lock().mfa_at.is_some()
    }

    /// The client device's id, if it presented a device certificate.
    pub fn device_id(&self) -> Option<String> {
        self.0.lock().device_id.clone()
    }

    /// What continuous verification found.
    pub fn verified(&self) -> Verified {
        self.0.lock().verified.clone()
    }

    /// The client device's trust (`unknown` without a device certificate).
    pub fn device_trust(&self) -> &'static str {
        self.0.lock().device_trust.unwrap_or("unknown")
    }

    /// Seconds since a second factor was proved (`i64::MAX` if never).
    pub fn mfa_age_seconds(&self) -> i64 {
        match self.0.lock().mfa_at {
            Some(at) => (citadel_core::clock::now_ms() - at).max(0) / 1000,
            None => i64::MAX,
        }
    }

    /// A copy of what is known now.
    pub fn snapshot(&self) -> TrailData {
        self.0.lock().clone()
    }
}

/// Reads the request's info and trail; every request has them (the server
/// inserts the info and the record layer the trail before any other layer runs).
pub(crate) fn info_and_trail(req: &crate::GatewayRequest) -> (RequestInfo, Trail) {
    let info = req
        .extensions()
        .get::<RequestInfo>()
        .cloned()
        .expect("server inserts RequestInfo");
    let trail = req.extensions().get::<Trail>().cloned().unwrap_or_default();
    (info, trail)
}
