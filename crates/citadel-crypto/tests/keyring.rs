//! The key hierarchy against a real store (SQLite) and a small
//! Transit-compatible KMS on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use citadel_crypto::{rewrap_data_keys, KeyError, Keyring, RootKey, SealError, SealingKey};
use citadel_store::Store;
use parking_lot::Mutex;
use serde_json::{json, Value};
use zeroize::Zeroizing;

async fn store(dir: &std::path::Path) -> Store {
    Store::open(&format!("sqlite://{}", dir.join("k.db").display()))
        .await
        .unwrap()
}

const PURPOSES: &[&str] = &["authenticator", "pseudonyms"];

#[tokio::test]
async fn records_open_only_with_their_purpose_record_and_intact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootKey::from_file(&dir.path().join("root.key")).unwrap();
    let ring = Keyring::load(store(dir.path()).await, root, PURPOSES, &[])
        .await
        .unwrap();
    let sealed = ring
        .seal("authenticator", b"totp:u-1", b"JBSWY3DPEHPK3PXP")
        .unwrap();
    let (plain, version) = ring.open("authenticator", b"totp:u-1", &sealed).unwrap();
    assert_eq!((&plain[..], version), (&b"JBSWY3DPEHPK3PXP"[..], 1));

    let refused = |r: Result<_, KeyError>| matches!(r, Err(KeyError::Seal(SealError::Open)));
    // Another record, another table, another purpose.
    assert!(refused(ring.open("authenticator", b"totp:u-2", &sealed)));
    assert!(refused(ring.open("authenticator", b"vault:u-1", &sealed)));
    assert!(refused(ring.open("pseudonyms", b"totp:u-1", &sealed)));
    // Truncated, bit-flipped anywhere (header, nonce, body, tag), empty.
    assert!(refused(ring.open(
        "authenticator",
        b"totp:u-1",
        &sealed[..sealed.len() - 1]
    )));
    for i in 0..sealed.len() {
        let mut flipped = sealed.clone();
        flipped[i] ^= 0x20;
        assert!(
            ring.open("authenticator", b"totp:u-1", &flipped).is_err(),
            "a flip at byte {i} must not open"
        );
    }
    assert!(ring.open("authenticator", b"totp:u-1", &[]).is_err());
    assert!(matches!(
        ring.seal("nope", b"", b"x"),
        Err(KeyError::UnknownPurpose(_))
    ));
}

#[tokio::test]
async fn rotation_makes_new_writes_use_the_new_version_and_old_records_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.key");
    let ring = Keyring::load(
        store(dir.path()).await,
        RootKey::from_file(&path).unwrap(),
        PURPOSES,
        &[],
    )
    .await
    .unwrap();
    let old = ring.seal("authenticator", b"r", b"old").unwrap();
    assert_eq!(ring.rotate("authenticator").await.unwrap(), 2);
    let new = ring.seal("authenticator", b"r", b"new").unwrap();
    assert_eq!(ring.open("authenticator", b"r", &new).unwrap().1, 2);
    let (plain, version) = ring.open("authenticator", b"r", &old).unwrap();
    assert_eq!((&plain[..], version), (&b"old"[..], 1));
    assert!(ring.needs_reseal("authenticator", version));
    assert!(!ring.needs_reseal("authenticator", 2));
    // Other purposes are untouched.
    assert_eq!(ring.current_version("pseudonyms").unwrap(), 1);
    let status = ring.status();
    assert_eq!(status.len(), 3);
    assert!(status
        .iter()
        .any(|s| s.purpose == "authenticator" && s.version == 2 && s.current));

    // Another replica (same root file) sees version 2 after a refresh and
    // opens what this one sealed.
    let other = Keyring::load(
        store(dir.path()).await,
        RootKey::from_file(&path).unwrap(),
        PURPOSES,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(other.current_version("authenticator").unwrap(), 2);
    assert_eq!(
        &other.open("authenticator", b"r", &new).unwrap().0[..],
        b"new"
    );
    ring.rotate("authenticator").await.unwrap();
    let v3 = ring.seal("authenticator", b"r", b"v3").unwrap();
    assert!(
        matches!(
            other.open("authenticator", b"r", &v3),
            Err(KeyError::UnknownVersion { version: 3, .. })
        ),
        "a version made elsewhere is reported as such, so the caller can refresh"
    );
    other.refresh().await.unwrap();
    assert_eq!(
        &other.open("authenticator", b"r", &v3).unwrap().0[..],
        b"v3"
    );
}

#[tokio::test]
async fn a_wrong_or_loose_root_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    Keyring::load(
        s.clone(),
        RootKey::from_file(&dir.path().join("a.key")).unwrap(),
        PURPOSES,
        &[],
    )
    .await
    .unwrap();
    let err = Keyring::load(
        s,
        RootKey::from_file(&dir.path().join("b.key")).unwrap(),
        PURPOSES,
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KeyError::WrongRoot { .. }), "{err}");
    assert!(err.to_string().contains("use the root key"), "{err}");

    use std::os::unix::fs::PermissionsExt;
    let loose = dir.path().join("a.key");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = RootKey::from_file(&loose).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::env::set_var("CITADEL_TEST_ROOT_SHORT", "c2hvcnQ=");
    assert!(RootKey::from_env("CITADEL_TEST_ROOT_SHORT").is_err());
    assert!(RootKey::from_env("CITADEL_TEST_ROOT_UNSET").is_err());
}

#[tokio::test]
async fn a_key_from_before_the_keyring_becomes_version_1_and_its_records_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, bytes) = SealingKey::generate().unwrap();
    let old_record = legacy.seal(b"totp:u-1", b"seed").unwrap();
    let ring = Keyring::load(
        store(dir.path()).await,
        RootKey::from_file(&dir.path().join("root.key")).unwrap(),
        PURPOSES,
        &[("authenticator", Zeroizing::new(bytes.to_vec()))],
    )
    .await
    .unwrap();
    let (plain, version) = ring
        .open("authenticator", b"totp:u-1", &old_record)
        .unwrap();
    assert_eq!(&plain[..], b"seed");
    assert_eq!(version, 0, "opened as a record from before the keyring");
    assert!(ring.needs_reseal("authenticator", version));
}

/// A Transit-compatible KMS: `encrypt`, `decrypt`, `rewrap` with
/// `associated_data`, a token, and key versions it can rotate.
#[derive(Clone)]
struct Transit {
    keys: Arc<Mutex<Vec<SealingKey>>>,
    token: &'static str,
    calls: Arc<Mutex<u32>>,
}

impl Transit {
    fn new() -> Self {
        Self {
            keys: Arc::new(Mutex::new(vec![SealingKey::generate().unwrap().0])),
            token: "s.test-token",
            calls: Arc::new(Mutex::new(0)),
        }
    }

    async fn start(&self) -> SocketAddr {
        let app = Router::new()
            .route("/v1/transit/{op}/{name}", post(transit))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

async fn transit(
    State(t): State<Transit>,
    Path((op, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    *t.calls.lock() += 1;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |code, msg: &str| (code, Json(json!({"errors": [msg]})));
    if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(t.token) {
        return Err(bad(StatusCode::FORBIDDEN, "permission denied"));
    }
    if name != "citadel" {
        return Err(bad(StatusCode::BAD_REQUEST, "no such key"));
    }
    let aad = b64
        .decode(body["associated_data"].as_str().unwrap_or(""))
        .unwrap_or_default();
    let keys = t.keys.lock();
    let encrypt = |plain: &[u8]| {
        let v = keys.len();
        let sealed = keys[v - 1].seal(&aad, plain).unwrap();
        format!("vault:v{v}:{}", b64.encode(sealed))
    };
    let decrypt = |c: &str| -> Option<Vec<u8>> {
        let rest = c.strip_prefix("vault:v")?;
        let (v, data) = rest.split_once(':')?;
        let key = keys.get(v.parse::<usize>().ok()?.checked_sub(1)?)?;
        key.open(&aad, &b64.decode(data).ok()?)
            .ok()
            .map(|p| p.to_vec())
    };
    match op.as_str() {
        "encrypt" => {
            let plain = b64
                .decode(body["plaintext"].as_str().unwrap_or(""))
                .unwrap();
            Ok(Json(json!({"data": {"ciphertext": encrypt(&plain)}})))
        }
        "decrypt" => match decrypt(body["ciphertext"].as_str().unwrap_or("")) {
            Some(p) => Ok(Json(json!({"data": {"plaintext": b64.encode(p)}}))),
            None => Err(bad(
                StatusCode::BAD_REQUEST,
                "cipher: message authentication failed",
            )),
        },
        "rewrap" => match decrypt(body["ciphertext"].as_str().unwrap_or("")) {
            Some(p) => Ok(Json(json!({"data": {"ciphertext": encrypt(&p)}}))),
            None => Err(bad(
                StatusCode::BAD_REQUEST,
                "cipher: message authentication failed",
            )),
        },
        _ => Err(bad(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

fn vault(addr: SocketAddr, token: &str) -> RootKey {
    RootKey::vault_transit(
        &format!("http://{addr}"),
        "citadel",
        Zeroizing::new(token.to_owned()),
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn vault_transit_wraps_the_data_keys_and_fails_closed_when_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let kms = Transit::new();
    let addr = kms.start().await;
    let s = store(dir.path()).await;

    // Start on a key file, then move the data keys to Vault.
    let file = RootKey::from_file(&dir.path().join("root.key")).unwrap();
    let ring = Keyring::load(s.clone(), file, PURPOSES, &[]).await.unwrap();
    let sealed = ring.seal("pseudonyms", b"p:1", b"bob@example.org").unwrap();
    let file = RootKey::from_file(&dir.path().join("root.key")).unwrap();
    assert_eq!(
        rewrap_data_keys(&s, Some(&file), &vault(addr, "s.test-token"))
            .await
            .unwrap(),
        2
    );
    let ring = Keyring::load(s.clone(), vault(addr, "s.test-token"), PURPOSES, &[])
        .await
        .unwrap();
    assert_eq!(
        &ring.open("pseudonyms", b"p:1", &sealed).unwrap().0[..],
        b"bob@example.org"
    );
    assert!(ring
        .status()
        .iter()
        .all(|k| k.root.starts_with("vault-transit:")));
    // The old key file no longer opens them.
    let err = Keyring::load(
        s.clone(),
        RootKey::from_file(&dir.path().join("root.key")).unwrap(),
        PURPOSES,
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KeyError::WrongRoot { .. }));

    // Vault rotates its key: rewrap moves the data keys to its new version.
    kms.keys.lock().push(SealingKey::generate().unwrap().0);
    assert_eq!(
        rewrap_data_keys(&s, None, &vault(addr, "s.test-token"))
            .await
            .unwrap(),
        2
    );
    assert!(s
        .data_keys()
        .await
        .unwrap()
        .iter()
        .all(|k| k.wrapped.starts_with("vault:v2:")));
    Keyring::load(s.clone(), vault(addr, "s.test-token"), PURPOSES, &[])
        .await
        .unwrap();

    // A wrong token and an unreachable Vault fail closed, with what to check.
    let err = Keyring::load(s.clone(), vault(addr, "s.wrong"), PURPOSES, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Keyring::load(s.clone(), vault(closed, "s.test-token"), PURPOSES, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, KeyError::Kms(_)) && err.to_string().contains("unreachable"),
        "{err}"
    );
}
