//! Who is calling: API keys (issued, verified, revoked), users and roles.
//!
//! API-key verification is on the request path and must take microseconds,
//! so secrets are stored only as an HMAC-SHA256 under an installation key
//! (a keyed hash, not a password hash: the secrets are 256-bit random, so
//! there is nothing for a slow hash to protect) and verified against an
//! in-memory snapshot that follows the store's enforcement version.
//!
//! Non-features (yet): passwords, MFA, OIDC, device and workload identity.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod api_key;
mod registry;

pub use accounts::{create_api_key, create_role, create_user, AccountError, KeyRequest};
pub use api_key::{KeyHasher, NewApiKey, KEY_PREFIX};
pub use registry::{AuthFailure, KeyRegistry, VerifiedKey};
