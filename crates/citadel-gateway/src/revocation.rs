//! Mid-stream revocation: a streamed answer lasts no longer than the access
//! that started it. A long generation must not outlive a sign-out, a
//! revoked key or a disabled user, so every streamed response body (SSE, or
//! any body of unknown length) re-checks its credential every
//! [`CHECK_EVERY`] and, once it no longer holds, ends the stream: an SSE
//! answer gets a last `event: error` naming `access_revoked`, anything else
//! is cut off with an error (the client sees a truncated body, never a
//! complete-looking one).
//!
//! The device the request came from counts too: revoking it ends the
//! streams it started.
//!
//! The checks are cheap: an API key is looked up in the in-memory snapshot
//! (refreshed within 100 ms of any revocation anywhere); a session is read
//! from the store only when the session generation moved (a revocation
//! here, or the enforcement version moving), and its absolute end is
//! checked locally. With the 100 ms poll and the 250 ms check, a revocation
//! reaches a stream in well under a second.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use citadel_core::clock::now_ms;
use citadel_core::{EventClass, Outcome, SecurityEvent};
use http_body::{Body, Frame};
use serde_json::json;

use crate::context::{RequestInfo, Trail};
use crate::state::GatewayState;
use crate::{BoxError, GatewayBody};

/// How often a streaming body re-checks its credential.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The credential a request was let in with, kept for the life of its
/// response (set by the authenticate layer).
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API key, by id.
    ApiKey(String),
    /// A workload certificate, by SPIFFE ID.
    Workload(String),
    /// A bearer JWT, good until its `exp` (Unix ms).
    Jwt {
        /// When it expires.
        expires_at: i64,
    },
    /// A browser session, by id, with its absolute end (Unix ms).
    Session {
        /// Session id.
        id: String,
        /// When it ends regardless of activity.
        expires_at: i64,
    },
}

/// The device certificate a request came with (its fingerprint), kept so
/// that revoking the device also ends a streamed answer in progress.
#[derive(Debug, Clone)]
pub struct DeviceRef(pub String);

type Check = Pin<Box<dyn Future<Output = Option<&'static str>> + Send>>;

/// A response body that ends when its credential stops holding.
pub(crate) struct RevocableBody {
    inner: GatewayBody,
    state: Arc<GatewayState>,
    credential: Credential,
    device: Option<DeviceRef>,
    info: RequestInfo,
    trail: Trail,
    sse: bool,
    tick: tokio::time::Interval,
    session_generation: u64,
    pending: Option<Check>,
    /// Set once the stream was ended for a revocation.
    revoked: bool,
}

impl RevocableBody {
    pub(crate) fn new(
        inner: GatewayBody,
        state: Arc<GatewayState>,
        credential: Credential,
        device: Option<DeviceRef>,
        info: RequestInfo,
        trail: Trail,
        sse: bool,
    ) -> Self {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let session_generation = state.signin.sessions.generation();
        Self {
            inner,
            state,
            credential,
            device,
            info,
            trail,
            sse,
            tick,
            session_generation,
            pending: None,
            revoked: false,
        }
    }

    /// Starts a check if one is due; `Some(reason)` when the credential
    /// no longer holds.
    fn poll_check(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        if self.pending.is_none() && self.tick.poll_tick(cx).is_ready() {
            let now = now_ms();
            if let Some(DeviceRef(fingerprint)) = &self.device {
                if let Err(failure) = self.state.machines.device_still_valid(fingerprint) {
                    return Some(failure.as_str());
                }
            }
            match &self.credential {
                Credential::ApiKey(id) => {
                    if let Err(failure) = self.state.registry.still_valid(id, now) {
                        return Some(failure.as_str());
                    }
                }
                Credential::Workload(spiffe_id) => {
                    if let Err(failure) = self.state.machines.workload_still_valid(spiffe_id) {
                        return Some(failure.as_str());
                    }
                }
                Credential::Jwt { expires_at } => {
                    if now >= *expires_at {
                        return Some("expired_jwt");
                    }
                }
                Credential::Session { id, expires_at } => {
                    if now >= *expires_at {
                        return Some("expired_session");
                    }
                    let generation = self.state.signin.sessions.generation();
                    if generation != self.session_generation {
                        self.session_generation = generation;
                        let sessions = self.state.signin.sessions.clone();
                        let id = id.clone();
                        self.pending = Some(Box::pin(async move {
                            sessions
                                .still_valid(&id, now)
                                .await
                                .err()
                                .map(|f| f.as_str())
                        }));
                    }
                }
            }
            // Register the next tick's wake-up.
            let _ = self.tick.poll_tick(cx);
        }
        if let Some(check) = self.pending.as_mut() {
            if let Poll::Ready(result) = check.as_mut().poll(cx) {
                self.pending = None;
                return result;
            }
        }
        None
    }

    fn record(&self, reason: &'static str) {
        let principal = self.trail.principal();
        let mut b = SecurityEvent::builder(
            EventClass::Authentication,
            99,
            "Access Revoked",
            Outcome::Failure,
        )
        .request_id(&self.info.id)
        .field("status_detail", json!(reason))
        .field(
            "message",
            json!("a streamed answer was cut off because its credential no longer holds"),
        )
        .field("service", json!({"name": "gateway"}))
        .field(
            "src_endpoint",
            json!({"ip": self.info.client.ip().to_string(), "port": self.info.client.port()}),
        )
        .disposition(false);
        if let Some(p) = &principal {
            b = b.actor(p);
        }
        let event = b.build();
        let sink = self.state.sink.clone();
        tracing::info!(request_id = %self.info.id, reason, "streamed answer cut off: access revoked");
        tokio::spawn(async move {
            if let Err(e) = sink.record(event).await {
                tracing::error!(error = %e, "could not record a mid-stream revocation");
            }
        });
    }
}

/// The last SSE event of a revoked stream.
fn revoked_event(request_id: &str) -> Bytes {
    crate::body::sse_error_event(
        citadel_core::ErrorCode::AccessRevoked,
        "your access was revoked while this answer was streaming; sign in again",
        request_id,
    )
}

impl Body for RevocableBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.revoked {
            return Poll::Ready(None);
        }
        if let Some(reason) = this.poll_check(cx) {
            this.record(reason);
            this.trail
                .update(|t| t.error = Some(citadel_core::ErrorCode::AccessRevoked));
            this.revoked = true;
            if this.sse {
                return Poll::Ready(Some(Ok(Frame::data(revoked_event(&this.info.id)))));
            }
            return Poll::Ready(Some(Err(
                "access revoked while the answer was streaming".into()
            )));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.revoked || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
