//! `citadel serve`: wires the rooms together and runs both listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use citadel_admin::AdminState;
use citadel_audit::{EventSink, SinkConfig};
use citadel_core::{EventClass, Outcome, SecurityEvent};
use citadel_gateway::config::{ListenerConfig, Placement, UpstreamConfig, UpstreamKind};
use citadel_gateway::metrics::GatewayMetrics;
use citadel_gateway::server::{self, ListenerService, ServeOptions};
use citadel_gateway::GatewayState;
use citadel_identity::{KeyHasher, KeyRegistry, KeyRequest};
use citadel_policy::PolicyEngine;
use citadel_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, Durability};
use crate::data_dir::{open_store, DataDir};

/// What `serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeRequest {
    /// Data directory.
    pub data: DataDir,
    /// Loaded configuration.
    pub config: Config,
    /// `--database`.
    pub database: Option<String>,
    /// `--demo`.
    pub demo: bool,
}

/// Keys made on first start, shown once.
#[derive(Debug, Clone)]
pub struct BootstrapKeys {
    /// The bootstrap admin's key, if created now.
    pub admin: Option<String>,
    /// The demo developer key, with `--demo`.
    pub demo: Option<String>,
}

/// A running Citadel.
pub struct Running {
    /// Gateway address.
    pub gateway_addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// The CA certificate clients trust.
    pub ca_path: PathBuf,
    /// Keys to print.
    pub bootstrap: BootstrapKeys,
    /// Whether the gateway listener speaks TLS.
    pub gateway_tls: bool,
    /// The store (for tests and shutdown).
    pub store: Store,
    /// The sink (flushed at shutdown).
    pub sink: Arc<EventSink>,
    /// The policy engine (reload on SIGHUP).
    pub policy: Arc<PolicyEngine>,
    /// The tamper-evident log (a last checkpoint at shutdown).
    pub log: Arc<citadel_audit::AuditLog>,
    /// Per-subject keys (for tests of erasure).
    pub vault: Arc<citadel_audit::SubjectVault>,
    exporters: Vec<tokio::task::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests finish, flushes the event queue.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.listeners {
            let _ = l.await;
        }
        self.sink.flush().await;
        // Sign what the last events added, so a verifier sees all of it.
        if let Err(error) = self.log.checkpoint_now().await {
            tracing::error!(%error, "could not sign the last audit log checkpoint");
        }
        // Exporters resume from their cursors at the next start.
        for exporter in self.exporters {
            exporter.abort();
        }
        self.store.close().await;
    }

    /// Reloads policies (SIGHUP), recording the outcome.
    pub async fn reload_policies(&self) {
        reload_policies(&self.policy, &self.sink).await;
    }
}

/// A system event (no human actor) recorded durably, e.g. a policy reload.
fn system_event(operation: &str, outcome: Outcome, detail: serde_json::Value) -> SecurityEvent {
    SecurityEvent::builder(EventClass::ApiActivity, 99, "Other", outcome)
        .actor_named("system", "citadel", "system")
        .field(
            "api",
            serde_json::json!({"operation": operation, "service": {"name": "citadel"}}),
        )
        .field("unmapped", detail)
        .build()
}

async fn reload_policies(policy: &PolicyEngine, sink: &EventSink) {
    let outcome = policy
        .reload()
        .map_err(|p| p.0.iter().map(|p| p.to_string()).collect());
    record_reload(sink, "policies.reload", "policies", outcome).await;
}

/// Records the outcome of reloading user-edited files (`count` of what is
/// now in force, or the problems that kept the old set in force).
async fn record_reload(
    sink: &EventSink,
    operation: &str,
    what: &str,
    outcome: std::result::Result<usize, Vec<String>>,
) {
    let event = match outcome {
        Ok(count) => {
            tracing::info!(operation, count, "{what} reloaded");
            system_event(
                operation,
                Outcome::Success,
                serde_json::json!({ what: count }),
            )
        }
        Err(problems) => {
            tracing::error!(
                operation,
                "{what} reload refused; the set in force stays:\n{}",
                problems.join("\n")
            );
            system_event(
                operation,
                Outcome::Failure,
                serde_json::json!({"problems": problems}),
            )
        }
    };
    if let Err(e) = sink.record_durable(event).await {
        tracing::error!(error = %e, operation, "could not record the reload");
    }
}

/// Records a key operation by the server itself (never the key).
async fn record_key_event(sink: &EventSink, operation: &str, purpose: &str, version: u32) {
    let event = SecurityEvent::change(
        operation,
        "citadel",
        serde_json::json!({"type": "DataKey", "uid": format!("{purpose}/v{version}"), "purpose": purpose, "version": version}),
    )
    .actor_named("system", "citadel", "system")
    .build();
    if let Err(e) = sink.record_durable(event).await {
        tracing::error!(error = %e, operation, "could not record a key operation");
    }
}

/// Reloads the detector rules after their files changed, recording the
/// outcome; on failure the rules in force stay.
async fn reload_privacy_rules(privacy: &citadel_privacy::Privacy, sink: &EventSink) {
    let outcome = privacy
        .reload()
        .map_err(|p| p.0.iter().map(|p| p.to_string()).collect());
    record_reload(sink, "privacy.rules.reload", "detectors", outcome).await;
}

/// A listener's TLS: its certificate (the operator's files, or one from
/// the internal CA), replaceable while serving, and the rustls
/// configuration around it. `None` for a plain-HTTP listener.
fn tls_for(
    listener: &ListenerConfig,
    ca: &Arc<citadel_crypto::InternalCa>,
    client_certs: Option<&citadel_crypto::ClientCertChecker>,
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if listener.insecure_http {
        tracing::warn!(listen = %listener.listen, "insecure_http = true: this listener serves plain HTTP; credentials and data cross the network unencrypted");
        return Ok(None);
    }
    if listener.insecure_tls12 {
        tracing::warn!(listen = %listener.listen, "insecure_tls12 = true: this listener also accepts TLS 1.2 (ECDHE and AEAD suites only)");
    }
    let (chain, key) = listener_cert(listener, ca)?;
    let cert = citadel_crypto::ReloadableCert::new(&chain, &key)
        .with_context(|| format!("the TLS certificate of {}", listener.listen))?;
    let config =
        citadel_crypto::listener_config(cert.clone(), listener.insecure_tls12, client_certs)?;
    watch_listener_cert(listener.clone(), ca.clone(), cert);
    Ok(Some(config))
}

/// The listener's certificate chain and key: the operator's files, or a
/// fresh one from the internal CA.
fn listener_cert(
    listener: &ListenerConfig,
    ca: &citadel_crypto::InternalCa,
) -> Result<(String, zeroize::Zeroizing<String>)> {
    Ok(match (&listener.tls_cert, &listener.tls_key) {
        (Some(c), Some(k)) => (
            std::fs::read_to_string(c).with_context(|| format!("tls_cert {}", c.display()))?,
            zeroize::Zeroizing::new(
                std::fs::read_to_string(k).with_context(|| format!("tls_key {}", k.display()))?,
            ),
        ),
        _ => {
            let issued = ca.issue_server_cert(&listener.tls_names)?;
            (issued.chain_pem, issued.key_pem)
        }
    })
}

/// Replaces the listener's certificate without a restart: the operator's
/// files when they change (checked every 5 s; a broken pair is refused and
/// the one in use stays), or, from the internal CA, a fresh certificate
/// every day (they last 90).
fn watch_listener_cert(
    listener: ListenerConfig,
    ca: Arc<citadel_crypto::InternalCa>,
    cert: Arc<citadel_crypto::ReloadableCert>,
) {
    let operator_files = match (&listener.tls_cert, &listener.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    tokio::spawn(async move {
        let stamp = |files: &(PathBuf, PathBuf)| {
            [&files.0, &files.1].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        };
        let mut seen = operator_files.as_ref().map(stamp);
        let every = if operator_files.is_some() {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(24 * 3600)
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Some(files) = &operator_files {
                let now = Some(stamp(files));
                if now == seen {
                    continue;
                }
                seen = now;
            }
            match listener_cert(&listener, &ca)
                .and_then(|(chain, key)| cert.replace(&chain, &key).map_err(anyhow::Error::from))
            {
                Ok(()) => tracing::info!(listen = %listener.listen, "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(listen = %listener.listen, error = %format!("{e:#}"), "TLS certificate not reloaded; the one in use stays")
                }
            }
        }
    });
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}; is another process using it? Choose another address with --{}", if what == "gateway" { "listen" } else { "admin-listen" })
    })
}

/// Creates the bootstrap admin (first start) and, with `--demo`, a demo key.
async fn bootstrap(store: &Store, hasher: &KeyHasher, demo: bool) -> Result<BootstrapKeys> {
    let mut keys = BootstrapKeys {
        admin: None,
        demo: None,
    };
    if store.list_users().await?.is_empty() && store.list_api_keys().await?.is_empty() {
        citadel_identity::create_user(store, "admin", vec!["admin".into()]).await?;
        let (_, key) = citadel_identity::create_api_key(
            store,
            hasher,
            KeyRequest {
                name: "bootstrap-admin".into(),
                roles: vec!["admin".into()],
                user: Some("admin".into()),
                ..Default::default()
            },
        )
        .await?;
        keys.admin = Some(key.secret.to_string());
    }
    if demo {
        let (_, key) = citadel_identity::create_api_key(
            store,
            hasher,
            KeyRequest {
                name: "demo".into(),
                roles: vec!["developer".into()],
                expires_in_ms: Some(30 * 24 * 3_600_000),
                ..Default::default()
            },
        )
        .await?;
        keys.demo = Some(key.secret.to_string());
    }
    Ok(keys)
}

/// Starts Citadel and returns once both listeners accept.
pub async fn start(request: ServeRequest) -> Result<Running> {
    let ServeRequest {
        data,
        mut config,
        database,
        demo,
    } = request;
    data.ensure()?;
    let url = data.database_url(database.as_deref(), &config);
    let store = open_store(&url).await?;
    store.check_log().await.context(
        "the audit log does not match the stored events; run `citadel audit verify` to see where",
    )?;
    let log = citadel_audit::AuditLog::with_proof_cache(
        store.clone(),
        data.log_signer(&config, true)?,
        (config.audit.proof_cache_mb as usize) << 20,
    );
    if let Some(latest) = store.latest_checkpoint().await? {
        // Replicas sharing a database must share the log key too, or each
        // would sign checkpoints no verifier holding the log's key accepts.
        citadel_audit::Checkpoint::open(&latest.note, &log.verifier()).map_err(|e| {
            anyhow::anyhow!(
                "the audit log in this database was signed by another key ({e}); \
                 a replica must use the same keys/audit-log.key as the others"
            )
        })?;
    }
    log.spawn_checkpointer(config.audit.checkpoint_interval);
    let exporters = citadel_audit::spawn_exporters(&store, &config.audit.export, data.root())
        .map_err(anyhow::Error::msg)?;

    let registry =
        KeyRegistry::load(store.clone(), KeyHasher::new(data.key_hash_secret()?)).await?;
    tokio::spawn(registry.clone().watch(Duration::from_millis(100)));
    let signin = data.sign_in(&store, &config).await?;
    tokio::spawn(signin.sessions.clone().watch(Duration::from_millis(100)));
    if signin.jwt.is_enabled() {
        let jwt = signin.jwt.clone();
        tokio::spawn(async move {
            jwt.fetch_all().await;
            jwt.refresh_forever().await;
        });
    }

    let policy_dir = data.policy_dir(&config);
    data.seed_policies(&policy_dir)?;
    let policy = match PolicyEngine::load(&policy_dir) {
        Ok(p) => Arc::new(p),
        Err(problems) => bail!(
            "the policies in {} do not validate:\n{problems}",
            policy_dir.display()
        ),
    };

    let durability = match config.audit.durability {
        Durability::Durable => citadel_audit::Durability::Durable,
        Durability::Async => {
            tracing::warn!("audit.durability = \"async\": responses no longer wait for their decision event; a crash can lose queued events");
            citadel_audit::Durability::Async
        }
    };
    let vault = data.subject_vault(&store).await?;
    {
        // An erasure anywhere (CLI, another replica) bumps the enforcement
        // version; cached subject keys are dropped when it moves.
        let (vault, store) = (vault.clone(), store.clone());
        tokio::spawn(async move {
            let mut seen = store.enforcement_version().await.unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Ok(now) = store.enforcement_version().await {
                    if now != seen {
                        seen = now;
                        vault.forget_cached();
                    }
                }
            }
        });
    }
    let sink = EventSink::start(
        store.clone(),
        SinkConfig {
            durability,
            vault: Some(vault.clone()),
            ..Default::default()
        },
    );

    {
        // The key hierarchy: record versions made at this start, pick up
        // versions made elsewhere, rotate on schedule.
        let keys = signin.factors.keys().clone();
        for (purpose, version) in keys.take_made() {
            record_key_event(&sink, "data_keys.create", &purpose, version).await;
        }
        let sink = sink.clone();
        let rotate_after = config.keys.rotate_after;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Err(e) = keys.refresh().await {
                    tracing::error!(error = %e, "could not refresh the data keys");
                    continue;
                }
                let Some(max_age) = rotate_after else {
                    continue;
                };
                match keys
                    .rotate_due(max_age, citadel_core::clock::now_ms())
                    .await
                {
                    Ok(rotated) => {
                        for (purpose, version) in rotated {
                            tracing::info!(%purpose, version, "data key rotated on schedule");
                            record_key_event(&sink, "data_keys.rotate", &purpose, version).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "scheduled data key rotation failed"),
                }
            }
        });
    }
    if !config.privacy.retention.is_empty() {
        // Retention: purge what has expired, leaving the evidence.
        let (store, sink) = (store.clone(), sink.clone());
        let rules = config.privacy.retention.clone();
        let every = config.privacy.purge_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match citadel_admin::subjects::purge(&store, &rules, citadel_core::clock::now_ms())
                    .await
                {
                    Ok(results) => {
                        if results.iter().all(|r| r["purged"] == 0) {
                            continue;
                        }
                        let event = SecurityEvent::change(
                            "privacy.purge",
                            "citadel",
                            citadel_admin::subjects::purge_resource(&results),
                        )
                        .actor_named("system", "citadel", "system")
                        .build();
                        if let Err(e) = sink.record_durable(event).await {
                            tracing::error!(error = %e, "could not record the retention purge");
                        }
                    }
                    Err(e) => tracing::error!(error = %e.0.message, "retention purge failed"),
                }
            }
        });
    }
    let privacy = Arc::new(data.privacy(&config)?);
    let consents = Arc::new(data.consents(store.clone(), &config)?);
    tracing::info!(
        detectors = privacy.scanner().len(),
        redact = ?config.privacy.redact,
        "detector rules loaded"
    );
    {
        let policy = policy.clone();
        let privacy = privacy.clone();
        let sink = sink.clone();
        let every = config.policy.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if policy.changed_on_disk() {
                    reload_policies(&policy, &sink).await;
                }
                if privacy.changed_on_disk() {
                    reload_privacy_rules(&privacy, &sink).await;
                }
            }
        });
    }

    if demo {
        let addr = crate::demo::start_demo_upstream().await?;
        config.upstream.push(UpstreamConfig {
            name: "demo".into(),
            url: format!("http://{addr}"),
            kind: UpstreamKind::Openai,
            models: crate::demo::DEMO_MODELS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            prefix: None,
            placement: Placement::OnPrem,
            tls: Default::default(),
            auth_token_env: None,
            insecure_plaintext: false,
            redact: None,
            purpose: None,
            capture: None,
        });
        tracing::info!(%addr, "demo model server started");
    }

    let ca = Arc::new(citadel_crypto::InternalCa::load_or_create(&data.tls_dir())?);
    // Devices and workloads present certificates from the internal CA.
    let client_certs = Arc::new(citadel_crypto::ClientCertChecker::new(ca.cert_pem())?);
    let gateway_tls = tls_for(&config.gateway, &ca, Some(&client_certs))?;
    let admin_tls = tls_for(&config.admin, &ca, None)?;
    let machines = citadel_identity::machines::Machines::load(
        store.clone(),
        config.identity.devices.clone(),
        config.identity.workloads.clone(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    tokio::spawn(machines.clone().watch(Duration::from_millis(100)));

    let risk = citadel_identity::risk::RiskBoard::load(
        store.clone(),
        config.identity.verify.risk_half_life,
    )
    .await?;
    tokio::spawn(risk.clone().watch(Duration::from_millis(100)));
    let verifier = Arc::new(
        citadel_gateway::verify::Verifier::new(&config.identity.verify, risk)
            .map_err(anyhow::Error::msg)?,
    );

    let metrics = Arc::new(GatewayMetrics::default());
    let gateway = GatewayState::new(
        config.gateway_config(),
        registry.clone(),
        signin.clone(),
        machines,
        ca.clone(),
        verifier,
        policy.clone(),
        privacy.clone(),
        consents.clone(),
        vault.clone(),
        store.clone(),
        sink.clone(),
        metrics.clone(),
    )?;

    let gateway_listener = bind(config.gateway.listen, "gateway").await?;
    let admin_listener = bind(config.admin.listen, "admin API").await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let limits = &config.limits;
    let header_read_timeout = limits.request_timeout;
    let gateway_options = ServeOptions {
        tls: gateway_tls.clone(),
        max_connections: limits.max_connections,
        header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_header_bytes: limits.max_header_bytes,
        metrics: Some(metrics.clone()),
        client_certs: Some(client_certs),
    };
    let admin_options = ServeOptions {
        tls: admin_tls,
        max_connections: 256,
        header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_header_bytes: limits.max_header_bytes,
        metrics: None,
        client_certs: None,
    };
    let gateway_service: ListenerService = citadel_gateway::gateway_service(gateway.clone());
    let admin_service = citadel_admin::admin_service(AdminState {
        store: store.clone(),
        registry: registry.clone(),
        policy: policy.clone(),
        sink: sink.clone(),
        gateway: gateway.clone(),
        metrics,
        log: log.clone(),
        vault,
        exporters: config
            .audit
            .export
            .iter()
            .map(|e| e.name().to_owned())
            .collect(),
    });
    let listeners = vec![
        tokio::spawn(server::serve(
            gateway_listener,
            gateway_options,
            gateway_service,
            shutdown_rx.clone(),
        )),
        tokio::spawn(server::serve(
            admin_listener,
            admin_options,
            admin_service,
            shutdown_rx,
        )),
    ];

    let bootstrap = bootstrap(&store, registry.hasher(), demo).await?;
    registry.refresh().await?;
    sink.record_durable(system_event(
        "serve.start",
        Outcome::Success,
        serde_json::json!({"gateway": gateway_addr.to_string(), "admin": admin_addr.to_string(), "database": store.backend_name()}),
    ))
    .await
    .map_err(|e| anyhow::anyhow!("cannot record security events: {e}"))?;

    Ok(Running {
        gateway_addr,
        admin_addr,
        ca_path: ca.cert_path(),
        bootstrap,
        gateway_tls: gateway_tls.is_some(),
        store,
        sink,
        policy,
        log,
        vault: gateway.vault.clone(),
        exporters,
        shutdown,
        listeners,
    })
}
