//! The gateway's configuration: listener, limits, upstreams, rate limits.
//! Deserialized once at start and validated by [`GatewayConfig::validate`];
//! nothing is looked up by string on the request path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[gateway]`: the data-plane listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of TLS. Weakens security; logged at start.
    pub insecure_http: bool,
    /// Names (DNS or IP) the internal CA's server certificate covers.
    pub tls_names: Vec<String>,
    /// An operator-provided certificate chain (PEM) instead of the internal CA's.
    pub tls_cert: Option<PathBuf>,
    /// The key for `tls_cert` (PEM, mode 0600).
    pub tls_key: Option<PathBuf>,
    /// Also accept TLS 1.2 (ECDHE key exchange and AEAD ciphers only), for
    /// clients that cannot speak TLS 1.3. Weakens security; logged at start.
    pub insecure_tls12: bool,
}

impl ListenerConfig {
    /// Defaults for a listener on `listen`.
    pub fn on(listen: &str) -> Self {
        Self {
            listen: listen.parse().expect("literal address"),
            insecure_http: false,
            tls_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            tls_cert: None,
            tls_key: None,
            insecure_tls12: false,
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self::on("127.0.0.1:8443")
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `[limits]`: what one client may make the gateway hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Total bytes of request headers (431 above).
    pub max_header_bytes: usize,
    /// Request body bytes (413 above).
    pub max_body_bytes: usize,
    /// Bytes of request bodies the gateway holds in memory at once, across
    /// all requests (bodies it must read to route them). Past it, requests
    /// are refused with 503 `overloaded` instead of exhausting memory.
    pub max_buffered_bytes: usize,
    /// Time for a client to send its whole request (408 after).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Open client connections; more are refused at accept.
    pub max_connections: usize,
    /// Time to connect to an upstream (502 after).
    #[serde(deserialize_with = "duration")]
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream to send its response headers (504 after).
    #[serde(deserialize_with = "duration")]
    pub upstream_response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(120),
        }
    }
}

/// What an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// An OpenAI-compatible model server; routed by the request's `model`.
    Openai,
    /// Any HTTP API; routed by path prefix.
    Http,
}

impl UpstreamKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Http => "http",
        }
    }
}

/// Where an upstream runs, for policies such as "restricted data stays on premises".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// In the organisation's own infrastructure.
    OnPrem,
    /// A third party's service.
    External,
}

impl Placement {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnPrem => "on_prem",
            Self::External => "external",
        }
    }
}

/// TLS towards an upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Trust only this CA (PEM file) for this upstream.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM).
    pub client_key: Option<PathBuf>,
}

/// `[[upstream]]`: a server Citadel forwards to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name.
    pub name: String,
    /// Base URL (`http://` only to loopback unless `insecure_plaintext`).
    pub url: String,
    /// `openai` or `http`.
    pub kind: UpstreamKind,
    /// Models served (`openai` upstreams).
    #[serde(default)]
    pub models: Vec<String>,
    /// Path prefix routed here (`http` upstreams), e.g. `/data-api`.
    pub prefix: Option<String>,
    /// `on_prem` or `external`.
    pub placement: Placement,
    /// TLS settings towards the upstream.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Environment variable holding a bearer token Citadel sends upstream
    /// (the client's own credential is never forwarded).
    pub auth_token_env: Option<String>,
    /// Allow plain HTTP to a non-loopback address. Weakens security.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Redaction for this upstream's requests and answers, instead of
    /// `[privacy] redact`.
    #[serde(default)]
    pub redact: Option<citadel_privacy::Redaction>,
    /// The purpose requests to this upstream serve (`[[privacy.purpose]]`):
    /// each must name a data subject who consented to it.
    #[serde(default)]
    pub purpose: Option<String>,
    /// Keep this upstream's prompts and answers, sealed per data subject,
    /// instead of `[privacy] capture`.
    #[serde(default)]
    pub capture: Option<bool>,
}

impl UpstreamConfig {
    /// What Cedar knows of this upstream.
    pub fn facts(&self) -> citadel_policy::UpstreamFacts {
        citadel_policy::UpstreamFacts {
            name: self.name.clone(),
            kind: self.kind.as_str().to_owned(),
            placement: self.placement.as_str().to_owned(),
        }
    }
}

/// The methods the reachability matrix asks about for each route.
pub const SEGMENT_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Everything the gateway can forward to, for the reachability matrix:
/// each model, and each route with each method.
pub fn segment_targets(
    upstreams: &[UpstreamConfig],
) -> Vec<citadel_policy::segments::SegmentTarget> {
    use citadel_policy::segments::SegmentTarget;
    let mut targets = Vec::new();
    for u in upstreams {
        for m in &u.models {
            targets.push(SegmentTarget::model(m, u.facts()));
        }
        if let Some(prefix) = &u.prefix {
            for method in SEGMENT_METHODS {
                targets.push(SegmentTarget::route(prefix, method, u.facts()));
            }
        }
    }
    targets
}

/// A requests-per-minute and tokens-per-minute pair; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute (from the upstream's `usage`).
    pub tpm: Option<u64>,
}

/// `[rate_limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Default for every API key (a key's own `--rpm/--tpm` wins).
    pub per_key: RateLimit,
    /// For every principal, across its keys.
    pub per_principal: RateLimit,
    /// Per model, across all callers.
    pub per_model: BTreeMap<String, RateLimit>,
}

/// Everything the data plane needs from the config file.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// The listener.
    pub listener: ListenerConfig,
    /// Limits.
    pub limits: Limits,
    /// Upstreams.
    pub upstreams: Vec<UpstreamConfig>,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
}

/// A configuration problem, said with the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigProblem {
    /// Dotted name of the setting.
    pub setting: String,
    /// What is wrong and what to do.
    pub reason: String,
}

fn is_loopback_url(url: &http::Uri) -> bool {
    match url.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The OpenAI-compatible paths Citadel routes by model.
pub const OPENAI_PATHS: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

impl GatewayConfig {
    /// Checks cross-field rules serde cannot: unique names, one upstream per
    /// model, prefixes well formed and not shadowing `/v1/`, URLs parse.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let problem = |setting: String, reason: String| Err(ConfigProblem { setting, reason });
        let mut names = std::collections::HashSet::new();
        let mut models = std::collections::HashMap::new();
        let mut prefixes = std::collections::HashSet::new();
        if self.limits.max_buffered_bytes < self.limits.max_body_bytes {
            return problem(
                "limits.max_buffered_bytes".into(),
                "must be at least limits.max_body_bytes, or bodies of the largest allowed size could never be read".into(),
            );
        }
        if self.limits.max_connections == 0 {
            return problem("limits.max_connections".into(), "must be at least 1".into());
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstream[{i}] ({})", u.name);
            if u.name.is_empty() || !names.insert(u.name.clone()) {
                return problem(format!("{at}.name"), "must be non-empty and unique".into());
            }
            let uri: http::Uri = match u.url.parse() {
                Ok(uri) => uri,
                Err(e) => return problem(format!("{at}.url"), format!("not a URL: {e}")),
            };
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if is_loopback_url(&uri) || u.insecure_plaintext => {}
                Some("http") => {
                    return problem(
                        format!("{at}.url"),
                        "plain http:// to a non-loopback address; use https:// or set insecure_plaintext = true".into(),
                    )
                }
                _ => return problem(format!("{at}.url"), "must start with https:// or http://".into()),
            }
            if uri.authority().is_none() {
                return problem(format!("{at}.url"), "has no host".into());
            }
            match u.kind {
                UpstreamKind::Openai => {
                    if u.prefix.is_some() {
                        // A prefix would reach the model server as a plain
                        // route, around inspection and redaction.
                        return problem(
                            format!("{at}.prefix"),
                            "an openai upstream is reached by its models only; remove prefix"
                                .into(),
                        );
                    }
                    if u.models.is_empty() {
                        return problem(
                            format!("{at}.models"),
                            "an openai upstream must list the models it serves".into(),
                        );
                    }
                    for m in &u.models {
                        if let Some(other) = models.insert(m.clone(), u.name.clone()) {
                            return problem(
                                format!("{at}.models"),
                                format!("model `{m}` is already served by upstream `{other}`"),
                            );
                        }
                    }
                }
                UpstreamKind::Http => {
                    if u.redact.is_some() || u.capture.is_some() {
                        return problem(
                            format!("{at}.redact"),
                            "redact and capture apply to openai upstreams only; http routes' bodies are not inspected".into(),
                        );
                    }
                    let Some(p) = &u.prefix else {
                        return problem(
                            format!("{at}.prefix"),
                            "an http upstream needs a path prefix such as \"/data-api\"".into(),
                        );
                    };
                    if !p.starts_with('/')
                        || p.len() < 2
                        || p.ends_with('/')
                        || p.starts_with("/v1")
                    {
                        return problem(
                            format!("{at}.prefix"),
                            "must start with `/`, not end with `/`, and not be under /v1".into(),
                        );
                    }
                    if !prefixes.insert(p.clone()) {
                        return problem(
                            format!("{at}.prefix"),
                            format!("prefix {p} is used twice"),
                        );
                    }
                }
            }
            if u.tls.client_cert.is_some() != u.tls.client_key.is_some() {
                return problem(
                    format!("{at}.tls"),
                    "client_cert and client_key go together".into(),
                );
            }
        }
        if self.listener.tls_cert.is_some() != self.listener.tls_key.is_some() {
            return problem(
                "gateway.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            );
        }
        Ok(())
    }
}
