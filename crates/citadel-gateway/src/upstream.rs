//! One upstream server and the HTTP client that reaches it (its own TLS
//! settings: pinned CA and client certificate for mTLS).

use std::time::Duration;

use citadel_crypto::ClientTlsOptions;
use citadel_policy::UpstreamFacts;
use http::{HeaderValue, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{Limits, UpstreamConfig};
use crate::state::BuildError;
use crate::GatewayBody;

/// Why forwarding failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// Could not connect (or the connection broke before a response).
    Unavailable(String),
    /// No response headers within the configured time.
    Timeout,
}

/// A configured upstream.
pub struct Upstream {
    /// Its configuration.
    pub config: UpstreamConfig,
    /// What Cedar sees of it.
    pub facts: UpstreamFacts,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, GatewayBody>,
    auth: Option<HeaderValue>,
    response_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

fn read(path: &std::path::Path, upstream: &str) -> Result<String, BuildError> {
    std::fs::read_to_string(path).map_err(|e| BuildError::UpstreamTls {
        upstream: upstream.to_owned(),
        reason: format!("{}: {e}", path.display()),
    })
}

impl Upstream {
    /// Builds the client for `config`.
    pub fn new(config: UpstreamConfig, limits: &Limits) -> Result<Self, BuildError> {
        let name = config.name.clone();
        let tls_error = |reason: String| BuildError::UpstreamTls {
            upstream: name.clone(),
            reason,
        };
        let options = ClientTlsOptions {
            ca_pem: config
                .tls
                .ca
                .as_deref()
                .map(|p| read(p, &name))
                .transpose()?,
            client_chain_pem: config
                .tls
                .client_cert
                .as_deref()
                .map(|p| read(p, &name))
                .transpose()?,
            client_key_pem: config
                .tls
                .client_key
                .as_deref()
                .map(|p| read(p, &name).map(zeroize::Zeroizing::new))
                .transpose()?,
        };
        let tls = citadel_crypto::client_config(&options).map_err(|e| tls_error(e.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(limits.upstream_connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| tls_error(e.to_string()))?;
        let auth = match &config.auth_token_env {
            Some(var) => {
                let token = std::env::var(var)
                    .map_err(|_| tls_error(format!("environment variable {var} is not set")))?;
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| tls_error(format!("{var} is not a valid header value")))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            facts: config.facts(),
            scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTPS),
            authority: uri
                .authority()
                .cloned()
                .ok_or_else(|| tls_error("URL has no host".into()))?,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            client,
            auth,
            response_timeout: limits.upstream_response_timeout,
            config,
        })
    }

    /// The `http` upstream's path prefix (empty for `openai` upstreams).
    pub fn prefix(&self) -> &str {
        self.config.prefix.as_deref().unwrap_or("")
    }

    /// The upstream URL for a client's path and query: an `http` upstream's
    /// prefix is replaced by the upstream URL's own path.
    pub fn target_uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let rest = path_and_query
            .strip_prefix(self.prefix())
            .unwrap_or(path_and_query);
        let rest = if rest.is_empty() || rest.starts_with('?') {
            format!("/{rest}")
        } else {
            rest.to_owned()
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, rest))
            .build()
    }

    /// The authority, for the `Host` header.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// The credential Citadel presents upstream, if configured.
    pub fn auth_header(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// Sends the request; waits for response headers at most the configured time.
    pub async fn send(
        &self,
        request: http::Request<GatewayBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(UpstreamError::Unavailable(e.to_string())),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }
}
