//! The control plane's REST API (under `/api/v1/`), its OpenAPI document
//! (`/openapi.json`) and the Prometheus endpoint (`/metrics`), served on the
//! admin listener.
//!
//! Every call is authenticated with an API key, authorized by Cedar (one
//! action per operation, grouped as `admin_read` / `admin_write`) and
//! recorded as an API Activity event before it takes effect, exactly like a
//! gateway request. The operations are the same functions the CLI calls
//! (`citadel_identity::create_api_key`, …), so both say the same things.
//!
//! Non-features (yet): the web dashboard, sessions for browsers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod audit_log;
mod consent;
mod data_keys;
mod error;
mod machines;
mod people;
pub mod subjects;

use std::sync::Arc;

use citadel_audit::{AuditLog, EventSink, SubjectVault};
use citadel_gateway::metrics::GatewayMetrics;
use citadel_gateway::GatewayState;
use citadel_identity::KeyRegistry;
use citadel_policy::PolicyEngine;
use citadel_store::Store;

pub use api::router;
pub use error::AdminError;

/// The OpenAPI 3 document of the admin API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What the admin API reads and changes.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// Credentials (refreshed at once after a change made here).
    pub registry: Arc<KeyRegistry>,
    /// Policies.
    pub policy: Arc<PolicyEngine>,
    /// Event sink.
    pub sink: Arc<EventSink>,
    /// The data plane (upstreams).
    pub gateway: Arc<GatewayState>,
    /// Metrics to expose.
    pub metrics: Arc<GatewayMetrics>,
    /// The tamper-evident audit log.
    pub log: Arc<AuditLog>,
    /// Opens the sealed fields of events for reading; erases subjects.
    pub vault: Arc<SubjectVault>,
    /// Names of the configured SIEM exporters (for their lag gauges).
    pub exporters: Vec<String>,
}

/// The admin API as a listener service.
pub fn admin_service(state: AdminState) -> citadel_gateway::server::ListenerService {
    use http_body_util::BodyExt;
    let router = router(state);
    let svc = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<axum::body::Body>| {
            r.map(|b| b.map_err(citadel_gateway::BoxError::from).boxed_unsync())
        })
        .service(router);
    tower::util::BoxCloneService::new(svc)
}
