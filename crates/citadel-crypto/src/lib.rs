//! Citadel's key material: secret files kept at mode 0600, the internal
//! certificate authority that issues the listeners' server certificates,
//! and the rustls configurations built from them (TLS 1.3 only by default).
//!
//! It also holds envelope encryption (AES-256-GCM from ring) and the key
//! hierarchy built on it (`keyring`): a root key — a key file, an
//! environment variable, or HashiCorp Vault's Transit engine — wrapping
//! versioned data keys per purpose, with rotation and re-wrapping; each
//! ciphertext bound to its purpose, key version and record.
//!
//! Non-features: no cryptographic primitive is implemented here; signing,
//! hashing, AEAD and TLS come from rcgen, ring and rustls.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ca;
mod client_cert;
mod envelope;
mod keyring;
mod keys_config;
mod secret_file;
mod tls;

pub use ca::{DeviceCert, InternalCa, IssuedCert};
pub use client_cert::{
    read_cert, read_cert_pem, verify_p256, CertFacts, CertProblem, ClientCert, ClientCertChecker,
};
pub use envelope::{SealError, SealingKey, KEY_LEN};
pub use keyring::{rewrap_data_keys, KeyError, KeyStatus, Keyring, RootKey};
pub use keys_config::{KeysConfig, RootSource, VaultConfig};
pub use secret_file::{load_or_create_secret, read_private_file, write_private_file};
pub use tls::{
    client_config, listener_config, server_config, server_config_requiring_client_cert,
    ClientTlsOptions, ReloadableCert,
};

/// Errors from key and certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A key file is readable by others than its owner.
    #[error("{path}: permissions {mode:o} are too open; run `chmod 600 {path}`")]
    LoosePermissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// A key or certificate file could not be parsed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, CryptoError>;
