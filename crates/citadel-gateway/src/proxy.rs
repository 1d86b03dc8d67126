//! Layer 7, proxy: forwards to the upstream and streams the answer back
//! without buffering it (an SSE answer reaches the client event by event).
//! Refuses with 502 `upstream_unavailable` when the upstream cannot be
//! reached and 504 `upstream_timeout` when it does not answer in time.
//!
//! Hop-by-hop headers are dropped both ways; the client's own credential
//! was removed by authentication and is never forwarded; `X-Forwarded-For`,
//! `Forwarded` and `X-Request-Id` are set by Citadel (client-sent values are
//! replaced: Citadel is the edge, so they cannot be trusted). Token usage is
//! read from the answer as it streams past, for token rate limits and events.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use citadel_core::{clock::now_ms, ApiError, ErrorCode};
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::context::{info_and_trail, Trail};
use crate::ratelimit::RequestBudgets;
use crate::route::Target;
use crate::state::GatewayState;
use crate::upstream::UpstreamError;
use crate::{error_response, BoxError, GatewayBody, GatewayRequest, GatewayResponse};

const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The terminal service: forwards to the routed upstream.
#[derive(Clone, Debug)]
pub struct Proxy {
    state: Arc<GatewayState>,
}

impl Proxy {
    /// The proxy over shared state.
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self { state }
    }
}

impl tower::Service<GatewayRequest> for Proxy {
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(forward(state, req).await) })
    }
}

async fn forward(state: Arc<GatewayState>, mut req: GatewayRequest) -> GatewayResponse {
    let (info, trail) = info_and_trail(&req);
    let Some(target) = req.extensions().get::<Target>().cloned() else {
        trail.update(|t| t.error = Some(ErrorCode::RouteNotFound));
        return error_response(
            &ApiError::new(ErrorCode::RouteNotFound, "no route"),
            Some(&info.id),
        );
    };
    let budgets = req.extensions().get::<RequestBudgets>().cloned();
    let credential = req
        .extensions()
        .get::<crate::revocation::Credential>()
        .cloned();
    let device = req
        .extensions()
        .get::<crate::revocation::DeviceRef>()
        .cloned();
    // The buffered body's memory reservation stays with this call until the
    // upstream has answered: hyper drops request extensions as soon as the
    // head is written, while the body may still be queued.
    let _body_reservation = req
        .extensions_mut()
        .remove::<crate::route::BodyReservation>();
    let upstream = target.upstream().clone();
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let uri = match upstream.target_uri(&path_and_query) {
        Ok(u) => u,
        Err(_) => {
            trail.update(|t| t.error = Some(ErrorCode::InvalidRequest));
            return error_response(
                &ApiError::new(ErrorCode::InvalidRequest, "the path cannot be forwarded"),
                Some(&info.id),
            );
        }
    };
    let original_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    // The data subject's name is for Citadel (consent, capture), not for
    // the model's provider.
    headers.remove(state.privacy.config.subject_header.as_str());
    headers.remove("x-forwarded-for");
    headers.remove("x-forwarded-proto");
    headers.remove("x-forwarded-host");
    headers.remove(header::FORWARDED);
    let client_ip = info.client.ip().to_string();
    let proto = if info.tls { "https" } else { "http" };
    if let Ok(v) = HeaderValue::from_str(&client_ip) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if info.tls { "https" } else { "http" }),
    );
    let forwarded_for = if info.client.is_ipv6() {
        format!("\"[{client_ip}]\"")
    } else {
        client_ip.clone()
    };
    let mut forwarded = format!("for={forwarded_for};proto={proto}");
    if let Some(host) = &original_host {
        if host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
        {
            forwarded.push_str(&format!(";host=\"{host}\""));
            if let Ok(v) = HeaderValue::from_str(host) {
                headers.insert("x-forwarded-host", v);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.id) {
        headers.insert("x-request-id", v);
    }
    if let Ok(host) = HeaderValue::from_str(upstream.authority().as_str()) {
        headers.insert(header::HOST, host);
    }
    if let Some(auth) = upstream.auth_header() {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let outbound = http::Request::from_parts(parts, body);

    let sent = std::time::Instant::now();
    let response = match upstream.send(outbound).await {
        Ok(r) => r,
        Err(e) => {
            let (code, kind, message) = match e {
                UpstreamError::Timeout => (
                    ErrorCode::UpstreamTimeout,
                    "timeout",
                    "the upstream did not answer in time".to_owned(),
                ),
                UpstreamError::Unavailable(detail) => {
                    tracing::warn!(request_id = %info.id, upstream = %upstream.config.name, error = %detail, "upstream unavailable");
                    (
                        ErrorCode::UpstreamUnavailable,
                        "connect",
                        "the upstream could not be reached".to_owned(),
                    )
                }
            };
            state.metrics.upstream_error(&upstream.config.name, kind);
            trail.update(|t| t.error = Some(code));
            return error_response(&ApiError::new(code, message), Some(&info.id));
        }
    };
    let upstream_seconds = sent.elapsed().as_secs_f64();
    state
        .metrics
        .upstream_seconds
        .get_or_create(&crate::metrics::UpstreamLabels {
            upstream: upstream.config.name.clone(),
        })
        .observe(upstream_seconds);
    trail.update(|t| t.upstream_seconds = Some(upstream_seconds));

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let watch_usage = matches!(target, Target::Model { .. }) && (is_sse || is_json);
    // A body that may go on for long (a stream, or no declared length) is
    // watched for revocation of the credential that started it.
    let streaming = is_sse || !parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut body: GatewayBody = body.map_err(BoxError::from).boxed_unsync();
    if watch_usage {
        body = UsageBody {
            inner: body,
            scanner: UsageScanner::new(is_sse),
            state: state.clone(),
            budgets,
            trail: trail.clone(),
            done: false,
        }
        .boxed_unsync();
    }
    if let (true, Some(credential)) = (streaming, credential) {
        body = crate::revocation::RevocableBody::new(
            body, state, credential, device, info, trail, is_sse,
        )
        .boxed_unsync();
    }
    http::Response::from_parts(parts, body)
}

/// Finds the `usage.total_tokens` of an OpenAI-style answer as it streams by:
/// in each SSE `data:` line, or in the whole JSON body (up to 1 MiB).
#[derive(Debug)]
pub(crate) struct UsageScanner {
    sse: bool,
    buffer: Vec<u8>,
    overflow: bool,
    tokens: Option<u64>,
}

const MAX_SCAN: usize = 1 << 20;

fn total_tokens(v: &serde_json::Value) -> Option<u64> {
    let usage = v.get("usage")?;
    usage
        .get("total_tokens")
        .and_then(|t| t.as_u64())
        .or_else(|| {
            let p = usage
                .get("prompt_tokens")
                .and_then(|t| t.as_u64())
                .unwrap_or(0);
            let c = usage
                .get("completion_tokens")
                .and_then(|t| t.as_u64())
                .unwrap_or(0);
            let total = p.saturating_add(c);
            (total > 0).then_some(total)
        })
}

impl UsageScanner {
    pub(crate) fn new(sse: bool) -> Self {
        Self {
            sse,
            buffer: Vec::new(),
            overflow: false,
            tokens: None,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        if !self.sse {
            if self.buffer.len() + chunk.len() > MAX_SCAN {
                self.overflow = true;
                self.buffer = Vec::new();
            } else {
                self.buffer.extend_from_slice(chunk);
            }
            return;
        }
        self.buffer.extend_from_slice(chunk);
        while let Some(nl) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(data) = line.strip_prefix(b"data:") {
                if memchr_usage(data) {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
                        if let Some(t) = total_tokens(&v) {
                            self.tokens = Some(t);
                        }
                    }
                }
            }
        }
        if self.buffer.len() > MAX_SCAN {
            self.buffer.clear();
        }
    }

    pub(crate) fn finish(&mut self) -> Option<u64> {
        if !self.sse && !self.overflow && !self.buffer.is_empty() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.buffer) {
                self.tokens = total_tokens(&v);
            }
            self.buffer.clear();
        }
        self.tokens
    }
}

fn memchr_usage(data: &[u8]) -> bool {
    data.windows(7).any(|w| w == b"\"usage\"")
}

struct UsageBody {
    inner: GatewayBody,
    scanner: UsageScanner,
    state: Arc<GatewayState>,
    budgets: Option<RequestBudgets>,
    trail: Trail,
    done: bool,
}

impl UsageBody {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(tokens) = self.scanner.finish() {
            self.trail.update(|t| t.tokens = Some(tokens));
            if let Some(b) = &self.budgets {
                self.state.limiter.spend_tokens(&b.0, tokens, now_ms());
            }
        }
    }
}

impl Body for UsageBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.scanner.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UsageBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found_in_sse_split_across_chunks() {
        let mut s = UsageScanner::new(true);
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\ndata: [DONE]\n\n";
        for chunk in stream.chunks(9) {
            s.feed(chunk);
        }
        assert_eq!(s.finish(), Some(12));
    }

    #[test]
    fn usage_is_found_in_json_and_missing_usage_is_none() {
        let mut s = UsageScanner::new(false);
        s.feed(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        assert_eq!(s.finish(), Some(7));
        let mut s = UsageScanner::new(false);
        s.feed(b"{\"choices\":[]}");
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
