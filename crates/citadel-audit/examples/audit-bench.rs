//! The audit log's benchmark (run by `bench/audit/run`; not a test).
//!
//! In one run, on the embedded store (SQLite in a temporary directory):
//!  1. sustained durable appends of 500-byte events through the sink;
//!  2. inclusion proofs on a log of PROOF_LOG_SIZE entries (default 10
//!     million; its tiles are built directly, the entries are not needed);
//!  3. offline verification of a log of VERIFY_LOG_SIZE entries;
//!  4. raw SHA-256 over the same entries, the machine's physical reference.
//!
//! Settings (environment): APPEND_SECONDS (10), APPEND_TASKS (2048),
//! PROOF_LOG_SIZE (10000000), PROOF_SECONDS (10), PROOF_CACHE_MB (64, the
//! default) and PROOF_CACHE_MB_LARGE (1024, enough for the whole tree),
//! VERIFY_LOG_SIZE (1000000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_audit::{AuditLog, Durability, EventSink, NoteSigner, SinkConfig};
use citadel_core::merkle::{self, CompactRange, TILE_HEIGHT, TILE_WIDTH};
use citadel_core::{EventClass, Outcome, SecurityEvent};
use citadel_store::{EventRow, Store};

/// The allocator the citadel binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An event whose stored JSON is 500 bytes: a service account's API
/// Activity event padded with a message.
fn event(n: u64) -> SecurityEvent {
    let mut e = SecurityEvent::builder(EventClass::ApiActivity, 1, "Create", Outcome::Success)
        .actor_named("svc-bench", "bench", "service_account")
        .field("count", n.into())
        .build();
    let len = e.to_json_line().len() + r#","message":"""#.len();
    e.body["message"] = serde_json::json!("x".repeat(500usize.saturating_sub(len)));
    e
}

async fn open_store(dir: &std::path::Path, name: &str) -> Store {
    Store::open(&format!("sqlite://{}", dir.join(name).display()))
        .await
        .unwrap()
}

async fn appends(dir: &std::path::Path) -> f64 {
    let seconds = setting("APPEND_SECONDS", 10);
    let tasks = setting("APPEND_TASKS", 2048);
    let store = open_store(dir, "appends.db").await;
    if let Ok(sql) = std::env::var("EXPERIMENT_SQL") {
        store.execute_raw_for_tests(&sql).await.unwrap();
    }
    let sink = EventSink::start(
        store.clone(),
        // The gateway's defaults (batches of up to 1,024 events).
        SinkConfig {
            durability: Durability::Durable,
            ..Default::default()
        },
    );
    let size = event(0).to_json_line().len();
    assert_eq!(size, 500, "the benchmark's events are 500 bytes");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (sink, done) = (sink.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = t << 32;
                while Instant::now() < stop {
                    sink.record_durable(event(n)).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    let rate = count as f64 / elapsed;
    println!(
        "durable appends:        {rate:>12.0} events/s  ({count} events of {size} bytes in {elapsed:.1} s, {tasks} concurrent recorders, each acknowledged after commit)"
    );
    rate
}

/// Writes the tiles of a log of `size` leaves straight into the store.
async fn build_tiles(store: &Store, size: u64) {
    let mut range = CompactRange::new();
    let mut filling: Vec<Vec<u8>> = Vec::new();
    let mut full: Vec<(u8, u64, Vec<u8>)> = Vec::new();
    let flush = |batch: &mut Vec<(u8, u64, Vec<u8>)>| {
        let mut sql = String::new();
        for (level, n, bytes) in batch.drain(..) {
            sql.push_str(&format!(
                "INSERT INTO log_tiles (level, idx, hashes) VALUES ({level}, {n}, X'{}');",
                hex::encode(bytes)
            ));
        }
        sql
    };
    let mut last_said = Instant::now();
    for i in 0..size {
        range.append(merkle::leaf_hash(&i.to_be_bytes()), |level, index, hash| {
            if level % TILE_HEIGHT != 0 {
                return;
            }
            let l = usize::from(level / TILE_HEIGHT);
            if filling.len() <= l {
                filling.resize_with(l + 1, Vec::new);
            }
            filling[l].extend_from_slice(hash);
            if filling[l].len() == 32 * TILE_WIDTH as usize {
                full.push((l as u8, index / TILE_WIDTH, std::mem::take(&mut filling[l])));
            }
        });
        if full.len() >= 256 {
            store
                .execute_raw_for_tests(&flush(&mut full))
                .await
                .unwrap();
        }
        if last_said.elapsed() > Duration::from_secs(5) {
            eprintln!("  building a {size}-entry tree: {i} leaves…");
            last_said = Instant::now();
        }
    }
    for (l, bytes) in filling.into_iter().enumerate() {
        if !bytes.is_empty() {
            let n = size >> (8 * (l as u32 + 1));
            full.push((l as u8, n, bytes));
        }
    }
    let mut sql = flush(&mut full);
    sql.push_str(&format!("UPDATE log_state SET size = {size} WHERE id = 1;"));
    store.execute_raw_for_tests(&sql).await.unwrap();
}

/// xorshift: a random entry index below `size`.
fn next_random(x: &mut u64, size: u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x % size
}

async fn proofs(dir: &std::path::Path) -> Vec<(u64, f64, f64)> {
    let size = setting("PROOF_LOG_SIZE", 10_000_000);
    let store = open_store(dir, "proofs.db").await;
    let built = Instant::now();
    build_tiles(&store, size).await;
    eprintln!(
        "  tree of {size} entries built in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let mut figures = Vec::new();
    for cache_mb in [
        setting("PROOF_CACHE_MB", 64),
        setting("PROOF_CACHE_MB_LARGE", 1024),
    ] {
        let (single, batched) = proofs_with_cache(&store, size, cache_mb).await;
        figures.push((cache_mb, single, batched));
    }
    figures
}

async fn proofs_with_cache(store: &Store, size: u64, cache_mb: u64) -> (f64, f64) {
    let seconds = setting("PROOF_SECONDS", 10);
    let store = store.clone();
    let log = AuditLog::with_proof_cache(
        store,
        NoteSigner::from_seed("bench.citadel/log", &[1; 32]).unwrap(),
        (cache_mb as usize) << 20,
    );
    let root = log.root_at(size).await.unwrap();
    // One proof per call, as a client asking about one event does.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (log, done) = (log.clone(), done.clone());
            tokio::spawn(async move {
                let mut x = 0x9e3779b97f4a7c15u64 ^ t;
                while Instant::now() < stop {
                    let index = next_random(&mut x, size);
                    let p = log.inclusion_proof(index, size).await.unwrap();
                    if index.is_multiple_of(1024) {
                        merkle::verify_inclusion(index, size, &p.leaf_hash, &p.proof, &root)
                            .unwrap();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let single = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("inclusion proofs:       {single:>12.0} proofs/s  (one per call, random entries of a {size}-entry log, {cache_mb} MB tile cache)");
    // Batches of 1,000, as an event query or an export asks.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let (log, done) = (log.clone(), done.clone());
            tokio::spawn(async move {
                let mut x = 0x2545f4914f6cdd1du64 ^ t;
                while Instant::now() < stop {
                    let indexes: Vec<u64> = (0..1000).map(|_| next_random(&mut x, size)).collect();
                    let proofs = log.inclusion_proofs(&indexes, size).await.unwrap();
                    let p = &proofs[0];
                    merkle::verify_inclusion(p.index, size, &p.leaf_hash, &p.proof, &root).unwrap();
                    done.fetch_add(proofs.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let batched = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("inclusion proofs:       {batched:>12.0} proofs/s  (batches of 1,000 random entries, {cache_mb} MB tile cache)");
    (single, batched)
}

async fn verification(dir: &std::path::Path) -> (f64, f64, u64) {
    let size = setting("VERIFY_LOG_SIZE", 1_000_000);
    let store = open_store(dir, "verify.db").await;
    let mut appender = store.event_appender().await.unwrap();
    let mut bytes = 0u64;
    let built = Instant::now();
    let mut n = 0;
    while n < size {
        let rows: Vec<EventRow> = (n..(n + 4096).min(size))
            .map(|i| EventRow::from(&event(i)))
            .collect();
        bytes += rows.iter().map(|r| r.body.len() as u64).sum::<u64>();
        appender.append_rows(&rows).await.unwrap();
        n += rows.len() as u64;
    }
    eprintln!(
        "  {size} entries stored in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let log = AuditLog::new(
        store.clone(),
        NoteSigner::from_seed("bench.citadel/log", &[1; 32]).unwrap(),
    );
    log.checkpoint_now().await.unwrap();
    let started = Instant::now();
    let report = citadel_audit::verify_store(&store, &log.verifier(), |_| {})
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.entries, size);
    let verify_rate = size as f64 / elapsed;
    println!(
        "offline verification:   {verify_rate:>12.0} entries/s ({size} entries, {:.0} MB, {elapsed:.2} s: read, leaf hashes, tiles, checkpoint)",
        bytes as f64 / 1e6
    );
    // The physical reference: SHA-256 over the same entries, in memory.
    let entries = store.read_log_entries(0, size.min(1 << 20)).await.unwrap();
    let sample_bytes: u64 = entries.iter().map(|e| e.body.len() as u64).sum();
    let started = Instant::now();
    let mut rounds = 0u64;
    let mut sink = 0u8;
    while started.elapsed() < Duration::from_secs(3) {
        for e in &entries {
            sink ^= merkle::leaf_hash(e.body.as_bytes())[0];
        }
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sha_rate = (rounds * entries.len() as u64) as f64 / elapsed;
    println!(
        "raw SHA-256 (same data): {sha_rate:>11.0} entries/s ({:.0} MB/s; checksum {sink})",
        (rounds * sample_bytes) as f64 / elapsed / 1e6
    );
    (verify_rate, sha_rate, size)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "bench/audit on {} cores, SQLite in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.path().display()
    );
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "appends,proofs,verify".into());
    let append_rate = if phases.contains("appends") {
        appends(dir.path()).await
    } else {
        0.0
    };
    let proof_figures = if phases.contains("proofs") {
        proofs(dir.path()).await
    } else {
        Vec::new()
    };
    let (verify_rate, sha_rate, _) = if phases.contains("verify") {
        verification(dir.path()).await
    } else {
        (0.0, 1.0, 0)
    };
    println!();
    println!("| measure | figure | target | |");
    println!("|---|---:|---:|---|");
    let mark = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "| durable appends (500-byte events) | {append_rate:.0}/s | 100,000/s | {} |",
        mark(append_rate >= 100_000.0)
    );
    for (cache_mb, single, batched) in proof_figures {
        println!(
            "| inclusion proofs, 10M-entry log, one per call, {cache_mb} MB cache | {single:.0}/s | 100,000/s | {} |",
            mark(single >= 100_000.0)
        );
        println!(
            "| inclusion proofs, 10M-entry log, batches of 1,000, {cache_mb} MB cache | {batched:.0}/s | 100,000/s | {} |",
            mark(batched >= 100_000.0)
        );
    }
    println!(
        "| offline verification | {verify_rate:.0} entries/s | 1,000,000/s | {} |",
        mark(verify_rate >= 1_000_000.0)
    );
    println!("| raw SHA-256 of the same entries | {sha_rate:.0} entries/s | reference | verification / SHA-256 = {:.2} |", verify_rate / sha_rate);
}
