//! The data plane: a tower `Service` stack in front of a streaming reverse
//! proxy. Each security control is one `tower::Layer`, one file, in the
//! order of `DESIGN.md` — cheap refusals first:
//!
//! | order | file | refuses with |
//! |---|---|---|
//! | — | `server.rs` | connection limit, TLS, header deadline |
//! | 9 (outermost, so it sees every outcome) | `record.rs` | — |
//! | 1 | `intake.rs` | 431, 413, 503 `audit_unavailable` |
//! | 3a | `devices.rs` (`/devices/*`: enrolment, posture) | 400, 401, 403 |
//! | 3a | `signin.rs` (`/auth/*`: sign-in, sign-out, step-up) | 401, 403, 429 `login_locked` |
//! | 3 | `authenticate.rs` (API key or session cookie) | 401 `invalid_credentials`, 403 `csrf_failed` |
//! | 4 | `verify.rs` (risk, network change, impossible travel → policy context) | — (policy decides) |
//! | — | `route.rs` | 400 `invalid_json`, 404 `unknown_model`, 408, 413 |
//! | 5 | `authorize.rs` | 403 `forbidden` |
//! | 5b | `ratelimit.rs` | 429 `rate_limited` |
//! | 6a | `consent.rs` (routes with a purpose: the data subject's consent) | 400 `subject_required`, 403 `consent_required` |
//! | 6 | `inspect.rs` (PII, secrets, data class → `send_data` policy; redaction) | 400, 403 `data_class_forbidden` |
//! | 8 | `inspect_response.rs` (answers redacted, also streamed; pseudonyms given back) | 502 / ends the stream: `answer_not_inspectable` |
//! | 7 | `proxy.rs` | 502, 504 |
//! | 7b | `revocation.rs` (streamed bodies) | ends the stream: `access_revoked` |
//!
//! Non-features (yet): shield (block lists); request-attack and prompt
//! injection signatures; inspection of `http` routes' bodies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authenticate;
pub mod authorize;
mod body;
pub mod capture;
pub mod config;
pub mod consent;
pub mod context;
pub mod devices;
pub mod events;
pub mod inspect;
mod inspect_response;
pub mod intake;
pub mod metrics;
pub mod oidc;
pub mod passkeys;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod revocation;
pub mod route;
pub mod server;
pub mod signin;
pub mod stage;
pub mod state;
pub mod upstream;
pub mod verify;

use std::sync::Arc;

pub use body::{
    error_response, full, json_response, BoxError, GatewayBody, GatewayRequest, GatewayResponse,
};
pub use state::{BuildError, GatewayState};

/// The whole data-plane stack as one service.
pub fn gateway_service(state: Arc<GatewayState>) -> server::ListenerService {
    let stack = tower::ServiceBuilder::new()
        .layer(record::layer(state.clone()))
        .layer(intake::layer(state.clone()))
        .layer(devices::layer(state.clone()))
        .layer(signin::layer(state.clone()))
        .layer(authenticate::layer(state.clone()))
        .layer(verify::layer(state.clone()))
        .layer(route::layer(state.clone()))
        .layer(authorize::layer(state.clone()))
        .layer(ratelimit::layer(state.clone()))
        .layer(consent::layer(state.clone()))
        .layer(inspect::layer(state.clone()))
        .service(proxy::Proxy::new(state));
    tower::util::BoxCloneService::new(stack)
}
