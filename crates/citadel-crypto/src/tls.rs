//! rustls configurations. Servers speak TLS 1.3 only unless a listener
//! explicitly allows TLS 1.2 (rustls offers only ECDHE key exchange and
//! AEAD ciphers there: no RSA key exchange, no CBC, no RC4), and offer
//! HTTP/2 and HTTP/1.1 by ALPN. Listener certificates can be replaced while
//! serving ([`ReloadableCert`]). Clients (to upstreams) trust either a
//! pinned CA or the public web roots, and may present a client certificate
//! for mTLS.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{CryptoError, Result};

pub(crate) fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CryptoError::Invalid {
            path: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CryptoError::Invalid {
            path: what.to_owned(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CryptoError::Invalid {
        path: what.to_owned(),
        reason: e.to_string(),
    })
}

/// A TLS server configuration from a PEM chain and key: TLS 1.3 only,
/// ALPN `h2` then `http/1.1`.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth();
    with_certificate(builder, chain_pem, key_pem)
}

/// Finishes a server configuration: its certificate and ALPN (`h2`, `http/1.1`).
fn with_certificate(
    builder: rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>,
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>> {
    let mut config = builder.with_single_cert(
        certs(chain_pem, "server certificate")?,
        private_key(key_pem, "server key")?,
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 server configuration that requires a client certificate
/// issued by `client_ca_pem` (mutual TLS).
pub fn server_config_requiring_client_cert(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs(client_ca_pem, "client CA")? {
        roots.add(cert)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| CryptoError::Invalid {
        path: "client CA".into(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier);
    with_certificate(builder, chain_pem, key_pem)
}

/// A listener's certificate and key, replaceable while serving: new
/// handshakes use the new pair at once, connections already open keep
/// theirs.
pub struct ReloadableCert {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadableCert(..)")
    }
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<rustls::sign::CertifiedKey> {
    let chain = certs(chain_pem, "server certificate")?;
    let key = private_key(key_pem, "server key")?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CryptoError::Invalid {
            path: "server key".into(),
            reason: e.to_string(),
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CryptoError::Invalid {
        path: "server certificate".into(),
        reason: "the key does not belong to the certificate".into(),
    })?;
    Ok(certified)
}

impl ReloadableCert {
    /// From a PEM chain and key (checked to belong together).
    pub fn new(chain_pem: &str, key_pem: &str) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            current: arc_swap::ArcSwap::from_pointee(certified_key(chain_pem, key_pem)?),
        }))
    }

    /// Replaces the pair; on any problem the one in use stays.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<()> {
        self.current
            .store(Arc::new(certified_key(chain_pem, key_pem)?));
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A listener's TLS configuration: its (reloadable) certificate, TLS 1.3
/// only unless `allow_tls12`, ALPN `h2` then `http/1.1`, and, with
/// `client_certs`, client certificates asked for and judged after the
/// handshake.
pub fn listener_config(
    cert: Arc<ReloadableCert>,
    allow_tls12: bool,
    client_certs: Option<&crate::ClientCertChecker>,
) -> Result<Arc<ServerConfig>> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)?;
    let mut config = match client_certs {
        Some(checker) => builder
            .with_client_cert_verifier(checker.lenient())
            .with_cert_resolver(cert),
        None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How Citadel verifies an upstream and proves itself to it.
#[derive(Default, Clone)]
pub struct ClientTlsOptions {
    /// Trust only this CA (PEM) instead of the public web roots: pinning.
    pub ca_pem: Option<String>,
    /// Client certificate chain (PEM) for mTLS.
    pub client_chain_pem: Option<String>,
    /// Client key (PEM) for mTLS.
    pub client_key_pem: Option<zeroize::Zeroizing<String>>,
}

/// A TLS client configuration for talking to an upstream (TLS 1.3 and 1.2).
pub fn client_config(options: &ClientTlsOptions) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match &options.ca_pem {
        Some(pem) => {
            for cert in certs(pem, "upstream CA")? {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&options.client_chain_pem, &options.client_key_pem) {
        (Some(chain), Some(key)) => builder.with_client_auth_cert(
            certs(chain, "upstream client certificate")?,
            private_key(key, "upstream client key")?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    // ALPN is set by the HTTP connector (h2, http/1.1) from what it enables.
    Ok(config)
}

/// Verifies that `chain_pem` is valid for `name` under the CA `ca_pem`.
#[cfg(test)]
pub(crate) fn verify_server_chain(ca_pem: &str, chain_pem: &str, name: &str) -> Result<()> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls_pki_types::{ServerName, UnixTime};
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "ca")? {
        roots.add(c)?;
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
            .build()
            .map_err(|e| CryptoError::Invalid {
                path: "verifier".into(),
                reason: e.to_string(),
            })?;
    let chain = certs(chain_pem, "chain")?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| CryptoError::Invalid {
        path: name.into(),
        reason: e.to_string(),
    })?;
    verifier.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())?;
    Ok(())
}
