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
