//! Shared fixtures for the end-to-end tests: a real Citadel started
//! in-process on loopback (TLS on), small real upstream servers standing in
//! for model servers and data APIs, and a client that trusts Citadel's CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use citadel::config::Config;
use citadel::data_dir::DataDir;
use citadel::serve::{Running, ServeRequest};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// A fake OpenAI-compatible upstream (and `http` data API) with knobs.
#[derive(Clone, Default)]
pub(crate) struct Upstream {
    /// Released by the test to let a held stream finish.
    pub(crate) release: Arc<Notify>,
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in h {
        map.insert(k.as_str().to_owned(), json!(v.to_str().unwrap_or("")));
    }
    Value::Object(map)
}

impl Upstream {
    /// Starts on a free loopback port.
    pub(crate) async fn start(&self) -> SocketAddr {
        let me = self.clone();
        let app = Router::new()
            .route(
                "/v1/chat/completions",
                post(move |headers: HeaderMap, body: Bytes| {
                    let me = me.clone();
                    async move { me.chat(headers, body).await }
                }),
            )
            .route(
                "/v1/embeddings",
                post(|| async { Json(json!({"object": "list", "data": [], "usage": {"prompt_tokens": 3, "total_tokens": 3}})) }),
            )
            .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": []})) }))
            .route(
                "/api/{*rest}",
                any(|req: Request| async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                    Json(json!({
                        "method": parts.method.as_str(),
                        "path": parts.uri.path(),
                        "query": parts.uri.query(),
                        "headers": headers_json(&parts.headers),
                        "body_len": body.len(),
                    }))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    async fn chat(&self, headers: HeaderMap, body: Bytes) -> Response {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        if model == "slow-model" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if body["stream"].as_bool() == Some(true) {
            // First event now; the rest only after the test says so. If the
            // gateway buffered the answer, the test would never see event one.
            let release = self.release.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Bytes::from(
                        "data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n",
                    )))
                    .await;
                release.notified().await;
                let _ = tx
                    .send(Ok(Bytes::from(
                        "data: {\"choices\":[{\"delta\":{\"content\":\" second\"}}],\"usage\":{\"total_tokens\":40}}\n\ndata: [DONE]\n\n",
                    )))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            return Response::builder()
                .header("content-type", "text/event-stream")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "must-not-pass")
                .body(Body::from_stream(stream))
                .unwrap();
        }
        Json(json!({
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            "seen_headers": headers_json(&headers),
        }))
        .into_response()
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A running Citadel with a temporary data directory.
pub(crate) struct Citadel {
    pub(crate) running: Option<Running>,
    pub(crate) gateway: String,
    pub(crate) admin: String,
    pub(crate) admin_key: String,
    pub(crate) client: reqwest::Client,
    pub(crate) data: tempfile::TempDir,
}

/// Config text pointing at an upstream: models `m1`, `m2`, `slow-model`
/// and an `http` route `/data-api`.
pub(crate) fn upstream_config(addr: SocketAddr) -> String {
    format!(
        r#"
[[upstream]]
name = "fake"
url = "http://{addr}"
kind = "openai"
models = ["m1", "m2", "slow-model"]
placement = "on_prem"

[[upstream]]
name = "data"
url = "http://{addr}/api"
kind = "http"
prefix = "/data-api"
placement = "on_prem"
"#
    )
}

impl Citadel {
    /// Starts Citadel with `extra` appended to a loopback config.
    pub(crate) async fn start(extra: &str) -> Self {
        Self::start_with(extra, None).await
    }

    /// Starts Citadel on `database` (or SQLite in the data directory).
    pub(crate) async fn start_with(extra: &str, database: Option<String>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), "", extra, database).await
    }

    /// Starts a second replica on the same database, with the installation
    /// key files copied from this one, as an operator does for a cluster.
    pub(crate) async fn start_replica(&self, extra: &str, database: String) -> Self {
        let data = tempfile::tempdir().unwrap();
        let from = self.data.path().join("keys");
        std::fs::create_dir_all(data.path().join("keys")).unwrap();
        for file in [
            "api-key-hash.key",
            "audit-log.key",
            "subject-root.key",
            "root.key",
            "privacy-hash.key",
        ] {
            let key = std::fs::read(from.join(file)).unwrap();
            citadel_crypto::write_private_file(&data.path().join("keys").join(file), &key).unwrap();
        }
        Self::start_in(data, "", extra, Some(database)).await
    }

    /// Starts Citadel with `gateway` added to its `[gateway]` table.
    pub(crate) async fn start_with_gateway(gateway: &str, extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), gateway, extra, None).await
    }

    async fn start_in(
        data: tempfile::TempDir,
        gateway: &str,
        extra: &str,
        database: Option<String>,
    ) -> Self {
        let text = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n{gateway}\n[admin]\nlisten = \"127.0.0.1:0\"\n[policy]\npoll_interval = \"100ms\"\n{extra}"
        );
        let config = Config::parse(&text, "test.toml").expect("test config");
        let running = citadel::serve::start(ServeRequest {
            data: DataDir::new(data.path().to_path_buf()),
            config,
            database,
            demo: false,
        })
        .await
        .expect("citadel starts");
        let ca = std::fs::read(&running.ca_path).unwrap();
        let client = client_trusting(&ca);
        Self {
            gateway: format!("https://localhost:{}", running.gateway_addr.port()),
            admin: format!("https://localhost:{}", running.admin_addr.port()),
            // A replica joining an existing database gets no bootstrap key.
            admin_key: running.bootstrap.admin.clone().unwrap_or_default(),
            running: Some(running),
            client,
            data,
        }
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Creates a key through the admin API; returns (id, secret).
    pub(crate) async fn key(&self, role: &str, extra: Value) -> (String, String) {
        let mut body = json!({"name": format!("k-{role}"), "role": role});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self
            .client
            .post(format!("{}/api/v1/keys", self.admin))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// POSTs JSON to the gateway with a key.
    pub(crate) async fn chat(&self, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.gateway))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Events for a request id, straight from the store.
    pub(crate) async fn events_for(&self, request_id: &str) -> Vec<citadel_core::SecurityEvent> {
        let (events, _) = self
            .running()
            .store
            .query_events(&citadel_store::EventQuery {
                request_id: Some(request_id.to_owned()),
                ..Default::default()
            })
            .await
            .unwrap();
        events
    }

    /// Waits for queued events to be written.
    pub(crate) async fn flush(&self) {
        self.running().sink.flush().await;
    }

    /// The admin listener's /metrics text.
    pub(crate) async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POSTs to the admin API as the bootstrap admin (`body` null: no body).
    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_key);
        if !body.is_null() {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// GETs JSON from the admin API with the bootstrap admin's key.
    pub(crate) async fn admin_get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The gateway's `citadel_open_connections` gauge, read from /metrics.
    pub(crate) async fn open_connections(&self) -> i64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("citadel_open_connections "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A client that trusts Citadel's CA and speaks only HTTP/1.1.
    pub(crate) fn http1_client(&self) -> reqwest::Client {
        let ca = std::fs::read(&self.running().ca_path).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .http1_only()
            .build()
            .unwrap()
    }

    pub(crate) async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A request body that sends `first`, pauses, then sends `rest`: a slow client.
pub(crate) fn slow_body(
    first: &'static [u8],
    pause: Duration,
    rest: &'static [u8],
) -> reqwest::Body {
    let chunks = futures_util::stream::unfold(0, move |n| async move {
        match n {
            0 => Some((Ok::<_, std::io::Error>(first.to_vec()), 1)),
            1 => {
                tokio::time::sleep(pause).await;
                Some((Ok(rest.to_vec()), 2))
            }
            _ => None,
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// An HTTPS client trusting `ca_pem`.
pub(crate) fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The error code of a JSON error response.
pub(crate) async fn code_of(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v,
    )
}

pub(crate) fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}
