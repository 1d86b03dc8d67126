//! Everything the layers share: configuration, credentials, policy, the
//! event sink, upstream clients, rate limits and metrics.

use std::collections::HashMap;
use std::sync::Arc;

use citadel_audit::EventSink;
use citadel_identity::{KeyRegistry, SignIn};
use citadel_policy::PolicyEngine;

use crate::config::GatewayConfig;
use crate::metrics::GatewayMetrics;
use crate::ratelimit::RateLimiter;
use crate::upstream::Upstream;

/// The gateway's shared state.
pub struct GatewayState {
    /// Configuration in force.
    pub config: GatewayConfig,
    /// API keys.
    pub registry: Arc<KeyRegistry>,
    /// People: passwords, second factors, sessions, throttle.
    pub signin: Arc<SignIn>,
    /// Devices and workloads.
    pub machines: Arc<citadel_identity::machines::Machines>,
    /// The internal CA (issues device certificates at enrolment).
    pub ca: Arc<citadel_crypto::InternalCa>,
    /// Continuous verification: risk scores, GeoIP, previous requests.
    pub verifier: Arc<crate::verify::Verifier>,
    /// Cedar policies.
    pub policy: Arc<PolicyEngine>,
    /// Detector rules and redaction (inspect layers).
    pub privacy: Arc<citadel_privacy::Privacy>,
    /// Data subjects' consent to purposes.
    pub consents: Arc<citadel_privacy::Consents>,
    /// Per-subject keys (captures and pseudonyms are sealed under them).
    pub vault: Arc<citadel_audit::SubjectVault>,
    /// The store (captures, pseudonyms).
    pub store: citadel_store::Store,
    /// Security event sink.
    pub sink: Arc<EventSink>,
    /// Metrics.
    pub metrics: Arc<GatewayMetrics>,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Budget of request-body bytes held in memory, in KiB.
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
    /// Upstreams by model name.
    pub(crate) by_model: HashMap<String, Arc<Upstream>>,
    /// `http` upstreams by prefix, longest first.
    pub(crate) by_prefix: Vec<Arc<Upstream>>,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState").finish_non_exhaustive()
    }
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigProblem),
    /// An upstream's TLS material could not be loaded.
    #[error("upstream {upstream}: {reason}")]
    UpstreamTls {
        /// Upstream name.
        upstream: String,
        /// What failed.
        reason: String,
    },
}

impl GatewayState {
    /// Builds the state, one HTTP client per upstream.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: GatewayConfig,
        registry: Arc<KeyRegistry>,
        signin: Arc<SignIn>,
        machines: Arc<citadel_identity::machines::Machines>,
        ca: Arc<citadel_crypto::InternalCa>,
        verifier: Arc<crate::verify::Verifier>,
        policy: Arc<PolicyEngine>,
        privacy: Arc<citadel_privacy::Privacy>,
        consents: Arc<citadel_privacy::Consents>,
        vault: Arc<citadel_audit::SubjectVault>,
        store: citadel_store::Store,
        sink: Arc<EventSink>,
        metrics: Arc<GatewayMetrics>,
    ) -> Result<Arc<Self>, BuildError> {
        config.validate()?;
        let mut by_model = HashMap::new();
        let mut by_prefix = Vec::new();
        for u in &config.upstreams {
            if u.insecure_plaintext {
                tracing::warn!(upstream = %u.name, "insecure_plaintext: requests to this upstream travel unencrypted");
            }
            let upstream = Arc::new(Upstream::new(u.clone(), &config.limits)?);
            for m in &u.models {
                by_model.insert(m.clone(), upstream.clone());
            }
            if u.prefix.is_some() {
                by_prefix.push(upstream.clone());
            }
        }
        by_prefix.sort_by_key(|u| std::cmp::Reverse(u.prefix().len()));
        let limiter = RateLimiter::new(config.rate_limits.clone());
        let body_budget = Arc::new(tokio::sync::Semaphore::new(
            (config.limits.max_buffered_bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        Ok(Arc::new(Self {
            config,
            registry,
            signin,
            machines,
            ca,
            verifier,
            policy,
            privacy,
            consents,
            vault,
            store,
            sink,
            metrics,
            limiter,
            body_budget,
            by_model,
            by_prefix,
        }))
    }

    /// The upstream serving `model`.
    pub fn upstream_for_model(&self, model: &str) -> Option<&Arc<Upstream>> {
        self.by_model.get(model)
    }

    /// All models with their upstreams, sorted by model name.
    pub fn models(&self) -> Vec<(&str, &Arc<Upstream>)> {
        let mut v: Vec<_> = self.by_model.iter().map(|(m, u)| (m.as_str(), u)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// The `http` upstream whose prefix matches `path` (on a segment boundary).
    pub fn upstream_for_path(&self, path: &str) -> Option<&Arc<Upstream>> {
        self.by_prefix.iter().find(|u| {
            let p = u.prefix();
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}
