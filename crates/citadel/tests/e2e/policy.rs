//! Policies reload on change without dropping traffic; a broken set is
//! refused and the old one stays in force.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use citadel_core::{EventClass, Outcome};
use serde_json::json;

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

async fn wait_for(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..60 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn policy_changes_apply_on_the_fly_and_broken_sets_are_refused() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;
    let dir = c.data.path().join("policies");

    // Traffic runs throughout; none of it may fail because of a reload.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let background = {
        let (client, url, key) = (
            c.client.clone(),
            format!("{}/v1/chat/completions", c.gateway),
            key.clone(),
        );
        let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"model": "m1"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    assert_eq!(c.chat(&key, json!({"model": "m2"})).await.status(), 200);
    std::fs::write(
        dir.join("deny-m2.cedar"),
        "@id(\"no-m2\")\nforbid (principal, action == Citadel::Action::\"invoke_model\", resource == Citadel::Model::\"m2\");\n",
    )
    .unwrap();
    assert!(
        wait_for(async || c.chat(&key, json!({"model": "m2"})).await.status() == 403).await,
        "the new policy was not picked up"
    );
    let r = c.chat(&key, json!({"model": "m2"})).await;
    let id = request_id(&r);
    assert_eq!(r.status(), 403);
    let events = c.events_for(&id).await;
    assert_eq!(
        events
            .iter()
            .find(|e| e.class == EventClass::ApiActivity)
            .unwrap()
            .body["policy"]["uid"],
        "no-m2"
    );

    // A broken file: refused, the set in force stays (m2 still denied, m1 allowed).
    std::fs::write(
        dir.join("broken.cedar"),
        "permit (principal, action resource);\n",
    )
    .unwrap();
    assert!(
        wait_for(async || {
            let (events, _) = c
                .running()
                .store
                .query_events(&citadel_store::EventQuery {
                    outcome: Some(Outcome::Failure),
                    class: Some(EventClass::ApiActivity),
                    ..Default::default()
                })
                .await
                .unwrap();
            events
                .iter()
                .any(|e| e.body["api"]["operation"] == "policies.reload")
        })
        .await,
        "the refused reload was not recorded"
    );
    assert_eq!(c.chat(&key, json!({"model": "m2"})).await.status(), 403);
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);

    std::fs::remove_file(dir.join("broken.cedar")).unwrap();
    std::fs::remove_file(dir.join("deny-m2.cedar")).unwrap();
    assert!(wait_for(async || c.chat(&key, json!({"model": "m2"})).await.status() == 200).await);

    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during policy reloads"
    );
    c.stop().await;
}

#[tokio::test]
async fn admin_api_validates_and_reloads_policies() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let dir = c.data.path().join("policies");
    std::fs::write(dir.join("typo.cedar"), "\n@id(\"t\")\npermit (principal, action == Citadel::Action::\"invoke_modle\", resource);\n").unwrap();
    let r = c
        .client
        .post(format!("{}/api/v1/policies/validate", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["file"], "typo.cedar");
    assert_eq!(v["problems"][0]["line"], 3);
    let r = c
        .client
        .post(format!("{}/api/v1/policies/reload", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    let (s, code, body) = code_of(r).await;
    assert_eq!((s, code.as_str()), (400, "invalid_policy"));
    assert_eq!(body["problems"][0]["line"], 3);
    c.stop().await;
}

#[tokio::test]
async fn the_reachability_matrix_shows_who_reaches_what_from_the_policies_in_force() {
    let up = crate::support::Upstream::default();
    let addr = up.start().await;
    let c = crate::support::Citadel::start(&crate::support::upstream_config(addr)).await;
    let m = c.admin_get("/api/v1/segments").await;
    let targets = m["targets"].as_array().unwrap();
    let m1 = targets.iter().position(|t| t["name"] == "m1").unwrap();
    let get_data = targets
        .iter()
        .position(|t| t["name"] == "/data-api" && t["method"] == "GET")
        .unwrap();
    let cell = |role: &str, target: usize| {
        m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["role"] == role && c["principal_kind"] == "user" && c["target"] == target)
            .unwrap()["access"]
            .clone()
    };
    assert_eq!(cell("developer", m1), "allow");
    assert_eq!(cell("developer", get_data), "allow");
    assert_eq!(cell("auditor", m1), "deny", "default deny between segments");
    // A policy change shows in the matrix once reloaded.
    std::fs::write(
        c.data.path().join("policies").join("no-data-for-devs.cedar"),
        "@id(\"no-data-for-devs\")\nforbid (principal in Citadel::Role::\"developer\", action == Citadel::Action::\"call_route\", resource);\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let m = c.admin_get("/api/v1/segments").await;
        let denied =
            m["cells"].as_array().unwrap().iter().any(|x| {
                x["role"] == "developer" && x["target"] == get_data && x["access"] == "deny"
            });
        if denied {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "matrix did not follow the reload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = c
        .client
        .get(format!("{}/api/v1/segments?source=not-an-ip", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = crate::support::code_of(r).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    c.stop().await;
}
