//! `[keys]` in `citadel.toml`: where the root key comes from, and when data
//! keys rotate.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where the root key-encryption key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// A key file (`root_file`), made on first start, mode 0600.
    #[default]
    File,
    /// A base64 key in an environment variable (`root_env`).
    Env,
    /// HashiCorp Vault's Transit engine (`[keys.vault]`).
    VaultTransit,
}

/// `[keys.vault]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault's address, e.g. `https://vault.internal:8200`.
    pub addr: String,
    /// The Transit key's name.
    #[serde(default = "default_vault_key")]
    pub key: String,
    /// Environment variable holding the Vault token.
    #[serde(default = "default_vault_token_env")]
    pub token_env: String,
    /// A CA certificate (PEM) to trust for Vault's TLS.
    pub ca: Option<PathBuf>,
}

fn default_vault_key() -> String {
    "citadel".into()
}
fn default_vault_token_env() -> String {
    "VAULT_TOKEN".into()
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| citadel_core::clock::parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// `file`, `env` or `vault_transit`.
    pub root: RootSource,
    /// The root key file (relative paths are in the data directory).
    pub root_file: PathBuf,
    /// The environment variable holding the root key (base64, 32 bytes).
    pub root_env: String,
    /// Vault Transit settings (with `root = "vault_transit"`).
    pub vault: Option<VaultConfig>,
    /// Rotate each data key once its current version is this old (none:
    /// only by `citadel keys rotate`).
    #[serde(deserialize_with = "optional_duration")]
    pub rotate_after: Option<Duration>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            root: RootSource::File,
            root_file: PathBuf::from("keys/root.key"),
            root_env: "CITADEL_ROOT_KEY".into(),
            vault: None,
            rotate_after: None,
        }
    }
}

/// `https://…`, or `http://` to a loopback address (by its parsed host,
/// not its spelling: `http://localhost.example.com` is not loopback).
fn vault_addr_ok(addr: &str) -> bool {
    if addr.starts_with("https://") {
        return true;
    }
    let Some(rest) = addr.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl KeysConfig {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), String> {
        if self.root == RootSource::VaultTransit {
            let Some(v) = &self.vault else {
                return Err(
                    "keys.root = \"vault_transit\" needs a [keys.vault] table with addr".into(),
                );
            };
            if !vault_addr_ok(&v.addr) {
                return Err(
                    "keys.vault.addr must be https:// (plain http only to a loopback address)"
                        .into(),
                );
            }
        }
        if let Some(d) = self.rotate_after {
            if d < Duration::from_secs(3600) {
                return Err("keys.rotate_after must be at least 1h".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vault_must_be_tls_unless_on_loopback() {
        for ok in [
            "https://vault:8200",
            "http://127.0.0.1:8200",
            "http://[::1]:8200",
            "http://localhost:8200",
        ] {
            assert!(super::vault_addr_ok(ok), "{ok}");
        }
        for bad in [
            "http://vault:8200",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io:8200",
            "ftp://x",
        ] {
            assert!(!super::vault_addr_ok(bad), "{bad}");
        }
    }
}
