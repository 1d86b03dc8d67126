//! `citadel privacy …`: scan text for personal data and secrets, redact
//! it, and check detector rule files, with the same rules the gateway uses.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::config::Config;
use crate::data_dir::DataDir;

/// `citadel privacy`.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Find personal data and secrets in text read from stdin. With
    /// --json, one JSON object per finding: type, start, end (byte
    /// offsets), class, confidence.
    Scan {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Use these rule files or directories instead of the configured ones.
        #[arg(long = "rules", value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// Report findings at least this confident [default: privacy.min_confidence].
        #[arg(long)]
        min_confidence: Option<f32>,
    },
    /// Print stdin with its findings redacted.
    Redact {
        /// mask, hash or pseudonymize [default: privacy.redact, or mask].
        #[arg(long)]
        mode: Option<citadel_privacy::Mode>,
        /// Use these rule files or directories instead of the configured ones.
        #[arg(long = "rules", value_name = "PATH")]
        rules: Vec<PathBuf>,
    },
    /// Check detector rule files: every problem with file, line and reason.
    Check {
        /// Rule files or directories [default: the configured ones].
        paths: Vec<PathBuf>,
    },
    /// List the detectors in force: entity types and their data classes.
    Detectors {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the retention purge now (`[[privacy.retention]]`); the server
    /// runs it every `privacy.purge_interval`.
    Purge {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("stdin is not UTF-8 text")?;
    Ok(text)
}

fn privacy_with(
    data: &DataDir,
    config: &Config,
    rules: &[PathBuf],
) -> Result<citadel_privacy::Privacy> {
    data.ensure()?;
    if rules.is_empty() {
        return data.privacy(config);
    }
    citadel_privacy::Privacy::load(config.privacy.clone(), rules.to_vec(), data.privacy_key()?)
        .map_err(|problems| anyhow::anyhow!("the detector rules do not load:\n{problems}"))
}

/// Runs a `citadel privacy` command.
pub fn run(data: &DataDir, config: &Config, cmd: PrivacyCommand) -> Result<()> {
    match cmd {
        PrivacyCommand::Scan {
            json,
            rules,
            min_confidence,
        } => {
            let mut config = config.clone();
            if let Some(min) = min_confidence {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&min),
                    "--min-confidence must be between 0 and 1"
                );
                config.privacy.min_confidence = min;
            }
            let privacy = privacy_with(data, &config, &rules)?;
            let text = read_stdin()?;
            let findings = privacy.scanner().scan(&text);
            let mut out = std::io::stdout().lock();
            if json {
                for f in &findings {
                    serde_json::to_writer(&mut out, f)?;
                    writeln!(out)?;
                }
            } else if findings.is_empty() {
                writeln!(out, "nothing found")?;
            } else {
                writeln!(
                    out,
                    "{:<28} {:>8} {:>8}  {:<13} {:>10}",
                    "TYPE", "START", "END", "CLASS", "CONFIDENCE"
                )?;
                for f in &findings {
                    writeln!(
                        out,
                        "{:<28} {:>8} {:>8}  {:<13} {:>10.2}",
                        &*f.kind, f.start, f.end, f.class, f.confidence
                    )?;
                }
            }
            Ok(())
        }
        PrivacyCommand::Redact { mode, rules } => {
            let privacy = privacy_with(data, config, &rules)?;
            let mode = mode
                .or(config.privacy.redact.mode())
                .unwrap_or(citadel_privacy::Mode::Mask);
            let text = read_stdin()?;
            let findings = privacy.scanner().scan(&text);
            let mut map = citadel_privacy::PseudonymMap::default();
            let redacted = privacy.redactor(mode).apply(&text, &findings, &mut map);
            std::io::stdout().lock().write_all(redacted.as_bytes())?;
            Ok(())
        }
        PrivacyCommand::Check { paths } => {
            let privacy = privacy_with(data, config, &paths)?;
            println!(
                "{} detectors in {} load",
                privacy.scanner().len(),
                privacy
                    .paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        PrivacyCommand::Purge { .. } => {
            anyhow::bail!(
                "the purge needs the database; it is run by `citadel privacy purge` directly"
            )
        }
        PrivacyCommand::Detectors { json } => {
            let privacy = privacy_with(data, config, &[])?;
            let kinds = privacy.scanner().kinds();
            if json {
                let list: Vec<serde_json::Value> = kinds
                    .iter()
                    .map(|(k, c)| serde_json::json!({"type": &**k, "class": c}))
                    .collect();
                crate::cli::print_json(&list)
            } else {
                for (k, c) in kinds {
                    println!("{:<28} {c}", &*k);
                }
                Ok(())
            }
        }
    }
}

/// `citadel consent`.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// The configured purposes and their current consent text versions.
    Purposes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record a data subject's consent to a purpose's current text.
    Grant {
        /// The data subject (as requests name it in the subject header).
        subject: String,
        /// The purpose (`[[privacy.purpose]]`).
        purpose: String,
        /// Where the consent was given (a form, an app, a signed paper).
        #[arg(long, default_value = "cli")]
        source: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record that a data subject withdrew consent to a purpose.
    Withdraw {
        /// The data subject.
        subject: String,
        /// The purpose.
        purpose: String,
        /// Where the withdrawal was made.
        #[arg(long, default_value = "cli")]
        source: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a subject's consent receipt (JSON): every grant and withdrawal.
    Receipt {
        /// The data subject.
        subject: String,
    },
}

/// Runs a `citadel consent` command.
pub async fn run_consent(
    store: &citadel_store::Store,
    consents: &citadel_privacy::Consents,
    cmd: ConsentCommand,
) -> Result<()> {
    use crate::cli::{print_json, record_event_and_print};
    match cmd {
        ConsentCommand::Purposes { json } => {
            let purposes: Vec<serde_json::Value> = consents
                .purposes()
                .map(|p| {
                    serde_json::json!({"name": p.name, "description": p.description,
                        "version": p.version, "text_sha256": p.text_sha256()})
                })
                .collect();
            if json {
                return print_json(&purposes);
            }
            if purposes.is_empty() {
                println!(
                    "no purposes are configured; add [[privacy.purpose]] tables to the config"
                );
            }
            for p in consents.purposes() {
                println!(
                    "{}  (text version {})  {}",
                    p.name, p.version, p.description
                );
            }
            Ok(())
        }
        ConsentCommand::Grant {
            subject,
            purpose,
            source,
            json,
        } => {
            let record = consents.grant(&subject, &purpose, &source).await?;
            let p = consents.purpose(&purpose)?;
            record_event_and_print(
                store,
                "consent.grant",
                citadel_privacy::consent::consent_resource(
                    &record.subject_ref,
                    p,
                    &source,
                    Some(&record.id),
                ),
                &record,
                json,
                &format!(
                    "consent to {purpose} (text version {}) recorded: receipt {}",
                    p.version, record.id
                ),
            )
            .await
        }
        ConsentCommand::Withdraw {
            subject,
            purpose,
            source,
            json,
        } => {
            let closed = consents.withdraw(&subject, &purpose, &source).await?;
            let p = consents.purpose(&purpose)?;
            record_event_and_print(
                store,
                "consent.withdraw",
                citadel_privacy::consent::consent_resource(
                    &consents.subject_ref(&subject),
                    p,
                    &source,
                    None,
                ),
                &serde_json::json!({"purpose": purpose, "withdrawn": closed}),
                json,
                &if closed == 0 {
                    format!("no open consent to {purpose}; nothing withdrawn")
                } else {
                    format!("consent to {purpose} withdrawn")
                },
            )
            .await
        }
        ConsentCommand::Receipt { subject } => print_json(&consents.receipt(&subject).await?),
    }
}

/// `citadel subject`.
#[derive(Debug, Subcommand)]
pub enum SubjectCommand {
    /// Everything held about a data subject, decrypted, as JSON: captured
    /// prompts and answers, pseudonyms with their values, consent.
    Export {
        /// The data subject (as requests name it in the subject header).
        subject: String,
        /// SUBJECT is a principal id (captures of callers who named no subject).
        #[arg(long)]
        principal: bool,
    },
    /// Erase a data subject: destroy their key (crypto-shredding: what was
    /// sealed under it is unreadable everywhere, backups included), delete
    /// what is filed under them, and record a tombstone event.
    Erase {
        /// The data subject.
        subject: String,
        /// SUBJECT is a principal id.
        #[arg(long)]
        principal: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `citadel subject` command.
pub async fn run_subject(
    data: &DataDir,
    config: &Config,
    store: &citadel_store::Store,
    cmd: SubjectCommand,
) -> Result<()> {
    let vault = data.subject_vault(store).await?;
    let consents = data.consents(store.clone(), config)?;
    let subject_data = citadel_admin::subjects::SubjectData {
        store,
        vault: &vault,
        consents: &consents,
    };
    let who = |subject: String, principal: bool| citadel_admin::subjects::SubjectName {
        subject,
        principal,
    };
    match cmd {
        SubjectCommand::Export { subject, principal } => {
            let export = citadel_admin::subjects::export(&subject_data, &who(subject, principal))
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
            crate::cli::print_json(&export)
        }
        SubjectCommand::Erase {
            subject,
            principal,
            json,
        } => {
            let tombstone = citadel_admin::subjects::erase(&subject_data, &who(subject, principal))
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.0.message))?;
            crate::cli::record_event_and_print(
                store,
                "subjects.erase",
                tombstone.clone(),
                &tombstone,
                json,
                &format!(
                    "erased: key destroyed {}, {} captures, {} pseudonyms and {} consent records deleted",
                    tombstone["key_destroyed"],
                    tombstone["captures_deleted"],
                    tombstone["pseudonyms_deleted"],
                    tombstone["consents_deleted"]
                ),
            )
            .await
        }
    }
}
