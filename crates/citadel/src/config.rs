//! The configuration file: one typed struct, each room's section
//! deserialized into that room's own config type, validated once at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use citadel_gateway::config::{
    GatewayConfig, Limits, ListenerConfig, RateLimitConfig, UpstreamConfig,
};
use serde::Deserialize;

/// `citadel.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The deployment's name: part of the audit log's default origin.
    pub name: String,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[gateway]`.
    pub gateway: ListenerConfig,
    /// `[admin]`.
    pub admin: ListenerConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[rate_limits]`.
    pub rate_limits: RateLimitConfig,
    /// `[[upstream]]`.
    pub upstream: Vec<UpstreamConfig>,
    /// `[identity]`: passwords, second factors, sessions, lockout.
    pub identity: citadel_identity::IdentityConfig,
    /// `[privacy]`: detector rules, redaction.
    pub privacy: citadel_privacy::PrivacyConfig,
    /// `[keys]`: the root key and data key rotation.
    pub keys: citadel_crypto::KeysConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "citadel".into(),
            database: DatabaseConfig::default(),
            gateway: ListenerConfig::on("127.0.0.1:8443"),
            admin: ListenerConfig::on("127.0.0.1:9443"),
            audit: AuditConfig::default(),
            policy: PolicyConfig::default(),
            limits: Limits::default(),
            rate_limits: RateLimitConfig::default(),
            upstream: Vec::new(),
            identity: Default::default(),
            privacy: Default::default(),
            keys: Default::default(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; default SQLite in the data directory.
    pub url: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `durable` or `async`.
    pub durability: Durability,
    /// The log's origin line (and signing key name) [default:
    /// `citadel.local/<name>`]. Fixed when the log key is created.
    pub origin: Option<String>,
    /// How often a checkpoint is signed while entries arrive.
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
    /// `[[audit.export]]`: SIEM exporters.
    pub export: Vec<citadel_audit::ExporterConfig>,
    /// Memory for tiles kept to answer proofs, in MiB (a 10-million-entry
    /// log's tiles take about 640).
    pub proof_cache_mb: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            origin: None,
            checkpoint_interval: Duration::from_secs(1),
            export: Vec::new(),
            proof_cache_mb: (citadel_audit::DEFAULT_PROOF_CACHE_BYTES >> 20) as u64,
        }
    }
}

impl Config {
    /// The audit log's origin line.
    pub fn audit_origin(&self) -> String {
        self.audit
            .origin
            .clone()
            .unwrap_or_else(|| format!("citadel.local/{}", self.name))
    }
}

/// `audit.durability`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Responses wait for their decision event to be committed.
    #[default]
    Durable,
    /// Events are queued; lower latency, a crash can lose the queue.
    Async,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy directory, relative to the data directory.
    pub dir: PathBuf,
    /// How often to look for changed policy files.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            poll_interval: Duration::from_secs(1),
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A config file problem: file, line (when known) and reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            reason: e.to_string(),
        })?;
        let mut config = Self::parse(&text, &file)?;
        if let Some(dir) = path.parent() {
            citadel_identity::password::resolve_deny_lists(&mut config.identity.password, dir);
            // Paths in the config are relative to the config file.
            for issuer in &mut config.identity.jwt {
                if let Some(ca) = &mut issuer.jwks_ca {
                    if ca.is_relative() {
                        *ca = dir.join(&*ca);
                    }
                }
            }
            if let Some(db) = &mut config.identity.verify.geoip_db {
                if db.is_relative() {
                    *db = dir.join(&*db);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError {
                file: file.to_owned(),
                line,
                reason: e.message().to_owned(),
            }
        })?;
        config.gateway_config().validate().map_err(|p| {
            // Point at the n-th [[upstream]] table when the problem is in one.
            let line = p
                .setting
                .strip_prefix("upstream[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| {
                    text.lines()
                        .enumerate()
                        .filter(|(_, l)| l.trim_start().starts_with("[[upstream]]"))
                        .nth(n)
                        .map(|(i, _)| i + 1)
                })
                .unwrap_or(0);
            ConfigError {
                file: file.to_owned(),
                line,
                reason: p.to_string(),
            }
        })?;
        config.identity.validate().map_err(|reason| ConfigError {
            file: file.to_owned(),
            line: reason
                .split(':')
                .next()
                .and_then(|setting| setting.rsplit_once('.'))
                .and_then(|(section, _)| {
                    let header = format!("[{section}]");
                    text.lines().position(|l| l.trim() == header)
                })
                .map_or(0, |i| i + 1),
            reason,
        })?;
        let purposes: Vec<&str> = config
            .privacy
            .purpose
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        if let Some(u) = config
            .upstream
            .iter()
            .find(|u| u.purpose.as_deref().is_some_and(|p| !purposes.contains(&p)))
        {
            return Err(ConfigError {
                file: file.to_owned(),
                line: text
                    .lines()
                    .position(|l| {
                        l.trim_start().starts_with("purpose")
                            && l.contains(u.purpose.as_deref().unwrap_or_default())
                    })
                    .map_or(0, |i| i + 1),
                reason: format!(
                    "upstream {}: purpose {:?} is not one of the [[privacy.purpose]] entries ({})",
                    u.name,
                    u.purpose.as_deref().unwrap_or_default(),
                    purposes.join(", ")
                ),
            });
        }
        config.keys.validate().map_err(|reason| ConfigError {
            file: file.to_owned(),
            line: text
                .lines()
                .position(|l| l.trim() == "[keys]" || l.trim() == "[keys.vault]")
                .map_or(0, |i| i + 1),
            reason,
        })?;
        config.privacy.validate().map_err(|reason| ConfigError {
            file: file.to_owned(),
            line: text
                .lines()
                .position(|l| l.trim() == "[privacy]")
                .map_or(0, |i| i + 1),
            reason,
        })?;
        config.validate_audit().map_err(|reason| ConfigError {
            file: file.to_owned(),
            line: text
                .lines()
                .position(|l| l.trim_start().starts_with("[[audit.export]]"))
                .map_or(0, |i| i + 1),
            reason,
        })?;
        Ok(config)
    }

    fn validate_audit(&self) -> Result<(), String> {
        if self.audit.checkpoint_interval < Duration::from_millis(100) {
            return Err("audit.checkpoint_interval must be at least 100ms".into());
        }
        if !(1..=1 << 20).contains(&self.audit.proof_cache_mb) {
            return Err("audit.proof_cache_mb must be between 1 and 1048576".into());
        }
        let mut names = std::collections::HashSet::new();
        for exporter in &self.audit.export {
            exporter.validate()?;
            if !names.insert(exporter.name()) {
                return Err(format!(
                    "audit.export name {:?} is used twice",
                    exporter.name()
                ));
            }
        }
        Ok(())
    }

    /// The data plane's part.
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig {
            listener: self.gateway.clone(),
            limits: self.limits.clone(),
            upstreams: self.upstream.clone(),
            rate_limits: self.rate_limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let c = Config::parse(include_str!("../../../citadel.example.toml"), "example").unwrap();
        assert_eq!(c.gateway.listen.port(), 8443);
        assert_eq!(c.admin.listen.port(), 9443);
        assert_eq!(c.audit.durability, Durability::Durable);
    }

    #[test]
    fn the_issue_upstream_example_parses() {
        let c = Config::parse(
            r#"
[[upstream]]
name = "local-vllm"
url = "http://127.0.0.1:8000"
kind = "openai"
models = ["llama-3-8b"]
placement = "on_prem"
"#,
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.upstream[0].models, vec!["llama-3-8b"]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = Config::parse("[gateway]\nlisten = \"127.0.0.1:1\"\n\n[limits\n", "c.toml")
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().starts_with("c.toml:4:"));
    }

    #[test]
    fn unknown_settings_and_bad_values_are_refused() {
        let e = Config::parse("[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", "c.toml")
            .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("lisen"));
        let e = Config::parse("[limits]\nrequest_timeout = \"soon\"\n", "c.toml").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn exporters_are_read_and_checked() {
        let c = Config::parse(
            "[[audit.export]]\nkind = \"file\"\nname = \"f\"\npath = \"exports/e.jsonl\"\n\n\
             [[audit.export]]\nkind = \"syslog\"\nname = \"s\"\naddress = \"siem:6514\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.audit.export.len(), 2);
        for bad in [
            "[[audit.export]]\nkind = \"file\"\nname = \"f\"\npath = \"e\"\n[[audit.export]]\nkind = \"file\"\nname = \"f\"\npath = \"g\"\n",
            "[[audit.export]]\nkind = \"syslog\"\nname = \"s\"\naddress = \"siem:514\"\ntls = false\n",
            "[[audit.export]]\nkind = \"pigeon\"\nname = \"p\"\n",
            "[[audit.export]]\nkind = \"file\"\nname = \"f\"\npath = \"e\"\nrotate = 5\n",
        ] {
            let e = Config::parse(bad, "c.toml").unwrap_err();
            assert!((1..=5).contains(&e.line), "{e}");
        }
    }

    #[test]
    fn cross_field_problems_point_at_the_upstream() {
        let text = r#"
[[upstream]]
name = "a"
url = "http://127.0.0.1:8000"
kind = "openai"
models = ["m"]
placement = "on_prem"

[[upstream]]
name = "b"
url = "http://10.1.1.1:8000"
kind = "openai"
models = ["n"]
placement = "on_prem"
"#;
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, 9, "{e}");
        assert!(e.reason.contains("insecure_plaintext"), "{e}");
        let dup = text
            .replace("\"n\"", "\"m\"")
            .replace("10.1.1.1", "127.0.0.1");
        let e = Config::parse(&dup, "c.toml").unwrap_err();
        assert!(e.reason.contains("already served"), "{e}");
    }
}
