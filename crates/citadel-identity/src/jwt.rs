//! Bearer JWTs from external identity providers (OIDC access or ID
//! tokens), verified against each provider's JWKS.
//!
//! What a token must be to pass: at most `max_token_bytes`; from a
//! configured issuer (`iss`); signed with an algorithm on that issuer's
//! allow-list (asymmetric only: no `none`, no HMAC, so a public key can
//! never be used as an HMAC secret), by a key of the issuer's JWKS whose
//! type matches the algorithm; for one of the configured audiences; not
//! expired and already valid (`exp` required, `nbf` honoured, with bounded
//! leeway); with a subject; and mapping to at least one Citadel role
//! through the configured claim (deny by default).
//!
//! Keys are cached; a token naming a key id the cache lacks makes one
//! refetch (at most once per `min_refetch_interval` per issuer, so a flood
//! of made-up key ids cannot turn into a flood of fetches), and the set is
//! refreshed every `refresh_interval` in the background.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use citadel_core::{Principal, PrincipalKind};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_name_claim() -> String {
    "preferred_username".into()
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_refetch() -> Duration {
    Duration::from_secs(10)
}

/// `[[identity.jwt]]`: one identity provider whose tokens are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// A short name (appears in principal ids: `jwt:<name>:<sub>`).
    pub name: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its JWKS is (`https://`, or `http://` to a loopback address).
    pub jwks_url: String,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Accepted algorithms (asymmetric only): RS256/384/512, PS256/384/512,
    /// ES256/384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (at most 5m).
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// The claim listing the caller's groups (array or space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Group → Citadel role. Groups not listed grant nothing.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// The claim holding a display name.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// A CA (PEM) to trust for the JWKS URL instead of the system roots.
    #[serde(default)]
    pub jwks_ca: Option<PathBuf>,
    /// Longest token accepted, bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// How often the JWKS is refreshed.
    #[serde(default = "default_refresh", deserialize_with = "duration")]
    pub refresh_interval: Duration,
    /// Shortest time between two fetches caused by unknown key ids.
    #[serde(default = "default_refetch", deserialize_with = "duration")]
    pub min_refetch_interval: Duration,
}

fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn loopback_http(url: &str) -> bool {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?']).next())
        .is_some_and(|authority| {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

impl JwtIssuerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("identity.jwt ({})", self.name);
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{at}.name: letters, digits, `-` and `_`"));
        }
        if self.issuer.is_empty() {
            return Err(format!("{at}.issuer: required"));
        }
        if !(self.jwks_url.starts_with("https://") || loopback_http(&self.jwks_url)) {
            return Err(format!(
                "{at}.jwks_url: must be https:// (http:// only to a loopback address)"
            ));
        }
        if self.audiences.is_empty() {
            return Err(format!("{at}.audiences: at least one"));
        }
        if self.algorithms.is_empty() {
            return Err(format!("{at}.algorithms: at least one"));
        }
        for a in &self.algorithms {
            if parse_algorithm(a).is_none() {
                return Err(format!(
                    "{at}.algorithms: {a:?} is not accepted; use RS256/384/512, PS256/384/512, ES256/384 or EdDSA (symmetric and `none` are refused)"
                ));
            }
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(format!("{at}.leeway: at most 5m"));
        }
        if !(1024..=65536).contains(&self.max_token_bytes) {
            return Err(format!("{at}.max_token_bytes: between 1024 and 65536"));
        }
        Ok(())
    }
}

/// Why a bearer JWT was refused. Recorded in events; the client only hears
/// `invalid_credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtFailure {
    /// Not three base64url parts of JSON.
    Malformed,
    /// Longer than allowed.
    Oversized,
    /// No configured issuer has that `iss`.
    UnknownIssuer,
    /// `alg` not on the issuer's allow-list (including `none` and HMAC).
    AlgorithmNotAllowed,
    /// No key in the issuer's JWKS has that `kid`.
    UnknownKey,
    /// The signature does not verify with the key.
    BadSignature,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// `aud` is not one of ours.
    WrongAudience,
    /// A required claim is missing (`exp`, `sub`).
    MissingClaim,
    /// No group of the caller maps to a Citadel role.
    NoRoles,
    /// The issuer's JWKS could not be fetched (fail closed).
    JwksUnavailable,
}

impl JwtFailure {
    /// Stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_jwt",
            Self::Oversized => "oversized_jwt",
            Self::UnknownIssuer => "unknown_issuer",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_signing_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired_jwt",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::NoRoles => "no_mapped_roles",
            Self::JwksUnavailable => "jwks_unavailable",
        }
    }
}

/// A token that passed.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    /// Who it is.
    pub principal: Arc<Principal>,
    /// `exp`, Unix ms.
    pub expires_at: i64,
    /// When a second factor was proved (from `amr`/`auth_time`), Unix ms.
    pub mfa_at: Option<i64>,
}

struct Issuer {
    config: JwtIssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: ArcSwap<HashMap<String, Arc<DecodingKey>>>,
    last_fetch: parking_lot::Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    client: reqwest::Client,
}

/// Verifies bearer JWTs of the configured issuers.
pub struct JwtVerifier {
    issuers: Vec<Arc<Issuer>>,
    /// Tokens already verified (by SHA-256), until their `exp`: a client
    /// sends the same access token on many requests, and a signature check
    /// costs tens of microseconds. Emptied whenever a key set changes.
    verified: parking_lot::Mutex<HashMap<[u8; 32], Remembered>>,
}

/// A verified token and the key set it was verified against: a hit counts
/// only while that set is still the issuer's current one.
struct Remembered {
    verified: VerifiedJwt,
    issuer: usize,
    keys: Arc<HashMap<String, Arc<DecodingKey>>>,
}

/// Tokens remembered at most.
const VERIFIED_CACHE_MAX: usize = 10_000;

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.config.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Whether `token` looks like a JWT (three dot-separated parts), as opposed
/// to a Citadel API key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

impl JwtVerifier {
    /// Verifiers for `configs` (none: every JWT is refused as unknown issuer).
    pub fn new(configs: &[JwtIssuerConfig]) -> Result<Self, String> {
        let mut names = std::collections::HashSet::new();
        let mut issuers = Vec::new();
        for c in configs {
            c.validate()?;
            if !names.insert(c.name.clone()) {
                return Err(format!("identity.jwt: name {:?} is used twice", c.name));
            }
            let mut builder = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(3));
            if let Some(ca) = &c.jwks_ca {
                let pem = std::fs::read(ca).map_err(|e| {
                    format!("identity.jwt ({}).jwks_ca: {}: {e}", c.name, ca.display())
                })?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| format!("identity.jwt ({}).jwks_ca: {e}", c.name))?;
                builder = builder
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(cert);
            }
            let client = builder
                .build()
                .map_err(|e| format!("identity.jwt ({}): {e}", c.name))?;
            issuers.push(Arc::new(Issuer {
                algorithms: c
                    .algorithms
                    .iter()
                    .filter_map(|a| parse_algorithm(a))
                    .collect(),
                config: c.clone(),
                keys: ArcSwap::from_pointee(HashMap::new()),
                last_fetch: parking_lot::Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
                client,
            }));
        }
        Ok(Self {
            issuers,
            verified: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// Whether any issuer is configured.
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Fetches every issuer's JWKS now (at start; failures are logged and
    /// retried on demand and by the refresher).
    pub async fn fetch_all(&self) {
        for issuer in &self.issuers {
            if let Err(e) = issuer.fetch().await {
                tracing::warn!(issuer = %issuer.config.name, error = %e, "JWKS fetch failed; tokens of this issuer are refused until it succeeds");
            }
        }
    }

    /// Runs forever: refreshes each issuer's JWKS every `refresh_interval`.
    pub async fn refresh_forever(self: Arc<Self>) {
        let every = self
            .issuers
            .iter()
            .map(|i| i.config.refresh_interval)
            .min()
            .unwrap_or(Duration::from_secs(600));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.fetch_all().await;
        }
    }

    /// Verifies a bearer token at `now` (Unix ms).
    pub async fn verify(&self, token: &str, now: i64) -> Result<VerifiedJwt, JwtFailure> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.verified.lock().get(&digest) {
            let current = self.issuers[hit.issuer].keys.load();
            if now < hit.verified.expires_at && Arc::ptr_eq(&hit.keys, &current) {
                return Ok(hit.verified.clone());
            }
        }
        let (index, issuer) = self.issuer_of(token)?;
        let keys = issuer.keys.load_full();
        let verified = issuer.verify(token, now).await?;
        if !Arc::ptr_eq(&keys, &issuer.keys.load()) {
            // The set changed while this token was checked: not remembered.
            return Ok(verified);
        }
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            digest,
            Remembered {
                verified: verified.clone(),
                issuer: index,
                keys,
            },
        );
        Ok(verified)
    }

    fn issuer_of(&self, token: &str) -> Result<(usize, &Arc<Issuer>), JwtFailure> {
        if token.len()
            > self
                .issuers
                .iter()
                .map(|i| i.config.max_token_bytes)
                .max()
                .unwrap_or(8192)
        {
            return Err(JwtFailure::Oversized);
        }
        let payload = token.split('.').nth(1).ok_or(JwtFailure::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JwtFailure::Malformed)?;
        let peek: Peek = serde_json::from_slice(&bytes).map_err(|_| JwtFailure::Malformed)?;
        let iss = peek.iss.ok_or(JwtFailure::MissingClaim)?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.config.issuer == iss)
            .ok_or(JwtFailure::UnknownIssuer)?;
        if token.len() > issuer.config.max_token_bytes {
            return Err(JwtFailure::Oversized);
        }
        Ok((index, issuer))
    }
}

impl Issuer {
    async fn fetch(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        *self.last_fetch.lock() = Some(Instant::now());
        let response = self
            .client
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > 1 << 20 {
            return Err("JWKS larger than 1 MiB".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.config.name, kid, error = %e, "JWKS key skipped")
                }
            }
        }
        tracing::debug!(issuer = %self.config.name, keys = keys.len(), "JWKS fetched");
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// The key for `kid`, refetching the set once if it is unknown and the
    /// last fetch is old enough.
    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, JwtFailure> {
        if let Some(k) = self.keys.load().get(kid) {
            return Ok(k.clone());
        }
        // With no keys at all (the first fetch is in flight or failed), a
        // fetch is always due; it waits for one in flight to finish.
        let due = self.keys.load().is_empty()
            || self
                .last_fetch
                .lock()
                .is_none_or(|t| t.elapsed() >= self.config.min_refetch_interval);
        if due {
            if let Err(e) = self.fetch().await {
                tracing::warn!(issuer = %self.config.name, error = %e, "JWKS refetch failed");
                if self.keys.load().is_empty() {
                    return Err(JwtFailure::JwksUnavailable);
                }
            }
        }
        self.keys
            .load()
            .get(kid)
            .cloned()
            .ok_or(JwtFailure::UnknownKey)
    }

    async fn verify(&self, token: &str, now: i64) -> Result<VerifiedJwt, JwtFailure> {
        // The algorithm named, read before anything else, so `none` and
        // HMAC names are refused as such (the library does not know `none`).
        let raw_header = token.split('.').next().ok_or(JwtFailure::Malformed)?;
        let named: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw_header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtFailure::Malformed)?;
        let allowed_name = named["alg"]
            .as_str()
            .and_then(parse_algorithm)
            .is_some_and(|a| self.algorithms.contains(&a));
        if !allowed_name {
            return Err(JwtFailure::AlgorithmNotAllowed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtFailure::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtFailure::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(JwtFailure::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway.as_secs();
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        // Checked against our clock below, not the library's.
        validation.validate_exp = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature
                    | K::InvalidEcdsaKey
                    | K::InvalidRsaKey(_)
                    | K::Crypto(_) => JwtFailure::BadSignature,
                    K::InvalidAlgorithm => JwtFailure::AlgorithmNotAllowed,
                    K::ExpiredSignature => JwtFailure::Expired,
                    K::ImmatureSignature => JwtFailure::NotYetValid,
                    K::InvalidAudience => JwtFailure::WrongAudience,
                    K::InvalidIssuer => JwtFailure::UnknownIssuer,
                    K::MissingRequiredClaim(_) => JwtFailure::MissingClaim,
                    _ => JwtFailure::Malformed,
                }
            })?;
        let claims = data.claims;
        let leeway_ms = self.config.leeway.as_millis() as i64;
        let exp_ms = claims["exp"]
            .as_i64()
            .ok_or(JwtFailure::MissingClaim)?
            .saturating_mul(1000);
        if now >= exp_ms.saturating_add(leeway_ms) {
            return Err(JwtFailure::Expired);
        }
        if let Some(nbf) = claims["nbf"].as_i64() {
            if now.saturating_add(leeway_ms) < nbf.saturating_mul(1000) {
                return Err(JwtFailure::NotYetValid);
            }
        }
        let sub = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(JwtFailure::MissingClaim)?;
        let roles =
            crate::claims::mapped_roles(&claims, &self.config.roles_claim, &self.config.role_map);
        if roles.is_empty() {
            return Err(JwtFailure::NoRoles);
        }
        let mfa = crate::claims::second_factor(&claims);
        let mfa_at = mfa.then(|| {
            claims["auth_time"]
                .as_i64()
                .or_else(|| claims["iat"].as_i64())
                .map_or(now, |t| t.saturating_mul(1000))
        });
        let name = claims[&self.config.name_claim]
            .as_str()
            .unwrap_or(sub)
            .chars()
            .take(128)
            .collect::<String>();
        let token_id = claims["jti"].as_str().unwrap_or(sub);
        Ok(VerifiedJwt {
            principal: Arc::new(Principal {
                id: format!("jwt:{}:{sub}", self.config.name),
                kind: PrincipalKind::User,
                name,
                roles,
                credential: format!(
                    "jwt:{}:{}",
                    self.config.name,
                    token_id.chars().take(128).collect::<String>()
                ),
            }),
            expires_at: exp_ms,
            mfa_at,
        })
    }
}

#[cfg(test)]
mod tests;
