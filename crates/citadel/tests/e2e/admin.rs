//! The admin API: authenticated, authorized by Cedar, recorded.

use std::collections::HashSet;

use citadel_core::EventClass;
use serde_json::{json, Value};

use crate::support::{code_of, upstream_config, Citadel, Upstream};

#[tokio::test]
async fn admin_calls_are_authenticated_authorized_and_recorded() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let keys = format!("{}/api/v1/keys", c.admin);

    let (s, code, _) = code_of(c.client.get(&keys).send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (401, "invalid_credentials"));

    let (_, auditor) = c.key("auditor", json!({})).await;
    let (_, developer) = c.key("developer", json!({})).await;
    assert_eq!(
        c.client
            .get(&keys)
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .client
        .post(&keys)
        .bearer_auth(&auditor)
        .json(&json!({"name": "x", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (403, "forbidden"));
    let (s, _, _) = code_of(
        c.client
            .get(&keys)
            .bearer_auth(&developer)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);

    // An operator manages keys but cannot mint one more privileged than policy allows.
    let (_, operator) = c.key("operator", json!({})).await;
    let r = c
        .client
        .post(&keys)
        .bearer_auth(&operator)
        .json(&json!({"name": "ci", "role": "service"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .client
        .post(&keys)
        .bearer_auth(&operator)
        .json(&json!({"name": "root", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (403, "forbidden"));
    let r = c
        .client
        .post(format!("{}/api/v1/users", c.admin))
        .bearer_auth(&operator)
        .json(&json!({"name": "mallory", "roles": ["operator"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await.0, 403);
    // A user's key cannot carry a role the user lacks.
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "alice", "roles": ["developer"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = c
        .client
        .post(&keys)
        .bearer_auth(&c.admin_key)
        .json(&json!({"name": "a", "role": "auditor", "user": "alice"}))
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (400, "invalid_request"));
    // An operator cannot mint a key that acts as another user.
    let r = c
        .client
        .post(&keys)
        .bearer_auth(&operator)
        .json(&json!({"name": "as-alice", "role": "developer", "user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await.0, 403);

    // Listing never shows secrets or hashes.
    let v: Value = c
        .client
        .get(&keys)
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = v.to_string();
    assert!(
        !text.contains("ctd_") && !text.contains("\"hash\""),
        "{text}"
    );

    // The denied create was recorded with the deciding policy.
    let r = c
        .client
        .get(format!(
            "{}/api/v1/events?type=api_activity&outcome=failure",
            c.admin
        ))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let denied: Vec<&Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["api"]["operation"] == "keys.create")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["policy"]["uid"], "default-deny");
    c.stop().await;
}

#[tokio::test]
async fn revoking_a_key_or_disabling_its_user_takes_effect_on_the_next_request() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (id, key) = c.key("developer", json!({})).await;
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    let r = c
        .admin_post(&format!("/api/v1/keys/{id}/revoke"), json!(null))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 401);

    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "dana", "roles": ["developer"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, hers) = c.key("developer", json!({"user": "dana"})).await;
    assert_eq!(c.chat(&hers, json!({"model": "m1"})).await.status(), 200);
    let r = c
        .admin_post("/api/v1/users/dana/disable", json!(null))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(c.chat(&hers, json!({"model": "m1"})).await.status(), 401);

    // Bad admin input changes nothing.
    let r = c.admin_post("/api/v1/keys/nope/revoke", json!(null)).await;
    assert_eq!(code_of(r).await.1, "not_found");
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "dana", "roles": ["developer"]}),
        )
        .await;
    assert_eq!(code_of(r).await.1, "conflict");
    let r = c
        .admin_post("/api/v1/keys", json!({"name": "z", "role": "wizard"}))
        .await;
    assert_eq!(code_of(r).await.1, "invalid_request");
    let r = c
        .client
        .post(format!("{}/api/v1/keys", c.admin))
        .bearer_auth(&c.admin_key)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await.1, "invalid_json");
    c.stop().await;
}

#[tokio::test]
async fn events_can_be_queried_filtered_and_paged() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;
    for _ in 0..5 {
        assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    }
    c.flush().await;
    let get = |q: String| {
        let c = &c;
        async move {
            c.client
                .get(format!("{}/api/v1/events?{q}", c.admin))
                .bearer_auth(&c.admin_key)
                .send()
                .await
                .unwrap()
        }
    };
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = format!(
            "type=http_activity&limit=2&since=1h{}",
            cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default()
        );
        let v: Value = get(q).await.json().await.unwrap();
        pages += 1;
        for e in v["events"].as_array().unwrap() {
            assert_eq!(e["class_uid"], EventClass::HttpActivity.uid());
            assert!(
                ids.insert(e["metadata"]["uid"].as_str().unwrap().to_owned()),
                "page overlap"
            );
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(
        ids.len() >= 5 && pages >= 3,
        "{} events in {pages} pages",
        ids.len()
    );
    let v: Value = get("since=2099-01-01T00:00:00Z".into())
        .await
        .json()
        .await
        .unwrap();
    assert!(v["events"].as_array().unwrap().is_empty());
    for bad in [
        "limit=0",
        "limit=x",
        "type=nope",
        "outcome=maybe",
        "since=yesterdayish",
        "colour=blue",
    ] {
        let (s, code, _) = code_of(get(bad.into()).await).await;
        assert_eq!((s, code.as_str()), (400, "invalid_request"), "{bad}");
    }
    c.stop().await;
}

#[tokio::test]
async fn openapi_describes_every_route_and_metrics_count_requests() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let doc: Value = c
        .client
        .get(format!("{}/openapi.json", c.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{name}/disable", "post"),
        ("/api/v1/roles", "get"),
        ("/api/v1/roles", "post"),
        ("/api/v1/keys", "get"),
        ("/api/v1/keys", "post"),
        ("/api/v1/keys/{id}/revoke", "post"),
        ("/api/v1/upstreams", "get"),
        ("/api/v1/policies", "get"),
        ("/api/v1/policies/validate", "post"),
        ("/api/v1/policies/reload", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/users/{name}/erase", "post"),
        ("/api/v1/audit/checkpoint", "get"),
        ("/api/v1/audit/checkpoint", "post"),
        ("/api/v1/audit/proof/inclusion", "get"),
        ("/api/v1/audit/proof/consistency", "get"),
        ("/audit/log/checkpoint", "get"),
        ("/audit/log/tile/{level}/{index}", "get"),
        ("/audit/log/tile/entries/{index}", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
        let real_path = path
            .replace("{name}", "nobody")
            .replace("{id}", "nokey")
            .replace("{level}", "0")
            .replace("{index}", "000");
        let r = c
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{real_path}", c.admin),
            )
            .bearer_auth(&c.admin_key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status(),
            405,
            "{method} {path} is documented but not routed"
        );
        assert_ne!(code_of(r).await.1, "route_not_found", "{method} {path}");
    }
    let (_, key) = c.key("developer", json!({})).await;
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    let text = c.metrics_text().await;
    assert!(text.contains("citadel_requests_total{route=\"/v1/chat/completions\",upstream=\"fake\",decision=\"allowed\"} 1"), "{text}");
    assert!(text.contains("citadel_gateway_added_seconds_bucket"));
    assert!(text.contains("citadel_upstream_seconds_bucket"));
    assert!(text.contains("citadel_event_sink_lag"));
    let v: Value = c.admin_get("/api/v1/upstreams").await;
    assert_eq!(v["upstreams"][0]["name"], "fake");
    c.stop().await;
}

#[tokio::test]
async fn the_spine_runs_on_postgresql() {
    let Ok(base) = std::env::var("CITADEL_TEST_PG") else {
        citadel_store::testing::say_skipped(
            "CITADEL_TEST_PG is not set, PostgreSQL end-to-end test not run",
        );
        return;
    };
    let url = citadel_store::testing::fresh_postgres_database(&base).await;
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start_with(&upstream_config(addr), Some(url)).await;
    assert_eq!(c.running().store.backend_name(), "postgres");
    let (id, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "m1"})).await;
    assert_eq!(r.status(), 200);
    let rid = crate::support::request_id(&r);
    assert!(
        !c.events_for(&rid).await.is_empty(),
        "decision event durable in PostgreSQL"
    );
    c.admin_post(&format!("/api/v1/keys/{id}/revoke"), json!(null))
        .await;
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 401);
    c.stop().await;
}

#[tokio::test]
async fn replicas_sharing_postgresql_see_each_others_revocations_within_a_second() {
    let Ok(base) = std::env::var("CITADEL_TEST_PG") else {
        citadel_store::testing::say_skipped("CITADEL_TEST_PG is not set, cluster test not run");
        return;
    };
    let url = citadel_store::testing::fresh_postgres_database(&base).await;
    let up = Upstream::default();
    let addr = up.start().await;
    let a = Citadel::start_with(&upstream_config(addr), Some(url.clone())).await;
    let b = a.start_replica(&upstream_config(addr), url.clone()).await;
    assert!(
        b.admin_key.is_empty(),
        "a second replica must not bootstrap another admin"
    );
    let (id, key) = a.key("developer", json!({})).await;
    // The key made on replica A works on replica B once B has polled.
    let mut works_on_b = false;
    for _ in 0..20 {
        if b.chat(&key, json!({"model": "m1"})).await.status() == 200 {
            works_on_b = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(works_on_b, "replica B never learned of the new key");
    let r = a
        .client
        .post(format!("{}/api/v1/keys/{id}/revoke", a.admin))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked_at = std::time::Instant::now();
    let mut refused = false;
    while revoked_at.elapsed() < std::time::Duration::from_secs(3) {
        if b.chat(&key, json!({"model": "m1"})).await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "replica B still accepted a key revoked on replica A"
    );
    assert!(
        revoked_at.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        revoked_at.elapsed()
    );
    // Both replicas' events land in the one store.
    let (events, _) = b
        .running()
        .store
        .query_events(&Default::default())
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.body["status_detail"] == "revoked_key"));
    assert!(events
        .iter()
        .any(|e| e.body["api"]["operation"] == "keys.revoke"));
    // Both replicas append to the one Merkle log at once; it stays whole,
    // and either replica's checkpoints verify with the shared log key.
    let (_, key) = a.key("developer", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let load = |c: &Citadel| {
        let (client, url, key) = (c.client.clone(), c.gateway.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                client
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "m1"}))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let (ta, tb) = (load(&a), load(&b));
    ta.await.unwrap();
    tb.await.unwrap();
    a.flush().await;
    b.flush().await;
    a.running().log.checkpoint_now().await.unwrap();
    b.running().log.checkpoint_now().await.unwrap();
    let report =
        citadel_audit::verify_store(&b.running().store, &a.running().log.verifier(), |_| {})
            .await
            .unwrap();
    assert!(
        report.entries >= 160 && report.checkpoints >= 1,
        "{report:?}"
    );
    // A replica with a log key of its own is refused at start.
    let stray = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(stray.path().join("keys")).unwrap();
    let hash_key = std::fs::read(a.data.path().join("keys/api-key-hash.key")).unwrap();
    citadel_crypto::write_private_file(&stray.path().join("keys/api-key-hash.key"), &hash_key)
        .unwrap();
    let refused = citadel::serve::start(citadel::serve::ServeRequest {
        data: citadel::data_dir::DataDir::new(stray.path().to_path_buf()),
        config: citadel::config::Config::parse(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            "t.toml",
        )
        .unwrap(),
        database: Some(url.clone()),
        demo: false,
    })
    .await;
    let message = format!("{:#}", refused.err().expect("a stray log key is refused"));
    assert!(message.contains("audit-log.key"), "{message}");
    b.stop().await;
    a.stop().await;
}
