//! Data protection on the request path, end to end: what the upstream sees,
//! what the caller gets back (also streamed, with values split across
//! chunks), what policy refuses, and what the events keep (counts, never
//! values).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::{code_of, request_id, Citadel};

const EMAIL: &str = "alice.smith@example.com";
const CARD: &str = "4111 1111 1111 1111";

/// A model server that remembers what it was sent and answers:
/// `echo`/`cloud-echo` repeat the last user message; `leaky` answers with
/// an e-mail address and a card number; `broken` streams a chunk that is
/// not JSON, then a secret. Streams are cut into 3-byte pieces of content,
/// so every value is split across chunks.
#[derive(Clone, Default)]
struct ModelServer {
    seen: Arc<Mutex<Vec<Value>>>,
}

impl ModelServer {
    async fn start(&self) -> SocketAddr {
        let me = self.clone();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |body: Bytes| {
                let me = me.clone();
                async move { me.chat(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn last_seen(&self) -> Value {
        self.seen.lock().last().cloned().unwrap_or(Value::Null)
    }

    fn chat(&self, body: Bytes) -> Response {
        let body: Value = serde_json::from_slice(&body).unwrap();
        self.seen.lock().push(body.clone());
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let answer = match model.as_str() {
            "leaky" | "broken" => format!("Reach {EMAIL} and pay with {CARD}. Thanks!"),
            _ => body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned(),
        };
        if model == "tooly" {
            return tool_call_answer(&model, body["stream"].as_bool() == Some(true));
        }
        if body["stream"].as_bool() != Some(true) {
            return Json(json!({
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            }))
            .into_response();
        }
        let mut events: Vec<String> = Vec::new();
        let bytes = answer.as_bytes();
        for piece in bytes.chunks(3) {
            let piece = String::from_utf8_lossy(piece);
            let chunk = json!({"object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
            events.push(format!("data: {chunk}\n\n"));
        }
        if model == "broken" {
            events.insert(2, "data: {not json\n\n".to_owned());
        }
        let end = json!({"object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        events.push(format!("data: {end}\n\n"));
        events.push("data: [DONE]\n\n".to_owned());
        // Each event in its own write, and some events split mid-line.
        let mut pieces: Vec<Result<Bytes, std::io::Error>> = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            if i % 3 == 1 {
                let (a, b) = e.split_at(e.len() / 2);
                pieces.push(Ok(Bytes::from(a.to_owned())));
                pieces.push(Ok(Bytes::from(b.to_owned())));
            } else {
                pieces.push(Ok(Bytes::from(e)));
            }
        }
        let stream = futures_util::stream::iter(pieces);
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    }
}

/// An answer that calls a tool with the e-mail address as an argument
/// (and, unstreamed, token log-probabilities that spell it out).
fn tool_call_answer(model: &str, stream: bool) -> Response {
    let args = format!("{{\"to\": \"{EMAIL}\", \"body\": \"hi\"}}");
    if !stream {
        return Json(json!({
            "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "send_mail", "arguments": args}}]},
                "logprobs": {"content": [{"token": "alice", "logprob": -0.1}]}}],
        }))
        .into_response();
    }
    let mut events = Vec::new();
    for piece in args.as_bytes().chunks(3) {
        let piece = String::from_utf8_lossy(piece);
        let chunk = json!({"object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "finish_reason": null,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}}]});
        events.push(Ok::<_, std::io::Error>(Bytes::from(format!(
            "data: {chunk}\n\n"
        ))));
    }
    let end = json!({"object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
    events.push(Ok(Bytes::from(format!("data: {end}\n\ndata: [DONE]\n\n"))));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(events)))
        .unwrap()
}

fn config(addr: SocketAddr, privacy: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "local"
url = "http://{addr}"
kind = "openai"
models = ["echo", "leaky", "broken", "tooly"]
placement = "on_prem"

[[upstream]]
name = "cloud"
url = "http://{addr}"
kind = "openai"
models = ["cloud-echo"]
placement = "external"

{privacy}
"#
    )
}

fn user(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": text}
    ]})
}

/// The content of a streamed answer, and whether it ended with `[DONE]`.
async fn streamed(r: reqwest::Response) -> (String, bool, String) {
    let text = r.text().await.unwrap();
    let mut content = String::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_default();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or_else(|_| panic!("not JSON: {data}"));
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    (content, done, text)
}

#[tokio::test]
async fn request_text_is_redacted_before_the_upstream_and_events_keep_only_counts() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"mask\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c
        .chat(
            &key,
            user("echo", &format!("Mail {EMAIL}, card {CARD}."), false),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let answer: Value = r.json().await.unwrap();
    let seen = server.last_seen();
    assert_eq!(
        seen["messages"][1]["content"],
        "Mail <EMAIL_ADDRESS>, card <CREDIT_CARD>."
    );
    assert_eq!(seen["messages"][0]["content"], "You are helpful.");
    assert_eq!(seen["model"], "echo");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Mail <EMAIL_ADDRESS>, card <CREDIT_CARD>."
    );

    c.flush().await;
    let events = c.events_for(&id).await;
    let all = serde_json::to_string(&events.iter().map(|e| &e.body).collect::<Vec<_>>()).unwrap();
    assert!(
        !all.contains("alice.smith") && !all.contains("4111"),
        "{all}"
    );
    let outcome = events
        .iter()
        .find(|e| e.body["class_uid"] == 4002)
        .expect("the request's outcome");
    let privacy = &outcome.body["unmapped"]["privacy"];
    assert_eq!(privacy["data_class"], "restricted");
    assert_eq!(
        privacy["request_findings"],
        json!({"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1})
    );
    assert_eq!(privacy["redacted"], "mask");
    let decision = events
        .iter()
        .find(|e| e.body["api"]["operation"] == "send_data")
        .expect("the send_data decision is recorded");
    assert_eq!(decision.body["unmapped"]["data_class"], "restricted");
    c.stop().await;
}

#[tokio::test]
async fn streamed_answers_are_redacted_even_when_values_split_across_chunks() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"mask\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, user("leaky", "hello", true)).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let (content, done, raw) = streamed(r).await;
    assert_eq!(
        content,
        "Reach <EMAIL_ADDRESS> and pay with <CREDIT_CARD>. Thanks!"
    );
    assert!(done, "the stream still ends with [DONE]: {raw}");
    assert!(!raw.contains("alice") && !raw.contains("1111"), "{raw}");

    // Non-streamed answers are redacted too.
    let r = c.chat(&key, user("leaky", "hello", false)).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Reach <EMAIL_ADDRESS> and pay with <CREDIT_CARD>. Thanks!"
    );

    c.flush().await;
    let events = c.events_for(&id).await;
    let outcome = events.iter().find(|e| e.body["class_uid"] == 4002).unwrap();
    assert_eq!(
        outcome.body["unmapped"]["privacy"]["answer_findings"],
        json!({"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1})
    );
    c.stop().await;
}

#[tokio::test]
async fn a_chunk_that_cannot_be_inspected_ends_the_stream_with_an_error_event() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"mask\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, user("broken", "hello", true)).await;
    assert_eq!(r.status(), 200);
    let raw = r.text().await.unwrap();
    assert!(
        raw.contains("event: error") && raw.contains("answer_not_inspectable"),
        "{raw}"
    );
    assert!(!raw.contains("[DONE]"), "the stream ended early: {raw}");
    // Nothing after the bad chunk, and nothing unmasked, went out.
    assert!(!raw.contains("alice") && !raw.contains("1111"), "{raw}");
    c.stop().await;
}

#[tokio::test]
async fn policy_keeps_restricted_data_on_premises_and_redacts_personal_data_for_external_models() {
    let server = ModelServer::default();
    let addr = server.start().await;
    // No redaction configured: only policy redacts.
    let c = Citadel::start(&config(addr, "")).await;
    let (_, key) = c.key("developer", json!({})).await;

    let r = c
        .chat(
            &key,
            user("cloud-echo", &format!("Mail {EMAIL} please"), false),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        server.last_seen()["messages"][1]["content"],
        "Mail <EMAIL_ADDRESS> please"
    );

    let before = server.seen.lock().len();
    let r = c
        .chat(&key, user("cloud-echo", &format!("card {CARD}"), false))
        .await;
    let (status, code, body) = code_of(r).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "data_class_forbidden"),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CREDIT_CARD"));
    assert_eq!(
        server.seen.lock().len(),
        before,
        "nothing reached the upstream"
    );

    // On premises, policy lets it through as sent.
    let r = c
        .chat(&key, user("echo", &format!("card {CARD}"), false))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        server.last_seen()["messages"][1]["content"],
        format!("card {CARD}")
    );
    // Text with nothing sensitive passes untouched everywhere.
    let r = c
        .chat(&key, user("cloud-echo", "What is Rust?", false))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        server.last_seen()["messages"][1]["content"],
        "What is Rust?"
    );
    c.stop().await;
}

#[tokio::test]
async fn pseudonyms_hide_values_from_the_model_and_come_back_in_the_answer() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"pseudonymize\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let text = format!("Please write to {EMAIL} today.");

    let r = c.chat(&key, user("echo", &text, false)).await;
    let v: Value = r.json().await.unwrap();
    let sent = server.last_seen()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sent.contains("alice"), "{sent}");
    assert!(
        sent.starts_with("Please write to <EMAIL_ADDRESS_"),
        "{sent}"
    );
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());

    // The same value gets the same pseudonym (consistent), and streamed
    // answers are re-identified even with the token split across chunks.
    let r = c.chat(&key, user("echo", &text, true)).await;
    assert_eq!(server.last_seen()["messages"][1]["content"], sent.as_str());
    let (content, done, _) = streamed(r).await;
    assert_eq!(content, text);
    assert!(done);
    c.stop().await;
}

#[tokio::test]
async fn custom_dictionaries_classify_and_a_broken_rule_file_changes_nothing() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("codenames.toml"),
        "[[dictionary]]\ntype = \"PROJECT_CODENAME\"\nclass = \"restricted\"\nterms = [\"Bluebird\", \"Night Owl\"]\n",
    )
    .unwrap();
    let extra = format!(
        "[privacy]\nrules = [{:?}]",
        rules.path().display().to_string()
    );
    let c = Citadel::start(&config(addr, &extra)).await;
    let (_, key) = c.key("developer", json!({})).await;
    let ask = || {
        c.chat(
            &key,
            user("cloud-echo", "status of project bluebird?", false),
        )
    };
    let (status, code, _) = code_of(ask().await).await;
    assert_eq!((status, code.as_str()), (403, "data_class_forbidden"));

    // A broken edit is refused; the rules in force stay.
    std::fs::write(
        rules.path().join("codenames.toml"),
        "[[dictionary]]\ntype = \"PROJECT_CODENAME\"\nclass = \"secret\"\nterms = [\"Bluebird\"]\n",
    )
    .unwrap();
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (events, _) = c
            .running()
            .store
            .query_events(&citadel_store::EventQuery::default())
            .await
            .unwrap();
        if events.iter().any(|e| {
            e.body["api"]["operation"] == "privacy.rules.reload" && e.body["status_id"] == 2
        }) {
            let e = events
                .iter()
                .find(|e| e.body["api"]["operation"] == "privacy.rules.reload")
                .unwrap();
            let problems = e.body["unmapped"]["problems"].to_string();
            assert!(problems.contains("codenames.toml:3"), "{problems}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the failed reload is recorded");
    let (status, code, _) = code_of(ask().await).await;
    assert_eq!((status, code.as_str()), (403, "data_class_forbidden"));
    c.stop().await;

    // At start, the same file stops Citadel with file, line and reason.
    let data = tempfile::tempdir().unwrap();
    let config = citadel::config::Config::parse(
        &format!("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"),
        "t.toml",
    )
    .unwrap();
    let err = citadel::serve::start(citadel::serve::ServeRequest {
        data: citadel::data_dir::DataDir::new(data.path().to_path_buf()),
        config,
        database: None,
        demo: false,
    })
    .await
    .err()
    .expect("refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("codenames.toml:3") && err.contains("unknown variant"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_on_an_inspected_route_is_refused_with_400() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"mask\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"model\": \"echo\", \"messages\": [")
        .send()
        .await
        .unwrap();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"));
    assert!(server.seen.lock().is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_route_with_a_purpose_serves_only_subjects_who_consented() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let extra = format!(
        r#"
[[upstream]]
name = "assist"
url = "http://{addr}"
kind = "openai"
models = ["assist"]
placement = "on_prem"
purpose = "inference"

[[privacy.purpose]]
name = "inference"
description = "Answering the customer's questions with a language model"
version = "2026-11"
text = "I agree that my messages are processed by a language model to answer me."
"#
    );
    let c = Citadel::start(&extra).await;
    let (_, key) = c.key("developer", json!({})).await;
    let ask = |subject: Option<&'static str>| {
        let mut r = c
            .client
            .post(format!("{}/v1/chat/completions", c.gateway))
            .bearer_auth(&key)
            .json(&user("assist", "hello", false));
        if let Some(s) = subject {
            r = r.header("x-data-subject", s);
        }
        r.send()
    };
    let (status, code, _) = code_of(ask(None).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "subject_required"));
    let (status, code, body) = code_of(ask(Some("cust-42")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "consent_required"), "{body}");
    assert!(
        server.seen.lock().is_empty(),
        "nothing reached the upstream"
    );

    // Grant through the admin API; the receipt and the event follow.
    let r = c
        .admin_post(
            "/api/v1/consent/grant",
            json!({"subject": "cust-42", "purpose": "inference", "source": "signup-form"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let granted: Value = r.json().await.unwrap();
    assert_eq!(granted["version"], "2026-11");
    assert_eq!(ask(Some("cust-42")).await.unwrap().status(), 200);
    let (status, code, _) = code_of(ask(Some("cust-43")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "consent_required"));

    // An unknown purpose is refused and changes nothing.
    let (status, code, body) = code_of(
        c.admin_post(
            "/api/v1/consent/grant",
            json!({"subject": "cust-42", "purpose": "marketing"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("inference"));

    // Withdrawal applies within a second.
    let r = c
        .admin_post(
            "/api/v1/consent/withdraw",
            json!({"subject": "cust-42", "purpose": "inference", "source": "app"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, _) = code_of(ask(Some("cust-42")).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "consent_required"));

    let receipt: Value = c
        .admin_post("/api/v1/consent/receipt", json!({"subject": "cust-42"}))
        .await
        .json()
        .await
        .unwrap();
    let list = receipt["consents"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["source"], "signup-form");
    assert_eq!(list[0]["withdrawn_source"], "app");
    assert_eq!(list[0]["current"], false);

    // No event names the subject; the consent changes name the purpose.
    c.flush().await;
    let (events, _) = c
        .running()
        .store
        .query_events(&citadel_store::EventQuery::default())
        .await
        .unwrap();
    let all = serde_json::to_string(&events.iter().map(|e| &e.body).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains("cust-42"), "{all}");
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.body["resources"][0]["type"] == "Consent")
        .collect();
    assert_eq!(changes.len(), 2);
    assert!(changes
        .iter()
        .all(|e| e.body["resources"][0]["purpose"] == "inference"));
    c.stop().await;
}

/// Exports a subject through the admin API.
async fn export_subject(c: &Citadel, subject: &str) -> Value {
    let r = c
        .admin_post("/api/v1/subjects/export", json!({"subject": subject}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn captures_are_sealed_per_subject_exported_purged_on_schedule_and_erased_for_good() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let extra = format!(
        r#"
[[upstream]]
name = "local"
url = "http://{addr}"
kind = "openai"
models = ["echo"]
placement = "on_prem"
capture = true

[privacy]
redact = "pseudonymize"

[[privacy.retention]]
record = "answer"
keep = "1s"

[[privacy.purpose]]
name = "support"
version = "1"
text = "I agree."
"#
    );
    let c = Citadel::start(&extra).await;
    let (_, key) = c.key("developer", json!({})).await;
    let ask = |text: String| {
        c.client
            .post(format!("{}/v1/chat/completions", c.gateway))
            .bearer_auth(&key)
            .header("x-data-subject", "cust-9")
            .json(&user("echo", &text, false))
            .send()
    };
    let r = ask(format!("My address is {EMAIL}, please reply there."))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .admin_post(
            "/api/v1/consent/grant",
            json!({"subject": "cust-9", "purpose": "support"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Captures and pseudonyms are written after the answer: wait for them.
    let mut export = Value::Null;
    for _ in 0..50 {
        export = export_subject(&c, "cust-9").await;
        if export["captures"].as_array().unwrap().len() == 2
            && !export["pseudonyms"].as_array().unwrap().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let captures = export["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 2, "{export}");
    let prompt = captures.iter().find(|c| c["kind"] == "prompt").unwrap();
    assert_eq!(prompt["state"], "readable");
    let sent = prompt["content"][1].as_str().unwrap();
    assert!(
        sent.contains("<EMAIL_ADDRESS_") && !sent.contains("alice"),
        "captured as sent: {sent}"
    );
    let answer = captures.iter().find(|c| c["kind"] == "answer").unwrap();
    assert_eq!(answer["state"], "readable");
    assert_eq!(export["pseudonyms"][0]["value"], EMAIL);
    assert_eq!(export["consent"]["consents"][0]["purpose"], "support");
    // Another subject sees none of it.
    assert!(export_subject(&c, "cust-10").await["captures"]
        .as_array()
        .unwrap()
        .is_empty());

    // Retention: answers are kept one second; the purge leaves the row and
    // the evidence, not the content.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.admin_post("/api/v1/privacy/purge", Value::Null).await;
    assert_eq!(r.status(), 200);
    let purged: Value = r.json().await.unwrap();
    assert_eq!(purged["purged"][0]["purged"], 1);
    let export = export_subject(&c, "cust-9").await;
    let answer = export["captures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "answer")
        .unwrap()
        .clone();
    assert_eq!(answer["state"], "purged");
    assert!(answer["content"].is_null());

    // Erasure: keep a sealed copy, as a backup would, then erase.
    let store = &c.running().store;
    let vault = c.running().vault.clone();
    let subject_ref = vault.subject_ref("data-subject:cust-9");
    let backup = store.captures_of(&subject_ref).await.unwrap();
    let sealed_prompt = backup.iter().find(|c| c.kind == "prompt").unwrap().clone();
    let r = c
        .admin_post("/api/v1/subjects/erase", json!({"subject": "cust-9"}))
        .await;
    assert_eq!(r.status(), 200);
    let tombstone: Value = r.json().await.unwrap();
    assert_eq!(tombstone["key_destroyed"], true);
    assert_eq!(tombstone["captures_deleted"], 2);
    assert_eq!(tombstone["pseudonyms_deleted"], 1);
    assert_eq!(tombstone["consents_deleted"], 1);
    let export = export_subject(&c, "cust-9").await;
    assert!(export["captures"].as_array().unwrap().is_empty());
    assert!(export["pseudonyms"].as_array().unwrap().is_empty());
    assert!(export["consent"]["consents"].as_array().unwrap().is_empty());
    // The backup copy no longer opens: its key is gone.
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        sealed_prompt.sealed.as_deref().unwrap(),
    )
    .unwrap();
    assert_eq!(
        vault
            .open_for(&subject_ref, sealed_prompt.id.as_bytes(), &bytes)
            .await
            .unwrap(),
        None
    );
    // Nothing readable of the subject is in the store's files.
    c.flush().await;
    for file in ["citadel.db", "citadel.db-wal"] {
        let path = c.data.path().join(file);
        if let Ok(raw) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&raw);
            assert!(
                !text.contains("alice.smith"),
                "{file} holds the e-mail address"
            );
            assert!(!text.contains("cust-9"), "{file} holds the subject's name");
        }
    }
    // The tombstone is on record.
    let (events, _) = store
        .query_events(&citadel_store::EventQuery::default())
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.body["api"]["operation"] == "subjects.erase"
            && e.body["resources"][0]["uid"] == subject_ref.as_str()));
    assert!(events
        .iter()
        .any(|e| e.body["api"]["operation"] == "privacy.purge"));
    c.stop().await;
}

#[tokio::test]
async fn the_admin_api_shows_the_privacy_settings_and_scans_text() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"hash\"")).await;
    let settings = c.admin_get("/api/v1/privacy").await;
    assert_eq!(settings["redact"], "hash");
    assert!(settings["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["type"] == "IBAN_CODE" && d["class"] == "restricted"));
    let r = c
        .admin_post(
            "/api/v1/privacy/scan",
            json!({"text": format!("mail {EMAIL}")}),
        )
        .await;
    let found: Value = r.json().await.unwrap();
    assert_eq!(found["findings"][0]["type"], "EMAIL_ADDRESS");
    assert_eq!(found["findings"][0]["start"], 5);
    let (status, code, _) = code_of(
        c.admin_post("/api/v1/privacy/scan", json!({"text": 1}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"));
    c.stop().await;
}

#[tokio::test]
async fn the_subject_header_stays_with_citadel_and_inspected_answers_come_uncompressed() {
    let upstream = crate::support::Upstream::default();
    let addr = upstream.start().await;
    let c = Citadel::start(&format!(
        "{}\n[privacy]\nredact = \"mask\"\n",
        crate::support::upstream_config(addr)
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(&key)
        .header("x-data-subject", "cust-77")
        .header("accept-encoding", "gzip, br")
        .json(&json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let seen = &v["seen_headers"];
    assert!(seen.get("x-data-subject").is_none(), "{seen}");
    assert_eq!(seen["accept-encoding"], "identity");
    c.stop().await;

    // An openai upstream with a prefix would be reachable around
    // inspection: refused at start.
    let err = citadel::config::Config::parse(
        "[[upstream]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\nkind = \"openai\"\nmodels = [\"m\"]\nprefix = \"/llm\"\nplacement = \"on_prem\"\n",
        "t.toml",
    )
    .unwrap_err();
    assert!(err.reason.contains("remove prefix"), "{err:?}");
}

#[tokio::test]
async fn tool_call_arguments_are_redacted_and_log_probabilities_dropped() {
    let server = ModelServer::default();
    let addr = server.start().await;
    let c = Citadel::start(&config(addr, "[privacy]\nredact = \"mask\"")).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, user("tooly", "mail it", false)).await;
    let v: Value = r.json().await.unwrap();
    let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(args, "{\"to\": \"<EMAIL_ADDRESS>\", \"body\": \"hi\"}");
    assert!(v["choices"][0].get("logprobs").is_none(), "{v}");

    // Streamed, the arguments arrive in 3-byte pieces.
    let r = c.chat(&key, user("tooly", "mail it", true)).await;
    let raw = r.text().await.unwrap();
    assert!(!raw.contains("alice"), "{raw}");
    let mut args = String::new();
    for event in raw.split("\n\n") {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(piece) =
            chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            args.push_str(piece);
        }
    }
    assert_eq!(args, "{\"to\": \"<EMAIL_ADDRESS>\", \"body\": \"hi\"}");
    assert!(raw.contains("[DONE]"));
    c.stop().await;
}
