//! Layer 9, record: one HTTP Activity event per request with its outcome
//! (status, upstream, model, bytes, duration, tokens), and the request
//! metrics. It wraps the whole stack (outermost) so it sees every outcome,
//! including refusals by intake; the event is made when the response body
//! has finished streaming (or the client went away), and is queued rather
//! than awaited because the response has already been sent.
//!
//! The decision events that gate a response (authentication and
//! authorization) are recorded durably by those layers before the response
//! is released; this one completes the story.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::context::{info_and_trail, RequestInfo, Trail};
use crate::events::{http_outcome, RequestView};
use crate::metrics::RequestLabels;
use crate::stage::{call_next, Next, StageLayer};
use crate::state::GatewayState;
use crate::{BoxError, GatewayBody, GatewayRequest, GatewayResponse};

/// The record layer.
pub fn layer(state: Arc<GatewayState>) -> StageLayer {
    StageLayer::new("record", state, |s, r, n| Box::pin(record(s, r, n)))
}

async fn record(state: Arc<GatewayState>, mut req: GatewayRequest, next: Next) -> GatewayResponse {
    let trail = Trail::default();
    req.extensions_mut().insert(trail.clone());
    let (info, _) = info_and_trail(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let mut response = call_next(next, req).await;

    let t = trail.snapshot();
    let decision = t.error.map_or("allowed", |c| c.as_str());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: t.route.clone().unwrap_or_else(|| "other".into()),
            upstream: t.upstream.clone().unwrap_or_default(),
            decision: decision.to_owned(),
        })
        .inc();
    let total = info.started.elapsed().as_secs_f64();
    state
        .metrics
        .gateway_added_seconds
        .observe((total - t.upstream_seconds.unwrap_or(0.0)).max(0.0));
    if let Ok(v) = HeaderValue::from_str(&info.id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let (parts, mut body) = response.into_parts();
    if method == http::Method::HEAD {
        // A HEAD answer has no body; HTTP/2 treats one as a protocol error.
        body = crate::full(bytes::Bytes::new());
    }
    let body = RecordBody {
        inner: body,
        bytes: 0,
        finished: false,
        outcome: Some(Outcome {
            state,
            info,
            trail,
            method,
            path,
            user_agent,
            status,
        }),
    };
    http::Response::from_parts(parts, body.boxed_unsync())
}

struct Outcome {
    state: Arc<GatewayState>,
    info: RequestInfo,
    trail: Trail,
    method: http::Method,
    path: String,
    user_agent: Option<String>,
    status: u16,
}

impl Outcome {
    fn emit(self, bytes: u64, complete: bool) {
        let t = self.trail.snapshot();
        if t.error == Some(citadel_core::ErrorCode::Overloaded) {
            self.state.sink.count_shed();
            return;
        }
        let view = RequestView {
            info: &self.info,
            method: &self.method,
            path: &self.path,
            user_agent: self.user_agent.as_deref(),
        };
        let mut event = http_outcome(
            &view,
            t.principal.as_deref(),
            self.status,
            t.error.map(|c| c.as_str()),
            t.upstream.as_deref(),
            t.model.as_deref(),
            bytes,
            self.info.started.elapsed().as_secs_f64() * 1000.0,
            t.tokens,
        );
        if !complete {
            event.body["unmapped"]["response_incomplete"] = serde_json::Value::Bool(true);
        }
        if let Some(privacy) = &t.privacy {
            // Types and counts only: data minimization.
            event.body["unmapped"]["privacy"] = serde_json::json!(privacy);
        }
        if let Err(e) = self.state.sink.record_queued(event) {
            tracing::error!(request_id = %self.info.id, error = %e, "could not queue the request's outcome event");
        }
    }
}

struct RecordBody {
    inner: GatewayBody,
    bytes: u64,
    finished: bool,
    outcome: Option<Outcome>,
}

impl Body for RecordBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                this.finished = true;
                if let Some(o) = this.outcome.take() {
                    o.emit(this.bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordBody {
    fn drop(&mut self) {
        if let Some(o) = self.outcome.take() {
            // hyper may drop a body it has fully sent without polling to the
            // end (known length); that is complete too.
            let complete = self.finished || self.inner.is_end_stream();
            // Drop the inner body first so the layers below finish their
            // accounting (token usage) before the outcome is written.
            drop(std::mem::replace(
                &mut self.inner,
                crate::full(Bytes::new()),
            ));
            o.emit(self.bytes, complete);
        }
    }
}
