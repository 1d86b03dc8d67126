//! Browser sign-in through an OIDC provider the test runs on loopback
//! (discovery, an authorization endpoint that approves at once, a token
//! endpoint that checks the client secret and the PKCE verifier, a JWKS),
//! with the test playing the browser and following the redirects itself.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use parking_lot::Mutex;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sha2::Digest;

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the authorization endpoint handed out, by code.
struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Clone)]
struct Idp {
    issuer: String,
    key: Arc<EcdsaKeyPair>,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
    /// Groups the next ID token carries.
    groups: Arc<Mutex<Vec<String>>>,
}

async fn discovery(State(idp): State<Idp>) -> Json<Value> {
    Json(json!({
        "issuer": idp.issuer,
        "authorization_endpoint": format!("{}/authorize", idp.issuer),
        "token_endpoint": format!("{}/token", idp.issuer),
        "jwks_uri": format!("{}/jwks", idp.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(idp): State<Idp>) -> Json<Value> {
    let p = idp.key.public_key().as_ref();
    Json(
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&p[1..33]), "y": b64(&p[33..65])}]}),
    )
}

async fn authorize(State(idp): State<Idp>, Query(q): Query<HashMap<String, String>>) -> Response {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256", "PKCE is required");
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    idp.grants.lock().insert(
        code.clone(),
        Grant {
            nonce: q["nonce"].clone(),
            challenge: q["code_challenge"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
        },
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
    .into_response()
}

async fn token(State(idp): State<Idp>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let f: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if basic.as_deref() != Some("citadel:s3cret") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let Some(grant) = idp.grants.lock().remove(&f["code"]) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier_hash = b64(&sha2::Sha256::digest(f["code_verifier"].as_bytes()));
    if verifier_hash != grant.challenge || f["redirect_uri"] != grant.redirect_uri {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": idp.issuer, "aud": "citadel", "sub": "248289761001",
        "preferred_username": "jane", "groups": *idp.groups.lock(), "nonce": grant.nonce,
        "amr": ["pwd", "otp"], "iat": now, "exp": now + 300});
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let sig = idp
        .key
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap();
    Json(
        json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300,
        "id_token": format!("{input}.{}", b64(sig.as_ref()))}),
    )
    .into_response()
}

async fn start_idp() -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let idp = Idp {
        issuer: format!("http://{addr}"),
        key: Arc::new(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        ),
        grants: Arc::new(Mutex::new(HashMap::new())),
        groups: Arc::new(Mutex::new(vec!["ml".into()])),
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    idp
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_pair(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_with_pkce_and_a_state_bound_to_the_browser() {
    std::env::set_var("CITADEL_TEST_OIDC_SECRET", "s3cret");
    let idp = start_idp().await;
    let up = Upstream::default();
    let addr = up.start().await;
    // The gateway's port is known only after it starts; the redirect URL
    // names a fixed port and the test rewrites the callback it follows.
    let c = Citadel::start(&format!(
        "{}\n[[identity.oidc]]\nname = \"corp\"\nissuer = \"{}\"\nclient_id = \"citadel\"\nclient_secret_env = \"CITADEL_TEST_OIDC_SECRET\"\nredirect_url = \"https://localhost:8443/auth/oidc/corp/callback\"\nafter_login = \"/welcome\"\n[identity.oidc.role_map]\nml = \"developer\"\n",
        upstream_config(addr),
        idp.issuer
    ))
    .await;
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    let browser = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let port = c.running().gateway_addr.port();
    let to_gateway = |url: &str| {
        url.replace(
            "https://localhost:8443",
            &format!("https://localhost:{port}"),
        )
    };

    // 1. Start at the gateway: redirected to the provider, state cookie set.
    let sign_in = |browser: reqwest::Client| {
        let gateway = c.gateway.clone();
        async move {
            let r = browser
                .get(format!("{gateway}/auth/oidc/corp/login"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302);
            let state_cookie = cookie_pair(&set_cookies(&r), "__Host-citadel_oidc");
            let to_idp = r.headers()["location"].to_str().unwrap().to_owned();
            assert!(to_idp.contains("code_challenge_method=S256"), "{to_idp}");
            // 2. The provider approves and sends the browser back.
            let r = browser.get(&to_idp).send().await.unwrap();
            assert_eq!(r.status(), 303);
            let back = r.headers()["location"].to_str().unwrap().to_owned();
            (state_cookie, back)
        }
    };
    let (state_cookie, back) = sign_in(browser.clone()).await;
    // 3a. The callback without the browser's state cookie is refused
    // (someone else's code cannot be planted in this browser).
    let r = browser.get(to_gateway(&back)).send().await.unwrap();
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    assert_eq!(
        c.events_for(&id).await[0].body["status_detail"],
        "bad_state"
    );

    // 3b. The real browser comes back with its cookie: signed in.
    drop(state_cookie);
    let (state_cookie, back) = sign_in(browser.clone()).await;
    let r = browser
        .get(to_gateway(&back))
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    let id = request_id(&r);
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("url=/welcome"),
        "moves on to after_login: {page}"
    );
    let session = cookie_pair(&cookies, "__Host-citadel_session");
    let csrf = cookie_pair(&cookies, "__Host-citadel_csrf");
    let events = c.events_for(&id).await;
    let signed_in = events.iter().find(|e| e.body["class_uid"] == 3002).unwrap();
    assert_eq!(signed_in.body["auth_protocol"], "OpenID Connect");
    assert_eq!(
        signed_in.body["is_mfa"], true,
        "the provider's amr says otp"
    );
    // The first sign-in made the linked user, on record.
    assert!(events
        .iter()
        .any(|e| e.body["api"]["operation"] == "users.create"));
    let who: Value = browser
        .get(format!("{}/auth/session", c.gateway))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["user"]["name"], "jane");
    assert_eq!(who["user"]["roles"], json!(["developer"]));
    assert!(
        who["session"]["mfa_at"].as_i64().is_some(),
        "amr otp counts as a second factor"
    );
    // The CSRF cookie's value is the session's CSRF token.
    let r = browser
        .post(format!("{}/v1/chat/completions", c.gateway))
        .header("cookie", &session)
        .header("x-csrf-token", csrf.split_once('=').unwrap().1)
        .json(&json!({"model": "m1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // 4. The same code cannot be used twice; a provider error is refused;
    // groups that map to no role give no session.
    let r = browser
        .get(to_gateway(&back))
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = browser
        .get(format!(
            "{}/auth/oidc/corp/callback?error=access_denied&state=x",
            c.gateway
        ))
        .send()
        .await
        .unwrap();
    let id = request_id(&r);
    assert_eq!(r.status(), 401);
    assert_eq!(
        c.events_for(&id).await[0].body["status_detail"],
        "provider_error"
    );
    *idp.groups.lock() = vec!["visitors".into()];
    let (state_cookie, back) = sign_in(browser.clone()).await;
    let r = browser
        .get(to_gateway(&back))
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    c.stop().await;
}
