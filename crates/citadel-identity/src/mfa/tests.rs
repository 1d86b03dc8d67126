use super::*;
use citadel_core::clock::now_ms;

/// RFC 6238 Appendix B: the seeds of the reference implementation.
const SEED_SHA1: &[u8] = b"12345678901234567890";
const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

#[test]
fn rfc_6238_appendix_b_vectors() {
    let table: &[(u64, &str, TotpAlgorithm)] = &[
        (59, "94287082", TotpAlgorithm::Sha1),
        (59, "46119246", TotpAlgorithm::Sha256),
        (59, "90693936", TotpAlgorithm::Sha512),
        (1111111109, "07081804", TotpAlgorithm::Sha1),
        (1111111109, "68084774", TotpAlgorithm::Sha256),
        (1111111109, "25091201", TotpAlgorithm::Sha512),
        (1111111111, "14050471", TotpAlgorithm::Sha1),
        (1111111111, "67062674", TotpAlgorithm::Sha256),
        (1111111111, "99943326", TotpAlgorithm::Sha512),
        (1234567890, "89005924", TotpAlgorithm::Sha1),
        (1234567890, "91819424", TotpAlgorithm::Sha256),
        (1234567890, "93441116", TotpAlgorithm::Sha512),
        (2000000000, "69279037", TotpAlgorithm::Sha1),
        (2000000000, "90698825", TotpAlgorithm::Sha256),
        (2000000000, "38618901", TotpAlgorithm::Sha512),
        (20000000000, "65353130", TotpAlgorithm::Sha1),
        (20000000000, "77737706", TotpAlgorithm::Sha256),
        (20000000000, "47863826", TotpAlgorithm::Sha512),
    ];
    for (time, expected, algorithm) in table {
        let seed = match algorithm {
            TotpAlgorithm::Sha1 => SEED_SHA1,
            TotpAlgorithm::Sha256 => SEED_SHA256,
            TotpAlgorithm::Sha512 => SEED_SHA512,
        };
        assert_eq!(
            totp_code(*algorithm, 8, 30, seed, *time),
            *expected,
            "T={time} {algorithm:?}"
        );
        // Six digits are the low six of the same value.
        assert_eq!(totp_code(*algorithm, 6, 30, seed, *time), expected[2..]);
    }
}

async fn fixture(config: TotpConfig) -> (Factors, Store, UserRecord, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    let user = crate::create_user(&store, "alice", vec!["developer".into()])
        .await
        .unwrap();
    let factors = Factors::new(
        store.clone(),
        test_keyring(&store).await,
        KeyHasher::new(Zeroizing::new(vec![9u8; 32])),
        config,
    )
    .unwrap();
    (factors, store, user, dir)
}

fn seed_of(enrollment: &TotpEnrollment) -> Vec<u8> {
    totp_rs::Secret::Encoded(enrollment.secret.to_string())
        .to_bytes()
        .unwrap()
}

#[tokio::test]
async fn enrolment_gives_a_scannable_uri_and_stores_only_a_sealed_seed() {
    let (factors, store, user, _d) = fixture(TotpConfig {
        algorithm: TotpAlgorithm::Sha256,
        digits: 8,
        period: 60,
        ..Default::default()
    })
    .await;
    let e = factors.enroll_totp(&user).await.unwrap();
    assert!(
        e.otpauth_uri.starts_with("otpauth://totp/Citadel:alice?"),
        "{}",
        e.otpauth_uri.as_str()
    );
    for part in [
        "algorithm=SHA256",
        "digits=8",
        "period=60",
        "issuer=Citadel",
    ] {
        assert!(e.otpauth_uri.contains(part), "{part}");
    }
    assert!(e
        .otpauth_uri
        .contains(&format!("secret={}", e.secret.as_str())));
    assert!(e.qr_svg.starts_with("<?xml") && e.qr_svg.contains("<svg"));
    let seed = seed_of(&e);
    assert_eq!(seed.len(), 32);
    let stored = store.get_totp(&user.id).await.unwrap().unwrap();
    assert!(!stored.sealed_seed.contains(e.secret.as_str()));
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&stored.sealed_seed)
        .unwrap();
    assert!(!sealed.windows(seed.len()).any(|w| w == seed.as_slice()));
}

#[tokio::test]
async fn a_code_is_accepted_once_and_never_an_older_one() {
    let (factors, _store, user, _d) = fixture(TotpConfig::default()).await;
    let e = factors.enroll_totp(&user).await.unwrap();
    let seed = seed_of(&e);
    let now = now_ms();
    let secs = (now / 1000) as u64;
    let code = totp_code(TotpAlgorithm::Sha1, 6, 30, &seed, secs);
    let previous = totp_code(TotpAlgorithm::Sha1, 6, 30, &seed, secs - 30);
    let too_old = totp_code(TotpAlgorithm::Sha1, 6, 30, &seed, secs - 90);
    let check = |c: String| {
        let factors = &factors;
        let id = user.id.clone();
        async move { factors.check_totp(&id, &c, now).await.unwrap() }
    };
    assert_eq!(
        check(too_old).await,
        FactorCheck::Wrong,
        "outside the skew window"
    );
    assert_eq!(check("12345".into()).await, FactorCheck::Malformed);
    assert_eq!(check("12a456".into()).await, FactorCheck::Malformed);
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert_eq!(check(wrong.into()).await, FactorCheck::Wrong);
    assert_eq!(check(code.clone()).await, FactorCheck::Accepted);
    assert_eq!(check(code).await, FactorCheck::Replayed);
    // One step back is inside the skew window but before the step used.
    assert_eq!(check(previous).await, FactorCheck::Replayed);
    assert_eq!(
        factors.check_totp("u-nobody", "123456", now).await.unwrap(),
        FactorCheck::NotEnrolled
    );
}

#[tokio::test]
async fn a_seed_moved_to_another_user_does_not_open() {
    let (factors, store, alice, _d) = fixture(TotpConfig::default()).await;
    let bob = crate::create_user(&store, "bob", vec!["developer".into()])
        .await
        .unwrap();
    factors.enroll_totp(&alice).await.unwrap();
    let mut record = store.get_totp(&alice.id).await.unwrap().unwrap();
    record.user_id = bob.id.clone();
    store.put_totp(&record).await.unwrap();
    assert!(matches!(
        factors.check_totp(&bob.id, "123456", now_ms()).await,
        Err(MfaError::Sealed(_))
    ));
}

#[tokio::test]
async fn recovery_codes_are_single_use_and_a_new_set_replaces_the_old() {
    let (factors, store, user, _d) = fixture(TotpConfig::default()).await;
    let now = now_ms();
    assert_eq!(
        factors
            .check_recovery_code(&user.id, "x", now)
            .await
            .unwrap(),
        FactorCheck::NotEnrolled
    );
    let codes = factors.new_recovery_codes(&user.id).await.unwrap();
    assert_eq!(codes.len(), RECOVERY_CODES);
    assert!(codes[0].len() == 19 && codes[0].chars().nth(4) == Some('-'));
    let distinct: std::collections::HashSet<_> = codes.iter().map(|c| c.as_str()).collect();
    assert_eq!(distinct.len(), RECOVERY_CODES);
    // Typed without dashes and in lower case, it still works; once.
    let typed = codes[0].replace('-', "").to_lowercase();
    assert_eq!(
        factors
            .check_recovery_code(&user.id, &typed, now)
            .await
            .unwrap(),
        FactorCheck::Accepted
    );
    assert_eq!(
        factors
            .check_recovery_code(&user.id, &codes[0], now)
            .await
            .unwrap(),
        FactorCheck::Wrong
    );
    assert_eq!(factors.recovery_codes_left(&user.id).await.unwrap(), 9);
    assert_eq!(store.unused_recovery_codes(&user.id).await.unwrap(), 9);
    let again = factors.new_recovery_codes(&user.id).await.unwrap();
    assert_eq!(
        factors
            .check_recovery_code(&user.id, &codes[1], now)
            .await
            .unwrap(),
        FactorCheck::Wrong
    );
    assert_eq!(
        factors
            .check_recovery_code(&user.id, &again[1], now)
            .await
            .unwrap(),
        FactorCheck::Accepted
    );
}

#[test]
fn config_outside_the_standard_is_refused() {
    for bad in [
        TotpConfig {
            digits: 5,
            ..Default::default()
        },
        TotpConfig {
            digits: 9,
            ..Default::default()
        },
        TotpConfig {
            period: 1,
            ..Default::default()
        },
        TotpConfig {
            issuer: "a:b".into(),
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn another_installation_key_is_refused_when_seeds_exist() {
    let (factors, store, alice, _d) = fixture(TotpConfig::default()).await;
    factors.check_key().await.unwrap();
    factors.enroll_totp(&alice).await.unwrap();
    factors.check_key().await.unwrap();
    // Another installation's root key does not even load the keyring.
    let other = citadel_crypto::RootKey::generated().unwrap();
    let err = citadel_crypto::Keyring::load(store, other, &[AUTHENTICATOR_PURPOSE], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, citadel_crypto::KeyError::WrongRoot { .. }));
}

#[tokio::test]
async fn seeds_sealed_before_a_rotation_still_work_and_are_resealed() {
    let (factors, store, alice, _d) = fixture(TotpConfig::default()).await;
    let enrollment = factors.enroll_totp(&alice).await.unwrap();
    let before = store.get_totp(&alice.id).await.unwrap().unwrap();
    assert_eq!(factors.keys.rotate(AUTHENTICATOR_PURPOSE).await.unwrap(), 2);
    // The seed still opens (version 1) and a code is accepted.
    let now = 1_700_000_000_000;
    let code = totp_code(
        TotpAlgorithm::Sha1,
        6,
        30,
        &seed_of(&enrollment),
        (now / 1000) as u64,
    );
    assert_eq!(
        factors.check_totp(&alice.id, &code, now).await.unwrap(),
        FactorCheck::Accepted
    );
    // ... and was re-sealed under version 2, replay guard intact.
    let after = store.get_totp(&alice.id).await.unwrap().unwrap();
    assert_ne!(after.sealed_seed, before.sealed_seed);
    assert_eq!(after.last_step, Some(now / 1000 / 30));
    assert_eq!(
        factors.check_totp(&alice.id, &code, now).await.unwrap(),
        FactorCheck::Replayed
    );
    // A further rotation and an eager pass re-seal everything at once.
    factors.keys.rotate(AUTHENTICATOR_PURPOSE).await.unwrap();
    assert_eq!(factors.reseal_all().await.unwrap(), 1);
    assert_eq!(factors.reseal_all().await.unwrap(), 0);
    factors.check_key().await.unwrap();
}

/// A keyring on `store` with a root held only in memory.
pub(crate) async fn test_keyring(store: &Store) -> Arc<citadel_crypto::Keyring> {
    citadel_crypto::Keyring::load(
        store.clone(),
        citadel_crypto::RootKey::generated().unwrap(),
        &[AUTHENTICATOR_PURPOSE],
        &[],
    )
    .await
    .unwrap()
}
