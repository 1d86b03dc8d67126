//! Layer 6, inspect: what is in the request's text, and may it go where it
//! is going? The text of an OpenAI-compatible request (message contents,
//! prompts, embedding inputs; never the model name or parameters) is
//! scanned once for personal data and secrets (`rules/privacy`), which
//! gives its data class. Cedar then decides `send_data` with what was
//! found in context. A denial is asked once more after redacting (so a
//! policy can say "confidential only redacted"); a second denial refuses
//! with 403 `data_class_forbidden`. Redaction is also applied whenever the
//! route (or `[privacy]`) is configured to redact.
//!
//! It sits after authorization, so nobody unauthorized makes the gateway
//! scan, and before the proxy, so nothing unredacted leaves. Its answer
//! side (`inspect_response.rs`) redacts the answer and gives back
//! pseudonyms where `reidentify` is allowed.
//!
//! Events carry which types were found and how many, never the values.

use std::sync::Arc;

use bytes::Bytes;
use citadel_core::{ApiError, ErrorCode};
use citadel_policy::{Action, DataFacts, Resource};
use citadel_privacy::openai::for_each_request_text;
use citadel_privacy::{DataClass, Finding, Mode, PseudonymMap, Tally};
use http_body_util::BodyExt;

use crate::authorize::request_facts;
use crate::context::{info_and_trail, PrivacyTrail};
use crate::events::{authorization_decision, RequestView};
use crate::route::Target;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, full, GatewayRequest, GatewayResponse};

/// What inspection of the request decided, for the answer's inspection.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// How answers are redacted (`None`: answers pass as they come).
    pub answer_mode: Option<Mode>,
    /// Pseudonyms made from the request, to give back in the answer
    /// (empty unless `reidentify` is allowed).
    pub pseudonyms: Arc<PseudonymMap>,
    /// Where the answer is captured, when the route captures.
    pub(crate) capture: Option<crate::capture::CaptureTarget>,
}

/// The inspect layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("inspect", state, |s, r, n| Box::pin(inspect(s, r, n)))
}

fn data_facts(tally: &Tally, redacted: bool) -> DataFacts {
    let class = tally.class.unwrap_or(DataClass::Public);
    DataFacts {
        data_class: class.as_str().to_owned(),
        data_classes: tally
            .classes
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        data_types: tally.counts.keys().cloned().collect(),
        finding_count: tally.total() as i64,
        redacted,
    }
}

async fn inspect(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let Some(Target::Model { upstream, model }) = req.extensions().get::<Target>().cloned() else {
        // `http` routes stream their bodies through uninspected (for now).
        return call_next(next, req).await;
    };
    let Some(principal) = trail.principal() else {
        trail.update(|t| t.error = Some(ErrorCode::Forbidden));
        return error_response(
            &ApiError::new(ErrorCode::Forbidden, "not permitted"),
            Some(&info.id),
        );
    };
    let (mut parts, body) = req.into_parts();
    // Routing buffered the body already; this only takes it.
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidRequest));
            return error_response(
                &ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the request body could not be read",
                ),
                Some(&info.id),
            );
        }
    };
    let mut json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidJson));
            return error_response(
                &ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("the request body is not valid JSON: {e}"),
                ),
                Some(&info.id),
            );
        }
    };

    let scanner = state.privacy.scanner();
    let mut tally = Tally::default();
    let mut findings: Vec<Vec<Finding>> = Vec::new();
    for_each_request_text(&mut json, &mut |text| {
        let found = scanner.scan(text);
        tally.add(&found);
        findings.push(found);
    });

    let configured = upstream
        .config
        .redact
        .unwrap_or(state.privacy.config.redact)
        .mode();
    // Decided in a block of its own: nothing borrowed here lives across
    // the awaits below.
    let (decision, data, applied, pseudonyms, reidentify) = {
        let verified = trail.verified();
        let resource = Resource::Model {
            name: &model,
            upstream: &upstream.facts,
        };
        let ask = |action: Action, data: &DataFacts| {
            let facts = request_facts(
                &info,
                &trail,
                parts.method.as_str(),
                parts.uri.path(),
                &verified,
            );
            state
                .policy
                .authorize_data(&principal, action, &resource, &facts, data)
        };
        let mut data = data_facts(&tally, false);
        let mut decision = ask(Action::SendData, &data);
        let mut applied: Option<Mode> = None;
        let mut pseudonyms = PseudonymMap::default();
        if tally.total() > 0 && (configured.is_some() || !decision.allowed) {
            let mode = configured.unwrap_or(Mode::Mask);
            let redactor = state.privacy.redactor(mode);
            let mut each = findings.iter();
            for_each_request_text(&mut json, &mut |text| {
                if let Some(found) = each.next() {
                    if !found.is_empty() {
                        *text = redactor.apply(text, found, &mut pseudonyms);
                    }
                }
            });
            applied = Some(mode);
            if !decision.allowed {
                data = data_facts(&tally, true);
                decision = ask(Action::SendData, &data);
            }
        }
        let reidentify = !pseudonyms.is_empty() && ask(Action::Reidentify, &data).allowed;
        (decision, data, applied, pseudonyms, reidentify)
    };
    trail.update(|t| {
        t.privacy = Some(PrivacyTrail {
            data_class: tally.class.unwrap_or(DataClass::Public).as_str(),
            request_findings: tally.counts.clone(),
            redacted: applied.map(Mode::as_str),
            ..Default::default()
        })
    });

    // A decision worth a durable record: something was found, or refused.
    if tally.total() > 0 || !decision.allowed {
        let view = RequestView {
            info: &info,
            method: &parts.method,
            path: parts.uri.path(),
            user_agent: None,
        };
        let mut event = authorization_decision(
            &view,
            &principal,
            Action::SendData.cedar_id(),
            serde_json::json!({"type": "Model", "uid": model, "owner": {"name": upstream.config.name}}),
            decision.allowed,
            &decision.policies,
            "gateway",
        );
        event.body["unmapped"] = serde_json::json!({
            "data_class": data.data_class,
            "findings": tally.counts,
            "redacted": applied.map(Mode::as_str),
        });
        if let Err(refusal) = crate::events::record_decision(&state.sink, event).await {
            trail.update(|t| t.error = Some(refusal.code));
            return error_response(&refusal, Some(&info.id));
        }
    }
    if !decision.allowed {
        tracing::info!(request_id = %info.id, principal = %principal.id, class = %data.data_class, policies = ?decision.policies, "request data refused by policy");
        trail.update(|t| t.error = Some(ErrorCode::DataClassForbidden));
        let types: Vec<&str> = tally.counts.keys().map(String::as_str).collect();
        return error_response(
            &ApiError::new(
                ErrorCode::DataClassForbidden,
                format!(
                    "this request carries {} data ({}) that may not be sent to model `{model}`; remove it or use a model your policy allows",
                    data.data_class,
                    types.join(", ")
                ),
            ),
            Some(&info.id),
        );
    }

    let capture = upstream
        .config
        .capture
        .unwrap_or(state.privacy.config.capture)
        .then(|| {
            let subject_id = parts
                .headers
                .get(state.privacy.config.subject_header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= citadel_privacy::consent::MAX_SUBJECT_BYTES
                        && !s.chars().any(char::is_control)
                })
                .map_or_else(|| principal.id.clone(), crate::capture::data_subject_id);
            crate::capture::CaptureTarget {
                subject_id,
                request_id: info.id.clone(),
                route: parts.uri.path().to_owned(),
                model: model.clone(),
                data_class: tally.class.unwrap_or(DataClass::Public).as_str(),
                started_ms: citadel_core::clock::now_ms()
                    - info.started.elapsed().as_millis() as i64,
            }
        });
    if let Some(target) = &capture {
        // What left for the model (after redaction), and the pseudonyms.
        let mut texts = Vec::new();
        for_each_request_text(&mut json, &mut |t| texts.push(t.clone()));
        crate::capture::store_capture(
            &state,
            target,
            "prompt",
            serde_json::to_string(&texts).unwrap_or_default(),
        );
        crate::capture::store_pseudonyms(&state, target, &pseudonyms);
    }
    // What is forwarded is always the JSON as parsed and scanned, never the
    // original bytes: an upstream parser that keeps a duplicate key's first
    // value would otherwise see text that was never scanned.
    let body_bytes = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if configured.or(applied).is_some() || capture.is_some() {
        // The answer is read here: ask for it uncompressed.
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    let mut req = http::Request::from_parts(parts, full(body_bytes));
    let answer_mode = configured.or(applied);
    let inspected = Inspected {
        answer_mode,
        pseudonyms: Arc::new(if reidentify {
            pseudonyms
        } else {
            PseudonymMap::default()
        }),
        capture,
    };
    req.extensions_mut().insert(inspected.clone());
    let response = call_next(next, req).await;
    crate::inspect_response::inspect_answer(state, inspected, response, info, trail).await
}
