//! The plumbing shared by every layer: each security control is a
//! `tower::Layer` whose work is one async function of the shared state, the
//! request and the rest of the stack.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneService;
use tower::{Layer, Service};

use crate::state::GatewayState;
use crate::{GatewayRequest, GatewayResponse};

/// The rest of the stack below a layer.
pub type Next = BoxCloneService<GatewayRequest, GatewayResponse, Infallible>;
/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = GatewayResponse> + Send>>;
/// The function a layer runs.
pub type StageFn = fn(Arc<GatewayState>, GatewayRequest, Next) -> ResponseFuture;

/// A `tower::Layer` running one stage function.
#[derive(Clone)]
pub struct StageLayer {
    name: &'static str,
    state: Arc<GatewayState>,
    run: StageFn,
}

impl StageLayer {
    /// A layer named `name` that runs `run`.
    pub(crate) fn new(name: &'static str, state: Arc<GatewayState>, run: StageFn) -> Self {
        Self { name, state, run }
    }
}

impl std::fmt::Debug for StageLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StageLayer").field(&self.name).finish()
    }
}

impl<S> Layer<S> for StageLayer
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Service = Stage;

    fn layer(&self, inner: S) -> Stage {
        Stage {
            inner: BoxCloneService::new(inner),
            state: self.state.clone(),
            run: self.run,
        }
    }
}

/// The service a [`StageLayer`] makes.
#[derive(Clone)]
pub struct Stage {
    inner: Next,
    state: Arc<GatewayState>,
    run: StageFn,
}

impl Service<GatewayRequest> for Stage {
    type Response = GatewayResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every stage and the proxy are always ready; back-pressure is the
        // connection limit at accept.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let fut = (self.run)(self.state.clone(), req, self.inner.clone());
        Box::pin(async move { Ok(fut.await) })
    }
}

/// Calls the rest of the stack.
pub(crate) async fn call_next(mut next: Next, req: GatewayRequest) -> GatewayResponse {
    match next.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
