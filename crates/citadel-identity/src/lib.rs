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
//! Bearer JWTs of external identity providers are verified against their
//! JWKS, with claims mapped to roles.
//!
//! Devices (enrolled with a one-time token and a CSR, posture reports
//! signed with the device key) and workloads (SPIFFE X.509 identities)
//! are known by their certificates from the internal CA.
//!
//! Passkeys (WebAuthn) sign people in on their own.
//!
//! People may also sign in in the browser through an OIDC provider
//! (authorization code with PKCE).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod api_key;
mod claims;
pub mod jwt;
pub mod machines;
pub mod mfa;
pub mod oidc;
pub mod passkeys;
pub mod password;
mod registry;
pub mod risk;
pub mod session;
pub mod signin;
pub mod throttle;

pub use accounts::{
    all_role_names, create_api_key, create_role, create_user, set_password, AccountError,
    KeyRequest,
};
pub use api_key::{KeyHasher, NewApiKey, KEY_PREFIX};
pub use mfa::{FactorCheck, Factors, TotpConfig, TotpEnrollment};
pub use password::{PasswordConfig, PasswordProblem, Passwords};
pub use registry::{AuthFailure, KeyRegistry, VerifiedKey};
pub use session::{LiveSession, NewSession, SessionConfig, SessionFailure, Sessions};
pub use signin::{SignIn, SignInFailure, SignInRequest, SignInResult};
pub use throttle::{LockoutConfig, Throttle};

/// `[identity]`: how people sign in.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `[identity.password]`.
    pub password: PasswordConfig,
    /// `[identity.totp]`.
    pub totp: TotpConfig,
    /// `[identity.sessions]`.
    pub sessions: SessionConfig,
    /// `[identity.lockout]`.
    pub lockout: LockoutConfig,
    /// `[[identity.jwt]]`: identity providers whose bearer JWTs are accepted.
    pub jwt: Vec<jwt::JwtIssuerConfig>,
    /// `[identity.devices]`: device enrolment, certificates and posture.
    pub devices: machines::DeviceConfig,
    /// `[identity.workloads]`: SPIFFE workload identities.
    pub workloads: machines::WorkloadConfig,
    /// `[identity.verify]`: continuous verification (GeoIP, risk scores).
    pub verify: risk::VerifyConfig,
    /// `[identity.webauthn]`: the relying party of passkeys.
    pub webauthn: passkeys::WebauthnConfig,
    /// `[[identity.oidc]]`: providers people sign in with in the browser.
    pub oidc: Vec<oidc::OidcProviderConfig>,
}

impl IdentityConfig {
    /// Checks every section (the deny-list files are read when sign-in is built).
    pub fn validate(&self) -> Result<(), String> {
        self.password.validate()?;
        self.totp.validate()?;
        self.sessions.validate()?;
        self.lockout.validate()?;
        self.devices.validate()?;
        self.workloads.validate()?;
        self.verify.validate()?;
        self.webauthn.build()?;
        for provider in &self.oidc {
            provider.validate()?;
        }
        jwt::JwtVerifier::new(&self.jwt).map(|_| ())
    }
}

impl SignIn {
    /// Sign-in as configured: `keys` is the key hierarchy (TOTP seeds are
    /// sealed under its `authenticator` purpose), `hasher` the
    /// installation's keyed hash (recovery codes).
    pub async fn from_config(
        store: citadel_store::Store,
        config: &IdentityConfig,
        keys: std::sync::Arc<citadel_crypto::Keyring>,
        hasher: KeyHasher,
    ) -> Result<Self, String> {
        let passwords = Passwords::new(config.password.clone())?;
        let factors = std::sync::Arc::new(Factors::new(
            store.clone(),
            keys,
            hasher,
            config.totp.clone(),
        )?);
        let sessions = Sessions::new(store.clone(), config.sessions.clone()).await?;
        let throttle = Throttle::new(store.clone(), config.lockout.clone())?;
        let jwt = std::sync::Arc::new(jwt::JwtVerifier::new(&config.jwt)?);
        let passkeys =
            std::sync::Arc::new(passkeys::Passkeys::new(store.clone(), &config.webauthn)?);
        let oidc = std::sync::Arc::new(oidc::OidcLogins::new(store.clone(), &config.oidc)?);
        let mut signin = Self::new(store, passwords, factors, sessions, throttle, jwt, passkeys);
        signin.oidc = oidc;
        Ok(signin)
    }
}
