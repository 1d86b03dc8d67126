//! TLS on the listeners: 1.3 only unless TLS 1.2 is explicitly allowed (and
//! then only ECDHE + AEAD suites), HSTS, and certificates replaced without
//! a restart.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{upstream_config, Citadel, Upstream};

/// A handshake with `versions` against `addr`, trusting `ca_pem`: the
/// negotiated suite and the server's leaf certificate, or the error.
async fn handshake(
    port: u16,
    ca_pem: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(String, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .map_err(|_| "the handshake did not finish".to_owned())?
    .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
    let leaf = conn.peer_certificates().unwrap()[0].clone().into_owned();
    Ok((suite, leaf))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test]
async fn tls_1_2_only_when_allowed_and_then_only_ecdhe_aead_and_hsts_on_answers() {
    let upstream = Upstream::default();
    let addr = upstream.start().await;
    let c = Citadel::start(&upstream_config(addr)).await;
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    let port = c.running().gateway_addr.port();
    let (suite, _) = handshake(port, &ca, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert!(suite.starts_with("TLS13_"), "{suite}");
    let refused = handshake(port, &ca, &[&rustls::version::TLS12]).await;
    assert!(refused.is_err(), "TLS 1.2 is refused by default");
    // HSTS on answers over TLS.
    let r = c
        .client
        .get(format!("{}/v1/models", c.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    c.stop().await;

    let c = Citadel::start_with_gateway("insecure_tls12 = true", &upstream_config(addr)).await;
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    let port = c.running().gateway_addr.port();
    let (suite, _) = handshake(port, &ca, &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert!(suite.starts_with("TLS_ECDHE_"), "{suite}");
    assert!(
        suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
        "{suite}"
    );
    c.stop().await;
}

#[tokio::test]
async fn operator_certificates_are_replaced_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = citadel_crypto::InternalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let issue = || ca.issue_server_cert(&["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (
        dir.path().join("server.pem"),
        dir.path().join("server-key.pem"),
    );
    let first = issue();
    std::fs::write(&cert_path, &first.chain_pem).unwrap();
    citadel_crypto::write_private_file(&key_path, first.key_pem.as_bytes()).unwrap();
    let c = Citadel::start_with_gateway(
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
        "",
    )
    .await;
    let port = c.running().gateway_addr.port();
    let ca_pem = ca.cert_pem().as_bytes().to_vec();
    let (_, leaf) = handshake(port, &ca_pem, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        leaf.as_ref(),
        rustls_pemfile_certs(first.chain_pem.as_bytes())[0].as_ref()
    );

    // A broken pair (a key that is not the certificate's) is refused; the
    // certificate in use stays.
    let second = issue();
    std::fs::write(&cert_path, &second.chain_pem).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, leaf) = handshake(port, &ca_pem, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(
        leaf.as_ref(),
        rustls_pemfile_certs(first.chain_pem.as_bytes())[0].as_ref()
    );

    // The matching key arrives: new handshakes get the new certificate.
    citadel_crypto::write_private_file(&key_path, second.key_pem.as_bytes()).unwrap();
    let mut replaced = false;
    for _ in 0..70 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, leaf) = handshake(port, &ca_pem, &[&rustls::version::TLS13])
            .await
            .unwrap();
        if leaf.as_ref() == rustls_pemfile_certs(second.chain_pem.as_bytes())[0].as_ref() {
            replaced = true;
            break;
        }
    }
    assert!(
        replaced,
        "the new certificate is served within the 5 s check"
    );
    c.stop().await;
}
