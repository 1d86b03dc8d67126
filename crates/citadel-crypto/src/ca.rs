//! The internal certificate authority. Its certificate (`tls/ca.pem`) is
//! what clients trust; its key (`tls/ca-key.pem`, mode 0600) never leaves
//! the data directory.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::secret_file::{check_private, write_private_file};
use crate::{CryptoError, Result};

const CA_COMMON_NAME: &str = "Citadel internal CA";
const SERVER_CERT_DAYS: i64 = 90;

/// A certificate and its private key, PEM-encoded.
pub struct IssuedCert {
    /// Certificate chain: leaf first, then the CA.
    pub chain_pem: String,
    /// PKCS#8 private key (zeroized on drop).
    pub key_pem: Zeroizing<String>,
}

/// A device certificate issued from the device's own CSR.
#[derive(Debug, Clone)]
pub struct DeviceCert {
    /// Certificate chain: leaf first, then the CA.
    pub chain_pem: String,
    /// The device's public key (uncompressed P-256 point).
    pub public_key: Vec<u8>,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// `notAfter`, Unix ms.
    pub not_after: i64,
}

/// The CA: its key and the certificate clients trust.
pub struct InternalCa {
    key: KeyPair,
    issuer: rcgen::Certificate,
    cert_pem: String,
    dir: PathBuf,
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Citadel");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    Ok(params)
}

impl InternalCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca-key.pem`), creating it on first use.
    ///
    /// The signing handle is rebuilt from the stored key and the CA's fixed
    /// distinguished name, which is all an issuer contributes to a child
    /// certificate (issuer name and key identifier); `ca.pem` itself is the
    /// certificate that was written when the CA was created.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let invalid = |p: &Path, reason: String| CryptoError::Invalid {
            path: p.display().to_string(),
            reason,
        };
        let (key, cert_pem) = if key_path.exists() {
            check_private(&key_path)?;
            let key_pem = Zeroizing::new(fs::read_to_string(&key_path).map_err(|source| {
                CryptoError::Io {
                    path: key_path.display().to_string(),
                    source,
                }
            })?);
            let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e.to_string()))?;
            let cert_pem = fs::read_to_string(&cert_path).map_err(|source| CryptoError::Io {
                path: cert_path.display().to_string(),
                source,
            })?;
            (key, cert_pem)
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private_file(&key_path, key.serialize_pem().as_bytes())?;
            fs::write(&cert_path, cert.pem()).map_err(|source| CryptoError::Io {
                path: cert_path.display().to_string(),
                source,
            })?;
            tracing::info!(path = %cert_path.display(), "created internal CA");
            (key, cert.pem())
        };
        let issuer = ca_params()?.self_signed(&key)?;
        Ok(Self {
            key,
            issuer,
            cert_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA certificate is stored.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a server certificate for DNS names and IP addresses.
    pub fn issue_server_cert(&self, names: &[String]) -> Result<IssuedCert> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a client certificate (for mTLS towards an upstream) whose
    /// subject is `name`.
    pub fn issue_client_cert(&self, name: &str) -> Result<IssuedCert> {
        self.issue(&[name.to_owned()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Issues a device certificate from the device's CSR (the device keeps
    /// its key): a P-256 key is required, the CSR's self-signature must
    /// verify, and nothing in it but the key is used. The certificate
    /// names the device by `urn:citadel:device:<id>` (URI SAN and CN).
    pub fn issue_device_cert(
        &self,
        csr_pem: &str,
        device_id: &str,
        days: i64,
    ) -> Result<DeviceCert> {
        let invalid = |reason: String| CryptoError::Invalid {
            path: "certificate signing request".into(),
            reason,
        };
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| invalid(format!("not a valid CSR: {e}")))?;
        let public_key = rcgen::PublicKeyData::der_bytes(&csr.public_key).to_vec();
        // rcgen names the algorithm from the CSR's signature, not the key's
        // curve; an uncompressed P-256 point is exactly 65 bytes.
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256
            || public_key.len() != 65
            || public_key[0] != 4
        {
            return Err(invalid("the device key must be ECDSA P-256".into()));
        }
        let uri = format!("urn:citadel:device:{device_id}");
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, uri.clone());
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let cert = rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer, &self.key)?;
        let fingerprint = crate::read_cert(cert.der())
            .map(|c| c.fingerprint)
            .unwrap_or_default();
        Ok(DeviceCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            public_key,
            fingerprint,
            not_after: (now + Duration::days(days)).unix_timestamp() * 1000,
        })
    }

    /// Issues a SPIFFE X.509-SVID for `spiffe_id` (its only URI SAN; client
    /// and server authentication), valid for `lifetime`, with a new key.
    pub fn issue_workload_cert(
        &self,
        spiffe_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<(IssuedCert, i64)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        // An X.509-SVID is named by its URI SAN; the subject stays empty
        // rather than carrying rcgen's placeholder name.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.to_owned().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let not_after = now + Duration::seconds(lifetime.as_secs() as i64);
        params.not_before = now - Duration::minutes(5);
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok((
            IssuedCert {
                chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
                key_pem: Zeroizing::new(key.serialize_pem()),
            },
            not_after.unix_timestamp() * 1000,
        ))
    }

    fn issue(&self, names: &[String], usage: ExtendedKeyUsagePurpose) -> Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<std::result::Result<_, rcgen::Error>>()?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(SERVER_CERT_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = InternalCa::load_or_create(dir.path()).unwrap();
        let b = InternalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reloaded_ca_issues_certs_that_verify_against_the_original_ca_pem() {
        let dir = tempfile::tempdir().unwrap();
        let original = InternalCa::load_or_create(dir.path())
            .unwrap()
            .cert_pem()
            .to_owned();
        let reloaded = InternalCa::load_or_create(dir.path()).unwrap();
        let issued = reloaded
            .issue_server_cert(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        crate::tls::verify_server_chain(&original, &issued.chain_pem, "localhost").unwrap();
        crate::tls::verify_server_chain(&original, &issued.chain_pem, "127.0.0.1").unwrap();
        assert!(
            crate::tls::verify_server_chain(&original, &issued.chain_pem, "example.com").is_err()
        );

        let other = tempfile::tempdir().unwrap();
        let foreign = InternalCa::load_or_create(other.path()).unwrap();
        assert!(crate::tls::verify_server_chain(
            foreign.cert_pem(),
            &issued.chain_pem,
            "localhost"
        )
        .is_err());
    }
}
