//! Client certificates presented on the gateway listener (devices and
//! workloads): accepted at the TLS layer whatever their chain, so that a
//! bad one is refused *over HTTP* with a stable code and an event rather
//! than as an anonymous handshake failure; checked against the internal CA
//! right after the handshake. Proof of possession of the key is still
//! required by TLS itself (the CertificateVerify signature).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{CryptoError, Result};

/// Why a presented client certificate is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertProblem {
    /// Past its `notAfter` (or before its `notBefore`).
    Expired,
    /// Not issued by the internal CA.
    UnknownIssuer,
    /// Not usable for client authentication, or otherwise invalid.
    Invalid,
}

impl CertProblem {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired_certificate",
            Self::UnknownIssuer => "unknown_certificate_issuer",
            Self::Invalid => "invalid_certificate",
        }
    }
}

/// What Citadel reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// URI subject alternative names (`spiffe://…`, `urn:citadel:device:…`).
    pub uris: Vec<String>,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// The raw subject public key (for EC keys, the uncompressed point).
    pub public_key: Vec<u8>,
    /// `notAfter`, Unix ms.
    pub not_after: i64,
}

/// A client certificate presented on a connection, and the judgement of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// What it says.
    pub facts: CertFacts,
    /// Whether it chains to the internal CA and is valid now.
    pub validity: std::result::Result<(), CertProblem>,
}

/// Reads the facts of a DER certificate.
pub fn read_cert(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let fingerprint = hex::encode(Sha256::digest(der));
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let public_key = cert.public_key().subject_public_key.data.to_vec();
    let not_after = cert.validity().not_after.timestamp().saturating_mul(1000);
    Some(CertFacts {
        fingerprint,
        uris,
        common_name,
        public_key,
        not_after,
    })
}

/// Reads the facts of the first certificate in a PEM text.
pub fn read_cert_pem(pem: &[u8]) -> Option<CertFacts> {
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    read_cert(&der)
}

/// Accepts any client certificate during the handshake (after proof of
/// possession), so the chain can be judged afterwards by [`ClientCertChecker`].
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Judges a client certificate chain against the internal CA.
#[derive(Debug, Clone)]
pub struct ClientCertChecker {
    strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCertChecker {
    /// A checker trusting `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in crate::tls::certs(ca_pem, "client CA")? {
            roots.add(cert)?;
        }
        let strict = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| CryptoError::Invalid {
            path: "client CA".into(),
            reason: e.to_string(),
        })?;
        Ok(Self { strict })
    }

    /// The handshake-time verifier to put in a server config.
    pub(crate) fn lenient(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Lenient(self.strict.clone()))
    }

    /// Reads and judges the chain a client presented (`None` only for an
    /// empty chain).
    pub fn check(&self, chain: &[CertificateDer<'_>]) -> Option<ClientCert> {
        let end_entity = chain.first()?;
        let Some(facts) = read_cert(end_entity) else {
            // Not a certificate Citadel can read: refused, not ignored.
            return Some(ClientCert {
                facts: CertFacts {
                    fingerprint: hex::encode(Sha256::digest(end_entity.as_ref())),
                    uris: Vec::new(),
                    common_name: None,
                    public_key: Vec::new(),
                    not_after: 0,
                },
                validity: Err(CertProblem::Invalid),
            });
        };
        let validity =
            match self
                .strict
                .verify_client_cert(end_entity, &chain[1..], UnixTime::now())
            {
                Ok(_) => Ok(()),
                Err(rustls::Error::InvalidCertificate(e)) => Err(match e {
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. }
                    | rustls::CertificateError::NotValidYet
                    | rustls::CertificateError::NotValidYetContext { .. } => CertProblem::Expired,
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature => CertProblem::UnknownIssuer,
                    _ => CertProblem::Invalid,
                }),
                Err(_) => Err(CertProblem::Invalid),
            };
        Some(ClientCert { facts, validity })
    }
}

/// Verifies an ECDSA P-256 / SHA-256 signature (fixed `r || s`, 64 bytes,
/// as in JWS ES256) by `public_key` (the uncompressed point) over `message`.
pub fn verify_p256(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(message, signature)
        .is_ok()
}
