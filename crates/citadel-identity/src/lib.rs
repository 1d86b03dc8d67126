//! Who is calling: API keys (issued, verified, revoked), users and roles.
//!
//! API-key verification is on the request path and must take microseconds,
//! so secrets are stored only as an HMAC-SHA256 under an installation key
//! (a keyed hash, not a password hash: the secrets are 256-bit random, so
//! there is nothing for a slow hash to protect) and verified against an
//! in-memory snapshot that follows the store's enforcement version.
//!
//! People sign in with a password (Argon2id, checked against a policy and
//! a deny list of common passwords), a second factor (TOTP or a recovery
//! code) and get a session cookie; sign-in failures are throttled per
//! account and address.
//!
//! Non-features (yet): WebAuthn, OIDC, device and workload identity.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod api_key;
pub mod mfa;
pub mod password;
mod registry;
pub mod session;
pub mod signin;
pub mod throttle;

pub use accounts::{create_api_key, create_role, create_user, AccountError, KeyRequest};
pub use api_key::{KeyHasher, NewApiKey, KEY_PREFIX};
pub use mfa::{FactorCheck, Factors, TotpConfig, TotpEnrollment};
pub use password::{PasswordConfig, PasswordProblem, Passwords};
pub use registry::{AuthFailure, KeyRegistry, VerifiedKey};
pub use session::{LiveSession, NewSession, SessionConfig, SessionFailure, Sessions};
pub use signin::{SignIn, SignInFailure, SignInRequest, SignInResult};
pub use throttle::{LockoutConfig, Throttle};
