//! Bearer JWTs from an identity provider the test runs on loopback,
//! through the real gateway over TLS. Tokens are minted here with ring's
//! ECDSA (not with the library Citadel verifies with).

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

fn jwk(kid: &str, key: &EcdsaKeyPair) -> Value {
    let public = key.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
           "x": b64(&public[1..33]), "y": b64(&public[33..65])})
}

/// The provider's signing keys, by key id.
type Keys = Arc<Mutex<Vec<(String, Arc<EcdsaKeyPair>)>>>;

/// A small identity provider: serves its JWKS; keys can be added (rotation).
#[derive(Clone)]
struct Idp {
    keys: Keys,
    issuer: String,
}

impl Idp {
    async fn start() -> Self {
        let keys: Keys = Arc::new(Mutex::new(vec![("k1".into(), Arc::new(new_key()))]));
        let served = keys.clone();
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let keys = served.clone();
                async move {
                    let set: Vec<Value> = keys.lock().iter().map(|(kid, k)| jwk(kid, k)).collect();
                    Json(json!({"keys": set}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            keys,
            issuer: format!("http://{addr}"),
        }
    }

    fn key(&self, kid: &str) -> Arc<EcdsaKeyPair> {
        self.keys
            .lock()
            .iter()
            .find(|(k, _)| k == kid)
            .unwrap()
            .1
            .clone()
    }

    fn config(&self) -> String {
        format!(
            "[[identity.jwt]]\nname = \"corp\"\nissuer = \"{0}\"\njwks_url = \"{0}/jwks.json\"\naudiences = [\"citadel\"]\nalgorithms = [\"ES256\"]\nmin_refetch_interval = \"100ms\"\n[identity.jwt.role_map]\nml = \"developer\"\n",
            self.issuer
        )
    }

    fn claims(&self, extra: Value) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut c = json!({"iss": self.issuer, "aud": "citadel", "sub": "alice-42",
            "preferred_username": "alice", "groups": ["ml"], "iat": now, "exp": now + 300});
        if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
            c.extend(e);
        }
        c
    }
}

/// `header.claims.signature` signed with ES256 by `key`.
fn sign(header: &Value, claims: &Value, key: &EcdsaKeyPair) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn es256(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

async fn call(c: &Citadel, token: &str) -> reqwest::Response {
    c.client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(token)
        .json(&json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn jwts_from_the_provider_are_accepted_and_every_bad_one_is_refused_with_its_reason() {
    let idp = Idp::start().await;
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!("{}\n{}", upstream_config(addr), idp.config())).await;
    let k1 = idp.key("k1");

    let good = sign(&es256("k1"), &idp.claims(json!({})), &k1);
    let r = call(&c, &good).await;
    let id = request_id(&r);
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let events = c.events_for(&id).await;
    let decision = events.iter().find(|e| e.body["class_uid"] == 6003).unwrap();
    assert_eq!(decision.body["actor"]["user"]["uid"], "jwt:corp:alice-42");
    assert_eq!(
        decision.body["actor"]["user"]["groups"][0]["name"],
        "developer"
    );

    let other = new_key();
    let now = idp.claims(json!({}))["iat"].as_i64().unwrap();
    let header_b64 = |h: Value| b64(&serde_json::to_vec(&h).unwrap());
    let claims_b64 = b64(&serde_json::to_vec(&idp.claims(json!({}))).unwrap());
    // HS256 with the provider's public key as the HMAC secret (the
    // algorithm-confusion attack).
    let hs = {
        let input = format!(
            "{}.{claims_b64}",
            header_b64(json!({"alg": "HS256", "kid": "k1"}))
        );
        let secret = serde_json::to_vec(&jwk("k1", &k1)).unwrap();
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        format!("{input}.{}", b64(mac.as_ref()))
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "algorithm_not_allowed",
            format!(
                "{}.{claims_b64}.",
                header_b64(json!({"alg": "none", "typ": "JWT"}))
            ),
        ),
        ("algorithm_not_allowed", hs),
        (
            "bad_signature",
            sign(&es256("k1"), &idp.claims(json!({})), &other),
        ),
        (
            "expired_jwt",
            sign(&es256("k1"), &idp.claims(json!({"exp": now - 120})), &k1),
        ),
        (
            "jwt_not_yet_valid",
            sign(&es256("k1"), &idp.claims(json!({"nbf": now + 600})), &k1),
        ),
        (
            "wrong_audience",
            sign(
                &es256("k1"),
                &idp.claims(json!({"aud": "someone-else"})),
                &k1,
            ),
        ),
        (
            "unknown_issuer",
            sign(
                &es256("k1"),
                &idp.claims(json!({"iss": "http://evil.example"})),
                &k1,
            ),
        ),
        (
            "no_mapped_roles",
            sign(
                &es256("k1"),
                &idp.claims(json!({"groups": ["visitors"]})),
                &k1,
            ),
        ),
        (
            "oversized_jwt",
            sign(
                &es256("k1"),
                &idp.claims(json!({"pad": "x".repeat(9000)})),
                &k1,
            ),
        ),
        (
            "malformed_jwt",
            format!("{}.!!!not-base64!!!.sig", header_b64(es256("k1"))),
        ),
        (
            "unknown_signing_key",
            sign(&es256("k9"), &idp.claims(json!({})), &k1),
        ),
        (
            "missing_claim",
            sign(
                &es256("k1"),
                &{
                    let mut c = idp.claims(json!({}));
                    c.as_object_mut().unwrap().remove("sub");
                    c
                },
                &k1,
            ),
        ),
    ];
    for (reason, token) in cases {
        let r = call(&c, &token).await;
        let id = request_id(&r);
        let (status, code, _) = code_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_credentials"),
            "{reason}"
        );
        let events = c.events_for(&id).await;
        assert_eq!(events[0].body["status_detail"], reason, "{reason}");
        assert_eq!(events[0].body["auth_protocol"], "Bearer JWT");
    }

    // Key rotation: a token signed by a key the provider published after
    // Citadel fetched the set is accepted after one refetch.
    let k2 = Arc::new(new_key());
    idp.keys.lock().push(("k2".into(), k2.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let rotated = sign(&es256("k2"), &idp.claims(json!({})), &k2);
    assert_eq!(call(&c, &rotated).await.status(), 200);
    c.stop().await;
}
