//! SIEM exporters: OCSF JSON lines to rotating files, syslog (RFC 5424) over
//! TCP or TLS, and HTTPS webhooks.
//!
//! Each exporter walks the audit log in index order from a cursor kept in
//! the store, delivers a batch, and only then moves the cursor: delivery is
//! at least once, and a collector that was down gets everything it missed
//! when it comes back. Failures are retried with exponential back-off (0.5 s
//! doubling to 30 s); the exporter never skips an entry.
//!
//! Syslog over TCP has no acknowledgements: a batch counts as delivered
//! once it is written to the connection, so a collector that dies while
//! reading can lose what was in flight. Files and webhooks (2xx) do not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use citadel_store::{LogEntry, Store};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Most entries in one delivery.
const BATCH: u64 = 500;
/// How often an idle exporter looks for new entries.
const IDLE_POLL: Duration = Duration::from_millis(200);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// One `[[audit.export]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExporterConfig {
    /// OCSF JSON lines appended to a file that rotates by size.
    File {
        /// Unique name (keys the cursor).
        name: String,
        /// File path (relative paths are under the data directory).
        path: PathBuf,
        /// Rotate when the file reaches this many bytes.
        #[serde(default = "default_rotate_bytes")]
        rotate_bytes: u64,
        /// Rotated files kept (`path.1` … `path.N`).
        #[serde(default = "default_keep")]
        keep: u32,
    },
    /// RFC 5424 messages, octet-counted (RFC 6587), over TCP or TLS (RFC 5425).
    Syslog {
        /// Unique name.
        name: String,
        /// `host:port` of the collector.
        address: String,
        /// Speak TLS (default true; plain TCP needs `insecure_plaintext`).
        #[serde(default = "yes")]
        tls: bool,
        /// Allow plain TCP (events travel unencrypted).
        #[serde(default)]
        insecure_plaintext: bool,
        /// CA certificate (PEM file) to trust instead of the public roots.
        ca: Option<PathBuf>,
        /// Name in the collector's certificate [default: the host of `address`].
        server_name: Option<String>,
        /// HOSTNAME field [default: this machine's name].
        hostname: Option<String>,
    },
    /// Batches POSTed as `application/x-ndjson`.
    Webhook {
        /// Unique name.
        name: String,
        /// `https://` URL.
        url: String,
        /// CA certificate (PEM file) to trust instead of the public roots.
        ca: Option<PathBuf>,
        /// Environment variable holding a bearer token (never in the config).
        bearer_token_env: Option<String>,
        /// Allow an `http://` URL (events travel unencrypted).
        #[serde(default)]
        insecure_plaintext: bool,
    },
}

fn default_rotate_bytes() -> u64 {
    100 << 20
}
fn default_keep() -> u32 {
    10
}
fn yes() -> bool {
    true
}

impl ExporterConfig {
    /// The exporter's name.
    pub fn name(&self) -> &str {
        match self {
            Self::File { name, .. } | Self::Syslog { name, .. } | Self::Webhook { name, .. } => {
                name
            }
        }
    }

    /// Checks what serde cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "audit.export name {name:?}: use letters, digits, '-', '_' or '.'"
            ));
        }
        match self {
            Self::File { rotate_bytes, .. } if *rotate_bytes < 4096 => {
                Err(format!("audit.export {name}: rotate_bytes must be at least 4096"))
            }
            Self::Syslog { tls: false, insecure_plaintext: false, .. } => Err(format!(
                "audit.export {name}: syslog without TLS sends events in clear text; set insecure_plaintext = true to allow it"
            )),
            Self::Syslog { address, .. } if address.rsplit_once(':').is_none() => {
                Err(format!("audit.export {name}: address must be host:port"))
            }
            Self::Webhook { url, insecure_plaintext, .. } => {
                if url.starts_with("https://") || (*insecure_plaintext && url.starts_with("http://")) {
                    Ok(())
                } else {
                    Err(format!(
                        "audit.export {name}: url must be https:// (http:// only with insecure_plaintext = true)"
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}

/// Starts every exporter; each runs until the returned handles are aborted.
pub fn spawn_exporters(
    store: &Store,
    configs: &[ExporterConfig],
    data_dir: &Path,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut handles = Vec::new();
    for config in configs {
        config.validate()?;
        let target = Target::new(config, data_dir)?;
        if matches!(
            config,
            ExporterConfig::Syslog {
                insecure_plaintext: true,
                tls: false,
                ..
            }
        ) || matches!(
            config,
            ExporterConfig::Webhook {
                insecure_plaintext: true,
                ..
            }
        ) {
            tracing::warn!(
                exporter = config.name(),
                "insecure_plaintext: security events leave this machine unencrypted"
            );
        }
        handles.push(tokio::spawn(run(
            store.clone(),
            config.name().to_owned(),
            target,
        )));
    }
    Ok(handles)
}

async fn run(store: Store, name: String, mut target: Target) {
    let mut backoff = FIRST_RETRY;
    let mut failing = false;
    loop {
        let next = match store.export_cursor(&name).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(exporter = %name, %error, "cannot read the export cursor");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let entries = match store.read_log_entries(next, BATCH).await {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(exporter = %name, %error, "cannot read the audit log");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        // Only the unbroken run from the cursor: a hole in the log (a damaged
        // or tampered store) stops the exporter there, it is never skipped.
        let unbroken = entries
            .iter()
            .zip(next..)
            .take_while(|(e, i)| e.index == *i)
            .count();
        if unbroken == 0 && !entries.is_empty() {
            if !failing {
                tracing::error!(exporter = %name, missing = next, "an audit log entry is missing; the exporter waits there (run `citadel audit verify`)");
                failing = true;
            }
            tokio::time::sleep(LAST_RETRY).await;
            continue;
        }
        let entries = &entries[..unbroken];
        let Some(last) = entries.last().map(|e| e.index) else {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        match target.deliver(entries).await {
            Ok(()) => {
                if failing {
                    tracing::info!(exporter = %name, from = next, "exporter delivering again");
                    failing = false;
                }
                backoff = FIRST_RETRY;
                if let Err(error) = store.set_export_cursor(&name, last + 1).await {
                    // Delivered but not remembered: sent again next time.
                    tracing::warn!(exporter = %name, %error, "cannot save the export cursor");
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(exporter = %name, %error, retry_in = ?backoff, "exporter cannot deliver; retrying");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LAST_RETRY);
            }
        }
    }
}

enum Target {
    File(FileTarget),
    Syslog(SyslogTarget),
    Webhook(WebhookTarget),
}

impl Target {
    fn new(config: &ExporterConfig, data_dir: &Path) -> Result<Self, String> {
        let read_ca = |ca: &Option<PathBuf>| -> Result<Option<String>, String> {
            ca.as_ref()
                .map(|p| {
                    let p = data_dir.join(p);
                    std::fs::read_to_string(&p).map_err(|e| {
                        format!(
                            "audit.export {}: cannot read {}: {e}",
                            config.name(),
                            p.display()
                        )
                    })
                })
                .transpose()
        };
        Ok(match config {
            ExporterConfig::File {
                path,
                rotate_bytes,
                keep,
                ..
            } => Self::File(FileTarget {
                path: data_dir.join(path),
                rotate_bytes: *rotate_bytes,
                keep: *keep,
            }),
            ExporterConfig::Syslog {
                address,
                tls,
                ca,
                server_name,
                hostname,
                ..
            } => {
                let tls = if *tls {
                    let options = citadel_crypto::ClientTlsOptions {
                        ca_pem: read_ca(ca)?,
                        ..Default::default()
                    };
                    let client =
                        citadel_crypto::client_config(&options).map_err(|e| e.to_string())?;
                    let host = server_name.clone().unwrap_or_else(|| {
                        address
                            .rsplit_once(':')
                            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                            .unwrap_or_default()
                    });
                    let name =
                        rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                            format!(
                                "audit.export {}: {host:?} is not a server name",
                                config.name()
                            )
                        })?;
                    Some((tokio_rustls::TlsConnector::from(Arc::new(client)), name))
                } else {
                    None
                };
                Self::Syslog(SyslogTarget {
                    address: address.clone(),
                    tls,
                    hostname: hostname.clone().unwrap_or_else(local_hostname),
                    connection: None,
                })
            }
            ExporterConfig::Webhook {
                url,
                ca,
                bearer_token_env,
                ..
            } => {
                let mut builder = reqwest::Client::builder()
                    .use_rustls_tls()
                    .timeout(Duration::from_secs(10));
                if let Some(pem) = read_ca(ca)? {
                    builder = builder.tls_built_in_root_certs(false).add_root_certificate(
                        reqwest::Certificate::from_pem(pem.as_bytes())
                            .map_err(|e| e.to_string())?,
                    );
                }
                let token = match bearer_token_env {
                    Some(var) => Some(zeroize::Zeroizing::new(std::env::var(var).map_err(
                        |_| {
                            format!(
                                "audit.export {}: environment variable {var} is not set",
                                config.name()
                            )
                        },
                    )?)),
                    None => None,
                };
                Self::Webhook(WebhookTarget {
                    url: url.clone(),
                    client: builder.build().map_err(|e| e.to_string())?,
                    token,
                })
            }
        })
    }

    async fn deliver(&mut self, entries: &[LogEntry]) -> Result<(), String> {
        match self {
            Self::File(t) => t.deliver(entries).await,
            Self::Syslog(t) => t.deliver(entries).await,
            Self::Webhook(t) => t.deliver(entries).await,
        }
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".into())
}

struct FileTarget {
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
}

impl FileTarget {
    async fn deliver(&mut self, entries: &[LogEntry]) -> Result<(), String> {
        let path = self.path.clone();
        let (rotate_bytes, keep) = (self.rotate_bytes, self.keep);
        let lines: Vec<String> = entries.iter().map(|e| format!("{}\n", e.body)).collect();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            };
            let mut file = open()?;
            let mut size = file.metadata()?.len();
            let mut pending = Vec::new();
            for line in &lines {
                pending.extend_from_slice(line.as_bytes());
                size += line.len() as u64;
                if size >= rotate_bytes {
                    file.write_all(&pending)?;
                    file.sync_data()?;
                    pending.clear();
                    rotate(&path, keep)?;
                    file = open()?;
                    size = 0;
                }
            }
            file.write_all(&pending)?;
            file.sync_data()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// `path` → `path.1` → … → `path.keep` (the oldest dropped).
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

trait Stream: tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}

struct SyslogTarget {
    address: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    hostname: String,
    connection: Option<Box<dyn Stream>>,
}

impl SyslogTarget {
    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| format!("connecting to {} timed out", self.address))?
        .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        tcp.set_nodelay(true).ok();
        match &self.tls {
            Some((connector, name)) => {
                let stream = tokio::time::timeout(
                    Duration::from_secs(5),
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS with {}: {e}", self.address))?;
                Ok(Box::new(stream))
            }
            None => Ok(Box::new(tcp)),
        }
    }

    async fn deliver(&mut self, entries: &[LogEntry]) -> Result<(), String> {
        let mut frames = Vec::new();
        for e in entries {
            let message = syslog_message(&self.hostname, e);
            frames.extend_from_slice(format!("{} ", message.len()).as_bytes());
            frames.extend_from_slice(message.as_bytes());
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let stream = self.connection.as_mut().expect("connected");
        let written = async {
            stream.write_all(&frames).await?;
            stream.flush().await
        };
        match tokio::time::timeout(Duration::from_secs(10), written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.connection = None;
                Err(format!("writing to {}: {e}", self.address))
            }
            Err(_) => {
                self.connection = None;
                Err(format!("writing to {} timed out", self.address))
            }
        }
    }
}

/// One RFC 5424 message: facility log audit (13), severity informational
/// for successes and warning for failures, the event's own time, MSGID
/// `ocsf-<class_uid>`, no structured data (the OCSF event's `metadata.uid`
/// identifies it for de-duplication), the OCSF JSON as MSG.
pub fn syslog_message(hostname: &str, entry: &LogEntry) -> String {
    let event: serde_json::Value = serde_json::from_str(&entry.body).unwrap_or_default();
    let severity = if event["status_id"] == 2 { 4 } else { 6 };
    let time = event["time"]
        .as_i64()
        .unwrap_or_else(citadel_core::clock::now_ms);
    let class = event["class_uid"].as_i64().unwrap_or(0);
    format!(
        "<{}>1 {} {} citadel {} ocsf-{class} - {}",
        13 * 8 + severity,
        citadel_core::clock::rfc3339(time),
        hostname,
        std::process::id(),
        entry.body
    )
}

struct WebhookTarget {
    url: String,
    client: reqwest::Client,
    token: Option<zeroize::Zeroizing<String>>,
}

impl WebhookTarget {
    async fn deliver(&mut self, entries: &[LogEntry]) -> Result<(), String> {
        let mut body = String::with_capacity(entries.iter().map(|e| e.body.len() + 1).sum());
        for e in entries {
            body.push_str(&e.body);
            body.push('\n');
        }
        let (first, last) = (entries[0].index, entries[entries.len() - 1].index);
        let mut request = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            // The same batch retried carries the same key, so a receiver can
            // drop what it already has.
            .header("Idempotency-Key", format!("citadel-log-{first}-{last}"))
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {}: {}", self.url, response.status()))
        }
    }
}

#[cfg(test)]
mod tests;
