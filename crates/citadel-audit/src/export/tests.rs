//! Exporters against collectors run on loopback: a file, a syslog
//! collector over TCP and over TLS, and an HTTPS webhook receiver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_core::{EventClass, Outcome, SecurityEvent};
use citadel_store::Store;
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

use super::*;

async fn store_with(events: u64) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
        .await
        .unwrap();
    append(&store, 0, events).await;
    (store, dir)
}

async fn append(store: &Store, from: u64, count: u64) {
    let events: Vec<_> = (from..from + count)
        .map(|n| {
            let outcome = if n % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            SecurityEvent::builder(EventClass::HttpActivity, 1, "Connect", outcome)
                .field("count", n.into())
                .build()
        })
        .collect();
    store.append_events(&events).await.unwrap();
}

async fn wait_for_cursor(store: &Store, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.export_cursor(name).await.unwrap() < want {
        assert!(
            Instant::now() < deadline,
            "exporter {name} stuck at {}",
            store.export_cursor(name).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_file_exporter_rotates_and_resumes_from_its_cursor() {
    let (store, dir) = store_with(300).await;
    let config = ExporterConfig::File {
        name: "file".into(),
        path: "exports/events.jsonl".into(),
        rotate_bytes: 4096,
        keep: 1000,
    };
    let handles = spawn_exporters(&store, std::slice::from_ref(&config), dir.path()).unwrap();
    wait_for_cursor(&store, "file", 300).await;
    for h in handles {
        h.abort();
    }
    // Stopped and started again: it goes on where it was.
    append(&store, 300, 50).await;
    let handles = spawn_exporters(&store, &[config], dir.path()).unwrap();
    wait_for_cursor(&store, "file", 350).await;
    for h in handles {
        h.abort();
    }
    let base = dir.path().join("exports/events.jsonl");
    let mut files: Vec<_> = (1..1000)
        .map(|n| std::path::PathBuf::from(format!("{}.{n}", base.display())))
        .take_while(|p| p.exists())
        .collect();
    assert!(files.len() > 10, "rotated {} times", files.len());
    for f in &files {
        // Rotated as soon as a line takes the file to the limit.
        let len = std::fs::metadata(f).unwrap().len();
        assert!(
            (4096..4096 + 1024).contains(&len),
            "{} is {len} bytes",
            f.display()
        );
    }
    files.reverse();
    if base.exists() {
        files.push(base);
    }
    let mut counts = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            counts.push(event["count"].as_u64().unwrap());
        }
    }
    assert_eq!(
        counts,
        (0..350).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

/// Reads octet-counted syslog frames until `want` messages arrived.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    want: usize,
    out: &Mutex<Vec<String>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.lock().len() < want {
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(space) = buf.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..space]).unwrap().parse().unwrap();
            if buf.len() < space + 1 + len {
                break;
            }
            let message = String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).unwrap();
            out.lock().push(message);
            buf.drain(..space + 1 + len);
        }
    }
}

fn check_rfc5424(message: &str, index: u64) {
    // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
    let parts: Vec<&str> = message.splitn(8, ' ').collect();
    let pri = if index.is_multiple_of(2) {
        "<110>1"
    } else {
        "<108>1"
    };
    assert_eq!(parts[0], pri, "{message}");
    humantime::parse_rfc3339(parts[1]).unwrap();
    assert_eq!(parts[2], "collector-test");
    assert_eq!(parts[3], "citadel");
    assert!(parts[4].parse::<u32>().is_ok());
    assert_eq!(parts[5], "ocsf-4002");
    assert_eq!(parts[6], "-");
    let event: serde_json::Value = serde_json::from_str(parts[7]).unwrap();
    assert_eq!(event["count"], index);
}

#[tokio::test]
async fn a_syslog_collector_that_was_down_gets_what_it_missed() {
    let (store, dir) = store_with(20).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ExporterConfig::Syslog {
        name: "syslog".into(),
        address: format!("127.0.0.1:{port}"),
        tls: false,
        insecure_plaintext: true,
        ca: None,
        server_name: None,
        hostname: Some("collector-test".into()),
    };
    let handles = spawn_exporters(&store, &[config], dir.path()).unwrap();
    // Nobody listens yet: the exporter retries and the cursor stays.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.export_cursor("syslog").await.unwrap(), 0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_frames(&mut stream, 20, &received),
    )
    .await
    .unwrap();
    wait_for_cursor(&store, "syslog", 20).await;
    for (i, m) in received.lock().iter().enumerate() {
        check_rfc5424(m, i as u64);
    }
    for h in handles {
        h.abort();
    }
}

#[tokio::test]
async fn syslog_over_tls_trusts_only_the_configured_ca() {
    let (store, dir) = store_with(10).await;
    let ca = citadel_crypto::InternalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let cert = ca.issue_server_cert(&["localhost".into()]).unwrap();
    let server = citadel_crypto::server_config(&cert.chain_pem, &cert.key_pem).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // A client that does not trust our CA fails the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                read_frames(&mut tls, 10, &received).await;
            }
        });
    }
    std::fs::write(dir.path().join("collector-ca.pem"), ca.cert_pem()).unwrap();
    let syslog = |name: &str, ca: Option<&str>| ExporterConfig::Syslog {
        name: name.into(),
        address: format!("127.0.0.1:{port}"),
        tls: true,
        insecure_plaintext: false,
        ca: ca.map(Into::into),
        server_name: Some("localhost".into()),
        hostname: Some("collector-test".into()),
    };
    // With the public roots only, the collector's certificate is refused.
    let untrusting = spawn_exporters(&store, &[syslog("public-roots", None)], dir.path()).unwrap();
    let trusting = spawn_exporters(
        &store,
        &[syslog("pinned", Some("collector-ca.pem"))],
        dir.path(),
    )
    .unwrap();
    wait_for_cursor(&store, "pinned", 10).await;
    assert_eq!(store.export_cursor("public-roots").await.unwrap(), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().len() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, m) in received.lock().iter().enumerate() {
        check_rfc5424(m, i as u64);
    }
    for h in untrusting.into_iter().chain(trusting) {
        h.abort();
    }
}

#[tokio::test]
async fn the_webhook_is_retried_with_back_off_until_the_receiver_accepts() {
    use http_body_util::BodyExt;
    let (store, dir) = store_with(30).await;
    let ca = citadel_crypto::InternalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let cert = ca.issue_server_cert(&["localhost".into()]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(
        citadel_crypto::server_config(&cert.chain_pem, &cert.key_pem).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // (attempt, authorization, idempotency key, lines)
    type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;
    let seen: Seen = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (seen, attempts) = (seen.clone(), attempts.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let (seen, attempts) = (seen.clone(), attempts.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (seen, attempts) = (seen.clone(), attempts.clone());
                            async move {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default();
                                let key = req.headers()["idempotency-key"]
                                    .to_str()
                                    .unwrap()
                                    .to_owned();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let lines = std::str::from_utf8(&body).unwrap().lines().count();
                                let n = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                seen.lock().push((auth, key, lines));
                                // The receiver is "down" for the first two attempts.
                                let status = if n < 2 { 503 } else { 200 };
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
    }
    std::fs::write(dir.path().join("hook-ca.pem"), ca.cert_pem()).unwrap();
    std::env::set_var("CITADEL_TEST_HOOK_TOKEN", "s3cret-token");
    let config = ExporterConfig::Webhook {
        name: "hook".into(),
        url: format!("https://localhost:{port}/ingest"),
        ca: Some("hook-ca.pem".into()),
        bearer_token_env: Some("CITADEL_TEST_HOOK_TOKEN".into()),
        insecure_plaintext: false,
    };
    let started = Instant::now();
    let handles = spawn_exporters(&store, &[config], dir.path()).unwrap();
    wait_for_cursor(&store, "hook", 30).await;
    // 0.5 s then 1 s of back-off before the third attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (auth, key, lines) in &seen {
        assert_eq!(auth, "Bearer s3cret-token");
        assert_eq!(
            key, "citadel-log-0-29",
            "a retried batch keeps its idempotency key"
        );
        assert_eq!(*lines, 30);
    }
    for h in handles {
        h.abort();
    }
}

#[test]
fn bad_exporter_settings_are_refused_with_the_setting_named() {
    let plain = ExporterConfig::Syslog {
        name: "s".into(),
        address: "127.0.0.1:514".into(),
        tls: false,
        insecure_plaintext: false,
        ca: None,
        server_name: None,
        hostname: None,
    };
    assert!(plain.validate().unwrap_err().contains("insecure_plaintext"));
    let hook = ExporterConfig::Webhook {
        name: "h".into(),
        url: "http://siem.example/".into(),
        ca: None,
        bearer_token_env: None,
        insecure_plaintext: false,
    };
    assert!(hook.validate().unwrap_err().contains("https://"));
    let file = ExporterConfig::File {
        name: "bad name".into(),
        path: "x".into(),
        rotate_bytes: 1 << 20,
        keep: 1,
    };
    assert!(file.validate().is_err());
    let missing_token = ExporterConfig::Webhook {
        name: "h".into(),
        url: "https://siem.example/".into(),
        ca: None,
        bearer_token_env: Some("CITADEL_TEST_UNSET_VARIABLE".into()),
        insecure_plaintext: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = Target::new(&missing_token, dir.path()).err().unwrap();
    assert!(err.contains("CITADEL_TEST_UNSET_VARIABLE"), "{err}");
}
