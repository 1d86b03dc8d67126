use super::*;
use crate::mfa::{totp_code, TotpAlgorithm, TotpConfig};
use crate::password::PasswordConfig;
use crate::session::SessionConfig;
use crate::throttle::LockoutConfig;
use crate::KeyHasher;

const GOOD: &str = "correct horse battery staple";

struct Fixture {
    signin: SignIn,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    let passwords = Passwords::new(PasswordConfig {
        argon2_memory_kib: 1024,
        argon2_iterations: 1,
        ..Default::default()
    })
    .unwrap();
    let factors = Arc::new(
        Factors::new(
            store.clone(),
            crate::mfa::tests::test_keyring(&store).await,
            KeyHasher::new(Zeroizing::new(vec![5u8; 32])),
            TotpConfig::default(),
        )
        .unwrap(),
    );
    let sessions = Sessions::new(store.clone(), SessionConfig::default())
        .await
        .unwrap();
    let throttle = Throttle::new(store.clone(), LockoutConfig::default()).unwrap();
    Fixture {
        signin: SignIn::new(
            store.clone(),
            passwords,
            factors,
            sessions,
            throttle,
            Arc::new(crate::jwt::JwtVerifier::new(&[]).unwrap()),
            Arc::new(crate::passkeys::Passkeys::new(store.clone(), &Default::default()).unwrap()),
        ),
        store,
        _dir: dir,
    }
}

impl Fixture {
    async fn user(&self, name: &str, role: &str) -> UserRecord {
        let user = crate::create_user(&self.store, name, vec![role.into()])
            .await
            .unwrap();
        let hash = self
            .signin
            .passwords
            .hash(Zeroizing::new(GOOD.into()))
            .await
            .unwrap();
        self.store
            .set_password_hash(&user.id, &hash, now_ms())
            .await
            .unwrap();
        user
    }

    async fn try_(
        &self,
        name: &str,
        password: &str,
        totp: Option<String>,
        ip: &str,
    ) -> SignInResult {
        self.signin
            .sign_in(
                SignInRequest {
                    username: name.into(),
                    password: Zeroizing::new(password.into()),
                    totp: totp.map(Zeroizing::new),
                    recovery_code: None,
                    source_ip: ip.parse().unwrap(),
                    user_agent: None,
                },
                &mfa_for_admins,
            )
            .await
            .unwrap()
    }
}

/// The default policy's shape: admins need a second factor.
fn mfa_for_admins(user: &UserRecord, mfa: bool) -> bool {
    mfa || !user.roles.iter().any(|r| r == "admin")
}

#[tokio::test]
async fn password_sign_in_makes_a_session_and_wrong_ones_do_not() {
    let f = fixture().await;
    f.user("alice", "developer").await;
    let ok = f.try_("alice", GOOD, None, "192.0.2.1").await;
    let session = ok.outcome.unwrap();
    assert_eq!(ok.methods, vec!["pwd"]);
    assert!(f
        .signin
        .sessions
        .verify(&session.token, now_ms())
        .await
        .is_ok());
    let wrong = f
        .try_("alice", "correct horse battery stapler", None, "192.0.2.1")
        .await;
    assert_eq!(wrong.outcome.unwrap_err(), SignInFailure::WrongPassword);
    let unknown = f.try_("mallory", GOOD, None, "192.0.2.1").await;
    assert_eq!(unknown.outcome.unwrap_err(), SignInFailure::UnknownUser);
    assert!(unknown.user.is_none());
    let malformed = f.try_("x' OR 1=1", GOOD, None, "192.0.2.1").await;
    assert_eq!(malformed.outcome.unwrap_err(), SignInFailure::MalformedName);
}

#[tokio::test]
async fn admins_need_a_second_factor_and_each_code_works_once() {
    let f = fixture().await;
    let root = f.user("root", "admin").await;
    // No factor enrolled: policy requires one.
    let r = f.try_("root", GOOD, None, "192.0.2.1").await;
    assert_eq!(r.outcome.unwrap_err(), SignInFailure::MfaNotEnrolled);
    let e = f.signin.factors.enroll_totp(&root).await.unwrap();
    let seed = totp_rs::Secret::Encoded(e.secret.to_string())
        .to_bytes()
        .unwrap();
    let r = f.try_("root", GOOD, None, "192.0.2.1").await;
    assert_eq!(r.outcome.unwrap_err(), SignInFailure::MfaRequired);
    let code = totp_code(TotpAlgorithm::Sha1, 6, 30, &seed, (now_ms() / 1000) as u64);
    let r = f.try_("root", GOOD, Some(code.clone()), "192.0.2.1").await;
    let session = r.outcome.unwrap();
    assert_eq!(r.methods, vec!["pwd", "otp"]);
    assert!(session.record.mfa_at.is_some());
    let replay = f.try_("root", GOOD, Some(code), "192.0.2.1").await;
    assert_eq!(
        replay.outcome.unwrap_err(),
        SignInFailure::Factor(FactorCheck::Replayed)
    );
    // A recovery code instead of a TOTP code.
    let codes = f.signin.factors.new_recovery_codes(&root.id).await.unwrap();
    let r = f
        .signin
        .sign_in(
            SignInRequest {
                username: "root".into(),
                password: Zeroizing::new(GOOD.into()),
                totp: None,
                recovery_code: Some(codes[3].clone()),
                source_ip: "192.0.2.1".parse().unwrap(),
                user_agent: None,
            },
            &mfa_for_admins,
        )
        .await
        .unwrap();
    assert_eq!(r.methods, vec!["pwd", "recovery"]);
    assert!(r.outcome.is_ok());
}

#[tokio::test]
async fn brute_force_locks_the_guesser_but_not_the_owner_elsewhere() {
    let f = fixture().await;
    f.user("alice", "developer").await;
    for i in 0..5 {
        let r = f
            .try_("alice", &format!("guess number {i}"), None, "192.0.2.66")
            .await;
        assert_eq!(r.outcome.unwrap_err(), SignInFailure::WrongPassword);
    }
    // Locked now, even with the right password, and the lock is reported.
    let r = f.try_("alice", GOOD, None, "192.0.2.66").await;
    assert_eq!(r.outcome.unwrap_err(), SignInFailure::Locked);
    assert!(r.locked_until.unwrap() > now_ms());
    // The owner from another address signs in.
    assert!(f
        .try_("alice", GOOD, None, "198.51.100.5")
        .await
        .outcome
        .is_ok());
}

#[tokio::test]
async fn disabled_users_and_policy_denials_get_no_session() {
    let f = fixture().await;
    f.user("carol", "developer").await;
    f.store.set_user_disabled("carol", true).await.unwrap();
    let r = f.try_("carol", GOOD, None, "192.0.2.1").await;
    assert_eq!(r.outcome.unwrap_err(), SignInFailure::UserDisabled);
    f.user("dave", "developer").await;
    let deny_all = |_: &UserRecord, _: bool| false;
    let r = f
        .signin
        .sign_in(
            SignInRequest {
                username: "dave".into(),
                password: Zeroizing::new(GOOD.into()),
                totp: None,
                recovery_code: None,
                source_ip: "192.0.2.1".parse().unwrap(),
                user_agent: None,
            },
            &deny_all,
        )
        .await
        .unwrap();
    assert_eq!(r.outcome.unwrap_err(), SignInFailure::PolicyDenied);
}

#[tokio::test]
async fn a_weaker_stored_hash_is_upgraded_at_sign_in() {
    let f = fixture().await;
    let user = f.user("erin", "developer").await;
    let weak = Passwords::new(PasswordConfig {
        argon2_memory_kib: 512,
        argon2_iterations: 1,
        ..Default::default()
    })
    .unwrap()
    .hash(Zeroizing::new(GOOD.into()))
    .await
    .unwrap();
    f.store
        .set_password_hash(&user.id, &weak, now_ms())
        .await
        .unwrap();
    assert!(f
        .try_("erin", GOOD, None, "192.0.2.1")
        .await
        .outcome
        .is_ok());
    let stored = f.store.find_user_credentials("erin").await.unwrap();
    let stored = stored.password_hash.unwrap();
    assert_ne!(stored, weak);
    assert!(stored.contains("m=1024"));
    assert!(f
        .try_("erin", GOOD, None, "192.0.2.1")
        .await
        .outcome
        .is_ok());
}
