//! `citadel audit …`: the log's key, checkpoints, proofs, exports and the
//! verifiers (offline over a data directory or an export; remote over the
//! tlog-tiles read API, as a monitor that remembers what it verified).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use citadel_audit::{AuditLog, Checkpoint, NoteVerifier};
use citadel_core::merkle::{self, CompactRange, TILE_WIDTH};
use clap::Subcommand;

use crate::config::Config;
use crate::data_dir::{open_store, DataDir};

/// Exit code of `audit verify` when the log does not verify (tampering,
/// damage, a checkpoint that does not match). 1 means it could not run.
pub const EXIT_NOT_VERIFIED: i32 = 2;

/// `citadel audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the log's verifier key (signed-note vkey form).
    Pubkey,
    /// Sign a checkpoint of the log now and print it.
    Checkpoint {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the log. Exit status: 0 verified, 2 not verified (the first
    /// bad index is printed), 1 could not run.
    ///
    /// Without --url or --export: offline, over the data directory's store.
    /// With --export FILE: the entries and proofs of an export.
    /// With --url: a running Citadel's admin listener, as a monitor; with
    /// --state, the new checkpoint must extend the one verified last time.
    Verify {
        /// The log's verifier key [default: the data directory's own key,
        /// which proves integrity only as far as that directory is trusted].
        #[arg(long)]
        key: Option<String>,
        /// Verify an export file instead of the store.
        #[arg(long, conflicts_with = "url")]
        export: Option<PathBuf>,
        /// A signed checkpoint kept from earlier (the text of
        /// /audit/log/checkpoint): the store must extend it, so a log cut
        /// back or rewritten with its checkpoints deleted fails.
        #[arg(long, conflicts_with_all = ["url", "export"])]
        checkpoint: Vec<PathBuf>,
        /// Base URL of a Citadel admin listener (e.g. https://127.0.0.1:9443).
        #[arg(long)]
        url: Option<String>,
        /// File keeping the last verified checkpoint, for --url.
        #[arg(long, requires = "url")]
        state: Option<PathBuf>,
        /// CA certificate (PEM) to trust for --url [default: DATA/tls/ca.pem if present].
        #[arg(long, requires = "url")]
        ca: Option<PathBuf>,
        /// API key allowed `audit.read`, for reading entries over --url.
        #[arg(long, env = "CITADEL_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Also check that the columns kept beside each entry for filtering
        /// (time, class, outcome, principal, request id) match the entry.
        #[arg(long, conflicts_with_all = ["url", "export"])]
        deep: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an inclusion or consistency proof.
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Write events with their inclusion proofs and the checkpoint they are
    /// proved against, as JSON lines (verify with `audit verify --export`).
    Export {
        /// First entry: a log index, or a time (RFC 3339 or e.g. 24h ago as `24h`).
        #[arg(long)]
        from: Option<String>,
        /// Entry to stop before: a log index or a time [default: the checkpoint's size].
        #[arg(long)]
        to: Option<String>,
        /// Output file [default: standard output].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `citadel audit proof …`.
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// That entry INDEX is in the tree of SIZE entries.
    Inclusion {
        /// Entry index.
        #[arg(long)]
        index: u64,
        /// Tree size [default: the latest checkpoint's].
        #[arg(long)]
        size: Option<u64>,
    },
    /// That the tree of FROM entries is a prefix of the tree of TO entries.
    Consistency {
        /// Older tree size.
        #[arg(long)]
        from: u64,
        /// Newer tree size [default: the latest checkpoint's].
        #[arg(long)]
        to: Option<u64>,
    },
}

async fn open_log(
    data: &DataDir,
    config: &Config,
    database: Option<&str>,
) -> Result<std::sync::Arc<AuditLog>> {
    let store = open_store(&data.database_url(database, config)).await?;
    Ok(AuditLog::new(store, data.log_signer(config, false)?))
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Runs an audit command.
pub async fn run(
    data: &DataDir,
    config: &Config,
    database: Option<&str>,
    cmd: AuditCommand,
) -> Result<()> {
    match cmd {
        AuditCommand::Pubkey => {
            println!("{}", data.log_signer(config, false)?.verifier().vkey());
            Ok(())
        }
        AuditCommand::Checkpoint { json } => {
            let log = open_log(data, config, database).await?;
            let made = log.checkpoint_now().await?;
            if json {
                print_json(&serde_json::json!({"size": made.size, "note": made.note}))
            } else {
                print!("{}", made.note);
                Ok(())
            }
        }
        AuditCommand::Proof(ProofCommand::Inclusion { index, size }) => {
            let log = open_log(data, config, database).await?;
            let size = match size {
                Some(s) => s,
                None => log.latest_checkpoint().await?.size,
            };
            let proof = log.inclusion_proof(index, size).await?;
            print_json(&serde_json::to_value(proof)?)
        }
        AuditCommand::Proof(ProofCommand::Consistency { from, to }) => {
            let log = open_log(data, config, database).await?;
            let to = match to {
                Some(t) => t,
                None => log.latest_checkpoint().await?.size,
            };
            let proof = log.consistency_proof(from, to).await?;
            print_json(&serde_json::to_value(proof)?)
        }
        AuditCommand::Export { from, to, out } => {
            export(data, config, database, from, to, out).await
        }
        AuditCommand::Verify {
            key,
            export,
            checkpoint,
            url,
            state,
            ca,
            api_key,
            deep,
            json,
        } => {
            let verifier = match &key {
                Some(k) => NoteVerifier::parse(k).context("--key")?,
                None if url.is_some() => {
                    bail!("--url needs the log's --key (its vkey, from `citadel audit pubkey`)")
                }
                None => {
                    let verifier = data.log_signer(config, false).context(
                        "without --key the data directory's own key is used, and there is none",
                    )?;
                    eprintln!("note: checking with the data directory's own key; pass --key to pin the log's key");
                    verifier.verifier()
                }
            };
            let outcome = if let Some(file) = export {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                citadel_audit::verify_export(std::io::BufReader::new(f).lines(), &verifier)
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
            } else if let Some(url) = url {
                let ca = ca.or_else(|| Some(data.tls_dir().join("ca.pem")).filter(|p| p.exists()));
                match monitor(
                    &url,
                    &verifier,
                    state.as_deref(),
                    ca.as_deref(),
                    api_key.as_deref(),
                )
                .await
                {
                    Ok(v) => Ok(v),
                    Err(MonitorError::Failed(f)) => Err(f),
                    Err(MonitorError::Run(e)) => return Err(e),
                }
            } else {
                let mut pinned = Vec::new();
                for path in &checkpoint {
                    let note = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    pinned.push(Checkpoint::open(&note, &verifier).with_context(|| {
                        format!("{} is not a checkpoint of this log", path.display())
                    })?);
                }
                let store = open_store(&data.database_url(database, config)).await?;
                let started = std::time::Instant::now();
                let mut last_said = std::time::Instant::now();
                let verified =
                    citadel_audit::verify_store_pinned(&store, &verifier, &pinned, |n| {
                        if last_said.elapsed().as_secs() >= 2 {
                            eprintln!("verified {n} entries…");
                            last_said = std::time::Instant::now();
                        }
                    })
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or_default());
                let checked = match (verified, deep) {
                    (Ok(v), true) => citadel_audit::verify_columns(&store, |_| {})
                        .await
                        .map(|n| {
                            let mut v = v;
                            v["columns_checked"] = serde_json::json!(n);
                            v
                        }),
                    (other, _) => other,
                };
                checked.map(|mut v| {
                    v["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
                    v
                })
            };
            report(outcome, json)
        }
    }
}

fn report(
    outcome: Result<serde_json::Value, citadel_audit::VerifyFailure>,
    json: bool,
) -> Result<()> {
    match outcome {
        Ok(v) => {
            if json {
                let mut v = v;
                v["verified"] = serde_json::json!(true);
                print_json(&v)?;
            } else {
                println!(
                    "verified: {} entries, {} checkpoints (largest {}), root {}",
                    v["entries"],
                    v["checkpoints"],
                    v["checkpointed_size"],
                    v["root"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Err(failure) => {
            if json {
                print_json(&serde_json::json!({
                    "verified": false,
                    "first_bad_index": failure.index,
                    "problem": failure.what,
                }))?;
            } else {
                match failure.index {
                    Some(i) => eprintln!("NOT VERIFIED at index {i}: {}", failure.what),
                    None => eprintln!("NOT VERIFIED: {}", failure.what),
                }
            }
            std::process::exit(EXIT_NOT_VERIFIED);
        }
    }
}

/// An index, or the first index at or after a time.
async fn resolve_position(store: &citadel_store::Store, text: &str) -> Result<u64> {
    if let Ok(index) = text.parse::<u64>() {
        return Ok(index);
    }
    let at = citadel_core::clock::parse_since(text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{text:?} is neither a log index nor a time"))?;
    Ok(match store.log_index_at_time(at).await? {
        Some(i) => i,
        None => store.log_size().await?,
    })
}

async fn export(
    data: &DataDir,
    config: &Config,
    database: Option<&str>,
    from: Option<String>,
    to: Option<String>,
    out: Option<PathBuf>,
) -> Result<()> {
    let log = open_log(data, config, database).await?;
    let checkpoint = log.checkpoint_now().await?;
    let from = match from {
        Some(f) => resolve_position(log.store(), &f).await?,
        None => 0,
    };
    let to = match to {
        Some(t) => resolve_position(log.store(), &t)
            .await?
            .min(checkpoint.size),
        None => checkpoint.size,
    };
    let mut sink: Box<dyn Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    serde_json::to_writer(
        &mut sink,
        &serde_json::json!({
            "checkpoint": checkpoint.note,
            "vkey": log.verifier().vkey(),
            "from": from,
            "to": to.max(from),
        }),
    )?;
    writeln!(sink)?;
    let mut next = from;
    let mut last_said = std::time::Instant::now();
    while next < to {
        let entries = log
            .store()
            .read_log_entries(next, (to - next).min(1024))
            .await?;
        if entries.is_empty() {
            bail!("entries from {next} are missing; run `citadel audit verify`");
        }
        let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
        let proofs = log.inclusion_proofs(&indexes, checkpoint.size).await?;
        for (e, proof) in entries.into_iter().zip(proofs) {
            if e.index != next {
                bail!("entry {next} is missing from the audit log; run `citadel audit verify`");
            }
            let line = serde_json::json!({
                "index": e.index,
                "entry": e.body,
                "leaf_hash": B64.encode(proof.leaf_hash),
                "inclusion_proof": proof.proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
            });
            serde_json::to_writer(&mut sink, &line)?;
            writeln!(sink)?;
            next = e.index + 1;
        }
        if out.is_some() && last_said.elapsed().as_secs() >= 2 {
            eprintln!("exported {} of {} entries…", next - from, to - from);
            last_said = std::time::Instant::now();
        }
    }
    sink.flush()?;
    if let Some(path) = out {
        eprintln!(
            "exported entries {from}..{to} with proofs against the checkpoint at size {} to {}",
            checkpoint.size,
            path.display()
        );
    }
    Ok(())
}

/// What a monitor remembers between runs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MonitorState {
    origin: String,
    size: u64,
    root: String,
    /// The compact range at `size` (its peaks), so the next run proves the
    /// new checkpoint extends this one without re-reading old entries.
    peaks: Vec<String>,
}

enum MonitorError {
    /// The log did not verify.
    Failed(citadel_audit::VerifyFailure),
    /// The monitor could not run.
    Run(anyhow::Error),
}

impl From<anyhow::Error> for MonitorError {
    fn from(e: anyhow::Error) -> Self {
        Self::Run(e)
    }
}

fn failed(index: Option<u64>, what: String) -> MonitorError {
    MonitorError::Failed(citadel_audit::VerifyFailure { index, what })
}

async fn fetch(client: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<Vec<u8>> {
    let mut request = client.get(url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.to_vec())
}

/// The remote verifier: fetches the checkpoint, then every entry since the
/// last verified checkpoint, recomputes the tree and requires the new root.
async fn monitor(
    base: &str,
    verifier: &NoteVerifier,
    state_file: Option<&std::path::Path>,
    ca: Option<&std::path::Path>,
    api_key: Option<&str>,
) -> Result<serde_json::Value, MonitorError> {
    let base = base.trim_end_matches('/');
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("--ca")?);
    }
    let client = builder.build().context("HTTP client")?;
    let note = fetch(&client, &format!("{base}/audit/log/checkpoint"), None).await?;
    let note = String::from_utf8(note).context("the checkpoint is not text")?;
    let checkpoint =
        Checkpoint::open(&note, verifier).map_err(|e| failed(None, format!("checkpoint: {e}")))?;
    let previous: Option<MonitorState> = match state_file {
        Some(path) if path.exists() => Some(
            serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a monitor state file", path.display()))?,
        ),
        _ => None,
    };
    let mut range = CompactRange::new();
    if let Some(p) = &previous {
        if p.origin != checkpoint.origin {
            return Err(failed(
                None,
                format!(
                    "the state file is for log {:?}, not {:?}",
                    p.origin, checkpoint.origin
                ),
            ));
        }
        if checkpoint.size < p.size {
            return Err(failed(
                Some(checkpoint.size),
                format!(
                    "the log shrank: it was verified at size {} and now says {}",
                    p.size, checkpoint.size
                ),
            ));
        }
        let peaks = p
            .peaks
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
            })
            .collect::<Option<Vec<_>>>()
            .context("the state file's peaks are not hashes")?;
        range = CompactRange::from_parts(p.size, peaks)
            .context("the state file's peaks do not fit its size")?;
        if B64.encode(range.root()) != p.root {
            return Err(MonitorError::Run(anyhow::anyhow!(
                "the state file is inconsistent (its peaks do not give its root)"
            )));
        }
    }
    let start = range.size();
    let mut bundle = start / TILE_WIDTH;
    while range.size() < checkpoint.size {
        let first = bundle * TILE_WIDTH;
        let width = (checkpoint.size - first).min(TILE_WIDTH);
        let suffix = if width < TILE_WIDTH {
            format!(".p/{width}")
        } else {
            String::new()
        };
        let path = format!("{}{suffix}", merkle::tile_index_path(bundle));
        let bytes = fetch(
            &client,
            &format!("{base}/audit/log/tile/entries/{path}"),
            api_key,
        )
        .await?;
        let tile = fetch(&client, &format!("{base}/audit/log/tile/0/{path}"), None).await?;
        let mut rest = &bytes[..];
        let mut leaves = Vec::with_capacity(width as usize);
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let entry = rest.get(2..2 + len).ok_or_else(|| {
                failed(
                    Some(first + leaves.len() as u64),
                    format!("entry bundle {bundle} is truncated"),
                )
            })?;
            leaves.push(merkle::leaf_hash(entry));
            rest = &rest[2 + len..];
        }
        if leaves.len() as u64 != width || !rest.is_empty() {
            return Err(failed(
                Some(first),
                format!("entry bundle {bundle} does not hold {width} entries"),
            ));
        }
        for (i, leaf) in leaves.iter().enumerate() {
            if tile.get(i * 32..(i + 1) * 32) != Some(&leaf[..]) {
                return Err(failed(
                    Some(first + i as u64),
                    format!("tile 0/{bundle} does not match entry {}", first + i as u64),
                ));
            }
            let index = first + i as u64;
            if index >= range.size() {
                range.append(*leaf, |_, _, _| {});
            }
        }
        bundle += 1;
    }
    if range.root() != checkpoint.root {
        return Err(failed(
            Some(start),
            format!(
                "the entries from index {start} do not lead to the checkpoint's root at size {}{}",
                checkpoint.size,
                if previous.is_some() {
                    " (the log is not an extension of the one verified before)"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some(path) = state_file {
        let state = MonitorState {
            origin: checkpoint.origin.clone(),
            size: checkpoint.size,
            root: B64.encode(checkpoint.root),
            peaks: range.peaks().iter().map(|h| B64.encode(h)).collect(),
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&state).map_err(anyhow::Error::from)?,
        )
        .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(serde_json::json!({
        "entries": checkpoint.size - start,
        "checkpoints": 1,
        "checkpointed_size": checkpoint.size,
        "previous_size": previous.map(|p| p.size),
        "root": B64.encode(checkpoint.root),
    }))
}
