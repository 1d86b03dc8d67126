//! Routing (between authenticate and authorize): which upstream, model or
//! route does this request address? OpenAI-compatible paths are routed by
//! the `model` in their JSON body, read here within the size and time
//! limits (413, 408), and refused when it is not JSON (400 `invalid_json`)
//! or names no configured model (404 `unknown_model`). Other paths map to
//! `http` upstreams by prefix (404 `route_not_found` otherwise).
//!
//! It sits after authentication so an anonymous client cannot make the
//! gateway buffer a body, and before authorization because the policy
//! decision needs the resource. `GET /v1/models` is answered here: the list
//! holds only the models the caller's policy lets it invoke.

use std::sync::Arc;

use bytes::Bytes;
use citadel_core::{ApiError, ErrorCode};
use citadel_policy::{Action, RequestFacts, Resource};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::config::OPENAI_PATHS;
use crate::context::{info_and_trail, RequestInfo, Trail};
use crate::events::{authorization_decision, RequestView};
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::upstream::Upstream;
use crate::{error_response, full, json_response, GatewayRequest, GatewayResponse};

/// Where a request goes, set by routing for authorization and the proxy.
#[derive(Clone, Debug)]
pub enum Target {
    /// An OpenAI-compatible call to a model.
    Model {
        /// Serving upstream.
        upstream: Arc<Upstream>,
        /// Model name.
        model: String,
    },
    /// A call under an `http` upstream's prefix.
    Route {
        /// The upstream.
        upstream: Arc<Upstream>,
    },
}

impl Target {
    /// The upstream.
    pub fn upstream(&self) -> &Arc<Upstream> {
        match self {
            Self::Model { upstream, .. } | Self::Route { upstream } => upstream,
        }
    }
}

/// The routing layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("route", state, |s, r, n| Box::pin(route(s, r, n)))
}

fn refuse(
    trail: &Trail,
    info: &RequestInfo,
    code: ErrorCode,
    message: impl Into<String>,
) -> GatewayResponse {
    trail.update(|t| t.error = Some(code));
    error_response(&ApiError::new(code, message), Some(&info.id))
}

/// Reads the whole (already size-capped) body within what is left of the
/// request time.
/// Memory reserved for a buffered body; released when the request is dropped.
#[derive(Clone, Debug)]
pub(crate) struct BodyReservation(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Reserves room for a body of `declared` bytes (or the maximum when the
/// length is not declared) in the gateway-wide buffer budget.
fn reserve_body(state: &GatewayState, declared: Option<u64>) -> Option<BodyReservation> {
    let bytes = declared.map_or(state.config.limits.max_body_bytes as u64, |n| {
        n.min(state.config.limits.max_body_bytes as u64)
    });
    let kib = (bytes.div_ceil(1024)).max(1) as u32;
    state
        .body_budget
        .clone()
        .try_acquire_many_owned(kib)
        .ok()
        .map(|p| BodyReservation(Arc::new(p)))
}

async fn read_body(
    state: &GatewayState,
    info: &RequestInfo,
    body: crate::GatewayBody,
) -> Result<Bytes, ErrorCode> {
    let left = state
        .config
        .limits
        .request_timeout
        .saturating_sub(info.started.elapsed());
    match tokio::time::timeout(left, body.collect()).await {
        Err(_) => Err(ErrorCode::RequestTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ErrorCode::PayloadTooLarge),
        Ok(Err(_)) => Err(ErrorCode::InvalidRequest),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn route(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let path = req.uri().path().to_owned();
    if path == "/v1/models" {
        trail.update(|t| t.route = Some(path.clone()));
        if req.method() != Method::GET {
            return refuse(
                &trail,
                &info,
                ErrorCode::MethodNotAllowed,
                "use GET /v1/models",
            );
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        drop(req);
        return list_models(&state, &method, &path, &info, &trail).await;
    }
    if OPENAI_PATHS.contains(&path.as_str()) {
        trail.update(|t| t.route = Some(path.clone()));
        if req.method() != Method::POST {
            return refuse(
                &trail,
                &info,
                ErrorCode::MethodNotAllowed,
                format!("use POST {path}"),
            );
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(reservation) = reserve_body(&state, declared) else {
            trail.update(|t| t.error = Some(ErrorCode::Overloaded));
            let mut e = ApiError::new(
                ErrorCode::Overloaded,
                "the gateway holds as many request bodies as it may; retry after the number of seconds in Retry-After",
            );
            e.retry_after = Some(1);
            return error_response(&e, Some(&info.id));
        };
        let (parts, body) = req.into_parts();
        let bytes = match read_body(&state, &info, body).await {
            Ok(b) => b,
            Err(code) => {
                let message = match code {
                    ErrorCode::RequestTimeout => {
                        "the request body did not arrive in time".to_owned()
                    }
                    ErrorCode::PayloadTooLarge => format!(
                        "request body exceeds {} bytes",
                        state.config.limits.max_body_bytes
                    ),
                    _ => "the request body could not be read".to_owned(),
                };
                return refuse(&trail, &info, code, message);
            }
        };
        let model = match model_of(&bytes) {
            Ok(m) => m,
            Err(reason) => return refuse(&trail, &info, ErrorCode::InvalidJson, reason),
        };
        let Some(upstream) = state.upstream_for_model(&model).cloned() else {
            return refuse(
                &trail,
                &info,
                ErrorCode::UnknownModel,
                format!("no upstream serves model `{model}`; GET /v1/models lists the models you may use"),
            );
        };
        trail.update(|t| {
            t.model = Some(model.clone());
            t.upstream = Some(upstream.config.name.clone());
        });
        let mut req = http::Request::from_parts(parts, full(bytes));
        req.extensions_mut()
            .insert(Target::Model { upstream, model });
        // Held until the request (and its buffered body) is dropped.
        req.extensions_mut().insert(reservation);
        return call_next(next, req).await;
    }
    if let Some(upstream) = state.upstream_for_path(&path).cloned() {
        trail.update(|t| {
            t.route = Some(upstream.prefix().to_owned());
            t.upstream = Some(upstream.config.name.clone());
        });
        let mut req = req;
        req.extensions_mut().insert(Target::Route { upstream });
        return call_next(next, req).await;
    }
    refuse(
        &trail,
        &info,
        ErrorCode::RouteNotFound,
        format!("no route for {path}"),
    )
}

/// What routing reads of a body: its `model`. Every top-level key is
/// checked while the values are skipped, not built (an 8 MiB array would
/// otherwise cost far more memory than its bytes). A duplicate key, or a key
/// that is `model` in another case, is refused: parsers disagree on which
/// one wins (Go's matches keys without regard to case), so
/// `{"model":"a","MODEL":"b"}` could be authorized as one model and served
/// as another.
struct RoutingFields {
    model: Option<Result<String, ()>>,
}

impl<'de> serde::Deserialize<'de> for RoutingFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RoutingFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RoutingFields, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut model = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "model" && key.eq_ignore_ascii_case("model") {
                        return Err(serde::de::Error::custom(format!(
                            "key `{key}` differs from `model` only in case"
                        )));
                    }
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    if key == "model" {
                        let value = map.next_value::<serde_json::Value>()?;
                        model = Some(match value {
                            serde_json::Value::String(m) => Ok(m),
                            _ => Err(()),
                        });
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(RoutingFields { model })
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The `model` an OpenAI-compatible body names.
pub(crate) fn model_of(body: &[u8]) -> Result<String, String> {
    let fields: RoutingFields = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            format!("the body must be a JSON object without duplicate keys: {e}")
        } else {
            format!("the body is not valid JSON: {e}")
        }
    })?;
    match fields.model {
        Some(Ok(m)) => Ok(m),
        _ => Err("the body must name a `model` (string)".into()),
    }
}

async fn list_models(
    state: &GatewayState,
    method: &Method,
    path: &str,
    info: &RequestInfo,
    trail: &Trail,
) -> GatewayResponse {
    let Some(principal) = trail.principal() else {
        return refuse(
            trail,
            info,
            ErrorCode::InvalidCredentials,
            "authentication required",
        );
    };
    let verified = trail.verified();
    let facts = RequestFacts {
        source_ip: info.client.ip(),
        method: method.as_str(),
        path,
        auth_method: trail.auth_method(),
        mfa: trail.mfa(),
        mfa_age_seconds: trail.mfa_age_seconds(),
        device_trust: trail.device_trust(),
        verification: verified.as_facts(),
    };
    let mut data = Vec::new();
    let mut policies = Vec::new();
    for (model, upstream) in state.models() {
        let resource = Resource::Model {
            name: model,
            upstream: &upstream.facts,
        };
        let decision = state
            .policy
            .authorize(&principal, Action::InvokeModel, &resource, &facts);
        if decision.allowed {
            data.push(serde_json::json!({
                "id": model,
                "object": "model",
                "owned_by": upstream.config.name,
                "created": 0,
            }));
            for p in decision.policies {
                if !policies.contains(&p) {
                    policies.push(p);
                }
            }
        }
    }
    let view = RequestView {
        info,
        method,
        path,
        user_agent: None,
    };
    let event = authorization_decision(
        &view,
        &principal,
        "list_models",
        serde_json::json!({"type": "Model", "uid": "*", "data": {"listed": data.len()}}),
        true,
        &policies,
        "gateway",
    );
    if let Err(refusal) = crate::events::record_decision(&state.sink, event).await {
        trail.update(|t| t.error = Some(refusal.code));
        return error_response(&refusal, Some(&info.id));
    }
    trail.update(|t| t.policies = policies);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"object": "list", "data": data}),
    )
}

#[cfg(test)]
mod tests {
    use super::model_of;

    #[test]
    fn model_is_read_and_ambiguous_bodies_refused() {
        assert_eq!(model_of(br#"{"model":"m","messages":[]}"#).unwrap(), "m");
        assert!(model_of(br#"{"model":"a","model":"b"}"#)
            .unwrap_err()
            .contains("duplicate"));
        assert!(model_of(br#"[1]"#).is_err());
        assert!(model_of(br#"{"model":7}"#).is_err());
        assert!(model_of(b"{oops").is_err());
        // Duplicates deeper down do not affect routing and are left to the upstream.
        assert_eq!(
            model_of(br#"{"model":"m","x":{"a":1,"a":2}}"#).unwrap(),
            "m"
        );
    }
}
