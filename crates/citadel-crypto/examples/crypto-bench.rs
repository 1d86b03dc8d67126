//! `bench/crypto/run`'s Citadel half (not a test): envelope encryption of
//! 16 KiB and 1 MiB records through the keyring (the record's header, a
//! fresh nonce, AES-256-GCM bound to purpose, version and record), one
//! thread, as MB/s; and opening them again. Prints one JSON object.

use std::time::{Duration, Instant};

use citadel_crypto::{Keyring, RootKey};

fn rate(bytes: usize, mut op: impl FnMut()) -> f64 {
    // Warm up, then run for about two seconds.
    for _ in 0..3 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        op();
        n += 1;
    }
    (n as f64 * bytes as f64) / start.elapsed().as_secs_f64() / 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        citadel_store::Store::open(&format!("sqlite://{}", dir.path().join("b.db").display()))
            .await
            .unwrap();
    let ring = Keyring::load(store, RootKey::generated().unwrap(), &["bench"], &[])
        .await
        .unwrap();
    let mut out = serde_json::Map::new();
    for (name, size) in [("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)] {
        let record = vec![0x5au8; size];
        let seal = rate(size, || {
            std::hint::black_box(ring.seal("bench", b"table:records/id:42", &record).unwrap());
        });
        let sealed = ring.seal("bench", b"table:records/id:42", &record).unwrap();
        let open = rate(size, || {
            std::hint::black_box(ring.open("bench", b"table:records/id:42", &sealed).unwrap());
        });
        out.insert(
            name.into(),
            serde_json::json!({"seal_mb_per_s": seal.round(), "open_mb_per_s": open.round()}),
        );
    }
    println!("{}", serde_json::Value::Object(out));
}
