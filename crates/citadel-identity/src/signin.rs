//! Signing a person in: throttle, password, second factor, the policy's
//! say on whether a second factor is required, then a session. Shared by
//! the gateway's `POST /auth/login` and its step-up.
//!
//! Every wrong credential (name, password, second factor) is counted by the
//! throttle; refusals that are not guesses (a lock, a missing factor, a
//! disabled user, policy, a busy hasher) are not. Every failure that is
//! about the credentials looks the same to the client; the precise reason
//! goes to the event.

use std::net::IpAddr;
use std::sync::Arc;

use citadel_core::clock::now_ms;
use citadel_store::{Store, UserRecord};
use zeroize::Zeroizing;

use crate::mfa::{FactorCheck, Factors};
use crate::password::{HashError, Passwords};
use crate::session::{NewSession, SessionStart, Sessions};
use crate::throttle::Throttle;

/// A sign-in attempt, as the client sent it.
pub struct SignInRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: Zeroizing<String>,
    /// A TOTP code, if given.
    pub totp: Option<Zeroizing<String>>,
    /// A recovery code, if given (instead of a TOTP code).
    pub recovery_code: Option<Zeroizing<String>>,
    /// Client address.
    pub source_ip: IpAddr,
    /// Client's user agent.
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest")
            .field("username", &self.username)
            .field("source_ip", &self.source_ip)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFailure {
    /// The name is not a possible user name.
    MalformedName,
    /// Locked by the throttle.
    Locked,
    /// No such user.
    UnknownUser,
    /// The user has no password.
    NoPassword,
    /// Wrong password.
    WrongPassword,
    /// The user is disabled.
    UserDisabled,
    /// Policy requires a second factor and none was given.
    MfaRequired,
    /// Policy requires a second factor the user has not enrolled.
    MfaNotEnrolled,
    /// The second factor was refused.
    Factor(FactorCheck),
    /// Policy does not let this user sign in at all.
    PolicyDenied,
    /// Too many password checks at once.
    Busy,
}

impl SignInFailure {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedName => "malformed_username",
            Self::Locked => "locked",
            Self::UnknownUser => "unknown_user",
            Self::NoPassword => "no_password",
            Self::WrongPassword => "wrong_password",
            Self::UserDisabled => "user_disabled",
            Self::MfaRequired => "mfa_required",
            Self::MfaNotEnrolled => "mfa_not_enrolled",
            Self::Factor(check) => check.as_str(),
            Self::PolicyDenied => "policy_denied",
            Self::Busy => "busy",
        }
    }
}

/// What happened, for the response and the event.
#[derive(Debug)]
pub struct SignInResult {
    /// The session, or why not.
    pub outcome: Result<NewSession, SignInFailure>,
    /// The user, once known (a refusal for a wrong password names them).
    pub user: Option<UserRecord>,
    /// Methods proved.
    pub methods: Vec<String>,
    /// The lock in force after this attempt, Unix ms.
    pub locked_until: Option<i64>,
}

/// Whether policy lets `user` sign in with (`true`) or without a second
/// factor proved.
pub trait SignInPolicy {
    /// The answer for `user`, with `mfa` proved or not.
    fn permits(&self, user: &UserRecord, mfa: bool) -> bool;
}

impl<F: Fn(&UserRecord, bool) -> bool> SignInPolicy for F {
    fn permits(&self, user: &UserRecord, mfa: bool) -> bool {
        self(user, mfa)
    }
}

/// Everything sign-in needs.
#[derive(Debug, Clone)]
pub struct SignIn {
    store: Store,
    /// Password policy and hashing.
    pub passwords: Passwords,
    /// Second factors.
    pub factors: Arc<Factors>,
    /// Sessions.
    pub sessions: Arc<Sessions>,
    /// Failure counting.
    pub throttle: Throttle,
    /// Bearer JWTs of external identity providers.
    pub jwt: Arc<crate::jwt::JwtVerifier>,
    /// WebAuthn passkeys.
    pub passkeys: Arc<crate::passkeys::Passkeys>,
    /// OIDC browser sign-in.
    pub oidc: Arc<crate::oidc::OidcLogins>,
}

fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

impl SignIn {
    /// Assembles sign-in.
    pub fn new(
        store: Store,
        passwords: Passwords,
        factors: Arc<Factors>,
        sessions: Arc<Sessions>,
        throttle: Throttle,
        jwt: Arc<crate::jwt::JwtVerifier>,
        passkeys: Arc<crate::passkeys::Passkeys>,
    ) -> Self {
        Self {
            oidc: Arc::new(
                crate::oidc::OidcLogins::new(store.clone(), &[]).expect("no providers to check"),
            ),
            store,
            passwords,
            factors,
            sessions,
            throttle,
            jwt,
            passkeys,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tries a sign-in. `Err` only when the store fails (fail closed: no
    /// session is made).
    pub async fn sign_in(
        &self,
        request: SignInRequest,
        policy: &(dyn SignInPolicy + Sync),
    ) -> citadel_store::Result<SignInResult> {
        let now = now_ms();
        let ip = request.source_ip;
        let mut result = SignInResult {
            outcome: Err(SignInFailure::MalformedName),
            user: None,
            methods: Vec::new(),
            locked_until: None,
        };
        if !plausible_name(&request.username) {
            result.locked_until = self.throttle.failed("", ip, now).await?;
            return Ok(result);
        }
        let name = request.username.as_str();
        if let Some(until) = self.throttle.locked_until(name, ip, now).await? {
            result.outcome = Err(SignInFailure::Locked);
            result.locked_until = Some(until);
            return Ok(result);
        }
        let credentials = match self.store.find_user_credentials(name).await {
            // By name only: an id would have throttle counters of its own.
            Ok(c) if c.user.name == name => Some(c),
            Ok(_) => None,
            Err(citadel_store::StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let stored_hash = credentials.as_ref().and_then(|c| c.password_hash.clone());
        let matched = match self
            .passwords
            .verify(request.password.clone(), stored_hash.clone())
            .await
        {
            Ok(m) => m,
            Err(HashError::Busy) => {
                result.outcome = Err(SignInFailure::Busy);
                return Ok(result);
            }
            Err(e) => {
                tracing::error!(error = %e, user = name, "password check failed");
                false
            }
        };
        let Some(credentials) = credentials else {
            result.outcome = Err(SignInFailure::UnknownUser);
            result.locked_until = self.throttle.failed(name, ip, now).await?;
            return Ok(result);
        };
        let user = credentials.user;
        result.user = Some(user.clone());
        if !matched {
            result.outcome = Err(if stored_hash.is_none() {
                SignInFailure::NoPassword
            } else {
                SignInFailure::WrongPassword
            });
            result.locked_until = self.throttle.failed(name, ip, now).await?;
            return Ok(result);
        }
        result.methods.push("pwd".into());
        if user.disabled {
            result.outcome = Err(SignInFailure::UserDisabled);
            return Ok(result);
        }
        // The second factor: checked whenever one is given or enrolled.
        let mut mfa_at = None;
        let has_totp = self
            .factors
            .has_totp(&user.id)
            .await
            .map_err(mfa_store_error)?;
        let check = if let Some(code) = &request.totp {
            Some((
                "otp",
                self.factors
                    .check_totp(&user.id, code, now)
                    .await
                    .map_err(mfa_store_error)?,
            ))
        } else if let Some(code) = &request.recovery_code {
            Some((
                "recovery",
                self.factors
                    .check_recovery_code(&user.id, code, now)
                    .await
                    .map_err(mfa_store_error)?,
            ))
        } else {
            None
        };
        match check {
            Some((method, FactorCheck::Accepted)) => {
                result.methods.push(method.into());
                mfa_at = Some(now);
            }
            Some((_, refused)) => {
                result.outcome = Err(SignInFailure::Factor(refused));
                result.locked_until = self.throttle.failed(name, ip, now).await?;
                return Ok(result);
            }
            None if has_totp => {
                result.outcome = Err(SignInFailure::MfaRequired);
                return Ok(result);
            }
            None => {}
        }
        let mfa = mfa_at.is_some();
        if !policy.permits(&user, mfa) {
            result.outcome = Err(if !mfa && policy.permits(&user, true) {
                if has_totp {
                    SignInFailure::MfaRequired
                } else {
                    SignInFailure::MfaNotEnrolled
                }
            } else {
                SignInFailure::PolicyDenied
            });
            return Ok(result);
        }
        if let Some(hash) = &stored_hash {
            if self.passwords.needs_rehash(hash) {
                match self.passwords.hash(request.password.clone()).await {
                    Ok(new) => {
                        // Not through set_password_hash: that would end
                        // the user's other sessions.
                        self.store
                            .upgrade_password_hash(&user.id, hash, &new)
                            .await?;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not re-hash a password"),
                }
            }
        }
        self.throttle.succeeded(name, ip).await?;
        let session = self
            .sessions
            .create(
                SessionStart {
                    user: &user,
                    methods: result.methods.clone(),
                    mfa_at,
                    source_ip: ip.to_string(),
                    user_agent: request.user_agent.clone(),
                },
                now,
            )
            .await?;
        result.outcome = Ok(session);
        Ok(result)
    }
}

fn mfa_store_error(e: crate::mfa::MfaError) -> citadel_store::StoreError {
    match e {
        crate::mfa::MfaError::Store(s) => s,
        other => {
            tracing::error!(error = %other, "second factor could not be checked");
            citadel_store::StoreError::Corrupt(other.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
