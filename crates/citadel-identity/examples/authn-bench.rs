//! Per-request credential verification and sign-in cost (run by
//! `bench/authn/run`; not a test). Each figure is the median of several
//! rounds of many calls on one core, against a real SQLite store:
//!
//! - an API key: parse, keyed hash, constant-time compare, snapshot lookup;
//! - a session cookie: parse, SHA-256, cache lookup, expiry and idle checks
//!   (the store is read once per session and replica, then never);
//! - Argon2id at the configured parameters: one hash and one verify (the
//!   cost of one password sign-in);
//! - a bearer JWT (ES256) against a cached JWKS: the first use of a token
//!   (signature check) and every later use (verified-token cache);
//! - an mTLS-identified device: the per-request lookup of the certificate
//!   the connection presented, and the per-connection chain check;
//! - a TOTP check (seed unsealed with AES-GCM, the window's codes computed,
//!   the used step recorded in the store).

use std::time::Instant;

use citadel_identity::session::SessionStart;
use citadel_identity::{
    create_api_key, create_user, Factors, KeyHasher, KeyRegistry, KeyRequest, PasswordConfig,
    Passwords, SessionConfig, Sessions, TotpConfig,
};
use zeroize::Zeroizing;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, median of `rounds` rounds of `n` calls.
fn per_call(rounds: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        out.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    median(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = citadel_store::Store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await
    .unwrap();
    let now = citadel_core::clock::now_ms();

    // API key.
    let registry = KeyRegistry::load(store.clone(), KeyHasher::new(Zeroizing::new(vec![7u8; 32])))
        .await
        .unwrap();
    for i in 0..1000 {
        create_api_key(
            &store,
            registry.hasher(),
            KeyRequest {
                name: format!("k{i}"),
                roles: vec!["developer".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let (_, key) = create_api_key(
        &store,
        registry.hasher(),
        KeyRequest {
            name: "bench".into(),
            roles: vec!["developer".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    registry.refresh().await.unwrap();
    let api_key_ns = per_call(7, 200_000, || {
        std::hint::black_box(registry.verify(&key.secret, now).unwrap());
    });

    // Session cookie (cached after its first use, as on every request but
    // a session's first on a replica).
    let sessions = Sessions::new(store.clone(), SessionConfig::default())
        .await
        .unwrap();
    let user = create_user(&store, "bench", vec!["developer".into()])
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..1000 {
        let s = sessions
            .create(
                SessionStart {
                    user: &user,
                    methods: vec!["pwd".into()],
                    mfa_at: None,
                    source_ip: "127.0.0.1".into(),
                    user_agent: None,
                },
                now,
            )
            .await
            .unwrap();
        sessions.verify(&s.token, now).await.unwrap();
        tokens.push(s.token);
    }
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let n = 200_000;
        let t = Instant::now();
        for i in 0..n {
            std::hint::black_box(
                sessions
                    .verify(&tokens[i % tokens.len()], now)
                    .await
                    .unwrap(),
            );
        }
        rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    let session_ns = median(rounds);
    // A session's first request on a replica reads the store once.
    let fresh = Sessions::new(store.clone(), SessionConfig::default())
        .await
        .unwrap();
    let t = Instant::now();
    for tok in tokens.iter().take(200) {
        fresh.verify(tok, now).await.unwrap();
    }
    let session_first_us = t.elapsed().as_secs_f64() * 1e6 / 200.0;

    // Bearer JWT (ES256) from a provider whose JWKS is served on loopback.
    let (jwt_first_us, jwt_cached_ns) = jwt_figures(now).await;

    // An mTLS-identified device: per request, the snapshot lookup of the
    // certificate the connection presented; per connection, the chain check.
    let (device_ns, chain_us) = device_figures(&store, &dir, now).await;

    // Argon2id at the default parameters.
    let passwords = Passwords::new(PasswordConfig::default()).unwrap();
    let mut hash_ms = Vec::new();
    let mut verify_ms = Vec::new();
    let mut stored = String::new();
    for _ in 0..9 {
        let t = Instant::now();
        stored = passwords
            .hash(Zeroizing::new("correct horse battery staple".into()))
            .await
            .unwrap();
        hash_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        assert!(passwords
            .verify(
                Zeroizing::new("correct horse battery staple".into()),
                Some(stored.clone())
            )
            .await
            .unwrap());
        verify_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // TOTP check (including the replay guard's store write).
    let keys = citadel_crypto::Keyring::load(
        store.clone(),
        citadel_crypto::RootKey::generated().unwrap(),
        &["authenticator"],
        &[],
    )
    .await
    .unwrap();
    let factors = Factors::new(
        store.clone(),
        keys,
        KeyHasher::new(Zeroizing::new(vec![1u8; 32])),
        TotpConfig::default(),
    )
    .unwrap();
    factors.enroll_totp(&user).await.unwrap();
    let t = Instant::now();
    let n = 200;
    for _ in 0..n {
        // A wrong code exercises everything but the store write.
        std::hint::black_box(factors.check_totp(&user.id, "000000", now).await.unwrap());
    }
    let totp_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    println!(
        "authn bench ({} cores visible; one used)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  parameters: Argon2id {stored:.31}…");
    println!("  per-request verification (target ≤ 5 µs each):");
    println!(
        "    API key                     {:>8.2} µs",
        api_key_ns / 1000.0
    );
    println!(
        "    session cookie (cached)     {:>8.2} µs",
        session_ns / 1000.0
    );
    println!(
        "    session cookie (first use)  {:>8.2} µs  (one store read per session per replica)",
        session_first_us
    );
    println!(
        "    bearer JWT, cached token    {:>8.2} µs",
        jwt_cached_ns / 1000.0
    );
    println!(
        "    bearer JWT, first use       {:>8.2} µs  (ES256 signature check, cached JWKS)",
        jwt_first_us
    );
    println!("    mTLS device                 {:>8.2} µs  (+ {:.0} µs per connection for the chain check)", device_ns / 1000.0, chain_us);
    println!("  sign-in cost:");
    println!(
        "    Argon2id hash               {:>8.1} ms",
        median(hash_ms)
    );
    println!(
        "    Argon2id verify             {:>8.1} ms",
        median(verify_ms)
    );
    println!(
        "    TOTP check                  {:>8.1} µs  (store read + unseal + window)",
        totp_us
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves `body` as JSON to every request on a loopback port.
async fn serve_json(body: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

async fn jwt_figures(now: i64) -> (f64, f64) {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = key.public_key().as_ref();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": b64(&public[1..33]), "y": b64(&public[33..65])}]});
    let addr = serve_json(jwks.to_string()).await;
    let issuer = format!("http://{addr}");
    let config: citadel_identity::jwt::JwtIssuerConfig = toml::from_str(&format!(
        "name = \"bench\"\nissuer = \"{issuer}\"\njwks_url = \"{issuer}/jwks\"\naudiences = [\"citadel\"]\nalgorithms = [\"ES256\"]\n[role_map]\nml = \"developer\"\n"
    ))
    .unwrap();
    let verifier = citadel_identity::jwt::JwtVerifier::new(&[config]).unwrap();
    verifier.fetch_all().await;
    let mint = |sub: usize| {
        let header = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let claims = serde_json::json!({"iss": issuer, "aud": "citadel", "sub": format!("user-{sub}"),
            "groups": ["ml"], "exp": now / 1000 + 3600});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    };
    let tokens: Vec<String> = (0..2000).map(mint).collect();
    let t = Instant::now();
    for tok in &tokens {
        verifier.verify(tok, now).await.unwrap();
    }
    let first_us = t.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64;
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let n = 200_000;
        let t = Instant::now();
        for i in 0..n {
            std::hint::black_box(
                verifier
                    .verify(&tokens[i % tokens.len()], now)
                    .await
                    .unwrap(),
            );
        }
        rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    (first_us, median(rounds))
}

async fn device_figures(
    store: &citadel_store::Store,
    dir: &tempfile::TempDir,
    now: i64,
) -> (f64, f64) {
    use citadel_identity::machines::{DeviceConfig, Machines, WorkloadConfig};
    let ca = citadel_crypto::InternalCa::load_or_create(&dir.path().join("tls")).unwrap();
    let machines = Machines::load(
        store.clone(),
        DeviceConfig::default(),
        WorkloadConfig::default(),
    )
    .await
    .unwrap();
    let mut chain = String::new();
    for i in 0..1000 {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(vec!["d".into()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let (token, _, _) = machines.new_enrollment_token(None, now).await.unwrap();
        let (_, pem) = machines
            .enroll(&ca, &token, &csr, &format!("device-{i}"), now)
            .await
            .unwrap()
            .unwrap();
        chain = pem;
    }
    let facts = citadel_crypto::read_cert_pem(chain.as_bytes()).unwrap();
    let device_ns = per_call(7, 200_000, || {
        std::hint::black_box(
            machines
                .identify(&facts.fingerprint, &facts.uris, now)
                .unwrap(),
        );
    });
    let checker = citadel_crypto::ClientCertChecker::new(ca.cert_pem()).unwrap();
    let ders: Vec<rustls_pki_types::CertificateDer<'static>> = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(|c| c.unwrap())
            .collect()
    };
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        let checked = std::hint::black_box(checker.check(&ders).unwrap());
        assert!(checked.validity.is_ok());
    }
    (device_ns, t.elapsed().as_secs_f64() * 1e6 / n as f64)
}
