//! Capture: with `[privacy] capture = true` (or an upstream's `capture`),
//! the text a model request sent (after redaction) and the answer it got
//! (before pseudonyms were given back) are kept, each sealed under the data
//! subject's own key in the subject vault, and the pseudonyms made for the
//! request with their values, sealed the same way. Erasing the subject
//! destroys the key: nothing of it stays readable. Retention purges content
//! after a while (`[[privacy.retention]]`).
//!
//! The data subject is the one named in the subject header, else the
//! principal who called. Writing happens after the response, off the
//! request path; a failure is logged, never fails the request.

use std::sync::Arc;

use base64::Engine;
use citadel_store::{CaptureRecord, PseudonymRecord};

use crate::state::GatewayState;

/// The vault subject id of a data subject named in a request.
pub fn data_subject_id(name: &str) -> String {
    format!("data-subject:{name}")
}

/// What a capture is filed under.
#[derive(Debug, Clone)]
pub(crate) struct CaptureTarget {
    /// The vault subject id.
    pub(crate) subject_id: String,
    pub(crate) request_id: String,
    pub(crate) route: String,
    pub(crate) model: String,
    pub(crate) data_class: &'static str,
    /// When the request arrived (Unix ms): a subject erased since then
    /// gets no capture from it.
    pub(crate) started_ms: i64,
}

/// Runs `work` on the runtime, if there is one (a body dropped outside it
/// has nothing to store).
fn spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(work);
        }
        Err(_) => tracing::warn!("capture dropped: no runtime to store it"),
    }
}

/// Whether the subject was erased after the request began (then nothing of
/// the request may be stored under a new key).
async fn erased_since(state: &GatewayState, subject_id: &str, started_ms: i64) -> bool {
    let subject_ref = state.vault.subject_ref(subject_id);
    match state
        .store
        .subject_erased_since(&subject_ref, started_ms)
        .await
    {
        Ok(erased) => erased,
        Err(e) => {
            // Fail closed: not knowing, store nothing.
            tracing::error!(error = %e, "capture not stored: erasure could not be checked");
            true
        }
    }
}

/// Stores one capture (`prompt` or `answer`), in the background.
pub(crate) fn store_capture(
    state: &Arc<GatewayState>,
    target: &CaptureTarget,
    kind: &'static str,
    text: String,
) {
    let state = state.clone();
    let target = target.clone();
    spawn(async move {
        if erased_since(&state, &target.subject_id, target.started_ms).await {
            return;
        }
        let id = format!("cap-{}", uuid::Uuid::now_v7().simple());
        let sealed = match state
            .vault
            .seal_for(&target.subject_id, id.as_bytes(), text.as_bytes())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request_id = %target.request_id, error = %e, "capture not stored: it could not be sealed");
                return;
            }
        };
        let record = CaptureRecord {
            id,
            request_id: target.request_id.clone(),
            subject_ref: sealed.0,
            kind: kind.to_owned(),
            route: target.route.clone(),
            model: target.model.clone(),
            data_class: target.data_class.to_owned(),
            created_at: citadel_core::clock::now_ms(),
            sealed: Some(base64::engine::general_purpose::STANDARD.encode(sealed.1)),
            purged_at: None,
        };
        if let Err(e) = state.store.insert_capture(&record).await {
            tracing::error!(request_id = %target.request_id, error = %e, "capture not stored");
        }
    });
}

/// Stores the pseudonyms made for a request (token → value, sealed under
/// the subject's key), in the background.
pub(crate) fn store_pseudonyms(
    state: &Arc<GatewayState>,
    target: &CaptureTarget,
    pseudonyms: &citadel_privacy::PseudonymMap,
) {
    let items: Vec<(String, String, zeroize::Zeroizing<String>)> = pseudonyms
        .iter()
        .map(|p| (p.token.clone(), p.kind.clone(), p.value.clone()))
        .collect();
    if items.is_empty() {
        return;
    }
    let state = state.clone();
    let (subject_id, started_ms) = (target.subject_id.clone(), target.started_ms);
    spawn(async move {
        if erased_since(&state, &subject_id, started_ms).await {
            return;
        }
        for (token, kind, value) in items {
            match state
                .vault
                .seal_for(&subject_id, token.as_bytes(), value.as_bytes())
                .await
            {
                Ok((subject_ref, sealed)) => {
                    let record = PseudonymRecord {
                        token,
                        subject_ref,
                        kind,
                        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
                        created_at: citadel_core::clock::now_ms(),
                    };
                    if let Err(e) = state.store.insert_pseudonym(&record).await {
                        tracing::error!(error = %e, "pseudonym not stored");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "pseudonym not stored: it could not be sealed")
                }
            }
        }
    });
}
