//! Data subjects: access (everything held about a subject, decrypted, as
//! JSON), erasure (crypto-shredding their key, deleting what is filed
//! under them, a tombstone event), and the retention purge. Used by the
//! admin API and the CLI alike.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine;
use citadel_audit::SubjectVault;
use citadel_core::clock::{now_ms, rfc3339};
use citadel_core::ErrorCode;
use citadel_privacy::{Consents, RetentionRule};
use citadel_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{authorize, json_body, record_change, ApiResult, Caller};
use crate::{AdminError, AdminState};

/// Who a request names: a data subject (as in the subject header) or,
/// with `principal`, a principal id (captures of callers who named none).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectName {
    /// The name.
    pub subject: String,
    /// `subject` is a principal id, not a data subject's name.
    #[serde(default)]
    pub principal: bool,
}

impl SubjectName {
    fn vault_id(&self) -> String {
        if self.principal {
            self.subject.clone()
        } else {
            citadel_gateway::capture::data_subject_id(&self.subject)
        }
    }

    fn check(&self) -> Result<(), AdminError> {
        if self.subject.is_empty()
            || self.subject.len() > citadel_privacy::consent::MAX_SUBJECT_BYTES
            || self.subject.chars().any(char::is_control)
        {
            return Err(AdminError::new(
                ErrorCode::InvalidRequest,
                "the subject must be 1 to 256 bytes without control characters",
            ));
        }
        Ok(())
    }
}

/// What subject access and erasure need.
pub struct SubjectData<'a> {
    /// The store.
    pub store: &'a Store,
    /// Per-subject keys.
    pub vault: &'a SubjectVault,
    /// Consent records.
    pub consents: &'a Consents,
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    tracing::error!(error = %e, "subject data operation failed");
    AdminError::new(
        ErrorCode::Internal,
        "the operation failed; see the server log",
    )
}

/// Everything held about a subject, decrypted: captures (or why a capture
/// can no longer be read), pseudonyms with their values, and consent.
pub async fn export(data: &SubjectData<'_>, who: &SubjectName) -> Result<Value, AdminError> {
    who.check()?;
    let subject_ref = data.vault.subject_ref(&who.vault_id());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut captures = Vec::new();
    for c in data.store.captures_of(&subject_ref).await? {
        let (state, content) = match &c.sealed {
            None => ("purged", Value::Null),
            Some(sealed) => {
                let bytes = b64.decode(sealed).unwrap_or_default();
                match data
                    .vault
                    .open_for(&subject_ref, c.id.as_bytes(), &bytes)
                    .await
                    .map_err(internal)?
                {
                    Some(plain) => (
                        "readable",
                        serde_json::from_slice(&plain).unwrap_or(Value::Null),
                    ),
                    None => ("erased", Value::Null),
                }
            }
        };
        captures.push(json!({
            "id": c.id, "request_id": c.request_id, "kind": c.kind, "route": c.route,
            "model": c.model, "data_class": c.data_class, "captured_at": rfc3339(c.created_at),
            "state": state, "content": content,
            "purged_at": c.purged_at.map(rfc3339),
        }));
    }
    let mut pseudonyms = Vec::new();
    for p in data.store.pseudonyms_of(&subject_ref).await? {
        let bytes = b64.decode(&p.sealed).unwrap_or_default();
        let value = data
            .vault
            .open_for(&subject_ref, p.token.as_bytes(), &bytes)
            .await
            .map_err(internal)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        pseudonyms.push(json!({"token": p.token, "type": p.kind, "value": value,
                                "created_at": rfc3339(p.created_at)}));
    }
    let consent = if who.principal {
        Value::Null
    } else {
        data.consents.receipt(&who.subject).await?
    };
    Ok(json!({
        "format": "citadel-subject-export/1",
        "subject": who.subject,
        "principal": who.principal,
        "generated_at": rfc3339(now_ms()),
        "captures": captures,
        "pseudonyms": pseudonyms,
        "consent": consent,
    }))
}

/// Erases a subject: destroys their key (everything sealed under it, in
/// captures, pseudonyms and audit events, is unreadable from now on,
/// backups included) and deletes what is filed under them. Returns the
/// tombstone's facts (counts, the subject's keyed hash; never the name).
pub async fn erase(data: &SubjectData<'_>, who: &SubjectName) -> Result<Value, AdminError> {
    who.check()?;
    let vault_id = who.vault_id();
    let subject_ref = data.vault.subject_ref(&vault_id);
    let key_destroyed = data.vault.erase(&vault_id).await.map_err(internal)?;
    let consent_ref = if who.principal {
        String::new()
    } else {
        data.consents.subject_ref(&who.subject)
    };
    let (captures, pseudonyms, consents) = data
        .store
        .delete_subject_records(&subject_ref, &consent_ref)
        .await?;
    Ok(json!({
        "type": "DataSubject",
        "uid": subject_ref,
        "key_destroyed": key_destroyed,
        "captures_deleted": captures,
        "pseudonyms_deleted": pseudonyms,
        "consents_deleted": consents,
    }))
}

/// Purges what the retention rules say has expired; returns one entry per
/// rule with how many records it purged.
pub async fn purge(
    store: &Store,
    rules: &[RetentionRule],
    now: i64,
) -> Result<Vec<Value>, AdminError> {
    let mut out = Vec::new();
    for rule in rules {
        let before = now - rule.keep.as_millis() as i64;
        let class = rule.class.map(|c| c.as_str());
        let n = match rule.record {
            citadel_privacy::RecordKind::Metadata => store.delete_captures(class, before).await?,
            citadel_privacy::RecordKind::Pseudonyms => store.delete_pseudonyms(before).await?,
            kind => {
                store
                    .purge_capture_content(kind.as_str(), class, before, now)
                    .await?
            }
        };
        out.push(json!({
            "record": rule.record.as_str(), "class": class,
            "keep_seconds": rule.keep.as_secs(), "purged": n,
            "older_than": rfc3339(before),
        }));
    }
    Ok(out)
}

/// The evidence a purge leaves (the resource of its `privacy.purge`
/// event): what, how many, older than when.
pub fn purge_resource(results: &[Value]) -> Value {
    json!({"type": "Retention", "uid": "captures", "rules": results})
}

/// `POST /api/v1/subjects/export` `{"subject", "principal"?}`.
pub(crate) async fn export_api(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SubjectName>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "subjects.export", "subjects").await?;
    let who = json_body(body)?;
    let data = subject_data(&state);
    let export = export(&data, &who).await?;
    record_change(
        &state,
        &caller,
        "subjects.export",
        json!({"type": "DataSubject", "uid": data.vault.subject_ref(&who.vault_id())}),
    )
    .await?;
    Ok(Json(export))
}

/// `POST /api/v1/subjects/erase` `{"subject", "principal"?}`.
pub(crate) async fn erase_api(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SubjectName>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "subjects.erase", "subjects").await?;
    let who = json_body(body)?;
    let tombstone = erase(&subject_data(&state), &who).await?;
    record_change(&state, &caller, "subjects.erase", tombstone.clone()).await?;
    Ok(Json(tombstone))
}

/// `POST /api/v1/privacy/purge`: runs the retention purge now.
pub(crate) async fn purge_api(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "privacy.purge", "privacy").await?;
    let results = purge(
        &state.store,
        &state.gateway.privacy.config.retention,
        now_ms(),
    )
    .await?;
    record_change(&state, &caller, "privacy.purge", purge_resource(&results)).await?;
    Ok(Json(json!({"purged": results})))
}

fn subject_data(state: &AdminState) -> SubjectData<'_> {
    SubjectData {
        store: &state.store,
        vault: &state.gateway.vault,
        consents: &state.gateway.consents,
    }
}

/// `GET /api/v1/privacy`: the detectors in force (types and classes), the
/// redaction mode, the purposes, the retention rules and capture setting.
pub(crate) async fn settings_api(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "privacy.read", "privacy").await?;
    let privacy = &state.gateway.privacy;
    let detectors: Vec<Value> = privacy
        .scanner()
        .kinds()
        .into_iter()
        .map(|(k, c)| json!({"type": &*k, "class": c}))
        .collect();
    let retention: Vec<Value> = privacy
        .config
        .retention
        .iter()
        .map(|r| json!({"record": r.record.as_str(), "class": r.class, "keep_seconds": r.keep.as_secs()}))
        .collect();
    let purposes: Vec<Value> = state
        .gateway
        .consents
        .purposes()
        .map(|p| json!({"name": p.name, "version": p.version}))
        .collect();
    Ok(Json(json!({
        "detectors": detectors,
        "rule_paths": privacy.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "redact": privacy.config.redact.mode().map_or("none", citadel_privacy::Mode::as_str),
        "min_confidence": privacy.config.min_confidence,
        "capture": privacy.config.capture,
        "retention": retention,
        "purposes": purposes,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScanRequest {
    text: String,
}

/// Longest text `POST /api/v1/privacy/scan` takes.
const MAX_SCAN_BYTES: usize = 1 << 20;

/// `POST /api/v1/privacy/scan` `{"text"}`: the findings in a text, as
/// `citadel privacy scan --json` gives them (the text is not stored or
/// recorded).
pub(crate) async fn scan_api(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ScanRequest>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "privacy.read", "privacy").await?;
    let body = json_body(body)?;
    if body.text.len() > MAX_SCAN_BYTES {
        return Err(AdminError::new(
            ErrorCode::PayloadTooLarge,
            "scan at most 1 MiB of text per call",
        ));
    }
    let findings = state.gateway.privacy.scanner().scan(&body.text);
    Ok(Json(json!({"findings": findings})))
}
