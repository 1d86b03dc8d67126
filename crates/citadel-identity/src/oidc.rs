//! Browser sign-in through an external OpenID Connect provider: the
//! authorization code flow with PKCE (S256), a `state` bound to the browser
//! and a `nonce` bound to the ID token (openidconnect crate).
//!
//! `begin` makes the provider's authorization URL and keeps the PKCE
//! verifier and nonce in the store under the `state` (five minutes, taken
//! once, so any replica can finish the flow). `finish` exchanges the code,
//! verifies the ID token (signature against the provider's JWKS, issuer,
//! audience, expiry, nonce) and maps its claims to roles. A person signing
//! in for the first time gets a Citadel user linked to the provider's
//! subject; their roles follow the provider's groups at every sign-in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use citadel_core::clock::now_ms;
use citadel_store::{Store, StoreError, UserRecord};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use tokio::sync::RwLock;

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_name_claim() -> String {
    "preferred_username".into()
}

/// `[[identity.oidc]]`: a provider people sign in with in the browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// A short name, in URLs (`/auth/oidc/<name>/login`).
    pub name: String,
    /// The issuer; its `/.well-known/openid-configuration` is read.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret (none for a
    /// public client; PKCE is used either way).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back:
    /// `https://<gateway>/auth/oidc/<name>/callback`.
    pub redirect_url: String,
    /// Scopes asked for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim listing groups.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Group → Citadel role; groups not listed grant nothing.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// The claim a new user's name is made from.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// Where the browser goes after signing in.
    #[serde(default = "default_after_login")]
    pub after_login: String,
}

fn default_after_login() -> String {
    "/".into()
}

fn loopback_http(url: &str) -> bool {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?']).next())
        .is_some_and(|authority| {
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            host == "localhost" || host == "127.0.0.1" || host == "[::1]"
        })
}

impl OidcProviderConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("identity.oidc ({})", self.name);
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{at}.name: letters, digits, `-` and `_`"));
        }
        for (setting, url) in [
            ("issuer", &self.issuer),
            ("redirect_url", &self.redirect_url),
        ] {
            if !(url.starts_with("https://") || loopback_http(url)) {
                return Err(format!(
                    "{at}.{setting}: must be https:// (http:// only to a loopback address)"
                ));
            }
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(format!("{at}.scopes: must include openid"));
        }
        if self.client_id.is_empty() {
            return Err(format!("{at}.client_id: required"));
        }
        if !self.after_login.starts_with('/') || self.after_login.starts_with("//") {
            return Err(format!("{at}.after_login: a path on this gateway, like /"));
        }
        Ok(())
    }
}

/// Why an OIDC sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcFailure {
    /// No such provider configured.
    UnknownProvider,
    /// The `state` is unknown, expired, used, or not this browser's.
    BadState,
    /// The provider answered the callback with an error.
    ProviderError(String),
    /// The code exchange or ID token verification failed.
    Invalid(String),
    /// No group maps to a Citadel role.
    NoRoles,
    /// The linked Citadel user is disabled.
    UserDisabled,
    /// The provider cannot be reached (fail closed).
    Unavailable(String),
}

impl OidcFailure {
    /// Stable name for events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::BadState => "bad_state",
            Self::ProviderError(_) => "provider_error",
            Self::Invalid(_) => "invalid_id_token",
            Self::NoRoles => "no_mapped_roles",
            Self::UserDisabled => "user_disabled",
            Self::Unavailable(_) => "provider_unavailable",
        }
    }
}

/// Who signed in.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    /// The Citadel user (made on first sign-in).
    pub user: UserRecord,
    /// Whether the user was made by this sign-in.
    pub created: bool,
    /// Whether the provider says a second factor was used (`amr`).
    pub mfa: bool,
    /// When the provider says the person authenticated (`auth_time`, else
    /// the ID token's `iat`), Unix ms.
    pub authenticated_at: i64,
    /// Where to send the browser.
    pub after_login: String,
}

struct Provider {
    config: OidcProviderConfig,
    secret: Option<ClientSecret>,
    metadata: RwLock<Option<CoreProviderMetadata>>,
}

/// The configured providers.
pub struct OidcLogins {
    store: Store,
    http: reqwest::Client,
    providers: HashMap<String, Arc<Provider>>,
}

impl std::fmt::Debug for OidcLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogins")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

const LOGIN_MS: i64 = 5 * 60 * 1000;
/// Sign-ins in progress at most (all providers).
const MAX_PENDING_LOGINS: i64 = 10_000;

#[derive(serde::Serialize, Deserialize)]
struct Pending {
    verifier: String,
    nonce: String,
}

fn unavailable(e: impl std::fmt::Display) -> OidcFailure {
    OidcFailure::Unavailable(e.to_string())
}

impl OidcLogins {
    /// The providers of `configs`; client secrets are read from the environment now.
    pub fn new(store: Store, configs: &[OidcProviderConfig]) -> Result<Self, String> {
        let mut providers = HashMap::new();
        for c in configs {
            c.validate()?;
            let secret = match &c.client_secret_env {
                Some(var) => Some(ClientSecret::new(std::env::var(var).map_err(|_| {
                    format!("identity.oidc ({}).client_secret_env: the environment variable {var} is not set", c.name)
                })?)),
                None => None,
            };
            if providers
                .insert(
                    c.name.clone(),
                    Arc::new(Provider {
                        config: c.clone(),
                        secret,
                        metadata: RwLock::new(None),
                    }),
                )
                .is_some()
            {
                return Err(format!("identity.oidc: name {:?} is used twice", c.name));
            }
        }
        let http = reqwest::Client::builder()
            // The OAuth 2.0 security BCP: never follow redirects from the
            // token endpoint.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            http,
            providers,
        })
    }

    /// Whether `name` is a configured provider.
    pub fn has(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    async fn client(
        &self,
        provider: &Provider,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcFailure,
    > {
        let cached = provider.metadata.read().await.clone();
        let metadata = match cached {
            Some(m) => m,
            None => {
                let issuer = IssuerUrl::new(provider.config.issuer.clone()).map_err(unavailable)?;
                let m = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(unavailable)?;
                *provider.metadata.write().await = Some(m.clone());
                m
            }
        };
        let redirect =
            RedirectUrl::new(provider.config.redirect_url.clone()).map_err(unavailable)?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.config.client_id.clone()),
            provider.secret.clone(),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: the provider's authorization URL to redirect the
    /// browser to, and the `state` to bind to the browser (a cookie).
    pub async fn begin(&self, name: &str, now: i64) -> Result<(String, String), OidcFailure> {
        let provider = self
            .providers
            .get(name)
            .ok_or(OidcFailure::UnknownProvider)?;
        // Anyone can start a sign-in, and each start is a row until it
        // expires (5 minutes): past a bound, new starts wait.
        let pending = self
            .store
            .pending_ceremonies("oidc", now)
            .await
            .map_err(unavailable)?;
        if pending >= MAX_PENDING_LOGINS {
            return Err(OidcFailure::Unavailable(
                "too many sign-ins in progress".into(),
            ));
        }
        let client = self.client(provider).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in provider.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let pending = serde_json::to_string(&Pending {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
        .map_err(unavailable)?;
        self.store
            .put_ceremony(state.secret(), name, "oidc", &pending, now + LOGIN_MS)
            .await
            .map_err(unavailable)?;
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a sign-in from the provider's callback.
    pub async fn finish(
        &self,
        name: &str,
        code: &str,
        state: &str,
        now: i64,
    ) -> Result<OidcIdentity, OidcFailure> {
        let provider = self
            .providers
            .get(name)
            .ok_or(OidcFailure::UnknownProvider)?;
        let Some((for_provider, pending)) = self
            .store
            .take_ceremony(state, "oidc", now)
            .await
            .map_err(unavailable)?
        else {
            return Err(OidcFailure::BadState);
        };
        if for_provider != name {
            return Err(OidcFailure::BadState);
        }
        let pending: Pending = serde_json::from_str(&pending).map_err(unavailable)?;
        let client = self.client(provider).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcFailure::Invalid(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcFailure::Invalid(format!("code exchange: {e}")))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcFailure::Invalid("no ID token in the token response".into()))?;
        // Asymmetric algorithms only (never HMAC with the client secret, never none).
        let allowed = [
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ];
        let nonce = Nonce::new(pending.nonce);
        let verifier = client.id_token_verifier().set_allowed_algs(allowed.clone());
        let subject = match id_token.claims(&verifier, &nonce) {
            Ok(claims) => claims.subject().as_str().to_owned(),
            Err(first) => {
                // The provider may have rotated its signing key since its
                // keys were fetched: fetch them once more and check again.
                *provider.metadata.write().await = None;
                let fresh = self.client(provider).await?;
                let verifier = fresh.id_token_verifier().set_allowed_algs(allowed);
                id_token
                    .claims(&verifier, &nonce)
                    .map_err(|_| OidcFailure::Invalid(first.to_string()))?
                    .subject()
                    .as_str()
                    .to_owned()
            }
        };
        // The signature, issuer, audience, expiry and nonce are verified;
        // the other claims are read from the same (verified) payload.
        let raw = id_token.to_string();
        let claims: serde_json::Value = raw
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let roles = crate::claims::mapped_roles(
            &claims,
            &provider.config.roles_claim,
            &provider.config.role_map,
        );
        if roles.is_empty() {
            return Err(OidcFailure::NoRoles);
        }
        let mfa = crate::claims::second_factor(&claims);
        let wanted_name = claims[&provider.config.name_claim]
            .as_str()
            .unwrap_or(&subject)
            .to_owned();
        let (user, created) = self
            .user_for(name, &subject, &wanted_name, roles)
            .await
            .map_err(unavailable)?;
        if user.disabled {
            return Err(OidcFailure::UserDisabled);
        }
        let authenticated_at = claims["auth_time"]
            .as_i64()
            .or_else(|| claims["iat"].as_i64())
            .map_or(now, |t| t.saturating_mul(1000).min(now));
        Ok(OidcIdentity {
            user,
            created,
            mfa,
            authenticated_at,
            after_login: provider.config.after_login.clone(),
        })
    }

    /// Stores the roles a sign-in brought, once policy let the person in
    /// (a refused sign-in changes nothing).
    pub async fn apply_roles(&self, user: &UserRecord) -> Result<(), StoreError> {
        let stored = self.store.find_user(&user.id).await?;
        if stored.roles != user.roles {
            self.store.set_user_roles(&user.id, &user.roles).await?;
        }
        Ok(())
    }

    /// The linked user (with the roles the provider gives now, not yet
    /// stored), or a new one.
    async fn user_for(
        &self,
        provider: &str,
        subject: &str,
        wanted: &str,
        roles: Vec<String>,
    ) -> Result<(UserRecord, bool), StoreError> {
        if let Some(id) = self.store.linked_user(provider, subject).await? {
            let user = self.store.find_user(&id).await?;
            // A disabled user is refused as they are; nothing changes.
            if user.disabled {
                return Ok((user, false));
            }
            // The provider's current groups; stored only once policy lets
            // the person in (see `OidcLogins::apply_roles`).
            return Ok((UserRecord { roles, ..user }, false));
        }
        let base: String = wanted
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect();
        let base = if base.is_empty() {
            "oidc-user".to_owned()
        } else {
            base
        };
        for attempt in 0..20 {
            let name = if attempt == 0 {
                base.clone()
            } else {
                format!("{base}-{attempt}")
            };
            let user = UserRecord {
                id: format!("u-{}", uuid::Uuid::new_v4().simple()),
                name,
                roles: roles.clone(),
                disabled: false,
                created_at: now_ms(),
            };
            match self
                .store
                .create_linked_user(&user, provider, subject)
                .await
            {
                Ok(()) => return Ok((user, true)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "no free user name for {wanted}"
        )))
    }
}
