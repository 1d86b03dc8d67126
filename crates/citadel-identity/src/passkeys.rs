//! WebAuthn passkeys (webauthn-rs): registration by a signed-in person, and
//! sign-in with the passkey alone (a passkey is possession plus user
//! verification, so it counts as multi-factor).
//!
//! Each ceremony's server state (it holds the challenge) is kept in the
//! store between start and finish, so any replica can finish what another
//! started, and is taken once. An assertion for another origin or RP id,
//! with a bad signature, or whose signature counter does not move forward
//! (a cloned authenticator) is refused; the clone case is reported as such
//! so it can be raised as a security event.

use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};
pub use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use citadel_store::{PasskeyRecord, Store, StoreError, UserRecord};
use serde::Deserialize;

/// `[identity.webauthn]`: the relying party passkeys are bound to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The RP id: the domain the gateway is reached at (`localhost` by default).
    pub rp_id: String,
    /// The origin browsers see (`https://<rp_id>[:port]`).
    pub rp_origin: String,
    /// Other origins allowed (e.g. the same host on another port).
    pub extra_origins: Vec<String>,
    /// The name authenticators show.
    pub rp_name: String,
    /// Accept responses from any port of `rp_origin`'s host. Weakens origin
    /// binding (another service on the same host could relay a ceremony);
    /// for development only.
    pub dangerous_allow_any_port: bool,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            rp_id: "localhost".into(),
            rp_origin: "https://localhost:8443".into(),
            extra_origins: Vec::new(),
            rp_name: "Citadel".into(),
            dangerous_allow_any_port: false,
        }
    }
}

impl WebauthnConfig {
    /// The relying party these settings make (checks they agree).
    pub fn build(&self) -> Result<Webauthn, String> {
        let origin =
            Url::parse(&self.rp_origin).map_err(|e| format!("identity.webauthn.rp_origin: {e}"))?;
        let mut builder = WebauthnBuilder::new(&self.rp_id, &origin)
            .map_err(|e| format!("identity.webauthn: rp_id and rp_origin do not agree: {e}"))?
            .rp_name(&self.rp_name)
            .allow_any_port(self.dangerous_allow_any_port);
        for extra in &self.extra_origins {
            let url = Url::parse(extra)
                .map_err(|e| format!("identity.webauthn.extra_origins: {extra}: {e}"))?;
            builder = builder.append_allowed_origin(&url);
        }
        builder
            .build()
            .map_err(|e| format!("identity.webauthn: {e}"))
    }
}

/// How long a ceremony may take.
const CEREMONY_MS: i64 = 5 * 60 * 1000;

/// Why a passkey ceremony was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasskeyFailure {
    /// No such ceremony in progress (unknown, expired, finished, other kind).
    UnknownCeremony,
    /// The user has no passkey.
    NoPasskeys,
    /// The response is for another origin or relying party.
    WrongOrigin,
    /// The signature counter did not move forward: a cloned authenticator.
    ClonedAuthenticator,
    /// The credential is not one of the user's passkeys.
    UnknownCredential,
    /// Anything else the verification refused (signature, challenge, flags).
    Invalid(String),
    /// The passkey holds, but its owner is disabled.
    UserDisabled,
    /// The passkey holds, but policy does not let its owner sign in.
    PolicyDenied,
}

impl PasskeyFailure {
    /// Stable name for events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownCeremony => "unknown_ceremony",
            Self::NoPasskeys => "no_passkeys",
            Self::WrongOrigin => "wrong_origin",
            Self::ClonedAuthenticator => "cloned_authenticator",
            Self::UnknownCredential => "unknown_credential",
            Self::Invalid(_) => "invalid_webauthn_response",
            Self::UserDisabled => "user_disabled",
            Self::PolicyDenied => "policy_denied",
        }
    }

    /// Whether the failure is a wrong credential (counted by the sign-in
    /// throttle), not a refusal of someone who proved who they are.
    pub fn is_wrong_credential(&self) -> bool {
        !matches!(self, Self::UserDisabled | Self::PolicyDenied)
    }
}

fn failure_of(e: WebauthnError) -> PasskeyFailure {
    match e {
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => {
            PasskeyFailure::WrongOrigin
        }
        WebauthnError::CredentialPossibleCompromise => PasskeyFailure::ClonedAuthenticator,
        WebauthnError::CredentialNotFound => PasskeyFailure::UnknownCredential,
        other => PasskeyFailure::Invalid(other.to_string()),
    }
}

/// Why a passkey operation failed (not a refusal).
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] citadel_store::StoreError),
    /// State could not be (de)serialized.
    #[error("passkey state: {0}")]
    State(String),
}

/// Passkeys of people.
pub struct Passkeys {
    store: Store,
    webauthn: Webauthn,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys").finish_non_exhaustive()
    }
}

/// The stable WebAuthn user handle of a Citadel user.
fn user_handle(user_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("citadel/webauthn-user/{user_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// A credential id as text (base64url), however webauthn-rs serializes it
/// (a string, or an array of bytes). Never empty for a real credential.
fn id_text(id: &impl serde::Serialize) -> String {
    use base64::Engine;
    match serde_json::to_value(id) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Array(items)) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|v| v.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }
        _ => String::new(),
    }
}

impl Passkeys {
    /// Passkeys for the configured relying party.
    pub fn new(store: Store, config: &WebauthnConfig) -> Result<Self, String> {
        if config.dangerous_allow_any_port {
            tracing::warn!("identity.webauthn.dangerous_allow_any_port = true: passkey responses from any port of the RP origin's host are accepted");
        }
        Ok(Self {
            store,
            webauthn: config.build()?,
        })
    }

    async fn stored(&self, user_id: &str) -> Result<Vec<(PasskeyRecord, Passkey)>, PasskeyError> {
        self.store
            .passkeys_of(user_id)
            .await?
            .into_iter()
            .map(|r| {
                let key: Passkey = serde_json::from_str(&r.passkey)
                    .map_err(|e| PasskeyError::State(e.to_string()))?;
                Ok((r, key))
            })
            .collect()
    }

    /// Starts registering a passkey for `user`: the options for
    /// `navigator.credentials.create()` and the ceremony id.
    pub async fn start_registration(
        &self,
        user: &UserRecord,
        now: i64,
    ) -> Result<(String, CreationChallengeResponse), PasskeyError> {
        let existing: Vec<_> = self
            .stored(&user.id)
            .await?
            .into_iter()
            .map(|(_, k)| k.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                user_handle(&user.id),
                &user.name,
                &user.name,
                Some(existing),
            )
            .map_err(|e| PasskeyError::State(e.to_string()))?;
        let id = format!("wr-{}", uuid::Uuid::new_v4().simple());
        let state =
            serde_json::to_string(&state).map_err(|e| PasskeyError::State(e.to_string()))?;
        self.store
            .put_ceremony(&id, &user.id, "registration", &state, now + CEREMONY_MS)
            .await?;
        Ok((id, options))
    }

    /// Finishes a registration started by `user_id`.
    pub async fn finish_registration(
        &self,
        user_id: &str,
        ceremony: &str,
        response: &RegisterPublicKeyCredential,
        name: &str,
        now: i64,
    ) -> Result<Result<PasskeyRecord, PasskeyFailure>, PasskeyError> {
        let Some((owner, state)) = self
            .store
            .take_ceremony(ceremony, "registration", now)
            .await?
        else {
            return Ok(Err(PasskeyFailure::UnknownCeremony));
        };
        if owner != user_id {
            return Ok(Err(PasskeyFailure::UnknownCeremony));
        }
        let state: PasskeyRegistration =
            serde_json::from_str(&state).map_err(|e| PasskeyError::State(e.to_string()))?;
        let passkey = match self.webauthn.finish_passkey_registration(response, &state) {
            Ok(k) => k,
            Err(e) => return Ok(Err(failure_of(e))),
        };
        let credential_id = id_text(passkey.cred_id());
        if credential_id.is_empty() {
            return Ok(Err(PasskeyFailure::Invalid(
                "the credential has no id".into(),
            )));
        }
        let record = PasskeyRecord {
            credential_id,
            user_id: user_id.to_owned(),
            name: name.chars().take(64).collect(),
            passkey: serde_json::to_string(&passkey)
                .map_err(|e| PasskeyError::State(e.to_string()))?,
            created_at: now,
            last_used_at: None,
        };
        match self.store.insert_passkey(&record).await {
            Ok(()) => Ok(Ok(record)),
            Err(StoreError::Conflict(_)) => Ok(Err(PasskeyFailure::Invalid(
                "this passkey is already registered".into(),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a passkey sign-in for `user`: the options for
    /// `navigator.credentials.get()` and the ceremony id.
    pub async fn start_authentication(
        &self,
        user: &UserRecord,
        now: i64,
    ) -> Result<Result<(String, RequestChallengeResponse), PasskeyFailure>, PasskeyError> {
        let keys: Vec<Passkey> = self
            .stored(&user.id)
            .await?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        if keys.is_empty() {
            return Ok(Err(PasskeyFailure::NoPasskeys));
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(|e| PasskeyError::State(e.to_string()))?;
        let id = format!("wa-{}", uuid::Uuid::new_v4().simple());
        let state =
            serde_json::to_string(&state).map_err(|e| PasskeyError::State(e.to_string()))?;
        self.store
            .put_ceremony(&id, &user.id, "authentication", &state, now + CEREMONY_MS)
            .await?;
        Ok(Ok((id, options)))
    }

    /// Finishes a passkey sign-in: the user id and the credential used.
    pub async fn finish_authentication(
        &self,
        ceremony: &str,
        response: &PublicKeyCredential,
        now: i64,
    ) -> Result<Result<(String, String), (Option<String>, PasskeyFailure)>, PasskeyError> {
        let Some((user_id, state)) = self
            .store
            .take_ceremony(ceremony, "authentication", now)
            .await?
        else {
            return Ok(Err((None, PasskeyFailure::UnknownCeremony)));
        };
        let state: PasskeyAuthentication =
            serde_json::from_str(&state).map_err(|e| PasskeyError::State(e.to_string()))?;
        let result = match self
            .webauthn
            .finish_passkey_authentication(response, &state)
        {
            Ok(r) => r,
            Err(e) => return Ok(Err((Some(user_id), failure_of(e)))),
        };
        let used = id_text(result.cred_id());
        let mut stored = self.stored(&user_id).await?;
        let Some((record, key)) = stored.iter_mut().find(|(r, _)| r.credential_id == used) else {
            return Ok(Err((Some(user_id), PasskeyFailure::UnknownCredential)));
        };
        key.update_credential(&result);
        let json = serde_json::to_string(key).map_err(|e| PasskeyError::State(e.to_string()))?;
        self.store
            .update_passkey(&record.credential_id, &json, now)
            .await?;
        Ok(Ok((user_id, used)))
    }
}
