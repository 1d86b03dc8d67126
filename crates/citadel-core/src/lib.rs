//! The shared words of Citadel: who acts ([`Principal`]), what happened
//! ([`SecurityEvent`], OCSF-shaped), how a refusal is told ([`ErrorCode`],
//! [`ApiError`]) and what time it is ([`clock`]).
//!
//! Non-features: this crate does no I/O, holds no state and knows nothing of
//! HTTP servers, storage or policy engines; every other room depends on it and
//! it depends on none of them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod error;
pub mod event;
pub mod merkle;
pub mod principal;

pub use error::{ApiError, ErrorCode};
pub use event::{EventClass, Outcome, SecurityEvent};
pub use principal::{Principal, PrincipalKind, BUILTIN_ROLES};
