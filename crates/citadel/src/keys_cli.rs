//! `citadel keys …`: the key hierarchy's data keys (API keys are
//! `citadel key …`): list with ages, rotate, re-wrap under a new root.

use anyhow::Result;
use citadel_core::clock;
use clap::Subcommand;

use crate::cli::{print_json, record_event_and_print};
use crate::config::Config;
use crate::data_dir::DataDir;

/// `citadel keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every data key version: purpose, version, whether current, age, root.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new data key version (every purpose, or --purpose); new
    /// writes use it, old records re-seal on use or with `keys rewrap`.
    Rotate {
        /// Only this purpose.
        #[arg(long)]
        purpose: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-wrap the data keys under the root key in force (moving from the
    /// key file or environment variable named here, or, with Vault, to its
    /// newest Transit key version), then re-seal every record under its
    /// purpose's current data key.
    Rewrap {
        /// The root key file the data keys move away from.
        #[arg(long, conflicts_with = "from_env")]
        from_file: Option<std::path::PathBuf>,
        /// The environment variable holding the root key they move away from.
        #[arg(long)]
        from_env: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn age(created_at: i64) -> String {
    let days = (clock::now_ms() - created_at).max(0) / 86_400_000;
    format!("{days}d")
}

/// Runs a `citadel keys` command.
pub async fn run(
    data: &DataDir,
    config: &Config,
    database: Option<&str>,
    cmd: KeysCommand,
) -> Result<()> {
    data.ensure()?;
    let store = crate::data_dir::open_store(&data.database_url(database, config)).await?;
    match cmd {
        KeysCommand::List { json } => {
            let keys = data.keyring(&store, config).await?;
            let status = keys.status();
            if json {
                return print_json(&status);
            }
            println!(
                "{:<16} {:>7}  {:<8} {:>6}  ROOT",
                "PURPOSE", "VERSION", "CURRENT", "AGE"
            );
            for k in status {
                println!(
                    "{:<16} {:>7}  {:<8} {:>6}  {}",
                    k.purpose,
                    k.version,
                    if k.current { "yes" } else { "" },
                    age(k.created_at),
                    k.root
                );
            }
            Ok(())
        }
        KeysCommand::Rotate { purpose, json } => {
            let keys = data.keyring(&store, config).await?;
            let purposes: Vec<String> = match purpose {
                Some(p) => vec![p],
                None => keys.purposes().to_vec(),
            };
            let mut rotated = Vec::new();
            for p in &purposes {
                let version = keys.rotate(p).await?;
                rotated.push(serde_json::json!({"purpose": p, "version": version}));
            }
            record_event_and_print(
                &store,
                "data_keys.rotate",
                serde_json::json!({"type": "DataKey", "uid": purposes.join(","), "rotated": rotated}),
                &rotated,
                json,
                &format!(
                    "rotated: {}; running servers use the new versions within a minute",
                    rotated
                        .iter()
                        .map(|r| format!("{} v{}", r["purpose"].as_str().unwrap_or(""), r["version"]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .await
        }
        KeysCommand::Rewrap {
            from_file,
            from_env,
            json,
        } => {
            let from = match (from_file, from_env) {
                (Some(path), _) => Some(citadel_crypto::RootKey::from_file(&path)?),
                (None, Some(var)) => Some(citadel_crypto::RootKey::from_env(&var)?),
                (None, None) => None,
            };
            let to = data.root_key(config)?;
            let root = to.id();
            let rewrapped = citadel_crypto::rewrap_data_keys(&store, from.as_ref(), &to).await?;
            let signin = data.sign_in_for_cli(&store, config).await?;
            let resealed = signin.factors.reseal_all().await?;
            let summary = serde_json::json!({
                "root": root, "data_keys_rewrapped": rewrapped, "totp_seeds_resealed": resealed,
            });
            record_event_and_print(
                &store,
                "data_keys.rewrap",
                serde_json::json!({"type": "DataKey", "uid": root, "data_keys_rewrapped": rewrapped, "records_resealed": resealed}),
                &summary,
                json,
                &format!("{rewrapped} data keys re-wrapped under {root}; {resealed} TOTP seeds re-sealed under the current data key"),
            )
            .await
        }
    }
}
