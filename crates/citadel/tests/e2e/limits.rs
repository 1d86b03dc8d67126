//! The bad-input list: each refusal has its status and stable code, is
//! recorded, crashes nothing and leaks nothing.

use std::time::Duration;

use citadel_core::EventClass;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::support::{code_of, request_id, slow_body, upstream_config, Citadel, Upstream};

#[tokio::test]
async fn bad_credentials_are_one_indistinct_401_and_each_reason_is_recorded() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (revoked_id, revoked) = c.key("developer", json!({})).await;
    let (_, expired) = c.key("developer", json!({"expires": "1ms"})).await;
    let (_, good) = c.key("developer", json!({})).await;
    let r = c
        .client
        .post(format!("{}/api/v1/keys/{revoked_id}/revoke", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut wrong_secret = good.clone();
    wrong_secret.replace_range(wrong_secret.len() - 5.., "AAAAA");
    let unknown = "ctd_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, "missing_credentials"),
        (Some("garbage"), "malformed_credentials"),
        (Some(unknown), "unknown_key"),
        (Some(&wrong_secret), "wrong_secret"),
        (Some(&expired), "expired_key"),
        (Some(&revoked), "revoked_key"),
    ];
    let mut bodies = Vec::new();
    for (key, reason) in cases {
        let mut req = c
            .client
            .post(format!("{}/v1/chat/completions", c.gateway))
            .json(&json!({"model": "m1"}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        let id = request_id(&r);
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let (status, code, mut body) = code_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_credentials"),
            "{reason}"
        );
        body["error"]["request_id"] = json!(null);
        bodies.push(body);
        let events = c.events_for(&id).await;
        let authn = events
            .iter()
            .find(|e| e.class == EventClass::Authentication)
            .expect(reason);
        assert_eq!(authn.body["status_detail"], reason);
        if let Some(k) = key {
            assert!(
                !authn.to_json_line().contains(k),
                "a presented secret reached an event"
            );
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "401 bodies differ by reason: {bodies:?}"
    );
    assert_eq!(c.chat(&good, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn policy_denial_is_403_naming_the_policy_only_in_the_event() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, auditor) = c.key("auditor", json!({})).await;
    let r = c.chat(&auditor, json!({"model": "m1"})).await;
    let id = request_id(&r);
    let (status, code, body) = code_of(r).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(
        !body.to_string().contains("default-deny"),
        "the body names the policy: {body}"
    );
    let events = c.events_for(&id).await;
    let decision = events
        .iter()
        .find(|e| e.class == EventClass::ApiActivity)
        .unwrap();
    assert_eq!(decision.body["policy"]["uid"], "default-deny");
    assert_eq!(decision.body["disposition"], "Blocked");
    c.stop().await;
}

#[tokio::test]
async fn request_shape_errors_have_stable_codes() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[limits]\nmax_body_bytes = 1024\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let url = format!("{}/v1/chat/completions", c.gateway);
    let send_raw = |body: &'static str| c.client.post(&url).bearer_auth(&key).body(body).send();

    let (s, code, _) = code_of(c.chat(&key, json!({"model": "no-such-model"})).await).await;
    assert_eq!((s, code.as_str()), (404, "unknown_model"));
    for bad in ["{not json", "[1,2]", "{\"messages\": []}", "{\"model\": 7}"] {
        let (s, code, _) = code_of(send_raw(bad).await.unwrap()).await;
        assert_eq!((s, code.as_str()), (400, "invalid_json"), "{bad}");
    }
    let r = c.client.get(&url).bearer_auth(&key).send().await.unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (405, "method_not_allowed"));

    // Declared too large, and streamed too large without a length.
    let big = "x".repeat(4096);
    let r = c
        .client
        .post(&url)
        .bearer_auth(&key)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 512])));
    let r = c
        .client
        .post(&url)
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (413, "payload_too_large"));

    // Oversized headers: Citadel's own limit answers with its JSON code.
    let r = c
        .client
        .post(&url)
        .bearer_auth(&key)
        .header("x-padding", "p".repeat(20_000))
        .json(&json!({"model": "m1"}))
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (431, "headers_too_large"));

    assert_eq!(
        c.chat(&key, json!({"model": "m1"})).await.status(),
        200,
        "the gateway still serves"
    );
    c.stop().await;
}

#[tokio::test]
async fn slow_clients_get_408() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[limits]\nrequest_timeout = \"500ms\"\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let slow = slow_body(b"{\"model\":", Duration::from_secs(3), b"\"m1\"}");
    let started = std::time::Instant::now();
    let r = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(&key)
        .body(slow)
        .send()
        .await
        .unwrap();
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (408, "request_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 408 waited for the slow client"
    );
    c.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_without_touching_admitted_ones() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[limits]\nmax_connections = 2\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    // Connection 1: a real client, kept alive (HTTP/2).
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    // Connection 2: an idle TCP connection holding the last slot.
    let gateway = c.running().gateway_addr;
    let _idle = tokio::net::TcpStream::connect(gateway).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Connection 3 is closed at once.
    let mut third = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("the refused connection is closed promptly");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection was served"
    );
    // The admitted client still works on its connection.
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let up = Upstream::default();
    let addr = up.start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = format!(
        "{}\n[[upstream]]\nname = \"dead\"\nurl = \"http://{dead}\"\nkind = \"openai\"\nmodels = [\"gone\"]\nplacement = \"on_prem\"\n[limits]\nupstream_response_timeout = \"300ms\"\n",
        upstream_config(addr)
    );
    let c = Citadel::start(&config).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "gone"})).await;
    let id = request_id(&r);
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (502, "upstream_unavailable"));
    let r = c.chat(&key, json!({"model": "slow-model"})).await;
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (504, "upstream_timeout"));
    c.flush().await;
    let events = c.events_for(&id).await;
    let outcome = events
        .iter()
        .find(|e| e.class == EventClass::HttpActivity)
        .unwrap();
    assert_eq!(outcome.body["http_response"]["code"], 502);
    assert_eq!(
        outcome.body["unmapped"]["error_code"],
        "upstream_unavailable"
    );
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn an_unwritable_event_store_refuses_requests_with_503_until_it_recovers() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, key) = c.key("developer", json!({})).await;
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    let store = &c.running().store;
    store
        .execute_raw_for_tests("CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .await
        .unwrap();
    let (s, code, _) = code_of(c.chat(&key, json!({"model": "m1"})).await).await;
    assert_eq!((s, code.as_str()), (503, "audit_unavailable"));
    let (s, code, _) = code_of(c.chat(&key, json!({"model": "m1"})).await).await;
    assert_eq!(
        (s, code.as_str()),
        (503, "audit_unavailable"),
        "still refused while unwritable"
    );
    store
        .execute_raw_for_tests("DROP TRIGGER refuse")
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if c.chat(&key, json!({"model": "m1"})).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "requests were not accepted again after the store recovered"
    );
    c.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let (_, rpm_key) = c.key("developer", json!({"rpm": 2})).await;
    assert_eq!(c.chat(&rpm_key, json!({"model": "m1"})).await.status(), 200);
    assert_eq!(c.chat(&rpm_key, json!({"model": "m1"})).await.status(), 200);
    let r = c.chat(&rpm_key, json!({"model": "m1"})).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (429, "rate_limited"));

    // Tokens: each answer uses 30 (from `usage`); a 50-token budget stops
    // the third request.
    let (_, tpm_key) = c.key("developer", json!({"tpm": 50})).await;
    assert_eq!(c.chat(&tpm_key, json!({"model": "m1"})).await.status(), 200);
    assert_eq!(c.chat(&tpm_key, json!({"model": "m1"})).await.status(), 200);
    let (s, code, _) = code_of(c.chat(&tpm_key, json!({"model": "m1"})).await).await;
    assert_eq!((s, code.as_str()), (429, "rate_limited"));
    c.stop().await;
}

#[tokio::test]
async fn per_model_limits_from_config_apply_across_keys() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[rate_limits]\nper_model = {{ \"m2\" = {{ rpm = 1 }} }}\n",
        upstream_config(addr)
    ))
    .await;
    let (_, a) = c.key("developer", json!({})).await;
    let (_, b) = c.key("developer", json!({})).await;
    assert_eq!(c.chat(&a, json!({"model": "m2"})).await.status(), 200);
    assert_eq!(c.chat(&b, json!({"model": "m2"})).await.status(), 429);
    assert_eq!(c.chat(&b, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_including_http2() {
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[limits]\nidle_timeout = \"400ms\"\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "m1"})).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        c.open_connections().await,
        1,
        "the HTTP/2 connection is open after the request"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.open_connections().await,
        0,
        "an idle HTTP/2 connection kept its slot"
    );
    // A new request simply opens a new connection.
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn bodies_held_in_memory_are_bounded_across_requests() {
    let up = Upstream::default();
    let addr = up.start().await;
    // Room for one 4 KiB body at a time.
    let c = Citadel::start(&format!(
        "{}\n[limits]\nmax_body_bytes = 4096\nmax_buffered_bytes = 4096\nrequest_timeout = \"10s\"\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    // A slow upload of undeclared length holds the whole budget...
    let slow = slow_body(b"{\"model\":", Duration::from_secs(3), b"\"m1\"}");
    let holder = {
        let (client, url, key) = (
            c.client.clone(),
            format!("{}/v1/chat/completions", c.gateway),
            key.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .body(slow)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // ...so another body is refused rather than buffered beyond the budget.
    let r = c.chat(&key, json!({"model": "m1"})).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, code, _) = code_of(r).await;
    assert_eq!((s, code.as_str()), (503, "overloaded"));
    assert_eq!(holder.await.unwrap(), 200);
    // Once the first request is done, its reservation is released.
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn a_long_stream_keeps_its_connection_alive_past_the_idle_timeout() {
    use futures_util::StreamExt;
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[limits]\nidle_timeout = \"300ms\"\n",
        upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "m1", "stream": true})).await;
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    // Three idle periods with the answer still streaming: not idle.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        c.open_connections().await,
        1,
        "the connection was closed under a streaming answer"
    );
    up.release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        c.open_connections().await,
        0,
        "the connection outlived the idle timeout after the stream"
    );
    c.stop().await;
}
