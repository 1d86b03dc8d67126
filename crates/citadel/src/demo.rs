//! The built-in demo model server for `citadel serve --demo`: a small
//! OpenAI-compatible upstream on loopback that answers `/v1/models`,
//! `/v1/chat/completions` (plain, and `stream: true` as SSE, token by
//! token), `/v1/completions` and `/v1/embeddings`. It lets a new user see a
//! model answer through Citadel before pointing it at a real server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Models the demo server serves.
pub const DEMO_MODELS: &[&str] = &["demo-chat", "demo-embed"];

/// Delay between streamed tokens.
const TOKEN_DELAY: Duration = Duration::from_millis(40);

fn last_user_message(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .or_else(|| body.get("prompt").and_then(Value::as_str))
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

fn answer_for(prompt: &str) -> String {
    if prompt.is_empty() {
        "Hello from Citadel's demo model. Your request was authenticated, authorized and recorded."
            .into()
    } else {
        format!(
            "Hello from Citadel's demo model. You said: \"{prompt}\". This answer passed through the gateway, which authenticated, authorized and recorded your request."
        )
    }
}

fn usage(prompt: &str, answer: &str) -> Value {
    let p = prompt.split_whitespace().count().max(1);
    let c = answer.split_whitespace().count();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": DEMO_MODELS.iter().map(|m| json!({"id": m, "object": "model", "owned_by": "citadel-demo", "created": 0})).collect::<Vec<_>>(),
    }))
}

/// Parses the body as JSON whatever its content type (like most model
/// servers), answering 400 with an OpenAI-style error otherwise.
fn parse(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": format!("invalid JSON: {e}"), "type": "invalid_request_error"}})),
        )
                .into_response(),
        )
    })
}

async fn chat(body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let model = body["model"].as_str().unwrap_or("demo-chat").to_owned();
    let prompt = last_user_message(&body);
    let answer = answer_for(&prompt);
    let id = format!("chatcmpl-demo-{}", uuid::Uuid::new_v4().simple());
    if body["stream"].as_bool() == Some(true) {
        let words: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
        let usage = usage(&prompt, &answer);
        let (id2, model2) = (id.clone(), model.clone());
        let tokens = stream::iter(words).then(move |w| {
            let (id, model) = (id.clone(), model.clone());
            async move {
                tokio::time::sleep(TOKEN_DELAY).await;
                Ok::<_, Infallible>(Event::default().data(
                    json!({"id": id, "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})
                    .to_string(),
                ))
            }
        });
        let tail = stream::iter([
            Ok(Event::default().data(
                json!({"id": id2, "object": "chat.completion.chunk", "model": model2,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage})
                .to_string(),
            )),
            Ok(Event::default().data("[DONE]")),
        ]);
        return Sse::new(tokens.chain(tail)).into_response();
    }
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": citadel_core::clock::now_ms() / 1000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": usage(&prompt, &answer),
    }))
    .into_response()
}

async fn completions(body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let prompt = last_user_message(&body);
    let answer = answer_for(&prompt);
    Json(json!({
        "id": format!("cmpl-demo-{}", uuid::Uuid::new_v4().simple()),
        "object": "text_completion",
        "model": body["model"],
        "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}],
        "usage": usage(&prompt, &answer),
    }))
    .into_response()
}

/// A deterministic 16-dimensional unit vector from the text's SHA-256.
fn embed(text: &str) -> Vec<f64> {
    let digest = Sha256::digest(text.as_bytes());
    let v: Vec<f64> = digest[..16].iter().map(|b| *b as f64 - 127.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    v.into_iter().map(|x| x / norm).collect()
}

async fn embeddings(body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => vec![],
    };
    let tokens: usize = inputs.iter().map(|i| i.split_whitespace().count()).sum();
    Json(json!({
        "object": "list",
        "model": body["model"],
        "data": inputs.iter().enumerate().map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed(t)})).collect::<Vec<_>>(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

/// The demo server's routes.
pub fn demo_router() -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
}

/// Starts the demo server on a free loopback port and returns its address.
pub async fn start_demo_upstream() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, demo_router()).await {
            tracing::error!(error = %e, "demo model server stopped");
        }
    });
    Ok(addr)
}
