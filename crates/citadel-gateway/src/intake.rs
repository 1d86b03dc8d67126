//! Layer 1, intake: the cheapest refusals, before any credential is looked
//! at. Refuses when security events cannot be recorded (503
//! `audit_unavailable` — Citadel never runs unrecorded), when the headers
//! are too large (431), when a declared body is too large (413), and when
//! the path is ambiguous (400: dot segments, empty segments, encoded
//! separators — a path that routing, policy and the upstream could read
//! differently) or too long (414); caps the body a client may stream.
//!
//! The connection limit, TLS, header-read timeout and request id are applied
//! earlier still, by the server as it accepts (see `server.rs`).

use std::sync::Arc;

use citadel_core::{ApiError, ErrorCode};
use http_body_util::{BodyExt, Limited};

use crate::context::info_and_trail;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{error_response, GatewayRequest, GatewayResponse};

/// The intake layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("intake", state, |s, r, n| Box::pin(intake(s, r, n)))
}

/// Longest request target (path and query) accepted.
pub const MAX_TARGET_BYTES: usize = 8192;

/// Why a path is refused, if it is: routing, Cedar's `context.path` and the
/// upstream all see the raw path, so it must mean one thing to all of them.
pub fn ambiguous_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the path must start with /");
    }
    if path.contains('\\') {
        return Some("the path contains a backslash");
    }
    if path.contains(';') {
        // `/a/..;/b` is `/b` to Tomcat and Spring; matrix parameters are rare
        // enough in model and data APIs to refuse outright.
        return Some("the path contains `;`");
    }
    let lower = path.to_ascii_lowercase();
    for encoded in ["%2e", "%2f", "%5c", "%00", "%25", "%3b"] {
        if lower.contains(encoded) {
            return Some("the path contains an encoded dot, separator, percent, semicolon or NUL");
        }
    }
    for segment in path[1..].split('/') {
        if segment == "." || segment == ".." {
            return Some("the path contains a dot segment");
        }
    }
    if path[1..].contains("//") || (path.len() > 1 && path[1..].starts_with('/')) {
        return Some("the path contains an empty segment");
    }
    None
}

/// Bytes the headers take on the wire (name, value, `: ` and CRLF).
pub(crate) fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

async fn intake(state: Arc<GatewayState>, req: GatewayRequest, next: Next) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let limits = &state.config.limits;
    let refuse = |code: ErrorCode, message: &str| {
        trail.update(|t| t.error = Some(code));
        error_response(&ApiError::new(code, message), Some(&info.id))
    };
    if !state.sink.is_healthy() {
        return refuse(
            ErrorCode::AuditUnavailable,
            "security events cannot be recorded right now, so requests are refused; try again shortly",
        );
    }
    if !state.sink.has_room()
        && !state
            .sink
            .wait_for_room(std::time::Duration::from_secs(5))
            .await
    {
        // The event writer is behind: admit nothing new until it catches up,
        // so every admitted request's events are kept.
        let mut e = ApiError::new(
            ErrorCode::Overloaded,
            "the gateway is at capacity; retry after the number of seconds in Retry-After",
        );
        e.retry_after = Some(1);
        trail.update(|t| t.error = Some(ErrorCode::Overloaded));
        return error_response(&e, Some(&info.id));
    }
    if header_bytes(req.headers()) > limits.max_header_bytes {
        return refuse(
            ErrorCode::HeadersTooLarge,
            &format!("request headers exceed {} bytes", limits.max_header_bytes),
        );
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_TARGET_BYTES {
        return refuse(
            ErrorCode::UriTooLong,
            &format!("the request target exceeds {MAX_TARGET_BYTES} bytes"),
        );
    }
    if let Some(reason) = ambiguous_path(req.uri().path()) {
        return refuse(ErrorCode::InvalidRequest, reason);
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return refuse(
            ErrorCode::PayloadTooLarge,
            &format!("request body exceeds {} bytes", limits.max_body_bytes),
        );
    }
    let max = limits.max_body_bytes;
    let req = req.map(|body| Limited::new(body, max).boxed_unsync());
    call_next(next, req).await
}

#[cfg(test)]
mod tests {
    use super::ambiguous_path;

    #[test]
    fn ambiguous_paths_are_refused_and_plain_ones_pass() {
        for ok in [
            "/",
            "/v1/chat/completions",
            "/data-api/tables/7",
            "/data-api/a.b/c..d",
            "/x/%20y",
        ] {
            assert_eq!(ambiguous_path(ok), None, "{ok}");
        }
        for bad in [
            "/data-api/public/../admin",
            "/data-api/..",
            "/data-api/./x",
            "/data-api/%2e%2e/x",
            "/data-api/%2E%2e/x",
            "/data-api%2fadmin",
            "/data-api/a%5cb",
            "/data-api//x",
            "//data-api/x",
            "/data-api/a\\b",
            "/data-api/public/..;/admin",
            "/data-api/%252e%252e/admin",
            "/data-api/x%3b",
            "relative",
        ] {
            assert!(ambiguous_path(bad).is_some(), "{bad}");
        }
    }
}
