//! Devices and workloads through the real gateway over mutual TLS:
//! enrolment with a one-time token and a CSR, signed posture reports,
//! policy requiring a compliant device, revocation on the next request,
//! and every bad certificate refused over HTTP with its reason.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

const PASSWORD: &str = "a long and fine passphrase";

/// A device key (P-256) and a CSR for it, as a device agent makes them.
fn device_key() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(vec!["laptop".into()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// A client presenting `chain_pem` with `key_pem` and trusting Citadel's CA.
fn client_with(c: &Citadel, chain_pem: &str, key_pem: &str) -> reqwest::Client {
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{chain_pem}{key_pem}").as_bytes()).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn wait_for_policy(c: &Citadel, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c
        .running()
        .policy
        .policy_origins()
        .iter()
        .any(|(p, _)| p == id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "policy {id} not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn chat(
    client: &reqwest::Client,
    c: &Citadel,
    model: &str,
    auth: &[(&str, String)],
) -> reqwest::Response {
    let mut req = client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    for (k, v) in auth {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn an_enrolled_compliant_device_opens_what_policy_reserves_for_it_until_revoked() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    std::fs::write(
        c.data.path().join("policies").join("devices.cedar"),
        "@id(\"m2-needs-compliant-device\")\nforbid (principal, action == Citadel::Action::\"invoke_model\", resource == Citadel::Model::\"m2\")\nunless { context.device_trust == \"compliant\" };\n",
    )
    .unwrap();
    wait_for_policy(&c, "m2-needs-compliant-device").await;
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "alice", "roles": ["developer"], "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200);

    // Enrolment: a token bound to alice, spent once.
    let r = c
        .admin_post("/api/v1/devices/enroll-tokens", json!({"user": "alice"}))
        .await;
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (key, csr) = device_key();
    let enroll = |token: String, csr: String| {
        c.client
            .post(format!("{}/devices/enroll", c.gateway))
            .json(&json!({"token": token, "csr": csr, "name": "alice-laptop"}))
            .send()
    };
    let r = enroll(token.clone(), csr.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let enrolled: Value = r.json().await.unwrap();
    let chain = enrolled["certificate"].as_str().unwrap().to_owned();
    let device_id = enrolled["device_id"].as_str().unwrap().to_owned();
    let (status, code, _) = code_of(enroll(token, csr).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "a reused token"
    );

    let device = client_with(&c, &chain, &key.serialize_pem());
    // Alice signs in from the device; her API key works from it too.
    let login: Value = device
        .post(format!("{}/auth/login", c.gateway))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["user"]["name"], "alice");
    let r = device
        .post(format!("{}/auth/login", c.gateway))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = [("cookie", cookie.clone()), ("x-csrf-token", csrf.clone())];
    assert_eq!(chat(&device, &c, "m1", &auth).await.status(), 200);
    // Registered, not yet compliant: m2 is refused.
    let (status, _, _) = code_of(chat(&device, &c, "m2", &auth).await).await;
    assert_eq!(status, 403);

    // A signed posture report makes it compliant.
    let report = serde_json::to_vec(&json!({
        "os": "macos", "os_version": "14.5", "disk_encrypted": true, "screen_lock": true,
        "endpoint_protection": true,
        "collected_at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }))
    .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let post_posture = |client: reqwest::Client, report: Vec<u8>, sig: Vec<u8>| {
        let url = format!("{}/devices/posture", c.gateway);
        let b64 = b64.clone();
        async move {
            client
                .post(url)
                .json(&json!({"report": b64.encode(&report), "signature": b64.encode(&sig)}))
                .send()
                .await
                .unwrap()
        }
    };
    // A report signed by another key is refused.
    let (other_key, _) = device_key();
    let other_signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &other_key.serialize_der(),
        &rng,
    )
    .unwrap();
    let forged = other_signer.sign(&rng, &report).unwrap().as_ref().to_vec();
    let (status, _, body) =
        code_of(post_posture(device.clone(), report.clone(), forged).await).await;
    assert_eq!(status, 400, "{body}");
    // Without the device certificate, no report is taken.
    let sig = signer.sign(&rng, &report).unwrap().as_ref().to_vec();
    let (status, code, _) =
        code_of(post_posture(c.client.clone(), report.clone(), sig.clone()).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_client_certificate"));
    let r = post_posture(device.clone(), report, sig).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["device_trust"],
        "compliant"
    );
    assert_eq!(chat(&device, &c, "m2", &auth).await.status(), 200);
    // The same session from a client without the device: refused.
    let (status, _, _) = code_of(chat(&c.client, &c, "m2", &auth).await).await;
    assert_eq!(status, 403);

    // Revocation cuts off an answer streaming to the device, and takes
    // effect on the next request.
    let mut stream = device
        .post(format!("{}/v1/chat/completions", c.gateway))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"model": "m1", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    let revoked = std::time::Instant::now();
    let r = c
        .admin_post(&format!("/api/v1/devices/{device_id}/revoke"), Value::Null)
        .await;
    assert_eq!(r.status(), 200);
    let mut rest = String::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await
    {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        rest.contains("access_revoked") && !rest.contains("second"),
        "{rest}"
    );
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
    let r = chat(&device, &c, "m1", &auth).await;
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_client_certificate"));
    let events = c.events_for(&id).await;
    assert_eq!(events[0].body["status_detail"], "device_revoked");
    c.stop().await;
}

/// A certificate signed by the installation's CA key but already expired.
fn expired_cert_from(c: &Citadel) -> (String, String) {
    let tls = c.data.path().join("tls");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem")).unwrap())
            .unwrap();
    let ca_params = rcgen::CertificateParams::from_ca_cert_pem(
        &std::fs::read_to_string(tls.join("ca.pem")).unwrap(),
    )
    .unwrap();
    let issuer = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:citadel:device:d-old".to_owned().try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer, &ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn workloads_authenticate_by_spiffe_certificate_and_bad_certificates_are_refused() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let spiffe = "spiffe://citadel.local/ns/ml/sa/trainer";
    // As `citadel workload issue` does.
    c.running()
        .store
        .upsert_workload(spiffe, &["service".into()], 0)
        .await
        .unwrap();
    let ca = citadel_crypto::InternalCa::load_or_create(&c.data.path().join("tls")).unwrap();
    let (svid, _) = ca
        .issue_workload_cert(spiffe, Duration::from_secs(3600))
        .unwrap();
    // Let the gateway's snapshot follow the store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let workload = client_with(&c, &svid.chain_pem, &svid.key_pem);
    let r = chat(&workload, &c, "m1", &[]).await;
    let id = request_id(&r);
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let events = c.events_for(&id).await;
    let decision = events.iter().find(|e| e.body["class_uid"] == 6003).unwrap();
    assert_eq!(decision.body["actor"]["user"]["uid"], spiffe);
    assert_eq!(decision.body["actor"]["user"]["type"], "workload");

    // A certificate from another CA, an expired one, and one naming an
    // unknown workload: each refused with its reason.
    let other_dir = tempfile::tempdir().unwrap();
    let foreign = citadel_crypto::InternalCa::load_or_create(other_dir.path()).unwrap();
    let (foreign_svid, _) = foreign
        .issue_workload_cert(spiffe, Duration::from_secs(3600))
        .unwrap();
    let (unknown_svid, _) = ca
        .issue_workload_cert(
            "spiffe://citadel.local/ns/x/sa/stranger",
            Duration::from_secs(3600),
        )
        .unwrap();
    let (expired_pem, expired_key) = expired_cert_from(&c);
    let ca_pem = std::fs::read_to_string(c.data.path().join("tls").join("ca.pem")).unwrap();
    for (chain, key, reason) in [
        (
            foreign_svid.chain_pem.clone(),
            foreign_svid.key_pem.to_string(),
            "unknown_certificate_issuer",
        ),
        (
            format!("{expired_pem}{ca_pem}"),
            expired_key,
            "expired_certificate",
        ),
        (
            unknown_svid.chain_pem.clone(),
            unknown_svid.key_pem.to_string(),
            "unknown_workload",
        ),
    ] {
        let client = client_with(&c, &chain, &key);
        let r = chat(&client, &c, "m1", &[]).await;
        let id = request_id(&r);
        let (status, code, _) = code_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_client_certificate"),
            "{reason}"
        );
        let events = c.events_for(&id).await;
        assert_eq!(events[0].body["status_detail"], reason);
    }

    // A connection does not outlive its certificate: the same (kept-alive)
    // connection is refused once the certificate has expired.
    let (short, _) = ca
        .issue_workload_cert(spiffe, Duration::from_secs(2))
        .unwrap();
    let brief = client_with(&c, &short.chain_pem, &short.key_pem);
    assert_eq!(chat(&brief, &c, "m1", &[]).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = chat(&brief, &c, "m1", &[]).await;
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_client_certificate"));
    assert_eq!(
        c.events_for(&id).await[0].body["status_detail"],
        "expired_certificate"
    );

    // Revoking the workload ends its access on the next request.
    let r = c
        .admin_post("/api/v1/workloads/revoke", json!({"spiffe_id": spiffe}))
        .await;
    assert_eq!(r.status(), 200);
    let (status, code, _) = code_of(chat(&workload, &c, "m1", &[]).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_client_certificate"));
    c.stop().await;
}
