//! The request path end to end: TLS, HTTP/2, routing, streaming, headers,
//! durable decision events.

use std::time::Duration;

use citadel_core::EventClass;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

#[tokio::test]
async fn chat_reaches_the_upstream_and_its_decision_is_durable_before_the_response() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;

    let r = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(&key)
        .header("x-forwarded-for", "6.6.6.6")
        .json(&json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "ok");
    let seen = &body["seen_headers"];
    assert!(
        seen.get("authorization").is_none(),
        "client credential leaked upstream: {seen}"
    );
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "client-sent XFF must be replaced"
    );
    assert!(seen["forwarded"]
        .as_str()
        .unwrap()
        .starts_with("for=127.0.0.1;proto=https"));
    assert_eq!(seen["x-request-id"], id.as_str());

    // Durable mode: the authorization event is in the store as soon as the
    // response is out, without waiting for any flush.
    let events = c.events_for(&id).await;
    let decision = events
        .iter()
        .find(|e| e.class == EventClass::ApiActivity)
        .expect("decision event durable before the response");
    assert_eq!(decision.body["policy"]["uid"], "developers-invoke-models");
    assert_eq!(decision.body["disposition"], "Allowed");
    assert_eq!(decision.body["resources"][0]["uid"], "m1");

    c.flush().await;
    let events = c.events_for(&id).await;
    let outcome = events
        .iter()
        .find(|e| e.class == EventClass::HttpActivity)
        .expect("outcome event");
    assert_eq!(outcome.body["http_response"]["code"], 200);
    assert_eq!(outcome.body["unmapped"]["total_tokens"], 30);
    assert_eq!(outcome.body["unmapped"]["upstream"], "fake");
    assert!(
        !outcome.to_json_line().contains(&key),
        "a secret reached an event"
    );
    c.stop().await;
}

#[tokio::test]
async fn sse_first_event_arrives_while_the_upstream_is_still_sending() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c
        .chat(&key, json!({"model": "m1", "stream": true, "messages": []}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(
        r.headers().get("x-hop").is_none(),
        "a hop-by-hop header crossed the proxy"
    );
    let mut stream = r.bytes_stream();
    // The upstream holds the rest of the answer until released; the first
    // event must arrive anyway, so nothing is buffered in between.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first SSE event arrived while the upstream was still streaming")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    up.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("second") && rest.contains("[DONE]"), "{rest}");
    c.flush().await;
    c.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_with_clients_by_alpn() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "m1"})).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let h1 = c.http1_client();
    let r = h1
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(&key)
        .json(&json!({"model": "m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn http_upstreams_are_routed_by_prefix_without_client_credentials_or_hop_headers() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("service", json!({})).await;
    let h1 = c.http1_client();
    let r = h1
        .put(format!("{}/data-api/tables/7?x=1", c.gateway))
        .bearer_auth(&key)
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "secret")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/api/tables/7");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["body_len"], 7);
    let headers = &v["headers"];
    for h in ["authorization", "x-private-hop", "proxy-authorization"] {
        assert!(headers.get(h).is_none(), "{h} was forwarded: {headers}");
    }
    // An ambiguous path is refused before it can be routed.
    let r = c
        .client
        .get(format!("{}/data-api//tables", c.gateway))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    // A path that only shares a prefix's letters is not routed there.
    let r = c
        .client
        .get(format!("{}/data-apix/1", c.gateway))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (404, "route_not_found"));
    c.stop().await;
}

#[tokio::test]
async fn models_list_holds_only_models_the_callers_policy_allows() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let dir = c.data.path().join("policies");
    std::fs::write(
        dir.join("gateway.cedar"),
        r#"
@id("developers-m1-only")
permit (principal in Citadel::Role::"developer", action == Citadel::Action::"invoke_model", resource == Citadel::Model::"m1");
@id("services-all")
permit (principal in Citadel::Role::"service", action == Citadel::Action::"invoke_model", resource);
"#,
    )
    .unwrap();
    c.running().reload_policies().await;
    let (_, dev) = c.key("developer", json!({})).await;
    let (_, svc) = c.key("service", json!({})).await;
    let list = |key: String| {
        let c = &c;
        async move {
            let r = c
                .client
                .get(format!("{}/v1/models", c.gateway))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(dev.clone()).await, vec!["m1"]);
    assert_eq!(list(svc).await, vec!["m1", "m2", "slow-model"]);
    let (status, code, _) = code_of(c.chat(&dev, json!({"model": "m2"})).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    c.stop().await;
}
