//! The data directory: where the embedded database, key files, internal CA
//! and policies live. Created with mode 0700; secrets inside with 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use citadel_store::Store;
use zeroize::Zeroizing;

use crate::config::Config;

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory at `root` (not created yet).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Creates the directory (0700) if missing.
    pub fn ensure(&self) -> Result<()> {
        if !self.root.exists() {
            std::fs::create_dir_all(&self.root)
                .with_context(|| format!("cannot create data directory {}", self.root.display()))?;
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Default config file.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("citadel.toml")
    }

    /// Internal CA and certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The policy directory for `config`.
    pub fn policy_dir(&self, config: &Config) -> PathBuf {
        if config.policy.dir.is_absolute() {
            config.policy.dir.clone()
        } else {
            self.root.join(&config.policy.dir)
        }
    }

    /// The database URL: the flag, else the config, else SQLite here.
    pub fn database_url(&self, flag: Option<&str>, config: &Config) -> String {
        flag.map(str::to_owned)
            .or_else(|| config.database.url.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.root.join("citadel.db").display()))
    }

    /// The installation key API-key hashes are keyed with (created on first use).
    pub fn key_hash_secret(&self) -> Result<Zeroizing<Vec<u8>>> {
        citadel_crypto::load_or_create_secret(&self.root.join("keys").join("api-key-hash.key"), 32)
            .context("API key hashing key")
    }

    /// The key redaction hashes and pseudonyms are keyed with
    /// (`keys/privacy-hash.key`, created on first use). Replicas must share
    /// it, or the same value gets different pseudonyms on each.
    pub fn privacy_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        citadel_crypto::load_or_create_secret(&self.root.join("keys").join("privacy-hash.key"), 32)
            .context("privacy hashing key")
    }

    /// The detector rules in force: the data directory's `privacy-rules`
    /// (written from the shipped pack when empty) and `[privacy] rules`.
    pub fn privacy(&self, config: &Config) -> Result<citadel_privacy::Privacy> {
        let dir = self.root.join("privacy-rules");
        if citadel_privacy::seed_rules(&dir)
            .with_context(|| format!("cannot write the detector rules into {}", dir.display()))?
        {
            tracing::info!(dir = %dir.display(), "wrote the default detector rules");
        }
        let mut paths = vec![dir];
        for extra in &config.privacy.rules {
            paths.push(if extra.is_absolute() {
                extra.clone()
            } else {
                self.root.join(extra)
            });
        }
        citadel_privacy::Privacy::load(config.privacy.clone(), paths, self.privacy_key()?)
            .map_err(|problems| anyhow::anyhow!("the detector rules do not load:\n{problems}"))
    }

    /// Consent to the configured purposes, kept in `store`.
    pub fn consents(
        &self,
        store: citadel_store::Store,
        config: &Config,
    ) -> Result<citadel_privacy::Consents> {
        Ok(citadel_privacy::Consents::new(
            store,
            &config.privacy.purpose,
            self.privacy_key()?,
        ))
    }

    /// The root key as `[keys]` says: the key file (made on first use,
    /// refused when others may read it), the environment, or Vault Transit.
    pub fn root_key(&self, config: &Config) -> Result<citadel_crypto::RootKey> {
        let keys = &config.keys;
        Ok(match keys.root {
            citadel_crypto::RootSource::File => {
                let path = if keys.root_file.is_absolute() {
                    keys.root_file.clone()
                } else {
                    self.root.join(&keys.root_file)
                };
                citadel_crypto::RootKey::from_file(&path)?
            }
            citadel_crypto::RootSource::Env => citadel_crypto::RootKey::from_env(&keys.root_env)?,
            citadel_crypto::RootSource::VaultTransit => {
                let vault = keys
                    .vault
                    .as_ref()
                    .context("keys.root = \"vault_transit\" needs [keys.vault]")?;
                let token = Zeroizing::new(std::env::var(&vault.token_env).with_context(|| {
                    format!(
                        "the Vault token is read from {}, which is not set",
                        vault.token_env
                    )
                })?);
                let ca = match &vault.ca {
                    Some(path) => Some(
                        std::fs::read(path)
                            .with_context(|| format!("keys.vault.ca {}", path.display()))?,
                    ),
                    None => None,
                };
                citadel_crypto::RootKey::vault_transit(
                    &vault.addr,
                    &vault.key,
                    token,
                    ca.as_deref(),
                )?
            }
        })
    }

    /// The key hierarchy: data keys for every purpose, unwrapped under the
    /// root key. A key file from before the hierarchy
    /// (`keys/authenticator-secrets.key`) becomes the `authenticator`
    /// purpose's version 1, so seeds sealed with it still open.
    pub async fn keyring(
        &self,
        store: &Store,
        config: &Config,
    ) -> Result<std::sync::Arc<citadel_crypto::Keyring>> {
        let legacy_path = self.root.join("keys").join("authenticator-secrets.key");
        let mut legacy = Vec::new();
        if legacy_path.exists() {
            legacy.push((
                citadel_identity::mfa::AUTHENTICATOR_PURPOSE,
                citadel_crypto::read_private_file(&legacy_path)
                    .context("authenticator secrets key")?,
            ));
        }
        citadel_crypto::Keyring::load(store.clone(), self.root_key(config)?, KEY_PURPOSES, &legacy)
            .await
            .context("the key hierarchy could not be loaded")
    }

    /// Sign-in (passwords, factors, sessions, throttle) for a CLI command,
    /// which needs none of the identity providers (so a provider's client
    /// secret need not be in the operator's environment).
    pub async fn sign_in_for_cli(
        &self,
        store: &Store,
        config: &Config,
    ) -> Result<std::sync::Arc<citadel_identity::SignIn>> {
        let mut config = config.clone();
        config.identity.oidc.clear();
        config.identity.jwt.clear();
        self.sign_in(store, &config).await
    }

    /// Sign-in (passwords, factors, sessions, throttle) as configured.
    pub async fn sign_in(
        &self,
        store: &Store,
        config: &Config,
    ) -> Result<std::sync::Arc<citadel_identity::SignIn>> {
        let signin = citadel_identity::SignIn::from_config(
            store.clone(),
            &config.identity,
            self.keyring(store, config).await?,
            citadel_identity::KeyHasher::new(self.key_hash_secret()?),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        signin.factors.check_key().await.map_err(|e| {
            anyhow::anyhow!(
                "{e}: the stored TOTP seeds do not open with this installation's data keys; \
                 a replica must use the same root key as the others (copy keys/root.key from the installation)"
            )
        })?;
        Ok(std::sync::Arc::new(signin))
    }

    /// The root secret of the subject vault (`keys/subject-root.key`: a
    /// key-encryption key and a reference key). Replicas must share it;
    /// it is checked against the database and another file is refused.
    pub async fn subject_vault(
        &self,
        store: &Store,
    ) -> Result<std::sync::Arc<citadel_audit::SubjectVault>> {
        let root = citadel_crypto::load_or_create_secret(
            &self.root.join("keys").join("subject-root.key"),
            64,
        )
        .context("subject key root")?;
        let vault =
            citadel_audit::SubjectVault::new(store.clone(), &root).context("subject key root")?;
        vault.check_root().await?;
        Ok(vault)
    }

    /// The audit log's signing key (`keys/audit-log.key`, created on first
    /// use with the configured origin as its name). The origin is part of
    /// every checkpoint, so a config that names another origin than the
    /// key's is refused rather than silently starting a second log.
    ///
    /// Only `serve` makes the key (`create`); other commands refuse to go on
    /// without it rather than start a second log under a new key.
    pub fn log_signer(&self, config: &Config, create: bool) -> Result<citadel_audit::NoteSigner> {
        let path = self.root.join("keys").join("audit-log.key");
        let origin = config.audit_origin();
        if !path.exists() && !create {
            anyhow::bail!(
                "there is no audit log key at {}; it is made by the first `citadel serve` \
                 (for a replica or another host, copy keys/audit-log.key from the installation)",
                path.display()
            );
        }
        if path.exists() {
            let bytes = citadel_crypto::read_private_file(&path).context("audit log key")?;
            let text = std::str::from_utf8(&bytes).context("audit log key is not text")?;
            let signer = citadel_audit::NoteSigner::from_skey(text)
                .with_context(|| format!("audit log key {}", path.display()))?;
            if signer.name() != origin {
                anyhow::bail!(
                    "the audit log's origin is {:?} (fixed when its key was made) but the config says {:?}; \
                     set audit.origin = {:?} in the config",
                    signer.name(),
                    origin,
                    signer.name()
                );
            }
            return Ok(signer);
        }
        let signer = citadel_audit::NoteSigner::generate(&origin)
            .with_context(|| format!("audit.origin {origin:?}"))?;
        citadel_crypto::write_private_file(&path, signer.to_skey().as_bytes())
            .context("audit log key")?;
        tracing::info!(origin = %origin, "created the audit log signing key");
        Ok(signer)
    }

    /// Writes the default policies into the policy directory if it has none.
    pub fn seed_policies(&self, dir: &Path) -> Result<()> {
        let has_any = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .any(|e| e.path().extension().is_some_and(|x| x == "cedar"))
            })
            .unwrap_or(false);
        if has_any {
            return self.seed_sign_in_policy(dir);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in citadel_policy::DEFAULT_POLICIES {
            std::fs::write(dir.join(name), text)?;
        }
        tracing::info!(dir = %dir.display(), "wrote the default policies");
        Ok(())
    }
}

impl DataDir {
    /// A policy directory from before a capability existed lacks its
    /// default policy: with no `sign_in` rule nobody could sign in (and
    /// administrators would get in through `admin-all` without a second
    /// factor); with no rule reading `risk_score`, risk and impossible
    /// travel would change nothing; with no `send_data` rule no model
    /// request would pass inspection. Each missing default is added, unless
    /// some policy already speaks of it (the operator's own rules stay).
    fn seed_sign_in_policy(&self, dir: &Path) -> Result<()> {
        const NEWER_DEFAULTS: &[(&str, &str)] = &[
            ("identity.cedar", "\"sign_in\""),
            ("verify.cedar", "risk_score"),
            ("privacy.cedar", "\"send_data\""),
        ];
        let texts: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        for (file, marker) in NEWER_DEFAULTS {
            let path = dir.join(file);
            if path.exists() || texts.iter().any(|t| t.contains(marker)) {
                continue;
            }
            let (_, text) = citadel_policy::DEFAULT_POLICIES
                .iter()
                .find(|(name, _)| name == file)
                .expect("the newer defaults are default policies");
            std::fs::write(&path, text)?;
            tracing::warn!(file = %path.display(), "added a default policy this directory did not have yet");
        }
        Ok(())
    }
}

/// The purposes the key hierarchy keeps data keys for.
pub const KEY_PURPOSES: &[&str] = &[citadel_identity::mfa::AUTHENTICATOR_PURPOSE];

/// Opens the store for a command, with a message that says what to check.
pub async fn open_store(url: &str) -> Result<Store> {
    Store::open(url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            citadel_store::redact_url(url)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_policy_directory_gets_the_sign_in_policy_once() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::new(root.path().to_path_buf());
        let dir = root.path().join("policies");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in citadel_policy::DEFAULT_POLICIES {
            if *name != "identity.cedar" && *name != "verify.cedar" {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        data.seed_policies(&dir).unwrap();
        let added = std::fs::read_to_string(dir.join("identity.cedar")).unwrap();
        assert!(added.contains("mfa-for-privileged-roles"));
        assert!(dir.join("verify.cedar").exists());
        // The operator's own edit stays.
        std::fs::write(dir.join("identity.cedar"), "// mine\n").unwrap();
        std::fs::write(
            dir.join("people.cedar"),
            "permit (principal, action == Citadel::Action::\"sign_in\", resource);\n",
        )
        .unwrap();
        data.seed_policies(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("identity.cedar")).unwrap(),
            "// mine\n"
        );
    }
}
