//! Second factors: TOTP authenticators (RFC 6238) and single-use recovery
//! codes.
//!
//! TOTP seeds are sealed with AES-256-GCM under the `authenticator` data
//! key of the key hierarchy (`citadel-crypto`'s keyring), bound to the
//! user's id, before they reach the database; they are opened only to
//! check a code, and re-sealed under the newest key version when an older
//! one opened them (after a rotation). A code is accepted once:
//! the time step it belongs to must be later than every step accepted
//! before (RFC 6238 section 5.2), checked and recorded in one atomic update.
//! Recovery codes are 80-bit random strings kept as keyed hashes.

use std::sync::Arc;

use base64::Engine;
use citadel_crypto::Keyring;
use citadel_store::{Store, TotpRecord, UserRecord};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::api_key::KeyHasher;

/// The hash function of a TOTP authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1 (what most authenticator apps support).
    #[serde(rename = "SHA1")]
    Sha1,
    /// HMAC-SHA-256.
    #[serde(rename = "SHA256")]
    Sha256,
    /// HMAC-SHA-512.
    #[serde(rename = "SHA512")]
    Sha512,
}

impl TotpAlgorithm {
    /// The name in `otpauth://` URIs and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "SHA1" => Some(Self::Sha1),
            "SHA256" => Some(Self::Sha256),
            "SHA512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Self::Sha1 => totp_rs::Algorithm::SHA1,
            Self::Sha256 => totp_rs::Algorithm::SHA256,
            Self::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }

    /// The seed length RFC 6238's reference uses for this hash (its block
    /// of output): 20, 32 or 64 bytes.
    fn seed_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// `[identity.totp]`: how new authenticators are made and codes checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    /// Hash for new authenticators.
    pub algorithm: TotpAlgorithm,
    /// Digits per code, 6 to 8.
    pub digits: u32,
    /// Seconds per code.
    pub period: u64,
    /// Steps before and after the current one accepted, for clock skew.
    pub skew_steps: u32,
    /// The issuer shown in authenticator apps.
    pub issuer: String,
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
            skew_steps: 1,
            issuer: "Citadel".into(),
        }
    }
}

impl TotpConfig {
    /// Checks the ranges RFC 6238 and authenticator apps allow.
    pub fn validate(&self) -> Result<(), String> {
        if !(6..=8).contains(&self.digits) {
            return Err("identity.totp.digits: must be 6, 7 or 8".into());
        }
        if !(15..=300).contains(&self.period) {
            return Err("identity.totp.period: must be between 15 and 300 seconds".into());
        }
        if self.skew_steps > 5 {
            return Err("identity.totp.skew_steps: at most 5".into());
        }
        if self.issuer.is_empty() || self.issuer.contains(':') {
            return Err("identity.totp.issuer: must be non-empty and have no `:`".into());
        }
        Ok(())
    }
}

/// What enrolment hands to the person, once.
#[derive(Serialize)]
pub struct TotpEnrollment {
    /// `otpauth://totp/…` for authenticator apps.
    pub otpauth_uri: Zeroizing<String>,
    /// The seed in base32, for typing in.
    pub secret: Zeroizing<String>,
    /// The URI as a QR code, SVG.
    pub qr_svg: Zeroizing<String>,
    /// Hash.
    pub algorithm: TotpAlgorithm,
    /// Digits per code.
    pub digits: u32,
    /// Seconds per code.
    pub period: u64,
}

impl TotpEnrollment {
    /// The URI as a QR code drawn with Unicode half blocks, for a terminal.
    pub fn qr_for_terminal(&self) -> String {
        qrcode::QrCode::new(self.otpauth_uri.as_bytes())
            .map(|qr| {
                qr.render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .quiet_zone(true)
                    .build()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrollment")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorCheck {
    /// Accepted (and now used up).
    Accepted,
    /// The user has no such factor.
    NotEnrolled,
    /// The code is not shaped like a code.
    Malformed,
    /// Wrong code.
    Wrong,
    /// A code that was already used (or older than one that was).
    Replayed,
}

impl FactorCheck {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NotEnrolled => "factor_not_enrolled",
            Self::Malformed => "malformed_code",
            Self::Wrong => "wrong_code",
            Self::Replayed => "replayed_code",
        }
    }
}

/// Why a factor operation failed (not "wrong code").
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] citadel_store::StoreError),
    /// A sealed seed does not open: wrong key file or altered record.
    #[error(
        "the stored TOTP seed of user {0} does not open with this installation's authenticator key"
    )]
    Sealed(String),
    /// A stored record has values Citadel does not know.
    #[error("the stored TOTP authenticator of user {0} is corrupt")]
    Corrupt(String),
    /// Making the seed or QR code failed.
    #[error("could not make the authenticator: {0}")]
    Make(String),
}

/// Recovery codes per user.
pub const RECOVERY_CODES: usize = 10;

/// The keyring purpose TOTP seeds are sealed under.
pub const AUTHENTICATOR_PURPOSE: &str = "authenticator";

/// Second factors of people.
pub struct Factors {
    store: Store,
    keys: Arc<Keyring>,
    hasher: KeyHasher,
    config: TotpConfig,
}

impl std::fmt::Debug for Factors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factors")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn seed_aad(user_id: &str) -> Vec<u8> {
    format!("citadel/totp-seed/v1/{user_id}").into_bytes()
}

fn totp(
    algorithm: TotpAlgorithm,
    digits: u32,
    period: u64,
    seed: Vec<u8>,
    account: &str,
    issuer: &str,
) -> totp_rs::TOTP {
    totp_rs::TOTP::new_unchecked(
        algorithm.totp_rs(),
        digits as usize,
        0,
        period,
        seed,
        Some(issuer.to_owned()),
        account.to_owned(),
    )
}

/// The TOTP code for `seed` at Unix time `seconds` (RFC 6238 section 4).
pub fn totp_code(
    algorithm: TotpAlgorithm,
    digits: u32,
    period: u64,
    seed: &[u8],
    seconds: u64,
) -> String {
    totp(algorithm, digits, period, seed.to_vec(), "", "x").generate(seconds)
}

impl Factors {
    /// Factors sealed under `keys`' `authenticator` purpose and recovery
    /// codes hashed with `hasher`.
    pub fn new(
        store: Store,
        keys: Arc<Keyring>,
        hasher: KeyHasher,
        config: TotpConfig,
    ) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            store,
            keys,
            hasher,
            config,
        })
    }

    /// The key hierarchy seeds are sealed under.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    /// The settings new authenticators get.
    pub fn config(&self) -> &TotpConfig {
        &self.config
    }

    /// Makes (or replaces) the user's TOTP authenticator and returns what
    /// the person scans; the seed is stored sealed.
    pub async fn enroll_totp(&self, user: &UserRecord) -> Result<TotpEnrollment, MfaError> {
        let c = &self.config;
        let mut seed = Zeroizing::new(vec![0u8; c.algorithm.seed_len()]);
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let sealed = self
            .keys
            .seal(AUTHENTICATOR_PURPOSE, &seed_aad(&user.id), &seed)
            .map_err(|e| MfaError::Make(e.to_string()))?;
        let t = totp(
            c.algorithm,
            c.digits,
            c.period,
            seed.to_vec(),
            &user.name,
            &c.issuer,
        );
        let uri = Zeroizing::new(t.get_url());
        let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| MfaError::Make(e.to_string()))?;
        let svg = Zeroizing::new(
            qr.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .build(),
        );
        self.store
            .put_totp(&TotpRecord {
                user_id: user.id.clone(),
                sealed_seed: base64::engine::general_purpose::STANDARD.encode(sealed),
                algorithm: c.algorithm.as_str().into(),
                digits: c.digits as i64,
                period: c.period as i64,
                last_step: None,
                created_at: citadel_core::clock::now_ms(),
            })
            .await?;
        Ok(TotpEnrollment {
            otpauth_uri: uri,
            secret: Zeroizing::new(t.get_secret_base32()),
            qr_svg: svg,
            algorithm: c.algorithm,
            digits: c.digits,
            period: c.period,
        })
    }

    /// Checks that this installation's authenticator key opens the seeds
    /// already stored (a replica started with another key file would
    /// otherwise refuse every TOTP sign-in).
    pub async fn check_key(&self) -> Result<(), MfaError> {
        let Some(record) = self.store.any_totp().await? else {
            return Ok(());
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&record.sealed_seed)
            .map_err(|_| MfaError::Corrupt(record.user_id.clone()))?;
        self.keys
            .open(AUTHENTICATOR_PURPOSE, &seed_aad(&record.user_id), &sealed)
            .map(|_| ())
            .map_err(|_| MfaError::Sealed(record.user_id))
    }

    /// Opens a stored seed; one sealed under an older key version is
    /// sealed again under the current one (lazy re-encryption).
    async fn open_seed(&self, record: &TotpRecord) -> Result<Zeroizing<Vec<u8>>, MfaError> {
        let user_id = &record.user_id;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&record.sealed_seed)
            .map_err(|_| MfaError::Corrupt(user_id.clone()))?;
        let aad = seed_aad(user_id);
        let opened = match self.keys.open(AUTHENTICATOR_PURPOSE, &aad, &sealed) {
            // Sealed under a version another replica made since this one
            // last read the keys: read them and try once more.
            Err(citadel_crypto::KeyError::UnknownVersion { .. }) => {
                self.keys
                    .refresh()
                    .await
                    .map_err(|e| MfaError::Make(e.to_string()))?;
                self.keys.open(AUTHENTICATOR_PURPOSE, &aad, &sealed)
            }
            other => other,
        };
        let (seed, version) = opened.map_err(|_| MfaError::Sealed(user_id.clone()))?;
        if self.keys.needs_reseal(AUTHENTICATOR_PURPOSE, version) {
            if let Err(e) = self.reseal(record, &seed).await {
                tracing::warn!(user = %user_id, error = %e, "could not re-seal a TOTP seed under the current key; will retry on next use");
            }
        }
        Ok(seed)
    }

    async fn reseal(&self, record: &TotpRecord, seed: &[u8]) -> Result<bool, MfaError> {
        let fresh = self
            .keys
            .seal(AUTHENTICATOR_PURPOSE, &seed_aad(&record.user_id), seed)
            .map_err(|e| MfaError::Make(e.to_string()))?;
        let fresh = base64::engine::general_purpose::STANDARD.encode(fresh);
        Ok(self
            .store
            .reseal_totp(&record.user_id, &record.sealed_seed, &fresh)
            .await?)
    }

    /// Seals every stored seed that an older key version sealed under the
    /// current one (after a rotation, instead of waiting for each use).
    /// Returns how many were re-sealed.
    pub async fn reseal_all(&self) -> Result<usize, MfaError> {
        let mut n = 0;
        for user_id in self.store.totp_user_ids().await? {
            let Some(record) = self.store.get_totp(&user_id).await? else {
                continue;
            };
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(&record.sealed_seed)
                .map_err(|_| MfaError::Corrupt(user_id.clone()))?;
            let (seed, version) = self
                .keys
                .open(AUTHENTICATOR_PURPOSE, &seed_aad(&user_id), &sealed)
                .map_err(|_| MfaError::Sealed(user_id.clone()))?;
            if self.keys.needs_reseal(AUTHENTICATOR_PURPOSE, version)
                && self.reseal(&record, &seed).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the user has a TOTP authenticator.
    pub async fn has_totp(&self, user_id: &str) -> Result<bool, MfaError> {
        Ok(self.store.get_totp(user_id).await?.is_some())
    }

    /// Removes the user's TOTP authenticator.
    pub async fn remove_totp(&self, user_id: &str) -> Result<bool, MfaError> {
        Ok(self.store.delete_totp(user_id).await?)
    }

    /// Checks a TOTP code at `now_ms` and, if right and not used before,
    /// uses it up.
    pub async fn check_totp(
        &self,
        user_id: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<FactorCheck, MfaError> {
        let Some(record) = self.store.get_totp(user_id).await? else {
            return Ok(FactorCheck::NotEnrolled);
        };
        let algorithm = TotpAlgorithm::parse(&record.algorithm)
            .ok_or_else(|| MfaError::Corrupt(user_id.to_owned()))?;
        let digits = u32::try_from(record.digits)
            .ok()
            .filter(|d| (6..=8).contains(d))
            .ok_or_else(|| MfaError::Corrupt(user_id.to_owned()))?;
        let period = u64::try_from(record.period)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| MfaError::Corrupt(user_id.to_owned()))?;
        if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(FactorCheck::Malformed);
        }
        let seed = self.open_seed(&record).await?;
        let now_step = (now_ms.max(0) as u64) / 1000 / period;
        let skew = self.config.skew_steps as u64;
        let t = totp(algorithm, digits, period, seed.to_vec(), "", "x");
        // Every candidate is computed and compared, so timing does not say
        // which step matched.
        let mut matched = None;
        for step in now_step.saturating_sub(skew)..=now_step + skew {
            let expected = Zeroizing::new(t.generate(step * period));
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        let Some(step) = matched else {
            return Ok(FactorCheck::Wrong);
        };
        if self.store.consume_totp_step(user_id, step as i64).await? {
            Ok(FactorCheck::Accepted)
        } else {
            Ok(FactorCheck::Replayed)
        }
    }

    fn recovery_hash(&self, user_id: &str, code: &str) -> String {
        let normalized: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        hex::encode(
            self.hasher
                .hash_of(&format!("citadel/recovery-code/v1/{user_id}/{normalized}")),
        )
    }

    /// Makes a new set of recovery codes (the old set stops working) and
    /// returns them, to be shown once.
    pub async fn new_recovery_codes(
        &self,
        user_id: &str,
    ) -> Result<Vec<Zeroizing<String>>, MfaError> {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut hashes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let mut raw = Zeroizing::new([0u8; 16]);
            rand::rngs::OsRng.fill_bytes(raw.as_mut());
            // 16 symbols of 32: 80 bits, in four groups of four.
            let mut code = Zeroizing::new(String::with_capacity(19));
            for (i, b) in raw.iter().enumerate() {
                if i > 0 && i % 4 == 0 {
                    code.push('-');
                }
                code.push(ALPHABET[(*b & 31) as usize] as char);
            }
            hashes.push(self.recovery_hash(user_id, &code));
            codes.push(code);
        }
        self.store
            .replace_recovery_codes(user_id, &hashes, citadel_core::clock::now_ms())
            .await?;
        Ok(codes)
    }

    /// Uses a recovery code.
    pub async fn check_recovery_code(
        &self,
        user_id: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<FactorCheck, MfaError> {
        if code.len() > 64 {
            return Ok(FactorCheck::Malformed);
        }
        if self.store.unused_recovery_codes(user_id).await? == 0 {
            return Ok(FactorCheck::NotEnrolled);
        }
        let hash = self.recovery_hash(user_id, code);
        if self
            .store
            .consume_recovery_code(user_id, &hash, now_ms)
            .await?
        {
            Ok(FactorCheck::Accepted)
        } else {
            Ok(FactorCheck::Wrong)
        }
    }

    /// Recovery codes left.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, MfaError> {
        Ok(self.store.unused_recovery_codes(user_id).await?)
    }
}

#[cfg(test)]
pub(crate) mod tests;
