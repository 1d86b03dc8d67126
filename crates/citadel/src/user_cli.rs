//! `citadel user password | mfa | sessions | sign-out | unlock`: people's
//! credentials from the command line. Each change is an Account Change
//! event; no password, seed or code is ever part of one.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use citadel_core::clock;
use citadel_store::Store;
use clap::Subcommand;
use zeroize::Zeroizing;

use crate::cli::{print_json, record_event_and_print};
use crate::config::Config;
use crate::data_dir::DataDir;

/// `citadel user mfa …`.
#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// TOTP authenticators (RFC 6238).
    #[command(subcommand)]
    Totp(TotpCommand),
    /// Make a new set of single-use recovery codes (the old set stops
    /// working); they are shown once.
    RecoveryCodes {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A user's passkeys (WebAuthn credentials).
    Passkeys {
        /// Name or id.
        name: String,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove one of a user's passkeys (a lost or replaced authenticator).
    RemovePasskey {
        /// Name or id.
        name: String,
        /// The credential id (from `citadel user mfa passkeys`).
        credential_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which second factors a user has.
    Status {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `citadel user mfa totp …`.
#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Make (or replace) a user's TOTP authenticator. Prints the
    /// `otpauth://` URI and a QR code to scan, once; the seed is stored
    /// encrypted.
    Enroll {
        /// Name or id.
        name: String,
        /// Print JSON (`otpauth_uri`, `secret`, `qr_svg`, …).
        #[arg(long)]
        json: bool,
        /// Also write the QR code as an SVG file.
        #[arg(long, value_name = "FILE")]
        qr_svg: Option<PathBuf>,
    },
    /// Remove a user's TOTP authenticator.
    Remove {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Reads a password from standard input (one line; the line break is not
/// part of it).
pub fn password_from_stdin() -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from standard input")?;
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        bail!("no password on standard input; pipe it in, e.g. `printf '%s' \"$PW\" | citadel user password NAME --password-stdin`");
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// Sets a password from stdin (checked against the policy).
pub async fn set_password(
    store: &Store,
    data: &DataDir,
    config: &Config,
    name: &str,
    json: bool,
) -> Result<()> {
    let password = password_from_stdin()?;
    let signin = data.sign_in_for_cli(store, config).await?;
    let (user, ended) = citadel_identity::set_password(store, &signin.passwords, name, password)
        .await
        .map_err(|e| match e {
            citadel_identity::AccountError::WeakPassword(p) => {
                anyhow::anyhow!("weak_password: {p}")
            }
            other => other.into(),
        })?;
    record_event_and_print(
        store,
        "users.password",
        serde_json::json!({"type": "User", "uid": user.id}),
        &serde_json::json!({"user": user.name, "password_set": true, "sessions_ended": ended}),
        json,
        &format!("password set for {}; {ended} session(s) ended", user.name),
    )
    .await
}

/// Runs `citadel user mfa …`.
pub async fn run_mfa(
    store: &Store,
    data: &DataDir,
    config: &Config,
    cmd: MfaCommand,
) -> Result<()> {
    let signin = data.sign_in_for_cli(store, config).await?;
    let factors = &signin.factors;
    match cmd {
        MfaCommand::Totp(TotpCommand::Enroll { name, json, qr_svg }) => {
            let user = store.find_user(&name).await?;
            let enrollment = factors.enroll_totp(&user).await?;
            if let Some(path) = &qr_svg {
                citadel_crypto::write_private_file(path, enrollment.qr_svg.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            crate::cli::record_event(
                store,
                crate::cli::operator_event(
                    "users.mfa_enroll",
                    serde_json::json!({"type": "User", "uid": user.id, "factor": "totp"}),
                ),
            )
            .await?;
            if json {
                print_json(&serde_json::json!({
                    "user": user.name,
                    "otpauth_uri": enrollment.otpauth_uri.as_str(),
                    "secret": enrollment.secret.as_str(),
                    "algorithm": enrollment.algorithm,
                    "digits": enrollment.digits,
                    "period": enrollment.period,
                    "qr_svg": enrollment.qr_svg.as_str(),
                }))
            } else {
                println!(
                    "TOTP authenticator for {} — scan this, or type the secret:",
                    user.name
                );
                println!("{}", enrollment.qr_for_terminal());
                println!("URI:    {}", enrollment.otpauth_uri.as_str());
                println!("secret: {}", enrollment.secret.as_str());
                println!("This is shown once. Sign-in now asks this user for a code.");
                Ok(())
            }
        }
        MfaCommand::Totp(TotpCommand::Remove { name, json }) => {
            let user = store.find_user(&name).await?;
            let removed = factors.remove_totp(&user.id).await?;
            record_event_and_print(
                store,
                "users.mfa_remove",
                serde_json::json!({"type": "User", "uid": user.id, "factor": "totp"}),
                &serde_json::json!({"user": user.name, "removed": removed}),
                json,
                &if removed {
                    format!("removed the TOTP authenticator of {}", user.name)
                } else {
                    format!("{} had no TOTP authenticator", user.name)
                },
            )
            .await
        }
        MfaCommand::RecoveryCodes { name, json } => {
            let user = store.find_user(&name).await?;
            let codes = factors.new_recovery_codes(&user.id).await?;
            crate::cli::record_event(
                store,
                crate::cli::operator_event(
                    "users.mfa_enroll",
                    serde_json::json!({"type": "User", "uid": user.id, "factor": "recovery_codes"}),
                ),
            )
            .await?;
            let list: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            if json {
                print_json(&serde_json::json!({"user": user.name, "recovery_codes": list}))
            } else {
                println!(
                    "Recovery codes for {} (each works once; shown once):",
                    user.name
                );
                for c in list {
                    println!("  {c}");
                }
                Ok(())
            }
        }
        MfaCommand::Passkeys { name, json } => {
            let user = store.find_user(&name).await?;
            let keys = store.passkeys_of(&user.id).await?;
            if json {
                for k in &keys {
                    print_json(k)?;
                }
                return Ok(());
            }
            println!(
                "{:<48} {:<20} {:<25} LAST USED",
                "CREDENTIAL ID", "NAME", "CREATED"
            );
            for k in &keys {
                println!(
                    "{:<48} {:<20} {:<25} {}",
                    k.credential_id,
                    k.name,
                    clock::rfc3339(k.created_at),
                    k.last_used_at
                        .map(clock::rfc3339)
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        MfaCommand::RemovePasskey {
            name,
            credential_id,
            json,
        } => {
            let user = store.find_user(&name).await?;
            if !store.delete_passkey(&user.id, &credential_id).await? {
                bail!(
                    "{} has no passkey {credential_id}; list them with `citadel user mfa passkeys {}`",
                    user.name,
                    user.name
                );
            }
            record_event_and_print(
                store,
                "users.mfa_remove",
                serde_json::json!({"type": "User", "uid": user.id, "factor": "passkey", "credential_id": credential_id}),
                &serde_json::json!({"user": user.name, "removed": true}),
                json,
                &format!("removed passkey {credential_id} of {}", user.name),
            )
            .await
        }
        MfaCommand::Status { name, json } => {
            let user = store.find_user(&name).await?;
            let totp = factors.has_totp(&user.id).await?;
            let recovery = factors.recovery_codes_left(&user.id).await?;
            let passkeys = store.passkeys_of(&user.id).await?.len();
            if json {
                print_json(
                    &serde_json::json!({"user": user.name, "totp": totp, "recovery_codes_left": recovery, "passkeys": passkeys}),
                )
            } else {
                println!(
                    "{}: TOTP {}, {passkeys} passkey(s), {recovery} recovery code(s) left",
                    user.name,
                    if totp { "enrolled" } else { "not enrolled" }
                );
                Ok(())
            }
        }
    }
}

/// Lists a user's sessions.
pub async fn list_sessions(store: &Store, name: &str, all: bool, json: bool) -> Result<()> {
    let user = store.find_user(name).await?;
    let now = clock::now_ms();
    let sessions = store
        .list_sessions(&user.id, if all { None } else { Some(now) })
        .await?;
    if json {
        for s in &sessions {
            print_json(s)?;
        }
        return Ok(());
    }
    println!(
        "{:<36} {:<20} {:<25} {:<16} STATUS",
        "ID", "METHODS", "CREATED", "FROM"
    );
    for s in &sessions {
        let status = match (&s.revoked_reason, s.expires_at <= now) {
            (Some(reason), _) => format!("ended ({reason})"),
            (None, true) => "expired".into(),
            (None, false) => "active".into(),
        };
        println!(
            "{:<36} {:<20} {:<25} {:<16} {status}",
            s.id,
            s.methods.join("+"),
            clock::rfc3339(s.created_at),
            s.source_ip
        );
    }
    Ok(())
}

/// Ends every session of a user.
pub async fn sign_out(store: &Store, name: &str, json: bool) -> Result<()> {
    let user = store.find_user(name).await?;
    let ended = store
        .revoke_sessions_for(&user.id, "sign_out_everywhere", clock::now_ms())
        .await?;
    record_event_and_print(
        store,
        "users.sign_out",
        serde_json::json!({"type": "User", "uid": user.id}),
        &serde_json::json!({"user": user.name, "sessions_ended": ended}),
        json,
        &format!(
            "signed {} out everywhere: {ended} session(s) ended",
            user.name
        ),
    )
    .await
}

/// Lifts sign-in locks on a user's account (from every address).
pub async fn unlock(
    store: &Store,
    data: &DataDir,
    config: &Config,
    name: &str,
    json: bool,
) -> Result<()> {
    let user = store.find_user(name).await?;
    let signin = data.sign_in_for_cli(store, config).await?;
    let cleared = signin.throttle.unlock_account(&user.name).await?;
    record_event_and_print(
        store,
        "users.unlock",
        serde_json::json!({"type": "User", "uid": user.id}),
        &serde_json::json!({"user": user.name, "locks_cleared": cleared}),
        json,
        &format!("unlocked {} ({cleared} counter(s) cleared)", user.name),
    )
    .await
}
