//! The command line: `citadel serve`, `init`, `key`, `user`, `role`,
//! `policy` and `events`. Every listing and creating command takes `--json`
//! (one JSON object for a created thing, JSON lines for a listing).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use citadel_core::{clock, EventClass, Outcome, SecurityEvent};
use citadel_identity::{KeyHasher, KeyRequest};
use citadel_store::{EventQuery, Store};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::data_dir::{open_store, DataDir};
use crate::serve::{self, ServeRequest};

/// Citadel: a zero-trust security gateway for LLM servers and ML / data-platform APIs.
///
/// Every request through Citadel is authenticated, authorized by Cedar
/// policy and recorded as a security event before it reaches a model.
#[derive(Debug, Parser)]
#[command(name = "citadel", version, about, long_about)]
pub struct Cli {
    /// Data directory (database, keys, internal CA, policies).
    #[arg(
        long,
        global = true,
        env = "CITADEL_DATA",
        default_value = "./citadel-data"
    )]
    pub data: PathBuf,
    /// Config file [default: DATA/citadel.toml if present].
    #[arg(long, global = true, env = "CITADEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL (`sqlite://PATH` or `postgres://…`), overriding the config.
    #[arg(long, global = true, env = "CITADEL_DATABASE")]
    pub database: Option<String>,
    /// Log filter (e.g. `info`, `citadel_gateway=debug`).
    #[arg(long, global = true, env = "CITADEL_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the admin API.
    Serve(ServeArgs),
    /// Write a commented example config to DATA/citadel.toml (or --config).
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage custom roles (built in: admin, operator, auditor, developer, service).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Validate policies or print the Cedar schema.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read stored security events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The tamper-evident audit log: key, checkpoints, proofs, export, verify.
    #[command(subcommand)]
    Audit(crate::audit_cli::AuditCommand),
    /// Devices: enrolment tokens, the enrolled devices, revocation.
    #[command(subcommand)]
    Device(crate::machines_cli::DeviceCommand),
    /// Workloads: SPIFFE X.509 certificates for services.
    #[command(subcommand)]
    Workload(crate::machines_cli::WorkloadCommand),
    /// Risk scores of principals (what continuous verification hands to policy).
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Data keys of the key hierarchy: list with ages, rotate, re-wrap
    /// (API keys are `citadel key`).
    #[command(subcommand)]
    Keys(crate::keys_cli::KeysCommand),
    /// Data subjects: export everything held about one, or erase them.
    #[command(subcommand)]
    Subject(crate::privacy_cli::SubjectCommand),
    /// Data subjects' consent to purposes: grant, withdraw, receipts.
    #[command(subcommand)]
    Consent(crate::privacy_cli::ConsentCommand),
    /// Personal data and secrets: scan or redact text, check detector rules.
    #[command(subcommand)]
    Privacy(crate::privacy_cli::PrivacyCommand),
    /// The effective reachability matrix: which role may reach which model
    /// and route (and which only with a second factor), computed from the
    /// policies and upstreams in the config.
    Segments {
        /// Evaluate address conditions in policies for this client address.
        #[arg(long, default_value = "127.0.0.1")]
        source: std::net::IpAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Also start a demo OpenAI-compatible model server and print a ready curl line.
    #[arg(long)]
    pub demo: bool,
    /// Gateway listen address [default: 127.0.0.1:8443].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin API listen address [default: 127.0.0.1:9443].
    #[arg(long)]
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// `citadel key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// Key name (the service account's name when no --user owns it).
        #[arg(long)]
        name: String,
        /// Role the key acts with (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Owning user (name or id); without it the key is a service account.
        #[arg(long)]
        user: Option<String>,
        /// Lifetime, e.g. 30d, 12h.
        #[arg(long)]
        expires: Option<String>,
        /// Requests per minute for this key.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute for this key.
        #[arg(long)]
        tpm: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; effective on the gateway within a fraction of a second.
    Revoke {
        /// Key id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// Login name.
        #[arg(long)]
        name: String,
        /// Role (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Read the user's password from standard input (checked against
        /// the password policy); without it the user cannot sign in with a
        /// password until `citadel user password` sets one.
        #[arg(long)]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set or reset a user's password (read from standard input); ends
    /// the user's sessions.
    Password {
        /// Name or id.
        name: String,
        /// Read the password from standard input (required: passwords are
        /// never taken as arguments, which other users can see).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Second factors: TOTP authenticators and recovery codes.
    #[command(subcommand)]
    Mfa(crate::user_cli::MfaCommand),
    /// A user's browser sessions.
    Sessions {
        /// Name or id.
        name: String,
        /// Include ended and expired sessions.
        #[arg(long)]
        all: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Sign a user out everywhere: every session ends on the next request.
    SignOut {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lift sign-in locks on a user's account.
    Unlock {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their keys stop working on the next request.
    Disable {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Erase a person (right to erasure): disable and rename the account,
    /// revoke its keys and destroy its subject key, so the fields that
    /// named them in recorded events become unreadable. The audit log still
    /// verifies. Cannot be undone.
    Erase {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel risk …`.
#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// Set a principal's risk score (0..100); it decays from there.
    Set {
        /// User name, or a principal id (`u-…`, `jwt:…`, `spiffe://…`).
        principal: String,
        /// 0 to 100.
        score: i64,
        /// Why (recorded in the event).
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a principal's current score.
    Show {
        /// User name or principal id.
        principal: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel role …`.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create a custom role (grant it permissions in a policy file).
    Create {
        /// Role name.
        #[arg(long)]
        name: String,
        /// What the role is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List roles.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy directory against Citadel's schema; prints file:line:column: reason.
    Validate {
        /// Directory [default: the configured one].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print Citadel's Cedar schema.
    Schema,
}

/// `citadel events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, oldest first, as OCSF JSON.
    List {
        /// From this time: a duration back from now (15m, 24h) or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Only this principal id.
        #[arg(long)]
        principal: Option<String>,
        /// Only this class: authentication, account_change, http_activity, api_activity.
        #[arg(long = "type")]
        class: Option<String>,
        /// success or failure.
        #[arg(long)]
        outcome: Option<String>,
        /// At most this many (default 100; 0 for all).
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print JSON lines (one OCSF event per line).
        #[arg(long)]
        json: bool,
    },
}

/// Prints to stderr, ignoring a closed stderr (a server must not die of it).
macro_rules! say {
    () => {{
        let _ = writeln!(std::io::stderr());
    }};
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn load_config(cli: &Cli, data: &DataDir) -> Result<Config> {
    match &cli.config {
        Some(path) => Ok(Config::load(path)?),
        None if data.config_file().exists() => Ok(Config::load(&data.config_file())?),
        None => Ok(Config::default()),
    }
}

pub(crate) fn operator_event(operation: &str, resource: serde_json::Value) -> SecurityEvent {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    SecurityEvent::change(operation, "cli", resource)
        .actor_named(&format!("cli:{user}"), &user, "operator")
        .build()
}

pub(crate) async fn record_event(store: &Store, event: SecurityEvent) -> Result<()> {
    store
        .append_events(&[event])
        .await
        .context("the change was made but its security event could not be recorded")
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    ms.map(clock::rfc3339).unwrap_or_else(|| "-".into())
}

/// Runs the CLI.
pub async fn run(cli: Cli) -> Result<()> {
    let data = DataDir::new(cli.data.clone());
    let config = load_config(&cli, &data)?;
    match cli.command {
        Command::Serve(ref args) => run_serve(&cli, data, config, args).await,
        Command::Init { force } => {
            data.ensure()?;
            let path = cli.config.clone().unwrap_or_else(|| data.config_file());
            if path.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", path.display());
            }
            std::fs::write(&path, include_str!("../../../citadel.example.toml"))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        Command::Policy(PolicyCommand::Schema) => {
            print!("{}", citadel_policy::SCHEMA);
            Ok(())
        }
        Command::Policy(PolicyCommand::Validate { ref dir, json }) => {
            let dir = dir.clone().unwrap_or_else(|| data.policy_dir(&config));
            match citadel_policy::PolicyEngine::load(&dir) {
                Ok(engine) => {
                    let count = engine.policy_origins().len();
                    if json {
                        print_json(
                            &serde_json::json!({"valid": true, "policies": count, "problems": []}),
                        )?;
                    } else {
                        println!("{}: {count} policies valid", dir.display());
                    }
                    Ok(())
                }
                Err(problems) => {
                    if json {
                        let list: Vec<_> = problems
                            .0
                            .iter()
                            .map(|p| serde_json::json!({"file": p.file, "line": p.line, "column": p.column, "reason": p.reason}))
                            .collect();
                        print_json(&serde_json::json!({"valid": false, "problems": list}))?;
                        std::process::exit(1);
                    }
                    bail!("{problems}")
                }
            }
        }
        Command::Key(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            run_key(&store, &data, cmd).await
        }
        Command::User(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            run_user(&store, &data, &config, cmd).await
        }
        Command::Role(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            run_role(&store, cmd).await
        }
        Command::Events(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            run_events(&store, &data, cmd).await
        }
        Command::Device(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            crate::machines_cli::run_device(&store, &config, cmd).await
        }
        Command::Workload(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            crate::machines_cli::run_workload(&store, &data, &config, cmd).await
        }
        Command::Risk(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            run_risk(&store, &config, cmd).await
        }
        Command::Segments { source, json } => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            let dir = data.policy_dir(&config);
            data.seed_policies(&dir)?;
            let engine = citadel_policy::PolicyEngine::load(&dir).map_err(|p| {
                anyhow::anyhow!("the policies in {} do not validate:\n{p}", dir.display())
            })?;
            let roles = citadel_identity::all_role_names(&store).await?;
            let workloads = store.active_workloads().await?;
            let matrix = citadel_policy::segments::reachability(
                &engine,
                &roles,
                &workloads,
                citadel_gateway::config::segment_targets(&config.upstream),
                source,
            );
            if json {
                print_json(&matrix)
            } else {
                if matrix.targets.is_empty() {
                    println!("no upstreams are configured; add [[upstream]] tables to the config");
                    return Ok(());
                }
                print!("{}", matrix.to_table());
                println!("(allow: permitted; mfa: only with a fresh second factor; device: only from a compliant device; -: denied. Address conditions evaluated for {source}.)");
                Ok(())
            }
        }
        Command::Privacy(crate::privacy_cli::PrivacyCommand::Purge { json }) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            let results =
                citadel_admin::subjects::purge(&store, &config.privacy.retention, clock::now_ms())
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
            let total: u64 = results.iter().filter_map(|r| r["purged"].as_u64()).sum();
            record_event_and_print(
                &store,
                "privacy.purge",
                citadel_admin::subjects::purge_resource(&results),
                &results,
                json,
                &format!(
                    "{total} records purged by {} retention rules",
                    results.len()
                ),
            )
            .await
        }
        Command::Privacy(cmd) => crate::privacy_cli::run(&data, &config, cmd),
        Command::Keys(cmd) => {
            crate::keys_cli::run(&data, &config, cli.database.as_deref(), cmd).await
        }
        Command::Subject(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            crate::privacy_cli::run_subject(&data, &config, &store, cmd).await
        }
        Command::Consent(cmd) => {
            data.ensure()?;
            let store = open_store(&data.database_url(cli.database.as_deref(), &config)).await?;
            let consents = data.consents(store.clone(), &config)?;
            crate::privacy_cli::run_consent(&store, &consents, cmd).await
        }
        Command::Audit(cmd) => {
            crate::audit_cli::run(&data, &config, cli.database.as_deref(), cmd).await
        }
    }
}

async fn run_key(store: &Store, data: &DataDir, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Create {
            name,
            roles,
            user,
            expires,
            rpm,
            tpm,
            json,
        } => {
            let expires_in_ms = expires
                .as_deref()
                .map(clock::parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            if rpm == Some(0) || tpm == Some(0) {
                bail!("--rpm and --tpm must be at least 1");
            }
            let hasher = KeyHasher::new(data.key_hash_secret()?);
            let (record, new) = citadel_identity::create_api_key(
                store,
                &hasher,
                KeyRequest {
                    name,
                    roles,
                    user,
                    expires_in_ms,
                    rpm: rpm.map(i64::from),
                    tpm: tpm.map(i64::from),
                },
            )
            .await?;
            record_event(
                store,
                operator_event(
                    "keys.create",
                    serde_json::json!({"type": "ApiKey", "uid": record.id, "name": record.name}),
                ),
            )
            .await?;
            if json {
                let mut out = serde_json::to_value(&record)?;
                out["secret"] = serde_json::Value::String(new.secret.to_string());
                print_json(&out)?;
            } else {
                println!("id:      {}", record.id);
                println!("secret:  {}", new.secret.as_str());
                println!("roles:   {}", record.roles.join(","));
                println!("expires: {}", when(record.expires_at));
                eprintln!("The secret is shown once and not stored; keep it now.");
            }
            Ok(())
        }
        KeyCommand::List { json } => {
            let keys = store.list_api_keys().await?;
            if json {
                for k in &keys {
                    print_json(k)?;
                }
            } else {
                println!(
                    "{:<17} {:<20} {:<20} {:<16} {:<25} {:<25} STATUS",
                    "ID", "NAME", "OWNER", "ROLES", "EXPIRES", "LAST USED"
                );
                let now = clock::now_ms();
                for k in &keys {
                    let status = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<17} {:<20} {:<20} {:<16} {:<25} {:<25} {status}",
                        k.id,
                        k.name,
                        k.owner_name,
                        k.roles.join(","),
                        when(k.expires_at),
                        when(k.last_used_at)
                    );
                }
            }
            Ok(())
        }
        KeyCommand::Revoke { id, json } => {
            let record = store.revoke_api_key(&id, clock::now_ms()).await?;
            record_event_and_print(
                store,
                "keys.revoke",
                serde_json::json!({"type": "ApiKey", "uid": record.id}),
                &record,
                json,
                &format!("revoked key {}", record.id),
            )
            .await
        }
    }
}

pub(crate) async fn record_event_and_print(
    store: &Store,
    operation: &str,
    resource: serde_json::Value,
    value: &impl serde::Serialize,
    json: bool,
    human: &str,
) -> Result<()> {
    record_event(store, operator_event(operation, resource)).await?;
    if json {
        print_json(value)
    } else {
        println!("{human}");
        Ok(())
    }
}

async fn run_user(store: &Store, data: &DataDir, config: &Config, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            roles,
            password_stdin,
            json,
        } => {
            // Read and check the password before anything is created, so a
            // refused password leaves no half-made user behind.
            let password = if password_stdin {
                let password = crate::user_cli::password_from_stdin()?;
                let signin = data.sign_in_for_cli(store, config).await?;
                signin
                    .passwords
                    .check_policy(&name, &password)
                    .map_err(|p| anyhow::anyhow!("weak_password: {p}"))?;
                let hash = signin.passwords.hash(password).await?;
                Some(hash)
            } else {
                None
            };
            let user = citadel_identity::create_user(store, &name, roles).await?;
            if let Some(hash) = &password {
                store
                    .set_password_hash(&user.id, hash, clock::now_ms())
                    .await?;
            }
            record_event_and_print(
                store,
                "users.create",
                serde_json::json!({"type": "User", "uid": user.id}),
                &serde_json::json!({"id": user.id, "name": user.name, "roles": user.roles, "disabled": user.disabled, "created_at": user.created_at, "password_set": password.is_some()}),
                json,
                &format!("created user {} ({})", user.name, user.id),
            )
            .await
        }
        UserCommand::Password {
            name,
            password_stdin: _,
            json,
        } => crate::user_cli::set_password(store, data, config, &name, json).await,
        UserCommand::Mfa(cmd) => crate::user_cli::run_mfa(store, data, config, cmd).await,
        UserCommand::Sessions { name, all, json } => {
            crate::user_cli::list_sessions(store, &name, all, json).await
        }
        UserCommand::SignOut { name, json } => crate::user_cli::sign_out(store, &name, json).await,
        UserCommand::Unlock { name, json } => {
            crate::user_cli::unlock(store, data, config, &name, json).await
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                for u in &users {
                    print_json(u)?;
                }
            } else {
                println!("{:<36} {:<24} {:<24} STATUS", "ID", "NAME", "ROLES");
                for u in &users {
                    println!(
                        "{:<36} {:<24} {:<24} {}",
                        u.id,
                        u.name,
                        u.roles.join(","),
                        if u.disabled { "disabled" } else { "active" }
                    );
                }
            }
            Ok(())
        }
        UserCommand::Disable { name, json } => {
            let user = store.set_user_disabled(&name, true).await?;
            record_event_and_print(
                store,
                "users.disable",
                serde_json::json!({"type": "User", "uid": user.id}),
                &user,
                json,
                &format!("disabled user {}", user.name),
            )
            .await
        }
        UserCommand::Erase { name, json } => {
            let vault = data.subject_vault(store).await?;
            // The key first: if that fails nothing has changed, and a
            // failure after it is finished by erasing the same id again.
            let found = store.find_user(&name).await?;
            let shredded = vault
                .erase(&found.id)
                .await
                .context("the subject key could not be destroyed; nothing was changed, retry")?;
            let user = store.erase_user(&found.id, clock::now_ms()).await?;
            record_event_and_print(
                store,
                "users.erase",
                serde_json::json!({"type": "User", "uid": user.id}),
                &serde_json::json!({"user": user, "subject_key_destroyed": shredded}),
                json,
                &format!("erased user {} (now {})", name, user.name),
            )
            .await
        }
    }
}

async fn run_risk(store: &Store, config: &Config, cmd: RiskCommand) -> Result<()> {
    let board = citadel_identity::risk::RiskBoard::load(
        store.clone(),
        config.identity.verify.risk_half_life,
    )
    .await?;
    let resolve = |name: String| async move {
        citadel_identity::risk::resolve_subject(store, &name)
            .await
            .map(|s| s.id)
            .map_err(anyhow::Error::from)
    };
    match cmd {
        RiskCommand::Set {
            principal,
            score,
            reason,
            json,
        } => {
            if !(0..=100).contains(&score) || reason.trim().is_empty() {
                bail!("the score is 0 to 100 and --reason must say why");
            }
            let id = resolve(principal).await?;
            let record = board.set(&id, score, &reason, clock::now_ms()).await?;
            record_event_and_print(
                store,
                "risk.set",
                serde_json::json!({"type": "Principal", "uid": id, "score": score, "reason": reason}),
                &record,
                json,
                &format!("risk score of {id} set to {score}"),
            )
            .await
        }
        RiskCommand::Show { principal, json } => {
            let id = resolve(principal).await?;
            let score = board.score(&id, clock::now_ms());
            if json {
                print_json(&serde_json::json!({"principal": id, "risk_score": score}))
            } else {
                println!("{id}: {score}");
                Ok(())
            }
        }
    }
}

async fn run_role(store: &Store, cmd: RoleCommand) -> Result<()> {
    match cmd {
        RoleCommand::Create {
            name,
            description,
            json,
        } => {
            let role = citadel_identity::create_role(store, &name, &description).await?;
            record_event_and_print(
                store,
                "roles.create",
                serde_json::json!({"type": "Role", "uid": role.name}),
                &role,
                json,
                &format!("created role {}", role.name),
            )
            .await
        }
        RoleCommand::List { json } => {
            let custom = store.list_roles().await?;
            if json {
                for r in citadel_core::BUILTIN_ROLES {
                    print_json(&serde_json::json!({"name": r, "builtin": true}))?;
                }
                for r in &custom {
                    print_json(r)?;
                }
            } else {
                for r in citadel_core::BUILTIN_ROLES {
                    println!("{r:<24} built in");
                }
                for r in &custom {
                    println!("{:<24} {}", r.name, r.description);
                }
            }
            Ok(())
        }
    }
}

async fn run_events(store: &Store, data: &DataDir, cmd: EventsCommand) -> Result<()> {
    let vault = data.subject_vault(store).await?;
    let EventsCommand::List {
        since,
        until,
        principal,
        class,
        outcome,
        limit,
        json,
    } = cmd;
    let mut query = EventQuery {
        since: since.as_deref().map(clock::parse_since).transpose().map_err(anyhow::Error::msg)?,
        until: until.as_deref().map(clock::parse_since).transpose().map_err(anyhow::Error::msg)?,
        principal,
        class: class
            .as_deref()
            .map(|c| EventClass::parse(c).with_context(|| format!("unknown event type `{c}`; use authentication, account_change, http_activity or api_activity")))
            .transpose()?,
        outcome: match outcome.as_deref() {
            None => None,
            Some("success") => Some(Outcome::Success),
            Some("failure") => Some(Outcome::Failure),
            Some(other) => bail!("--outcome must be success or failure, not `{other}`"),
        },
        ..Default::default()
    };
    let mut left = if limit == 0 { u64::MAX } else { limit };
    let mut out = std::io::stdout().lock();
    while left > 0 {
        query.limit = Some(left.min(1000) as i64);
        let (mut events, cursor) = store.query_events(&query).await?;
        for e in &mut events {
            vault.open(&mut e.body).await?;
        }
        for e in &events {
            if json {
                writeln!(out, "{}", e.to_json_line())?;
            } else {
                let b = &e.body;
                writeln!(
                    out,
                    "{}  {:<15} {:<8} {:<28} {:<22} {}",
                    clock::rfc3339(e.time),
                    e.class.name(),
                    e.outcome.as_str(),
                    e.principal.as_deref().unwrap_or("-"),
                    b.pointer("/api/operation")
                        .or(b.pointer("/http_request/url/path"))
                        .and_then(|v| v.as_str())
                        .unwrap_or("-"),
                    b.pointer("/http_response/code")
                        .map(|c| c.to_string())
                        .or(b
                            .get("status_detail")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned))
                        .unwrap_or_default()
                )?;
            }
        }
        left = left.saturating_sub(events.len() as u64);
        match cursor {
            Some(c) => query.after_seq = Some(c),
            None => break,
        }
    }
    Ok(())
}

async fn run_serve(cli: &Cli, data: DataDir, mut config: Config, args: &ServeArgs) -> Result<()> {
    if let Some(l) = args.listen {
        config.gateway.listen = l;
    }
    if let Some(l) = args.admin_listen {
        config.admin.listen = l;
    }
    // Handlers first, so a SIGHUP or SIGTERM right after start is not fatal.
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let running = serve::start(ServeRequest {
        data,
        config,
        database: cli.database.clone(),
        demo: args.demo,
    })
    .await?;
    let scheme = if running.gateway_tls { "https" } else { "http" };
    let ca = running.ca_path.display().to_string();
    say!();
    say!("Citadel is running.");
    say!("  gateway:   {scheme}://{}", running.gateway_addr);
    say!(
        "  admin API: https://{}  (OpenAPI at /openapi.json, metrics at /metrics)",
        running.admin_addr
    );
    say!("  clients trust the internal CA: {ca}");
    if let Some(admin) = &running.bootstrap.admin {
        say!();
        say!("Bootstrap admin API key (shown once, keep it safe):");
        say!("  {admin}");
    }
    if let Some(demo) = &running.bootstrap.demo {
        let host = if running.gateway_addr.ip().is_loopback() {
            format!("localhost:{}", running.gateway_addr.port())
        } else {
            running.gateway_addr.to_string()
        };
        let cacert = if running.gateway_tls {
            format!("--cacert {ca} ")
        } else {
            String::new()
        };
        say!();
        say!("Demo API key (role developer; shown once):");
        say!("  {demo}");
        say!();
        say!("Try it:");
        let _ = writeln!(
            std::io::stdout(),
            "curl {cacert}{scheme}://{host}/v1/chat/completions -H 'Authorization: Bearer {demo}' -H 'Content-Type: application/json' -d '{{\"model\":\"demo-chat\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello, Citadel\"}}]}}'"
        );
        let _ = std::io::stdout().flush();
    }
    say!();
    wait_for_signals(&running, term, hup).await;
    say!("shutting down: finishing open requests and writing queued events");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signals(
    running: &serve::Running,
    mut term: tokio::signal::unix::Signal,
    mut hup: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => running.reload_policies().await,
        }
    }
}
