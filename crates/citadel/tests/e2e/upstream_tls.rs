//! TLS towards upstreams: a pinned CA, a client certificate for mTLS, and
//! HTTP/2 by ALPN. The upstream is a real TLS server that requires client
//! certificates from its own CA.

use std::path::Path;

use axum::extract::Request;
use axum::routing::post;
use axum::{Json, Router};
use citadel_crypto::InternalCa;
use citadel_gateway::server::{self, ServeOptions};
use serde_json::json;

use crate::support::{code_of, Citadel};

/// Starts an mTLS upstream; returns its address and the PEM paths Citadel
/// needs (upstream CA, client cert, client key).
async fn mtls_upstream(dir: &Path) -> (std::net::SocketAddr, String, String, String) {
    let ca = InternalCa::load_or_create(&dir.join("upstream-ca")).unwrap();
    let server = ca.issue_server_cert(&["127.0.0.1".into()]).unwrap();
    let client = ca.issue_client_cert("citadel-gateway").unwrap();
    let tls = citadel_crypto::server_config_requiring_client_cert(
        &server.chain_pem,
        &server.key_pem,
        ca.cert_pem(),
    )
    .unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        citadel_crypto::write_private_file(&p, text.as_bytes()).unwrap();
        p.display().to_string()
    };
    let ca_path = ca.cert_path().display().to_string();
    let cert_path = write("client.pem", &client.chain_pem);
    let key_path = write("client-key.pem", &client.key_pem);

    use http_body_util::BodyExt;
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|req: Request| async move {
            Json(json!({"version": format!("{:?}", req.version()), "usage": {"total_tokens": 1}}))
        }),
    );
    let svc = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<axum::body::Body>| {
            r.map(|b| b.map_err(citadel_gateway::BoxError::from).boxed_unsync())
        })
        .service(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_keep, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(_keep);
    tokio::spawn(server::serve(
        listener,
        ServeOptions {
            tls: Some(tls),
            max_connections: 64,
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_header_bytes: 16384,
            metrics: None,
            client_certs: None,
        },
        tower::util::BoxCloneService::new(svc),
        rx,
    ));
    (addr, ca_path, cert_path, key_path)
}

fn upstream(name: &str, model: &str, addr: std::net::SocketAddr, tls: &str) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nurl = \"https://{addr}\"\nkind = \"openai\"\nmodels = [\"{model}\"]\nplacement = \"external\"\ntls = {{ {tls} }}\n")
}

#[tokio::test]
async fn mtls_upstream_with_pinned_ca_is_reached_over_http2_and_misconfigurations_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca, cert, key) = mtls_upstream(dir.path()).await;
    let other_ca = InternalCa::load_or_create(&dir.path().join("other-ca")).unwrap();
    let config = [
        upstream(
            "good",
            "mtls",
            addr,
            &format!("ca = \"{ca}\", client_cert = \"{cert}\", client_key = \"{key}\""),
        ),
        upstream("no-client-cert", "anon", addr, &format!("ca = \"{ca}\"")),
        upstream(
            "wrong-ca",
            "spoofed",
            addr,
            &format!(
                "ca = \"{}\", client_cert = \"{cert}\", client_key = \"{key}\"",
                other_ca.cert_path().display()
            ),
        ),
    ]
    .join("\n");
    let c = Citadel::start(&config).await;
    let (_, k) = c.key("service", json!({})).await;
    let r = c.chat(&k, json!({"model": "mtls"})).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["version"], "HTTP/2.0",
        "HTTP/2 was not negotiated with the upstream"
    );

    for model in ["anon", "spoofed"] {
        let (s, code, _) = code_of(c.chat(&k, json!({"model": model})).await).await;
        assert_eq!((s, code.as_str()), (502, "upstream_unavailable"), "{model}");
    }
    c.stop().await;
}
