use super::*;
use citadel_core::clock::now_ms;

async fn fixture(config: SessionConfig) -> (Arc<Sessions>, Store, UserRecord, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    let user = crate::create_user(&store, "alice", vec!["developer".into()])
        .await
        .unwrap();
    let sessions = Sessions::new(store.clone(), config).await.unwrap();
    (sessions, store, user, dir)
}

fn start(user: &UserRecord) -> SessionStart<'_> {
    SessionStart {
        user,
        methods: vec!["pwd".into()],
        mfa_at: None,
        source_ip: "127.0.0.1".into(),
        user_agent: Some("test".into()),
    }
}

#[tokio::test]
async fn a_session_verifies_and_its_cookie_is_locked_down() {
    let (sessions, store, user, _d) = fixture(SessionConfig::default()).await;
    let now = now_ms();
    let new = sessions.create(start(&user), now).await.unwrap();
    assert!(new.token.starts_with(SESSION_TOKEN_PREFIX));
    // Only hashes are stored.
    let stored = store
        .session_by_token_hash(&new.record.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.token_hash, new.token.as_str());
    assert!(!stored.csrf_hash.contains(new.csrf_token.as_str()));
    let live = sessions.verify(&new.token, now + 1).await.unwrap();
    assert_eq!(live.principal.id, user.id);
    assert_eq!(
        live.principal.credential,
        format!("session:{}", new.record.id)
    );
    assert!(live.csrf_matches(&new.csrf_token));
    assert!(!live.csrf_matches("forged"));
    let cookie = sessions.set_cookie(&new, now);
    assert!(cookie.contains("Max-Age=43200"), "{}", cookie.as_str());
    for attribute in [
        "__Host-citadel_session=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attribute), "{attribute}");
    }
    assert!(sessions.clear_cookie().contains("Max-Age=0"));
}

#[tokio::test]
async fn forged_tampered_and_ended_sessions_are_refused() {
    let (sessions, store, user, _d) = fixture(SessionConfig::default()).await;
    let now = now_ms();
    let new = sessions.create(start(&user), now).await.unwrap();
    // Tampered: one character changed.
    let mut tampered = new.token.to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        sessions.verify(&tampered, now).await.unwrap_err(),
        SessionFailure::Unknown
    );
    // Forged: right shape, never issued; and wrong shapes.
    let forged = format!("{SESSION_TOKEN_PREFIX}{}", "A".repeat(43));
    assert_eq!(
        sessions.verify(&forged, now).await.unwrap_err(),
        SessionFailure::Unknown
    );
    for bad in ["", "cts_", "cts_short", "ctd_0123", &format!("{forged}=")] {
        assert_eq!(
            sessions.verify(bad, now).await.unwrap_err(),
            SessionFailure::Malformed
        );
    }
    // Expired and idle.
    let lifetime = sessions.config().lifetime.as_millis() as i64;
    assert_eq!(
        sessions
            .verify(&new.token, now + lifetime)
            .await
            .unwrap_err(),
        SessionFailure::Expired
    );
    let idle = sessions.config().idle_timeout.as_millis() as i64;
    assert_eq!(
        sessions
            .verify(&new.token, now + idle + 1)
            .await
            .unwrap_err(),
        SessionFailure::Idle
    );
    // Activity keeps it alive.
    let fresh = sessions.create(start(&user), now).await.unwrap();
    sessions.verify(&fresh.token, now + idle / 2).await.unwrap();
    sessions.verify(&fresh.token, now + idle).await.unwrap();
    // Sign-out everywhere ends both; the user's other data stays.
    assert_eq!(
        sessions
            .revoke_all_for(&user.id, "sign_out_everywhere", now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        sessions.verify(&fresh.token, now + idle).await.unwrap_err(),
        SessionFailure::Revoked
    );
    // A disabled user's new session stops working too.
    let third = sessions.create(start(&user), now).await.unwrap();
    sessions.verify(&third.token, now).await.unwrap();
    store.set_user_disabled(&user.id, true).await.unwrap();
    assert!(sessions.refresh_if_changed().await.unwrap());
    assert_eq!(
        sessions.verify(&third.token, now).await.unwrap_err(),
        SessionFailure::UserDisabled
    );
}

#[tokio::test]
async fn another_replica_sees_a_revocation_after_its_refresh() {
    let (here, store, user, _d) = fixture(SessionConfig::default()).await;
    let there = Sessions::new(store.clone(), SessionConfig::default())
        .await
        .unwrap();
    let now = now_ms();
    let new = here.create(start(&user), now).await.unwrap();
    there.verify(&new.token, now).await.unwrap();
    here.revoke(&new.record.id, "logout", now).await.unwrap();
    assert!(there.refresh_if_changed().await.unwrap());
    assert_eq!(
        there.verify(&new.token, now).await.unwrap_err(),
        SessionFailure::Revoked
    );
}

#[tokio::test]
async fn rotation_issues_a_new_cookie_and_kills_the_old() {
    let (sessions, _store, user, _d) = fixture(SessionConfig::default()).await;
    let now = now_ms();
    let old = sessions.create(start(&user), now).await.unwrap();
    let live = sessions.verify(&old.token, now).await.unwrap();
    let mut s = start(&user);
    s.methods = vec!["pwd".into(), "otp".into()];
    s.mfa_at = Some(now + 5);
    let new = sessions.rotate(&live, s, now + 5).await.unwrap();
    assert_eq!(
        new.record.expires_at, old.record.expires_at,
        "rotation does not extend"
    );
    assert_eq!(
        sessions.verify(&old.token, now + 6).await.unwrap_err(),
        SessionFailure::Revoked
    );
    let rotated = sessions.verify(&new.token, now + 6).await.unwrap();
    assert_eq!(rotated.mfa_at, Some(now + 5));
    assert!(!rotated.csrf_matches(&old.csrf_token));
}

#[tokio::test]
async fn last_seen_reaches_other_replicas_through_the_store() {
    let (here, store, user, _d) = fixture(SessionConfig::default()).await;
    let now = now_ms();
    let new = here.create(start(&user), now).await.unwrap();
    let idle = here.config().idle_timeout.as_millis() as i64;
    here.verify(&new.token, now + idle - 10).await.unwrap();
    here.flush_last_seen().await.unwrap();
    let there = Sessions::new(store, SessionConfig::default())
        .await
        .unwrap();
    there.verify(&new.token, now + idle + 100).await.unwrap();
}

#[test]
fn cookie_headers_are_read_strictly() {
    let s = SessionConfig::default();
    let read = |headers: &[&str]| {
        s.token_in(headers.iter().copied())
            .map(|t| t.map(str::to_owned))
    };
    assert_eq!(read(&["a=1; b=2"]), Ok(None));
    assert_eq!(
        read(&["a=1; __Host-citadel_session=cts_x; b=2"]),
        Ok(Some("cts_x".into()))
    );
    assert_eq!(
        read(&["__Host-citadel_session=one", "__Host-citadel_session=two"]),
        Err(SessionFailure::Malformed)
    );
}

#[test]
fn settings_outside_sane_ranges_are_refused() {
    assert!(SessionConfig {
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(SessionConfig {
        cookie_name: "a b".into(),
        ..Default::default()
    }
    .validate()
    .is_err());
}
