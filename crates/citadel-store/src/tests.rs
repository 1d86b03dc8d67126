//! The storage suite: every test runs on SQLite and, when `CITADEL_TEST_PG`
//! is set, on PostgreSQL, so both backends are held to the same behaviour.

use citadel_core::{EventClass, Outcome, SecurityEvent};

use crate::test_util::on_both_backends;
use crate::{ApiKeyRecord, EventQuery, RoleRecord, Store, StoreError, UserRecord};

fn user(name: &str) -> UserRecord {
    UserRecord {
        id: format!("u-{name}"),
        name: name.into(),
        roles: vec!["developer".into()],
        disabled: false,
        created_at: 1,
    }
}

fn key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: "ci".into(),
        owner_kind: "service_account".into(),
        owner_id: format!("sa-{id}"),
        owner_name: "ci".into(),
        roles: vec!["service".into()],
        hash: "00ff".into(),
        created_at: 5,
        expires_at: Some(99),
        revoked_at: None,
        last_used_at: None,
        rpm: Some(60),
        tpm: None,
    }
}

async fn users_and_roles(s: &Store) {
    let v0 = s.enforcement_version().await.unwrap();
    s.create_user(&user("alice")).await.unwrap();
    assert!(s.enforcement_version().await.unwrap() > v0);
    assert!(matches!(
        s.create_user(&user("alice")).await,
        Err(StoreError::Conflict(_))
    ));
    let found = s.find_user("alice").await.unwrap();
    assert_eq!(found, user("alice"));
    assert_eq!(s.find_user("u-alice").await.unwrap().name, "alice");
    let disabled = s.set_user_disabled("alice", true).await.unwrap();
    assert!(disabled.disabled);
    assert!(s.find_user("alice").await.unwrap().disabled);
    assert!(matches!(
        s.find_user("bob").await,
        Err(StoreError::NotFound(_))
    ));
    let role = RoleRecord {
        name: "analyst".into(),
        description: "reads".into(),
        builtin: false,
        created_at: 3,
    };
    s.create_role(&role).await.unwrap();
    assert!(matches!(
        s.create_role(&role).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list_roles().await.unwrap(), vec![role]);
}

async fn api_keys(s: &Store) {
    s.insert_api_key(&key("k1")).await.unwrap();
    assert_eq!(s.get_api_key("k1").await.unwrap(), key("k1"));
    let v = s.enforcement_version().await.unwrap();
    let revoked = s.revoke_api_key("k1", 50).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(50));
    assert!(s.enforcement_version().await.unwrap() > v);
    // A second revocation keeps the first time.
    assert_eq!(
        s.revoke_api_key("k1", 70).await.unwrap().revoked_at,
        Some(50)
    );
    assert!(matches!(
        s.revoke_api_key("nope", 1).await,
        Err(StoreError::NotFound(_))
    ));
    s.touch_api_keys(&[("k1".into(), 40)]).await.unwrap();
    s.touch_api_keys(&[("k1".into(), 30)]).await.unwrap();
    assert_eq!(s.get_api_key("k1").await.unwrap().last_used_at, Some(40));
    assert_eq!(s.list_api_keys().await.unwrap().len(), 1);
}

fn event(principal: &str, outcome: Outcome) -> SecurityEvent {
    SecurityEvent::builder(EventClass::ApiActivity, 1, "Create", outcome)
        .actor_named(principal, principal, "user")
        .request_id("req")
        .build()
}

async fn events_append_query_and_page(s: &Store) {
    let batch: Vec<_> = (0..600)
        .map(|i| event(if i % 2 == 0 { "a" } else { "b" }, Outcome::Success))
        .chain(std::iter::once(event("a", Outcome::Failure)))
        .collect();
    s.append_events(&batch).await.unwrap();
    assert_eq!(s.count_events().await.unwrap(), 601);

    let (failures, cursor) = s
        .query_events(&EventQuery {
            outcome: Some(Outcome::Failure),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0], batch[600]);
    assert!(cursor.is_none());

    // Page through principal b's 300 events, 128 at a time, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, cursor) = s
            .query_events(&EventQuery {
                principal: Some("b".into()),
                class: Some(EventClass::ApiActivity),
                after_seq: after,
                limit: Some(128),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page);
        match cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let expected: Vec<_> = batch
        .iter()
        .filter(|e| e.principal.as_deref() == Some("b"))
        .cloned()
        .collect();
    assert_eq!(seen, expected);

    let (none, _) = s
        .query_events(&EventQuery {
            since: Some(citadel_core::clock::now_ms() + 60_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn events_are_append_only(s: &Store) {
    s.append_events(&[event("a", Outcome::Success)])
        .await
        .unwrap();
    let update = sqlx::query("UPDATE events SET outcome = 'failure'")
        .execute(s.pool())
        .await;
    assert!(update.is_err(), "an event row could be updated");
    let delete = sqlx::query("DELETE FROM events").execute(s.pool()).await;
    assert!(delete.is_err(), "an event row could be deleted");
    assert_eq!(s.count_events().await.unwrap(), 1);
}

async fn retried_batches_are_idempotent(s: &Store) {
    let e = event("a", Outcome::Success);
    s.append_events(std::slice::from_ref(&e)).await.unwrap();
    // The same batch again (a retry after an unknown commit outcome), plus a
    // new event: the new one is stored once, the old one not twice.
    let fresh = event("a", Outcome::Success);
    s.append_events(&[e.clone(), fresh.clone()]).await.unwrap();
    assert_eq!(s.count_events().await.unwrap(), 2);
    let (all, _) = s.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(all, vec![e, fresh]);
}

async fn reopening_keeps_schema(s: &Store) {
    crate::migrate::run(s).await.unwrap();
    crate::migrate::run(s).await.unwrap();
    assert_eq!(s.count_events().await.unwrap(), 0);
}

#[tokio::test]
async fn users_and_roles_on_both_backends() {
    on_both_backends!(users_and_roles);
}

#[tokio::test]
async fn api_keys_on_both_backends() {
    on_both_backends!(api_keys);
}

#[tokio::test]
async fn events_on_both_backends() {
    on_both_backends!(events_append_query_and_page);
}

#[tokio::test]
async fn append_only_on_both_backends() {
    on_both_backends!(events_are_append_only);
}

#[tokio::test]
async fn retried_appends_are_idempotent_on_both_backends() {
    on_both_backends!(retried_batches_are_idempotent);
}

#[tokio::test]
async fn migrations_are_idempotent_on_both_backends() {
    on_both_backends!(reopening_keeps_schema);
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    assert!(matches!(
        Store::open("mysql://u:secret@h/db").await,
        Err(StoreError::UnsupportedUrl(u)) if !u.contains("secret")
    ));
}

/// A database of schema version 1 (before the Merkle log) with events whose
/// sequence numbers have gaps, upgraded: every old event becomes a leaf, in
/// the order stored, and the tree over them is the RFC 6962 tree.
async fn upgrade_from_version_1(url: &str, backend: crate::Backend) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!(
        "{url}{}",
        if backend == crate::Backend::Sqlite {
            "?mode=rwc"
        } else {
            ""
        }
    ))
    .await
    .unwrap();
    let v1 = match backend {
        crate::Backend::Sqlite => include_str!("../migrations/sqlite/0001_init.sql"),
        crate::Backend::Postgres => include_str!("../migrations/postgres/0001_init.sql"),
    };
    sqlx::raw_sql(v1).execute(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, 'initial schema', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut bodies = Vec::new();
    for (seq, n) in [(3i64, 0), (4, 1), (9, 2), (10, 3), (42, 4)] {
        let e = event(&format!("old-{n}"), Outcome::Success);
        let body = e.to_json_line();
        sqlx::query("INSERT INTO events (seq, id, time, class_uid, outcome, body) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(seq)
            .bind(&e.id)
            .bind(e.time)
            .bind(e.class.uid())
            .bind("success")
            .bind(&body)
            .execute(&mut conn)
            .await
            .unwrap();
        bodies.push(body);
    }
    conn.close().await.unwrap();
    let store = Store::open(url).await.unwrap();
    store.check_log().await.unwrap();
    let entries = store.read_log_entries(0, 100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        entries.iter().map(|e| e.body.clone()).collect::<Vec<_>>(),
        bodies
    );
    let mut range = citadel_core::merkle::CompactRange::new();
    for b in &bodies {
        range.append(citadel_core::merkle::leaf_hash(b.as_bytes()), |_, _, _| {});
    }
    assert_eq!(store.log_head().await.unwrap(), (5, range.root()));
    // New events go on from there.
    store
        .append_events(&[event("new", Outcome::Success)])
        .await
        .unwrap();
    assert_eq!(store.read_log_entries(5, 1).await.unwrap()[0].index, 5);
    store.check_log().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_into_the_log_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v1.db").display());
    upgrade_from_version_1(&url, crate::Backend::Sqlite).await;
    if let Ok(base) = std::env::var("CITADEL_TEST_PG") {
        let url = crate::testing::fresh_postgres_database(&base).await;
        upgrade_from_version_1(&url, crate::Backend::Postgres).await;
    }
}

async fn consent_grants_withdrawals_and_receipts(s: &Store) {
    let grant = |id: &str, version: &str, at: i64| crate::ConsentRecord {
        id: id.into(),
        subject_ref: "ref-1".into(),
        purpose: "inference".into(),
        version: version.into(),
        text_sha256: "ab".repeat(32),
        granted_at: at,
        source: "web-form".into(),
        withdrawn_at: None,
        withdrawn_source: None,
    };
    assert_eq!(
        s.current_consent("ref-1", "inference", "v1").await.unwrap(),
        None
    );
    let first = s.grant_consent(&grant("c-1", "v1", 10)).await.unwrap();
    // Granting again while it is open changes nothing.
    let again = s.grant_consent(&grant("c-2", "v1", 20)).await.unwrap();
    assert_eq!(again.id, "c-1");
    assert_eq!(
        s.current_consent("ref-1", "inference", "v1").await.unwrap(),
        Some(first)
    );
    // Another version of the text is another consent.
    assert_eq!(
        s.current_consent("ref-1", "inference", "v2").await.unwrap(),
        None
    );
    assert_eq!(
        s.withdraw_consent("ref-1", "inference", 30, "app")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.withdraw_consent("ref-1", "inference", 31, "app")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.current_consent("ref-1", "inference", "v1").await.unwrap(),
        None
    );
    s.grant_consent(&grant("c-3", "v1", 40)).await.unwrap();
    let receipts = s.consents_of("ref-1").await.unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c-1", "c-3"]
    );
    assert_eq!(receipts[0].withdrawn_at, Some(30));
    assert_eq!(receipts[0].withdrawn_source.as_deref(), Some("app"));
    assert!(s.consents_of("ref-2").await.unwrap().is_empty());
}

#[tokio::test]
async fn consent_on_both_backends() {
    on_both_backends!(consent_grants_withdrawals_and_receipts);
}

async fn captures_purge_and_subject_deletion(s: &Store) {
    let capture = |id: &str, kind: &str, class: &str, at: i64| crate::CaptureRecord {
        id: id.into(),
        request_id: format!("r-{id}"),
        subject_ref: "subj".into(),
        kind: kind.into(),
        route: "/v1/chat/completions".into(),
        model: "m".into(),
        data_class: class.into(),
        created_at: at,
        sealed: Some("c2VhbGVk".into()),
        purged_at: None,
    };
    s.insert_capture(&capture("a", "prompt", "restricted", 10))
        .await
        .unwrap();
    s.insert_capture(&capture("b", "answer", "restricted", 10))
        .await
        .unwrap();
    s.insert_capture(&capture("c", "prompt", "public", 10))
        .await
        .unwrap();
    s.insert_capture(&capture("d", "prompt", "restricted", 50))
        .await
        .unwrap();
    // Prompts of restricted data older than 20: only "a".
    assert_eq!(
        s.purge_capture_content("prompt", Some("restricted"), 20, 99)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.purge_capture_content("prompt", Some("restricted"), 20, 99)
            .await
            .unwrap(),
        0
    );
    let all = s.captures_of("subj").await.unwrap();
    let a = all.iter().find(|c| c.id == "a").unwrap();
    assert_eq!((a.sealed.clone(), a.purged_at), (None, Some(99)));
    assert!(all.iter().find(|c| c.id == "b").unwrap().sealed.is_some());
    // Every prompt older than 20, any class: "c".
    assert_eq!(
        s.purge_capture_content("prompt", None, 20, 99)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.delete_captures(None, 20).await.unwrap(), 3);
    s.insert_pseudonym(&crate::PseudonymRecord {
        token: "<E_1>".into(),
        subject_ref: "subj".into(),
        kind: "E".into(),
        sealed: "eA==".into(),
        created_at: 1,
    })
    .await
    .unwrap();
    assert_eq!(s.pseudonyms_of("subj").await.unwrap().len(), 1);
    assert_eq!(
        s.delete_subject_records("subj", "cref").await.unwrap(),
        (1, 1, 0)
    );
    assert!(s.captures_of("subj").await.unwrap().is_empty());
}

#[tokio::test]
async fn captures_on_both_backends() {
    on_both_backends!(captures_purge_and_subject_deletion);
}
