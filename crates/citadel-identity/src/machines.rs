//! Machines: people's devices and service workloads, both identified by a
//! client certificate from the internal CA.
//!
//! **Devices** enrol with a one-time token and a CSR (the key never leaves
//! the device) and get a certificate naming `urn:citadel:device:<id>`. They
//! then send posture reports (OS and version, disk encryption, screen lock,
//! endpoint protection) signed with the device key. A device's trust is
//! `unknown` (no device certificate), `registered` (a valid, unrevoked
//! device certificate) or `compliant` (registered, and its latest report
//! met the requirements and is fresher than `posture_freshness`). Policy
//! reads it as `context.device_trust`. A device certificate alone
//! authenticates nobody; it accompanies a person's credential.
//!
//! **Workloads** get SPIFFE X.509-SVIDs (`spiffe://<trust domain>/<path>`)
//! and authenticate by them alone, with the roles registered for their
//! SPIFFE ID.
//!
//! Revoking either takes effect on the next request: the snapshot follows
//! the store's enforcement version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use citadel_core::{Principal, PrincipalKind};
use citadel_store::{DeviceRecord, Store, WorkloadRecord};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `[identity.devices]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// How long an enrolment token stays usable.
    #[serde(deserialize_with = "duration")]
    pub enrollment_token_ttl: Duration,
    /// Device certificate lifetime, days.
    pub cert_days: i64,
    /// A posture report counts for this long.
    #[serde(deserialize_with = "duration")]
    pub posture_freshness: Duration,
    /// Compliance requires disk encryption.
    pub require_disk_encryption: bool,
    /// Compliance requires a screen lock.
    pub require_screen_lock: bool,
    /// Compliance requires endpoint protection running.
    pub require_endpoint_protection: bool,
    /// Lowest OS version per OS (`macos = "14.0"`), compared numerically
    /// part by part. An OS not listed has no minimum.
    pub min_os_versions: BTreeMap<String, String>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            enrollment_token_ttl: Duration::from_secs(24 * 3600),
            cert_days: 90,
            posture_freshness: Duration::from_secs(24 * 3600),
            require_disk_encryption: true,
            require_screen_lock: true,
            require_endpoint_protection: true,
            min_os_versions: BTreeMap::new(),
        }
    }
}

/// `[identity.workloads]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// The SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// Certificate lifetime (re-issue before it ends).
    #[serde(deserialize_with = "duration")]
    pub cert_ttl: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            trust_domain: "citadel.local".into(),
            cert_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl WorkloadConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        check_trust_domain(&self.trust_domain)
            .map_err(|r| format!("identity.workloads.trust_domain: {r}"))?;
        if self.cert_ttl < Duration::from_secs(300)
            || self.cert_ttl > Duration::from_secs(90 * 86400)
        {
            return Err("identity.workloads.cert_ttl: between 5m and 90d".into());
        }
        Ok(())
    }
}

impl DeviceConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=825).contains(&self.cert_days) {
            return Err("identity.devices.cert_days: between 1 and 825".into());
        }
        if self.enrollment_token_ttl < Duration::from_secs(60) {
            return Err("identity.devices.enrollment_token_ttl: at least 1m".into());
        }
        if self.posture_freshness < Duration::from_secs(60) {
            return Err("identity.devices.posture_freshness: at least 1m".into());
        }
        for (os, v) in &self.min_os_versions {
            if parse_version(v).is_none() {
                return Err(format!(
                    "identity.devices.min_os_versions.{os}: {v:?} is not a version like 14.2"
                ));
            }
        }
        Ok(())
    }
}

fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err("lowercase letters, digits, `.`, `-` and `_` only")
    }
}

/// Checks a SPIFFE ID (SPIFFE-ID spec, section 2): `spiffe://` and a
/// trust domain of lowercase letters, digits, `.-_`; a path of non-empty
/// segments of letters, digits, `.-_` that are not `.` or `..`; no query,
/// fragment, port or user info; at most 2048 bytes. It must be in
/// `trust_domain`.
pub fn check_spiffe_id(id: &str, trust_domain: &str) -> Result<(), String> {
    if id.len() > 2048 {
        return Err("a SPIFFE ID is at most 2048 bytes".into());
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or("a SPIFFE ID starts with spiffe://")?;
    let (td, path) = rest
        .split_once('/')
        .ok_or("a workload SPIFFE ID needs a path")?;
    check_trust_domain(td).map_err(|r| format!("trust domain: {r}"))?;
    if td != trust_domain {
        return Err(format!(
            "the trust domain is {td:?}, not this installation's {trust_domain:?}"
        ));
    }
    for segment in path.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(format!("path segment {segment:?}: letters, digits, `.`, `-` and `_`; not empty, `.` or `..`"));
        }
    }
    Ok(())
}

fn parse_version(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// A device's trust, as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTrust {
    /// No device certificate.
    Unknown,
    /// A valid, unrevoked device certificate.
    Registered,
    /// Registered with a fresh, passing posture report.
    Compliant,
}

impl DeviceTrust {
    /// The `context.device_trust` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Registered => "registered",
            Self::Compliant => "compliant",
        }
    }
}

/// Why a machine certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineFailure {
    /// A device certificate not known (not enrolled here, or replaced).
    UnknownDevice,
    /// The device was revoked.
    DeviceRevoked,
    /// A SPIFFE ID with no registered workload.
    UnknownWorkload,
    /// The workload was revoked.
    WorkloadRevoked,
    /// A certificate naming neither a device nor a workload.
    UnrecognizedCertificate,
}

impl MachineFailure {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownDevice => "unknown_device",
            Self::DeviceRevoked => "device_revoked",
            Self::UnknownWorkload => "unknown_workload",
            Self::WorkloadRevoked => "workload_revoked",
            Self::UnrecognizedCertificate => "unrecognized_certificate",
        }
    }
}

/// What a valid client certificate names.
#[derive(Debug, Clone)]
pub enum Machine {
    /// A person's device, with its trust now.
    Device {
        /// Device id.
        id: String,
        /// Its trust.
        trust: DeviceTrust,
        /// Its owner, if bound.
        user_id: Option<String>,
    },
    /// A workload, as a principal.
    Workload(Arc<Principal>),
}

/// What a device's posture report says (the device signs these bytes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    /// `macos`, `windows`, `linux`, `ios`, `android`, …
    pub os: String,
    /// Version, like `14.5`.
    pub os_version: String,
    /// Full-disk encryption on.
    pub disk_encrypted: bool,
    /// Screen lock on.
    pub screen_lock: bool,
    /// Endpoint protection running.
    pub endpoint_protection: bool,
    /// When the device collected it, Unix seconds.
    pub collected_at: i64,
}

/// Why a posture report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostureError {
    /// The signature does not verify with the device key.
    #[error("the report's signature does not verify with the device's key")]
    BadSignature,
    /// Not a report.
    #[error("the report is not valid: {0}")]
    Malformed(String),
    /// Collected too long ago or in the future.
    #[error("the report was collected more than 5 minutes from now; send a fresh one")]
    Stale,
}

struct DeviceState {
    record: DeviceRecord,
}

/// The in-memory view of devices and workloads.
pub struct Machines {
    store: Store,
    devices_config: DeviceConfig,
    workloads_config: WorkloadConfig,
    devices: ArcSwap<HashMap<String, Arc<DeviceState>>>,
    workloads: ArcSwap<HashMap<String, WorkloadRecord>>,
    version: Mutex<i64>,
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Machines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machines").finish_non_exhaustive()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Machines {
    /// Loads the first snapshot.
    pub async fn load(
        store: Store,
        devices_config: DeviceConfig,
        workloads_config: WorkloadConfig,
    ) -> Result<Arc<Self>, String> {
        devices_config.validate()?;
        workloads_config.validate()?;
        let machines = Arc::new(Self {
            store,
            devices_config,
            workloads_config,
            devices: ArcSwap::from_pointee(HashMap::new()),
            workloads: ArcSwap::from_pointee(HashMap::new()),
            version: Mutex::new(-1),
            refreshing: tokio::sync::Mutex::new(()),
        });
        machines.refresh().await.map_err(|e| e.to_string())?;
        Ok(machines)
    }

    /// Device settings.
    pub fn devices_config(&self) -> &DeviceConfig {
        &self.devices_config
    }

    /// Workload settings.
    pub fn workloads_config(&self) -> &WorkloadConfig {
        &self.workloads_config
    }

    /// Rebuilds the snapshot.
    pub async fn refresh(&self) -> citadel_store::Result<()> {
        let _one = self.refreshing.lock().await;
        let version = self.store.enforcement_version().await?;
        let devices = self
            .store
            .list_devices()
            .await?
            .into_iter()
            .map(|d| (d.fingerprint.clone(), Arc::new(DeviceState { record: d })))
            .collect();
        let workloads = self
            .store
            .list_workloads()
            .await?
            .into_iter()
            .map(|w| (w.spiffe_id.clone(), w))
            .collect();
        self.devices.store(Arc::new(devices));
        self.workloads.store(Arc::new(workloads));
        *self.version.lock() = version;
        Ok(())
    }

    /// Refreshes if the enforcement version moved.
    pub async fn refresh_if_changed(&self) -> citadel_store::Result<bool> {
        let version = self.store.enforcement_version().await?;
        if version == *self.version.lock() {
            return Ok(false);
        }
        self.refresh().await?;
        Ok(true)
    }

    /// Runs forever: follows the enforcement version every `poll`. Spawn it.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh_if_changed().await {
                tracing::warn!(error = %e, "device and workload refresh failed; keeping the last snapshot");
            }
        }
    }

    /// What a valid client certificate (fingerprint and URI SANs) names, at `now`.
    pub fn identify(
        &self,
        fingerprint: &str,
        uris: &[String],
        now: i64,
    ) -> Result<Machine, MachineFailure> {
        if let Some(spiffe) = uris.iter().find(|u| u.starts_with("spiffe://")) {
            let workloads = self.workloads.load();
            let w = workloads
                .get(spiffe)
                .ok_or(MachineFailure::UnknownWorkload)?;
            if w.revoked_at.is_some() {
                return Err(MachineFailure::WorkloadRevoked);
            }
            return Ok(Machine::Workload(Arc::new(Principal {
                id: w.spiffe_id.clone(),
                kind: PrincipalKind::Workload,
                name: w.spiffe_id.clone(),
                roles: w.roles.clone(),
                credential: format!("x509:{}", &fingerprint[..fingerprint.len().min(16)]),
            })));
        }
        if uris.iter().any(|u| u.starts_with("urn:citadel:device:")) {
            let devices = self.devices.load();
            let d = devices
                .get(fingerprint)
                .ok_or(MachineFailure::UnknownDevice)?;
            if d.record.revoked_at.is_some() {
                return Err(MachineFailure::DeviceRevoked);
            }
            let fresh = d.record.posture_at.is_some_and(|at| {
                now.saturating_sub(at) <= self.devices_config.posture_freshness.as_millis() as i64
            });
            let trust = if d.record.compliant && fresh {
                DeviceTrust::Compliant
            } else {
                DeviceTrust::Registered
            };
            return Ok(Machine::Device {
                id: d.record.id.clone(),
                trust,
                user_id: d.record.user_id.clone(),
            });
        }
        Err(MachineFailure::UnrecognizedCertificate)
    }

    /// Whether a device whose certificate was accepted earlier is still
    /// enrolled and not revoked (for a long request it started).
    pub fn device_still_valid(&self, fingerprint: &str) -> Result<(), MachineFailure> {
        match self.devices.load().get(fingerprint) {
            None => Err(MachineFailure::UnknownDevice),
            Some(d) if d.record.revoked_at.is_some() => Err(MachineFailure::DeviceRevoked),
            Some(_) => Ok(()),
        }
    }

    /// Whether a workload that authenticated earlier is still registered
    /// and not revoked (for a long request it started).
    pub fn workload_still_valid(&self, spiffe_id: &str) -> Result<(), MachineFailure> {
        match self.workloads.load().get(spiffe_id) {
            None => Err(MachineFailure::UnknownWorkload),
            Some(w) if w.revoked_at.is_some() => Err(MachineFailure::WorkloadRevoked),
            Some(_) => Ok(()),
        }
    }

    /// Makes a one-time enrolment token (shown once; only its hash is kept).
    pub async fn new_enrollment_token(
        &self,
        user_id: Option<&str>,
        now: i64,
    ) -> citadel_store::Result<(Zeroizing<String>, String, i64)> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let token = Zeroizing::new(format!(
            "cte_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref())
        ));
        let id = format!("et-{}", uuid::Uuid::new_v4().simple());
        let expires_at = now + self.devices_config.enrollment_token_ttl.as_millis() as i64;
        self.store
            .insert_enrollment_token(&id, &sha256_hex(token.as_bytes()), user_id, now, expires_at)
            .await?;
        Ok((token, id, expires_at))
    }

    /// Enrols a device: uses the token (once) and issues its certificate
    /// from its CSR. `Ok(None)` when the token is unknown, expired or used.
    pub async fn enroll(
        &self,
        ca: &citadel_crypto::InternalCa,
        token: &str,
        csr_pem: &str,
        name: &str,
        now: i64,
    ) -> Result<Option<(DeviceRecord, String)>, EnrollError> {
        if !token.starts_with("cte_") || token.len() > 64 {
            return Ok(None);
        }
        // The CA signs nothing for a token that could not be spent.
        let token_hash = sha256_hex(token.as_bytes());
        if !self.store.enrollment_token_usable(&token_hash, now).await? {
            return Ok(None);
        }
        let id = format!("d-{}", uuid::Uuid::new_v4().simple());
        let cert = ca
            .issue_device_cert(csr_pem, &id, self.devices_config.cert_days)
            .map_err(|e| EnrollError::Csr(e.to_string()))?;
        let record = DeviceRecord {
            id,
            name: name.chars().take(128).collect(),
            user_id: None,
            fingerprint: cert.fingerprint.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(&cert.public_key),
            created_at: now,
            cert_not_after: cert.not_after,
            revoked_at: None,
            posture: None,
            posture_at: None,
            compliant: false,
        };
        let stored = self.store.enroll_device(&token_hash, now, &record).await?;
        if stored.is_some() {
            self.refresh().await?;
        }
        Ok(stored.map(|d| (d, cert.chain_pem)))
    }

    /// Accepts a posture report `report` (the exact bytes the device
    /// signed) with `signature` (ES256, `r || s`) from device `id`.
    /// Returns whether it makes the device compliant.
    pub async fn submit_posture(
        &self,
        id: &str,
        report: &[u8],
        signature: &[u8],
        now: i64,
    ) -> Result<bool, PostureSubmitError> {
        let device = self.store.get_device(id).await?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(&device.public_key)
            .map_err(|_| PostureSubmitError::Posture(PostureError::BadSignature))?;
        if !citadel_crypto::verify_p256(&key, report, signature) {
            return Err(PostureError::BadSignature.into());
        }
        let parsed: PostureReport =
            serde_json::from_slice(report).map_err(|e| PostureError::Malformed(e.to_string()))?;
        if (now / 1000 - parsed.collected_at).abs() > 300 {
            return Err(PostureError::Stale.into());
        }
        let compliant = self.meets_requirements(&parsed);
        let value = serde_json::to_value(&parsed).unwrap_or_default();
        self.store
            .set_device_posture(id, &value, compliant, now)
            .await?;
        self.refresh().await?;
        Ok(compliant)
    }

    /// Whether a report meets the configured requirements.
    pub fn meets_requirements(&self, r: &PostureReport) -> bool {
        let c = &self.devices_config;
        let version_ok = match c
            .min_os_versions
            .iter()
            .find(|(os, _)| os.eq_ignore_ascii_case(&r.os))
            .map(|(_, v)| v)
        {
            Some(min) => match (parse_version(&r.os_version), parse_version(min)) {
                (Some(have), Some(need)) => have >= need,
                _ => false,
            },
            None => true,
        };
        version_ok
            && (!c.require_disk_encryption || r.disk_encrypted)
            && (!c.require_screen_lock || r.screen_lock)
            && (!c.require_endpoint_protection || r.endpoint_protection)
    }
}

/// Why an enrolment failed (other than a bad token).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The CSR is not acceptable.
    #[error("{0}")]
    Csr(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] citadel_store::StoreError),
}

/// Why a posture report was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PostureSubmitError {
    /// The report was refused.
    #[error(transparent)]
    Posture(#[from] PostureError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] citadel_store::StoreError),
}

#[cfg(test)]
mod tests;
