use super::*;
use citadel_core::clock::now_ms;

struct Fixture {
    machines: Arc<Machines>,
    store: Store,
    ca: citadel_crypto::InternalCa,
    _dir: tempfile::TempDir,
}

async fn fixture(config: DeviceConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    let ca = citadel_crypto::InternalCa::load_or_create(&dir.path().join("tls")).unwrap();
    let machines = Machines::load(store.clone(), config, WorkloadConfig::default())
        .await
        .unwrap();
    Fixture {
        machines,
        store,
        ca,
        _dir: dir,
    }
}

/// A device: its key (P-256) and a CSR for it.
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

fn sign(key: &rcgen::KeyPair, message: &[u8]) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    pair.sign(&rng, message).unwrap().as_ref().to_vec()
}

fn report(now: i64, encrypted: bool) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "os": "macos", "os_version": "14.5", "disk_encrypted": encrypted,
        "screen_lock": true, "endpoint_protection": true, "collected_at": now / 1000
    }))
    .unwrap()
}

#[tokio::test]
async fn a_device_enrols_once_reports_posture_and_is_revoked() {
    let f = fixture(DeviceConfig {
        min_os_versions: [("macos".to_owned(), "14.0".to_owned())].into(),
        ..Default::default()
    })
    .await;
    let now = now_ms();
    let (token, _, expires) = f.machines.new_enrollment_token(None, now).await.unwrap();
    assert!(expires > now);
    let (key, csr) = device_key();
    let (device, chain) = f
        .machines
        .enroll(&f.ca, &token, &csr, "alice's laptop", now)
        .await
        .unwrap()
        .expect("token accepted");
    assert!(chain.contains("BEGIN CERTIFICATE"));
    // The token works once.
    let (_, csr2) = device_key();
    assert!(f
        .machines
        .enroll(&f.ca, &token, &csr2, "again", now)
        .await
        .unwrap()
        .is_none());
    // The certificate names the device and is what identify() recognises.
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(chain.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec());
    let der = der.unwrap();
    let facts = citadel_crypto::read_cert(&der).unwrap();
    let (fingerprint, uris) = (facts.fingerprint, facts.uris);
    assert_eq!(fingerprint, device.fingerprint);
    assert_eq!(uris, vec![format!("urn:citadel:device:{}", device.id)]);
    let trust = |now| match f.machines.identify(&fingerprint, &uris, now).unwrap() {
        Machine::Device { trust, .. } => trust,
        other => panic!("{other:?}"),
    };
    assert_eq!(trust(now), DeviceTrust::Registered);

    // A signed, passing report makes it compliant; a tampered one is refused.
    let good = report(now, true);
    assert!(f
        .machines
        .submit_posture(&device.id, &good, &sign(&key, &good), now)
        .await
        .unwrap());
    assert_eq!(trust(now), DeviceTrust::Compliant);
    let mut tampered = good.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    assert!(matches!(
        f.machines
            .submit_posture(&device.id, &tampered, &sign(&key, &good), now)
            .await,
        Err(PostureSubmitError::Posture(PostureError::BadSignature))
    ));
    let (other_key, _) = device_key();
    assert!(matches!(
        f.machines
            .submit_posture(&device.id, &good, &sign(&other_key, &good), now)
            .await,
        Err(PostureSubmitError::Posture(PostureError::BadSignature))
    ));
    // Freshness: after the window the device is only registered.
    let day = 24 * 3_600_000;
    assert_eq!(trust(now + day + 1), DeviceTrust::Registered);
    // A failing report (no disk encryption) drops it to registered.
    let bad = report(now, false);
    assert!(!f
        .machines
        .submit_posture(&device.id, &bad, &sign(&key, &bad), now)
        .await
        .unwrap());
    assert_eq!(trust(now), DeviceTrust::Registered);
    // A stale report is refused.
    let old = report(now - 3_600_000, true);
    assert!(matches!(
        f.machines
            .submit_posture(&device.id, &old, &sign(&key, &old), now)
            .await,
        Err(PostureSubmitError::Posture(PostureError::Stale))
    ));

    assert!(f.store.revoke_device(&device.id, now).await.unwrap());
    f.machines.refresh_if_changed().await.unwrap();
    assert_eq!(
        f.machines.identify(&fingerprint, &uris, now).unwrap_err(),
        MachineFailure::DeviceRevoked
    );
}

#[tokio::test]
async fn expired_tokens_and_bad_csrs_enrol_nothing() {
    let f = fixture(DeviceConfig::default()).await;
    let now = now_ms();
    let (token, _, expires) = f.machines.new_enrollment_token(None, now).await.unwrap();
    let (_, csr) = device_key();
    assert!(f
        .machines
        .enroll(&f.ca, &token, &csr, "late", expires + 1)
        .await
        .unwrap()
        .is_none());
    assert!(f
        .machines
        .enroll(&f.ca, "cte_forged", &csr, "x", now)
        .await
        .unwrap()
        .is_none());
    let (token, _, _) = f.machines.new_enrollment_token(None, now).await.unwrap();
    assert!(matches!(
        f.machines
            .enroll(
                &f.ca,
                &token,
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "x",
                now
            )
            .await,
        Err(EnrollError::Csr(_))
    ));
    // An Ed25519 key is not what devices use.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_csr = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .serialize_request(&ed)
        .unwrap()
        .pem()
        .unwrap();
    assert!(matches!(
        f.machines.enroll(&f.ca, &token, &ed_csr, "x", now).await,
        Err(EnrollError::Csr(_))
    ));
    // The token was not spent by the refused CSRs.
    let (_, csr) = device_key();
    assert!(f
        .machines
        .enroll(&f.ca, &token, &csr, "ok", now)
        .await
        .unwrap()
        .is_some());
    assert_eq!(f.store.list_devices().await.unwrap().len(), 1);
}

#[tokio::test]
async fn workloads_are_known_by_their_spiffe_id_until_revoked() {
    let f = fixture(DeviceConfig::default()).await;
    let id = "spiffe://citadel.local/ns/ml/sa/trainer";
    f.store
        .upsert_workload(id, &["service".into()], now_ms())
        .await
        .unwrap();
    f.machines.refresh_if_changed().await.unwrap();
    match f.machines.identify("ab", &[id.to_owned()], 0).unwrap() {
        Machine::Workload(p) => {
            assert_eq!(p.kind, PrincipalKind::Workload);
            assert_eq!(p.roles, vec!["service"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.machines
            .identify("ab", &["spiffe://citadel.local/other".into()], 0)
            .unwrap_err(),
        MachineFailure::UnknownWorkload
    );
    f.store.revoke_workload(id, now_ms()).await.unwrap();
    f.machines.refresh_if_changed().await.unwrap();
    assert_eq!(
        f.machines.identify("ab", &[id.to_owned()], 0).unwrap_err(),
        MachineFailure::WorkloadRevoked
    );
    assert!(f
        .store
        .upsert_workload(id, &["service".into()], 0)
        .await
        .is_err());
}

#[test]
fn spiffe_ids_follow_the_spec() {
    let td = "citadel.local";
    for ok in [
        "spiffe://citadel.local/a",
        "spiffe://citadel.local/ns/ml/sa/x-1_y.z",
    ] {
        check_spiffe_id(ok, td).unwrap();
    }
    for bad in [
        "http://citadel.local/a",
        "spiffe://citadel.local",
        "spiffe://citadel.local/",
        "spiffe://citadel.local/a//b",
        "spiffe://citadel.local/a/../b",
        "spiffe://Citadel.local/a",
        "spiffe://other.domain/a",
        "spiffe://citadel.local/a?b=c",
        "spiffe://user@citadel.local/a",
    ] {
        assert!(check_spiffe_id(bad, td).is_err(), "{bad}");
    }
}
