//! The log over a real store: growth, proofs checked by an independent
//! tlog implementation, and tamper detection.

use std::collections::HashMap;
use std::sync::Arc;

use citadel_core::merkle::{self, CompactRange};
use citadel_core::{EventClass, Outcome, SecurityEvent};
use citadel_store::Store;

use crate::{verify_store, AuditLog, Checkpoint, NoteSigner, VerifyFailure};

fn event(n: u64) -> SecurityEvent {
    SecurityEvent::builder(EventClass::HttpActivity, 1, "Connect", Outcome::Success)
        .field("count", n.into())
        .field("padding", "x".repeat((n % 300) as usize).into())
        .build()
}

async fn log_with(entries: u64) -> (Arc<AuditLog>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let store = Store::open(&url).await.unwrap();
    // Several writers, several batch sizes: the appender of the sink and
    // one-off appends of the CLI.
    let mut appender = store.event_appender().await.unwrap();
    let mut n = 0;
    while n < entries {
        let batch = ((n % 7) * 61 + 1).min(entries - n);
        let events: Vec<_> = (n..n + batch).map(event).collect();
        if n % 3 == 0 {
            store.append_events(&events).await.unwrap();
        } else {
            let rows: Vec<_> = events.iter().map(citadel_store::EventRow::from).collect();
            appender.append_rows(&rows).await.unwrap();
        }
        n += batch;
    }
    let log = AuditLog::new(
        store,
        NoteSigner::from_seed("citadel.test/log", &[9; 32]).unwrap(),
    );
    (log, dir, url)
}

async fn bodies(store: &Store) -> Vec<String> {
    let size = store.log_size().await.unwrap();
    store
        .read_log_entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.body)
        .collect()
}

#[tokio::test]
async fn the_tree_covers_every_event_and_its_proofs_verify() {
    let (log, _dir, _) = log_with(1000).await;
    let store = log.store();
    assert_eq!(store.log_size().await.unwrap(), 1000);
    let bodies = bodies(store).await;
    let mut range = CompactRange::new();
    for b in &bodies {
        range.append(merkle::leaf_hash(b.as_bytes()), |_, _, _| {});
    }
    let made = log.checkpoint_now().await.unwrap();
    let checkpoint = Checkpoint::open(&made.note, &log.verifier()).unwrap();
    assert_eq!((checkpoint.size, checkpoint.root), (1000, range.root()));
    // The same checkpoint again while nothing new arrived.
    assert_eq!(log.checkpoint_now().await.unwrap().size, 1000);
    for index in [0u64, 1, 255, 256, 511, 999] {
        for size in [index + 1, 700.max(index + 1), 1000] {
            let p = log.inclusion_proof(index, size).await.unwrap();
            let root = log.root_at(size).await.unwrap();
            merkle::verify_inclusion(
                index,
                size,
                &merkle::leaf_hash(bodies[index as usize].as_bytes()),
                &p.proof,
                &root,
            )
            .unwrap();
        }
    }
    for (from, to) in [(1u64, 1000u64), (256, 1000), (300, 513), (999, 1000)] {
        let p = log.consistency_proof(from, to).await.unwrap();
        merkle::verify_consistency(
            from,
            to,
            &log.root_at(from).await.unwrap(),
            &log.root_at(to).await.unwrap(),
            &p.proof,
        )
        .unwrap();
    }
    // Out of range questions are refused, not answered.
    assert!(matches!(
        log.inclusion_proof(1000, 1000).await,
        Err(crate::LogError::OutOfRange(_))
    ));
    assert!(matches!(
        log.inclusion_proof(0, 1001).await,
        Err(crate::LogError::OutOfRange(_))
    ));
    assert!(matches!(
        log.consistency_proof(10, 5).await,
        Err(crate::LogError::OutOfRange(_))
    ));
    // Tiles: full and partial, and the bundle of entries they hash.
    assert_eq!(log.tile(0, 0, None).await.unwrap().len(), 8192);
    assert_eq!(log.tile(0, 3, Some(232)).await.unwrap().len(), 232 * 32);
    assert!(matches!(
        log.tile(0, 3, None).await,
        Err(crate::LogError::NotFound(_))
    ));
    assert!(matches!(
        log.tile(0, 3, Some(233)).await,
        Err(crate::LogError::NotFound(_))
    ));
    assert_eq!(log.tile(1, 0, Some(3)).await.unwrap().len(), 96);
    let bundle = log.entry_bundle(3, Some(232)).await.unwrap();
    let len = u16::from_be_bytes([bundle[0], bundle[1]]) as usize;
    assert_eq!(&bundle[2..2 + len], bodies[768].as_bytes());
    assert!(matches!(
        log.entry_bundle(3, None).await,
        Err(crate::LogError::NotFound(_))
    ));
    // Verifies offline.
    let report = verify_store(store, &log.verifier(), |_| {}).await.unwrap();
    assert_eq!(
        (report.entries, report.checkpoints, report.root),
        (1000, 1, range.root())
    );
}

/// Tiles served as a tlog-tiles server would, for the independent client.
struct ServedTiles(HashMap<(u8, u64), Vec<u8>>);

impl tlog_tiles::TileReader for ServedTiles {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let data = self
                    .0
                    .get(&(t.level(), t.level_index()))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)?;
                data.get(..t.width() as usize * 32)
                    .map(<[u8]>::to_vec)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

#[tokio::test]
async fn an_independent_tlog_client_accepts_checkpoints_tiles_and_proofs() {
    let (log, _dir, _) = log_with(70_000 / 50).await;
    let made = log.checkpoint_now().await.unwrap();
    // signed_note checks the signature with our vkey...
    let verifier = signed_note::StandardVerifier::new(&log.verifier().vkey()).unwrap();
    let note = signed_note::Note::from_bytes(made.note.as_bytes()).unwrap();
    note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .expect("signed_note verifies our checkpoint");
    // ...and tlog_tiles parses the checkpoint body.
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!(checkpoint.origin(), "citadel.test/log");
    let size = checkpoint.size();
    assert_eq!(size, 1400);
    // Every tile a client of this tree may ask for, as our API serves it.
    let mut tiles = HashMap::new();
    for level in 0..3u8 {
        for n in 0..8u64 {
            let width = merkle::tile_width(level, n, size);
            if width > 0 {
                let w = (width < 256).then_some(width);
                tiles.insert((level, n), log.tile(level, n, w).await.unwrap());
            }
        }
    }
    let served = ServedTiles(tiles);
    let reader = tlog_tiles::TileHashReader::new(size, *checkpoint.hash(), &served);
    let bodies = bodies(log.store()).await;
    for index in [0u64, 255, 256, 1000, 1399] {
        // Its proof from our tiles equals ours, and ours checks with its checker.
        let theirs = tlog_tiles::prove_record(size, index, &reader).unwrap();
        let ours = log.inclusion_proof(index, size).await.unwrap();
        let ours_as_theirs: Vec<tlog_tiles::Hash> =
            ours.proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
        assert_eq!(theirs, ours_as_theirs);
        let leaf = tlog_tiles::record_hash(bodies[index as usize].as_bytes());
        tlog_tiles::check_record(&ours_as_theirs, size, *checkpoint.hash(), index, leaf).unwrap();
    }
    for old in [1u64, 256, 700, 1399] {
        let theirs = tlog_tiles::prove_tree(size, old, &reader).unwrap();
        let ours = log.consistency_proof(old, size).await.unwrap();
        let ours_as_theirs: Vec<tlog_tiles::Hash> =
            ours.proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
        assert_eq!(theirs, ours_as_theirs);
        let old_root = tlog_tiles::Hash(log.root_at(old).await.unwrap());
        tlog_tiles::check_tree(&ours_as_theirs, size, *checkpoint.hash(), old, old_root).unwrap();
    }
}

/// Applies `tamper` to a fresh, checkpointed log and returns what the
/// verifier says.
async fn verify_after(tamper: &str) -> VerifyFailure {
    let (log, _dir, _) = log_with(600).await;
    log.checkpoint_now().await.unwrap();
    verify_store(log.store(), &log.verifier(), |_| {})
        .await
        .unwrap();
    tamper_with(log.store(), tamper).await;
    verify_store(log.store(), &log.verifier(), |_| {})
        .await
        .unwrap_err()
}

/// Runs `sql` as someone holding the database file would: past the
/// append-only triggers and the constraints.
async fn tamper_with(store: &Store, sql: &str) {
    store
        .execute_raw_for_tests(&format!(
            "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete; \
             DROP TRIGGER IF EXISTS log_tiles_full_are_final; DROP TRIGGER IF EXISTS log_tiles_no_delete; \
             DROP TRIGGER IF EXISTS log_checkpoints_no_update; \
             PRAGMA ignore_check_constraints = ON; {sql}"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected_at_the_right_index() {
    // Modify an entry.
    let f = verify_after(
        "UPDATE events SET body = replace(body, 'Connect', 'Connecc') WHERE log_index = 300",
    )
    .await;
    assert_eq!(f.index, Some(300), "{f}");
    // Modify an entry so that it holds a line break (the verifier reads
    // whole bundles joined by line breaks; this one it reads entry by entry).
    let f = verify_after("UPDATE events SET body = body || char(10) || '{}' WHERE log_index = 77")
        .await;
    assert_eq!(f.index, Some(77), "{f}");
    // Delete an entry.
    let f = verify_after("DELETE FROM events WHERE log_index = 123").await;
    assert_eq!(f.index, Some(123), "{f}");
    // Delete the last entries.
    let f = verify_after("DELETE FROM events WHERE log_index >= 590").await;
    assert_eq!(f.index, Some(590), "{f}");
    // Reorder two entries.
    let f = verify_after(
        "UPDATE events SET log_index = -1 WHERE log_index = 40; \
         UPDATE events SET log_index = 40 WHERE log_index = 41; \
         UPDATE events SET log_index = 41 WHERE log_index = -1",
    )
    .await;
    assert_eq!(f.index, Some(40), "{f}");
    // Insert an entry in the middle (renumbering those after it).
    let f = verify_after(
        "UPDATE events SET seq = -seq - 1, log_index = log_index + 1 WHERE log_index >= 500; \
         UPDATE events SET seq = -seq WHERE seq < 0; \
         INSERT INTO events (id, time, class_uid, outcome, body, log_index, seq) \
         VALUES ('forged', 0, 3001, 'success', '{}', 500, 501)",
    )
    .await;
    assert_eq!(f.index, Some(500), "{f}");
    // Modify a tile (hash 7 of level-0 tile 1 covers entry 263).
    let f = verify_after(
        "UPDATE log_tiles SET hashes = unhex(substr(hex(hashes), 1, 448) || printf('%.64d', 0) || substr(hex(hashes), 513)) \
         WHERE level = 0 AND idx = 1",
    )
    .await;
    assert_eq!(f.index, Some(263), "{f}");
    // Replace a checkpoint with one signed by another key.
    let other = NoteSigner::from_seed("citadel.test/log", &[1; 32]).unwrap();
    let forged = other
        .sign(
            &Checkpoint {
                origin: "citadel.test/log".into(),
                size: 600,
                root: [0; 32],
            }
            .body(),
        )
        .unwrap();
    let f = verify_after(&format!(
        "UPDATE log_checkpoints SET note = '{forged}' WHERE size = 600"
    ))
    .await;
    assert!(f.what.contains("checkpoint at size 600"), "{f}");
}

#[tokio::test]
async fn a_rewritten_history_with_recomputed_tiles_fails_the_signed_checkpoint() {
    // An attacker who rewrites an entry and every tile still cannot sign:
    // the checkpoint pins the old tree and names the range that changed.
    let (log, _dir, url) = log_with(300).await;
    log.checkpoint_now().await.unwrap();
    let store = log.store();
    store
        .execute_raw_for_tests("DROP TRIGGER events_no_update")
        .await
        .unwrap();
    store
        .execute_raw_for_tests("DROP TRIGGER log_tiles_full_are_final")
        .await
        .unwrap();
    store
        .execute_raw_for_tests("DROP TRIGGER log_tiles_no_delete")
        .await
        .unwrap();
    store
        .execute_raw_for_tests("UPDATE events SET body = replace(body, 'Connect', 'Connecc') WHERE log_index = 17; DELETE FROM log_tiles; UPDATE log_state SET size = 0, backfill_to = 300")
        .await
        .unwrap();
    // Rebuild the tiles from the (altered) entries, as the attacker would.
    let rebuilt = Store::open(&url).await.unwrap();
    rebuilt.check_log().await.unwrap();
    let f = verify_store(&rebuilt, &log.verifier(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(f.index, Some(0), "{f}");
    assert!(f.what.contains("signed checkpoint at size 300"), "{f}");
}

#[tokio::test]
async fn appending_the_same_events_twice_never_adds_leaves_twice() {
    let (log, _dir, _) = log_with(10).await;
    let store = log.store();
    let again: Vec<SecurityEvent> = store
        .query_events(&Default::default())
        .await
        .unwrap()
        .0
        .into_iter()
        .take(3)
        .collect();
    // A retry through a new appender skips what is stored already...
    store.append_events(&again).await.unwrap();
    assert_eq!(store.log_size().await.unwrap(), 10);
    assert_eq!(store.count_events().await.unwrap(), 10);
    // ...and an appender that believes it is in step is refused by the
    // store rather than allowed to log an event twice.
    let mut appender = store.event_appender().await.unwrap();
    let fresh: Vec<_> = [event(99)]
        .iter()
        .map(citadel_store::EventRow::from)
        .collect();
    appender.append_rows(&fresh).await.unwrap();
    let rows: Vec<_> = again.iter().map(citadel_store::EventRow::from).collect();
    assert!(appender.append_rows(&rows).await.is_err());
    // After the failure it checks again, and the retry is a no-op.
    appender.append_rows(&rows).await.unwrap();
    assert_eq!(store.log_size().await.unwrap(), 11);
    verify_store(store, &log.verifier(), |_| {}).await.unwrap();
}

fn person_event(name: &str, uid: &str, ip: &str) -> SecurityEvent {
    SecurityEvent::builder(EventClass::ApiActivity, 1, "Create", Outcome::Success)
        .actor_named(uid, name, "user")
        .field("src_endpoint", serde_json::json!({"ip": ip, "port": 50123}))
        .field(
            "http_request",
            serde_json::json!({"user_agent": "curl/8", "http_method": "POST"}),
        )
        .build()
}

#[tokio::test]
async fn erasing_a_subject_shreds_their_fields_and_the_log_still_verifies() {
    use crate::{EventSink, Opened, SinkConfig, SubjectVault};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
        .await
        .unwrap();
    let root = [42u8; 64];
    let vault = SubjectVault::new(store.clone(), &root).unwrap();
    let sink = EventSink::start(
        store.clone(),
        SinkConfig {
            vault: Some(vault.clone()),
            ..Default::default()
        },
    );
    let mut bus = sink.subscribe();
    let alice = person_event("alice", "u-0001", "203.0.113.7");
    let bob = person_event("bob", "u-0002", "198.51.100.9");
    let system = SecurityEvent::builder(EventClass::ApiActivity, 99, "Other", Outcome::Success)
        .actor_named("system", "citadel", "system")
        .field("src_endpoint", serde_json::json!({"ip": "127.0.0.1"}))
        .build();
    let alice_again = person_event("alice", "u-0001", "203.0.113.7");
    for e in [&alice, &bob, &system, &alice_again] {
        sink.record_durable(e.clone()).await.unwrap();
    }
    // The bus (in memory, for detection) sees the event as it happened.
    assert_eq!(
        bus.recv().await.unwrap().body["actor"]["user"]["name"],
        "alice"
    );
    // Stored: no name, address or agent of a person; the system's address stays.
    let stored: Vec<String> = bodies(&store).await;
    assert_eq!(stored.len(), 4);
    for body in &stored[..2] {
        for secret in [
            "alice",
            "bob",
            "203.0.113.7",
            "198.51.100.9",
            "curl/8",
            "50123",
        ] {
            assert!(!body.contains(secret), "{secret} stored in clear: {body}");
        }
        assert!(body.contains("sealed_subject"));
    }
    assert!(stored[2].contains("127.0.0.1") && !stored[2].contains("sealed_subject"));
    // Reading opens them again.
    let (events, _) = store.query_events(&Default::default()).await.unwrap();
    let mut first = events[0].body.clone();
    assert_eq!(vault.open(&mut first).await.unwrap(), Opened::Restored);
    assert_eq!(first, alice.body, "opened exactly as recorded");
    // A sealed blob moved to another event does not open there.
    let mut moved = events[1].body.clone();
    moved["unmapped"]["sealed_subject"] = events[0].body["unmapped"]["sealed_subject"].clone();
    assert_eq!(vault.open(&mut moved).await.unwrap(), Opened::Erased);
    assert!(!moved.to_string().contains("alice"));

    let log = AuditLog::new(
        store.clone(),
        NoteSigner::from_seed("citadel.test/log", &[9; 32]).unwrap(),
    );
    log.checkpoint_now().await.unwrap();
    // Erase alice: her fields are gone for every reader, bob's are not, and
    // the log (and its old checkpoint) verifies as before.
    assert!(vault.erase("u-0001").await.unwrap());
    let fresh_reader = SubjectVault::new(store.clone(), &root).unwrap();
    for reader in [&vault, &fresh_reader] {
        let mut a = events[3].body.clone();
        assert_eq!(reader.open(&mut a).await.unwrap(), Opened::Erased);
        assert!(!a.to_string().contains("alice"));
        let mut b = events[1].body.clone();
        assert_eq!(reader.open(&mut b).await.unwrap(), Opened::Restored);
        assert_eq!(b["actor"]["user"]["name"], "bob");
    }
    sink.record_durable(person_event("alice", "u-0001", "203.0.113.7"))
        .await
        .unwrap();
    log.checkpoint_now().await.unwrap();
    let report = verify_store(&store, &log.verifier(), |_| {}).await.unwrap();
    assert_eq!((report.entries, report.checkpoints), (5, 2));
    // An event after the erasure gets a new key: readable, the old ones not.
    let (events, _) = store.query_events(&Default::default()).await.unwrap();
    let mut after = events[4].body.clone();
    assert_eq!(
        fresh_reader.open(&mut after).await.unwrap(),
        Opened::Restored
    );
}

#[tokio::test]
async fn a_store_whose_tree_does_not_cover_its_events_is_refused_loudly_not_repaired() {
    // The last entry changed (what a torn or partial write would leave).
    let (log, _dir, _) = log_with(300).await;
    let store = log.store();
    tamper_with(
        store,
        "UPDATE events SET body = body || ' ' WHERE log_index = 299",
    )
    .await;
    let err = store.check_log().await.unwrap_err().to_string();
    assert!(err.contains("last entry (299)"), "{err}");
    assert_eq!(
        store.count_events().await.unwrap(),
        300,
        "nothing dropped or rewritten"
    );
    // A tree ahead of its entries (the last ones gone).
    let (log, _dir, _) = log_with(300).await;
    let store = log.store();
    tamper_with(store, "DELETE FROM events WHERE log_index >= 290").await;
    let err = store.check_log().await.unwrap_err().to_string();
    assert!(err.contains("covers 300 entries but only 290"), "{err}");
    // A missing tile at the right edge.
    let (log, _dir, _) = log_with(300).await;
    let store = log.store();
    tamper_with(store, "DELETE FROM log_tiles WHERE level = 0 AND idx = 1").await;
    let err = store.check_log().await.unwrap_err().to_string();
    assert!(err.contains("tile 0/1 is missing"), "{err}");
    // Events slipped into the table behind Citadel's back are not adopted.
    let (log, _dir, _) = log_with(300).await;
    let store = log.store();
    tamper_with(
        store,
        "INSERT INTO events (id, time, class_uid, outcome, body, log_index, seq) \
         VALUES ('slipped-in', 0, 3001, 'success', '{}', 300, 301)",
    )
    .await;
    let err = store.check_log().await.unwrap_err().to_string();
    assert!(
        err.contains("1 events were stored without being added"),
        "{err}"
    );
    assert_eq!(store.log_size().await.unwrap(), 300);
    // Appending to it fails too, rather than building on a broken edge.
    assert!(store.append_events(&[event(1)]).await.is_err());
    assert_eq!(store.log_size().await.unwrap(), 300);
}

#[tokio::test]
async fn an_event_too_large_for_the_log_is_cut_and_the_log_stays_servable() {
    use crate::{EventSink, SinkConfig};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
        .await
        .unwrap();
    let sink = EventSink::start(store.clone(), SinkConfig::default());
    let huge = SecurityEvent::builder(EventClass::HttpActivity, 1, "Connect", Outcome::Failure)
        .field(
            "http_request",
            serde_json::json!({"user_agent": "x".repeat(200_000)}),
        )
        .build();
    sink.record_durable(huge.clone()).await.unwrap();
    let stored = bodies(&store).await;
    assert!(stored[0].len() <= 65_535);
    let body: serde_json::Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(body["metadata"]["uid"], huge.id.as_str());
    assert_eq!(body["class_uid"], 4002);
    assert!(body["unmapped"]["truncated"]["bytes"].as_u64().unwrap() > 200_000);
    let log = AuditLog::new(
        store.clone(),
        NoteSigner::from_seed("citadel.test/log", &[9; 32]).unwrap(),
    );
    log.checkpoint_now().await.unwrap();
    assert!(log.entry_bundle(0, Some(1)).await.is_ok());
    verify_store(&store, &log.verifier(), |_| {}).await.unwrap();
}

#[tokio::test]
async fn a_checkpoint_kept_outside_catches_a_log_cut_back_with_its_checkpoints() {
    let (log, _dir, url) = log_with(600).await;
    let kept = log.checkpoint_now().await.unwrap();
    let kept = Checkpoint::open(&kept.note, &log.verifier()).unwrap();
    // The operator cuts the log back to 500 entries and covers the tracks:
    // checkpoints deleted, tiles rebuilt from what is left.
    tamper_with(
        log.store(),
        "DELETE FROM events WHERE log_index >= 500; DROP TRIGGER IF EXISTS log_checkpoints_no_delete; \
         DELETE FROM log_checkpoints; DELETE FROM log_tiles; UPDATE log_state SET size = 0, backfill_to = 500",
    )
    .await;
    let store = Store::open(&url).await.unwrap();
    store.check_log().await.unwrap();
    // On its own the store now looks whole...
    crate::verify_store(&store, &log.verifier(), |_| {})
        .await
        .unwrap();
    // ...but not against the checkpoint the auditor kept.
    let f = crate::verify_store_pinned(&store, &log.verifier(), &[kept], |_| {})
        .await
        .unwrap_err();
    assert_eq!(f.index, Some(500), "{f}");
}

#[tokio::test]
async fn replicas_must_share_the_subject_root_and_see_each_others_erasures() {
    use crate::{Opened, SubjectVault, VaultError};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("e.db").display()))
        .await
        .unwrap();
    let a = SubjectVault::new(store.clone(), &[1u8; 64]).unwrap();
    a.check_root().await.unwrap();
    a.check_root().await.unwrap();
    let stray = SubjectVault::new(store.clone(), &[2u8; 64]).unwrap();
    assert!(matches!(
        stray.check_root().await,
        Err(VaultError::RootMismatch)
    ));
    // Replica B, same root, seals with a key it has cached...
    let b = SubjectVault::new(store.clone(), &[1u8; 64]).unwrap();
    b.check_root().await.unwrap();
    let mut events = vec![person_event("carol", "u-0003", "192.0.2.1")];
    b.seal(&mut events).await.unwrap();
    let mut sealed = events[0].body.clone();
    assert_eq!(b.open(&mut sealed.clone()).await.unwrap(), Opened::Restored);
    // ...A erases carol; once B hears of a change it forgets its keys.
    assert!(a.erase("u-0003").await.unwrap());
    b.forget_cached();
    assert_eq!(b.open(&mut sealed).await.unwrap(), Opened::Erased);
}

#[tokio::test]
async fn the_deep_check_catches_filter_columns_edited_to_hide_events() {
    let (log, _dir, _) = log_with(300).await;
    log.checkpoint_now().await.unwrap();
    assert_eq!(
        crate::verify_columns(log.store(), |_| {}).await.unwrap(),
        300
    );
    for (sql, index) in [
        ("UPDATE events SET time = 0 WHERE log_index = 42", 42),
        (
            "UPDATE events SET outcome = 'failure' WHERE log_index = 7",
            7,
        ),
        (
            "UPDATE events SET principal = 'someone-else' WHERE log_index = 250",
            250,
        ),
    ] {
        let (log, _dir, _) = log_with(300).await;
        log.checkpoint_now().await.unwrap();
        tamper_with(log.store(), sql).await;
        // The entries (and so the log) are untouched...
        verify_store(log.store(), &log.verifier(), |_| {})
            .await
            .unwrap();
        // ...but what queries filter on no longer says what they say.
        let f = crate::verify_columns(log.store(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(f.index, Some(index), "{sql}: {f}");
    }
}
