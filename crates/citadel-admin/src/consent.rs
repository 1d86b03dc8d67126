//! Consent on the admin API: the purposes, a subject's receipt, grants and
//! withdrawals (each recorded as an event naming the subject only by its
//! keyed hash).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::api::{authorize, json_body, record_change, ApiResult, Caller};
use crate::AdminState;

/// `GET /api/v1/consent/purposes`.
pub(crate) async fn purposes(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    authorize(&state, &caller, "consent.read", "consent").await?;
    let list: Vec<serde_json::Value> = state
        .gateway
        .consents
        .purposes()
        .map(|p| {
            json!({"name": p.name, "description": p.description, "version": p.version,
                   "text": p.text, "text_sha256": p.text_sha256()})
        })
        .collect();
    Ok(Json(json!({"purposes": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectOnly {
    subject: String,
}

/// `POST /api/v1/consent/receipt` `{"subject"}`: the subject's consent
/// receipt. The subject travels in the body, never in the URL, so it does
/// not reach the audit log with the request's path.
pub(crate) async fn receipt(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SubjectOnly>, JsonRejection>,
) -> ApiResult {
    authorize(&state, &caller, "consent.read", "consent").await?;
    let body = json_body(body)?;
    Ok(Json(state.gateway.consents.receipt(&body.subject).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Change {
    /// The data subject.
    subject: String,
    /// The purpose.
    purpose: String,
    /// Where the consent was given or withdrawn.
    #[serde(default)]
    source: Option<String>,
}

fn source_of(body: &Change) -> String {
    body.source
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "admin-api".into())
}

/// `POST /api/v1/consent/grant` `{"subject", "purpose", "source"}`:
/// records consent to the purpose's current text.
pub(crate) async fn grant(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Change>, JsonRejection>,
) -> ApiResult {
    change(&state, &caller, body, true).await
}

/// `POST /api/v1/consent/withdraw` `{"subject", "purpose", "source"}`.
pub(crate) async fn withdraw(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Change>, JsonRejection>,
) -> ApiResult {
    change(&state, &caller, body, false).await
}

/// A grant or a withdrawal, recorded as a `consent.grant` /
/// `consent.withdraw` event naming the subject only by its keyed hash.
async fn change(
    state: &AdminState,
    caller: &Caller,
    body: Result<Json<Change>, JsonRejection>,
    grant: bool,
) -> ApiResult {
    authorize(state, caller, "consent.write", "consent").await?;
    let body = json_body(body)?;
    let source = source_of(&body);
    let consents = &state.gateway.consents;
    let (receipt_id, answer) = if grant {
        let r = consents
            .grant(&body.subject, &body.purpose, &source)
            .await?;
        let answer = json!({
            "receipt_id": r.id,
            "purpose": r.purpose,
            "version": r.version,
            "granted_at": citadel_core::clock::rfc3339(r.granted_at),
            "source": r.source,
        });
        (Some(r.id), answer)
    } else {
        let closed = consents
            .withdraw(&body.subject, &body.purpose, &source)
            .await?;
        (None, json!({"purpose": body.purpose, "withdrawn": closed}))
    };
    let p = consents.purpose(&body.purpose)?;
    record_change(
        state,
        caller,
        if grant {
            "consent.grant"
        } else {
            "consent.withdraw"
        },
        citadel_privacy::consent::consent_resource(
            &consents.subject_ref(&body.subject),
            p,
            &source,
            receipt_id.as_deref(),
        ),
    )
    .await?;
    Ok(Json(answer))
}
