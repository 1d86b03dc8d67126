//! `citadel device …` and `citadel workload …`: enrolment tokens, devices,
//! and SPIFFE workload certificates from the command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use citadel_core::clock;
use citadel_store::Store;
use clap::Subcommand;

use crate::cli::{print_json, record_event, record_event_and_print};
use crate::config::Config;
use crate::data_dir::DataDir;

/// `citadel device …`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Make a one-time enrolment token for a new device (shown once).
    EnrollToken {
        /// Bind the device to this user (name or id): only their
        /// credentials get its trust.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List enrolled devices.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: its certificate stops working on the next request.
    Revoke {
        /// Device id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel workload …`.
#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Issue (or re-issue, to rotate) a SPIFFE X.509 certificate for a
    /// workload and write it to a directory: `svid.pem` (chain),
    /// `svid-key.pem` (0600) and `bundle.pem` (the CA to trust).
    Issue {
        /// `spiffe://<trust domain>/<path>`.
        #[arg(long)]
        spiffe_id: String,
        /// Directory to write the files to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Role the workload acts with (repeat for several) [default: the
        /// roles it had, or service].
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Rotate only when needed: if the directory already holds a
        /// certificate for this SPIFFE ID valid for longer than this
        /// (e.g. `8h`), do nothing. For a timer that runs often.
        #[arg(long, value_name = "DURATION")]
        renew_before: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List workloads.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a workload: its certificates stop working on the next request.
    Revoke {
        /// Its SPIFFE ID.
        spiffe_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The expiry of the SVID in `dir` if it is one for `spiffe_id`.
fn current_svid_expiry(dir: &std::path::Path, spiffe_id: &str) -> Option<i64> {
    let pem = std::fs::read(dir.join("svid.pem")).ok()?;
    let facts = citadel_crypto::read_cert_pem(&pem)?;
    facts
        .uris
        .iter()
        .any(|u| u == spiffe_id)
        .then_some(facts.not_after)
}

async fn machines(
    store: &Store,
    config: &Config,
) -> Result<std::sync::Arc<citadel_identity::machines::Machines>> {
    citadel_identity::machines::Machines::load(
        store.clone(),
        config.identity.devices.clone(),
        config.identity.workloads.clone(),
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// Runs `citadel device …`.
pub async fn run_device(store: &Store, config: &Config, cmd: DeviceCommand) -> Result<()> {
    match cmd {
        DeviceCommand::EnrollToken { user, json } => {
            let owner = match &user {
                Some(u) => Some(store.find_user(u).await?),
                None => None,
            };
            let m = machines(store, config).await?;
            let (token, id, expires_at) = m
                .new_enrollment_token(owner.as_ref().map(|u| u.id.as_str()), clock::now_ms())
                .await?;
            record_event(
                store,
                crate::cli::operator_event(
                    "devices.enroll_token",
                    serde_json::json!({"type": "DeviceEnrollmentToken", "uid": id}),
                ),
            )
            .await?;
            if json {
                print_json(&serde_json::json!({
                    "token": token.as_str(),
                    "id": id,
                    "user": owner.map(|u| u.name),
                    "expires_at": expires_at,
                }))
            } else {
                println!(
                    "enrolment token (works once, until {}):",
                    clock::rfc3339(expires_at)
                );
                println!("  {}", token.as_str());
                println!(
                    "The device posts it with its CSR to POST /devices/enroll on the gateway."
                );
                Ok(())
            }
        }
        DeviceCommand::List { json } => {
            let devices = store.list_devices().await?;
            if json {
                for d in &devices {
                    print_json(d)?;
                }
                return Ok(());
            }
            println!(
                "{:<36} {:<24} {:<10} {:<25} STATUS",
                "ID", "NAME", "COMPLIANT", "POSTURE AT"
            );
            for d in &devices {
                println!(
                    "{:<36} {:<24} {:<10} {:<25} {}",
                    d.id,
                    d.name,
                    if d.compliant { "yes" } else { "no" },
                    d.posture_at
                        .map(clock::rfc3339)
                        .unwrap_or_else(|| "-".into()),
                    if d.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            Ok(())
        }
        DeviceCommand::Revoke { id, json } => {
            let revoked = store.revoke_device(&id, clock::now_ms()).await?;
            record_event_and_print(
                store,
                "devices.revoke",
                serde_json::json!({"type": "Device", "uid": id}),
                &serde_json::json!({"device_id": id, "revoked": revoked}),
                json,
                &if revoked {
                    format!("revoked device {id}")
                } else {
                    format!("device {id} was already revoked")
                },
            )
            .await
        }
    }
}

/// Runs `citadel workload …`.
pub async fn run_workload(
    store: &Store,
    data: &DataDir,
    config: &Config,
    cmd: WorkloadCommand,
) -> Result<()> {
    match cmd {
        WorkloadCommand::Issue {
            spiffe_id,
            out,
            roles,
            renew_before,
            json,
        } => {
            if let Some(text) = &renew_before {
                let margin = clock::parse_duration(text)
                    .map_err(|e| anyhow::anyhow!("--renew-before {text:?}: {e}"))?;
                if let Some(not_after) = current_svid_expiry(&out, &spiffe_id) {
                    if not_after > clock::now_ms() + margin.as_millis() as i64 {
                        let answer = serde_json::json!({"spiffe_id": spiffe_id, "renewed": false, "not_after": not_after});
                        if json {
                            return print_json(&answer);
                        }
                        println!(
                            "{spiffe_id}: the certificate in {} is valid until {}; nothing to do",
                            out.display(),
                            clock::rfc3339(not_after)
                        );
                        return Ok(());
                    }
                }
            }
            let trust_domain = &config.identity.workloads.trust_domain;
            citadel_identity::machines::check_spiffe_id(&spiffe_id, trust_domain)
                .map_err(|e| anyhow::anyhow!("invalid SPIFFE ID {spiffe_id:?}: {e}"))?;
            // Re-issuing (rotation) keeps the roles unless new ones are given.
            let roles = if roles.is_empty() {
                store
                    .list_workloads()
                    .await?
                    .into_iter()
                    .find(|w| w.spiffe_id == spiffe_id)
                    .map(|w| w.roles)
                    .unwrap_or_else(|| vec!["service".to_owned()])
            } else {
                roles
            };
            let known = citadel_identity::all_role_names(store).await?;
            if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
                bail!("unknown role `{r}`; list roles with `citadel role list`");
            }
            let ca = citadel_crypto::InternalCa::load_or_create(&data.tls_dir())?;
            store
                .upsert_workload(&spiffe_id, &roles, clock::now_ms())
                .await?;
            let (issued, not_after) =
                ca.issue_workload_cert(&spiffe_id, config.identity.workloads.cert_ttl)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            // Each file is written beside its final name and renamed over
            // it, the key first, so a workload reading during a rotation
            // sees whole files (and the new key no later than the new
            // certificate).
            let place = |name: &str, bytes: &[u8], private: bool| -> Result<()> {
                let tmp = out.join(format!(".{name}.new"));
                if private {
                    citadel_crypto::write_private_file(&tmp, bytes)?;
                } else {
                    std::fs::write(&tmp, bytes)
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                }
                std::fs::rename(&tmp, out.join(name))
                    .with_context(|| format!("cannot replace {}", out.join(name).display()))
            };
            place("svid-key.pem", issued.key_pem.as_bytes(), true)?;
            place("svid.pem", issued.chain_pem.as_bytes(), false)?;
            place("bundle.pem", ca.cert_pem().as_bytes(), false)?;
            record_event_and_print(
                store,
                "workloads.issue",
                serde_json::json!({"type": "Workload", "uid": spiffe_id}),
                &serde_json::json!({
                    "spiffe_id": spiffe_id,
                    "renewed": true,
                    "roles": roles,
                    "not_after": not_after,
                    "certificate": out.join("svid.pem"),
                    "key": out.join("svid-key.pem"),
                    "bundle": out.join("bundle.pem"),
                }),
                json,
                &format!(
                    "issued {spiffe_id} (roles {}), valid until {}; files in {}. Issue again before then to rotate.",
                    roles.join(","),
                    clock::rfc3339(not_after),
                    out.display()
                ),
            )
            .await
        }
        WorkloadCommand::List { json } => {
            let workloads = store.list_workloads().await?;
            if json {
                for w in &workloads {
                    print_json(w)?;
                }
                return Ok(());
            }
            println!("{:<60} {:<24} STATUS", "SPIFFE ID", "ROLES");
            for w in &workloads {
                println!(
                    "{:<60} {:<24} {}",
                    w.spiffe_id,
                    w.roles.join(","),
                    if w.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            Ok(())
        }
        WorkloadCommand::Revoke { spiffe_id, json } => {
            let revoked = store.revoke_workload(&spiffe_id, clock::now_ms()).await?;
            if !revoked
                && !store
                    .list_workloads()
                    .await?
                    .iter()
                    .any(|w| w.spiffe_id == spiffe_id)
            {
                bail!("no workload {spiffe_id}; list them with `citadel workload list`");
            }
            record_event_and_print(
                store,
                "workloads.revoke",
                serde_json::json!({"type": "Workload", "uid": spiffe_id}),
                &serde_json::json!({"spiffe_id": spiffe_id, "revoked": revoked}),
                json,
                &format!("revoked workload {spiffe_id}"),
            )
            .await
        }
    }
}
