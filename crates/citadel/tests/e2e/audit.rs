//! The tamper-evident audit log through the real server and binary: the
//! tlog-tiles read API, proofs, the verifiers (offline, export, remote
//! monitor), tamper detection, and SIGKILL during sustained appends.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use citadel_audit::{Checkpoint, NoteVerifier};
use citadel_core::merkle;
use serde_json::{json, Value};

use crate::binary::{citadel, run, spawn_demo};
use crate::support::{client_trusting, code_of, upstream_config, Citadel, Upstream};

fn hash(v: &Value) -> [u8; 32] {
    B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<[u8; 32]> {
    v.as_array().unwrap().iter().map(hash).collect()
}

/// Splits an entry bundle into its entries.
fn bundle_entries(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        out.push(bytes[2..2 + len].to_vec());
        bytes = &bytes[2 + len..];
    }
    out
}

#[tokio::test]
async fn the_read_api_serves_a_verifiable_log_and_refuses_bad_addresses() {
    let upstream = Upstream::default().start().await;
    let c = Citadel::start(&upstream_config(upstream)).await;
    let (_, key) = c.key("developer", json!({})).await;
    for _ in 0..5 {
        let r = c.chat(&key, json!({"model": "m1", "messages": []})).await;
        assert_eq!(r.status(), 200);
    }
    c.flush().await;

    // A checkpoint on demand (admin API), then the public checkpoint.
    let made: Value = c
        .admin_post("/api/v1/audit/checkpoint", Value::Null)
        .await
        .json()
        .await
        .unwrap();
    let verifier = NoteVerifier::parse(made["vkey"].as_str().unwrap()).unwrap();
    let note = c
        .client
        .get(format!("{}/audit/log/checkpoint", c.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(note.headers()["content-type"], "text/plain; charset=utf-8");
    let note = note.text().await.unwrap();
    let checkpoint = Checkpoint::open(&note, &verifier).expect("the checkpoint verifies");
    assert_eq!(checkpoint.origin, "citadel.local/citadel");
    assert!(checkpoint.size >= 10, "{checkpoint:?}");
    assert_eq!(made["size"], checkpoint.size);

    // Level-0 tile and entry bundle of the checkpoint's tree agree.
    let width = checkpoint.size.min(256);
    let tile_path = if width < 256 {
        format!("000.p/{width}")
    } else {
        "000".into()
    };
    let tile = c
        .client
        .get(format!("{}/audit/log/tile/0/{tile_path}", c.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(tile.status(), 200);
    assert!(tile.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let tile = tile.bytes().await.unwrap();
    assert_eq!(tile.len() as u64, width * 32);
    let entries_url = format!("{}/audit/log/tile/entries/{tile_path}", c.admin);
    let (status, code, _) = code_of(c.client.get(&entries_url).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "invalid_credentials"),
        "entries need a key"
    );
    let bundle = c
        .client
        .get(&entries_url)
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    let entries = bundle_entries(&bundle.bytes().await.unwrap());
    assert_eq!(entries.len() as u64, width);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(&tile[i * 32..(i + 1) * 32], &merkle::leaf_hash(entry)[..]);
    }
    // A developer key may not read entries.
    let (status, code, _) = code_of(
        c.client
            .get(&entries_url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));

    // Events with their proofs against the latest checkpoint.
    let listed: Value = c.admin_get("/api/v1/events?proofs=true&limit=5").await;
    let proved_against = Checkpoint::open(
        listed["checkpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("{listed}")),
        &verifier,
    )
    .unwrap();
    let listed = listed["events"].as_array().unwrap();
    assert_eq!(listed.len(), 5);
    for e in listed {
        let index = e["log_index"].as_u64().unwrap();
        let entry = e["entry"].as_str().unwrap();
        let stored: Value = serde_json::from_str(entry).unwrap();
        assert_eq!(stored["metadata"]["uid"], e["event"]["metadata"]["uid"]);
        let proof = &e["inclusion_proof"];
        merkle::verify_inclusion(
            index,
            proved_against.size,
            &merkle::leaf_hash(entry.as_bytes()),
            &hashes(&proof["proof"]),
            &proved_against.root,
        )
        .expect("the event's inclusion proof verifies");
    }

    // A consistency proof from size 1 (root = leaf 0) to the checkpoint.
    let p: Value = c
        .client
        .get(format!(
            "{}/api/v1/audit/proof/consistency?from=1&to={}",
            c.admin, checkpoint.size
        ))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    merkle::verify_consistency(
        1,
        checkpoint.size,
        &merkle::leaf_hash(&entries[0]),
        &checkpoint.root,
        &hashes(&p["proof"]),
    )
    .unwrap();

    // Bad addresses and questions: stable codes, nothing changes.
    for path in [
        "/audit/log/tile/0/0001",
        "/audit/log/tile/64/000",
        "/audit/log/tile/00/000",
        "/audit/log/tile/0/000.p/0",
        "/audit/log/tile/0/000.p/256",
        "/audit/log/tile/0/x000/001",
        "/audit/log/tile/0/x999/000",
        "/audit/log/tile/0",
    ] {
        let (status, code, _) = code_of(
            c.client
                .get(format!("{}{path}", c.admin))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    let ask = |q: String| {
        let c = &c;
        async move {
            code_of(
                c.client
                    .get(format!("{}/api/v1/audit/proof/{q}", c.admin))
                    .bearer_auth(&c.admin_key)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let huge = 1u64 << 40;
    for (q, want) in [
        (format!("inclusion?index={huge}"), (400, "out_of_range")),
        (
            format!("inclusion?index=0&size={huge}"),
            (400, "out_of_range"),
        ),
        ("inclusion?index=-1".into(), (400, "invalid_request")),
        ("inclusion".into(), (400, "invalid_request")),
        ("consistency?from=5&to=2".into(), (400, "out_of_range")),
        (
            format!("consistency?from=1&to={huge}"),
            (400, "out_of_range"),
        ),
    ] {
        let (status, code, _) = ask(q.clone()).await;
        assert_eq!((status, code.as_str()), want, "{q}");
    }

    // Checkpoints follow new entries on their own (every second).
    for _ in 0..3 {
        c.chat(&key, json!({"model": "m1", "messages": []})).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let note = c
            .client
            .get(format!("{}/audit/log/checkpoint", c.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if Checkpoint::open(&note, &verifier).unwrap().size > checkpoint.size {
            break;
        }
        assert!(Instant::now() < deadline, "no new checkpoint within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `citadel serve --demo` with a known admin port (one that is
/// free, retried if another test took it meanwhile); returns the child,
/// the admin port, and the gateway URL, demo key and CA path from its curl line.
async fn serve_with_admin_port(data: &std::path::Path) -> (Child, u16, String, String, String) {
    for _ in 0..5 {
        let port = free_port();
        if let Ok((child, url, key, ca)) = try_serve(data, &format!("127.0.0.1:{port}")).await {
            return (child, port, url, key, ca);
        }
    }
    panic!("citadel serve did not start on any of 5 free ports");
}

/// Starts `citadel serve --demo` with the admin listener on any port.
async fn serve(data: &std::path::Path) -> (Child, String, String, String) {
    try_serve(data, "127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn try_serve(
    data: &std::path::Path,
    admin: &str,
) -> Result<(Child, String, String, String), String> {
    let (mut child, line) = spawn_demo(data, admin, Stdio::piped()).await;
    let Some(line) = line else {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        let _ = child.wait();
        return Err(format!("serve --demo printed no curl line: {err}"));
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let word_after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .unwrap()
            .split([' ', '\''])
            .next()
            .unwrap()
            .to_owned()
    };
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_owned();
    Ok((child, url, word_after("Bearer "), word_after("--cacert ")))
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn the_cli_verifies_offline_by_export_and_as_a_remote_monitor_and_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut child, admin_port, url, demo_key, ca) = serve_with_admin_port(data).await;
    let client = client_trusting(&std::fs::read(&ca).unwrap());
    let chat = |n: usize| {
        let (client, url, key) = (client.clone(), url.clone(), demo_key.clone());
        async move {
            for _ in 0..n {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    chat(20).await;
    let (ok, vkey, err) = run(citadel(data).args(["audit", "pubkey"]));
    assert!(ok, "{err}");
    let vkey = vkey.trim().to_owned();
    assert!(vkey.starts_with("citadel.local/citadel+"), "{vkey}");
    let (ok, out, err) = run(citadel(data).args([
        "key", "create", "--name", "monitor", "--role", "auditor", "--json",
    ]));
    assert!(ok, "{err}");
    let monitor_key = json_of(&out)["secret"].as_str().unwrap().to_owned();

    // The monitor: first run verifies everything, the second only what is new,
    // and proves the new checkpoint extends the one it verified.
    let state = data.join("monitor-state.json");
    let base = format!("https://localhost:{admin_port}");
    let monitor_cmd = |state: &std::path::Path| {
        let mut cmd = citadel(data);
        cmd.args([
            "audit",
            "verify",
            "--json",
            "--url",
            &base,
            "--key",
            &vkey,
            "--ca",
            &ca,
            "--api-key",
            &monitor_key,
            "--state",
        ])
        .arg(state);
        cmd
    };
    let monitor = || run(&mut monitor_cmd(&state));
    let (ok, out, err) = monitor();
    assert!(ok, "{out}{err}");
    let first = json_of(&out);
    assert_eq!(first["verified"], true);
    let first_size = first["checkpointed_size"].as_u64().unwrap();
    chat(300).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out, err) = monitor();
    assert!(ok, "{out}{err}");
    let second = json_of(&out);
    assert_eq!(second["previous_size"], first_size);
    assert!(
        second["checkpointed_size"].as_u64().unwrap() > first_size + 300,
        "{second}"
    );
    // A monitor holding a state the log does not extend refuses it.
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let size = forged["size"].as_u64().unwrap();
    let peaks = vec![[1u8; 32]; size.count_ones() as usize];
    let other_tree = merkle::CompactRange::from_parts(size, peaks.clone()).unwrap();
    forged["root"] = json!(B64.encode(other_tree.root()));
    forged["peaks"] = json!(peaks.iter().map(|p| B64.encode(p)).collect::<Vec<_>>());
    let forged_state = data.join("forged-state.json");
    std::fs::write(&forged_state, serde_json::to_vec(&forged).unwrap()).unwrap();
    let mut cmd = monitor_cmd(&forged_state);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        json_of(&String::from_utf8_lossy(&out.stdout))["verified"],
        false
    );

    child.kill().unwrap();
    child.wait().unwrap();

    // Offline, pinned to the key, with the filter columns checked too.
    let (ok, out, err) =
        run(citadel(data).args(["audit", "verify", "--json", "--deep", "--key", &vkey]));
    assert!(ok, "{out}{err}");
    let offline = json_of(&out);
    assert!(offline["entries"].as_u64().unwrap() > 600, "{offline}");
    assert_eq!(offline["columns_checked"], offline["entries"], "{offline}");
    // Held to a checkpoint saved outside the store.
    let (ok, note, err) = run(citadel(data).args(["audit", "checkpoint"]));
    assert!(ok, "{err}");
    let saved = data.join("saved-checkpoint.txt");
    std::fs::write(&saved, &note).unwrap();
    let (ok, out, err) = run(citadel(data)
        .args(["audit", "verify", "--json", "--key", &vkey, "--checkpoint"])
        .arg(&saved));
    assert!(ok, "{out}{err}");
    // A checkpoint of some other log is refused as such (exit 1, not 2).
    std::fs::write(
        &saved,
        note.replace("citadel.local/citadel", "elsewhere.example/log"),
    )
    .unwrap();
    let out = citadel(data)
        .args(["audit", "verify", "--key", &vkey, "--checkpoint"])
        .arg(&saved)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Export with proofs; the export verifies, a changed export does not.
    let export = data.join("export.jsonl");
    let (ok, _, err) = run(citadel(data)
        .args(["audit", "export", "--from", "5", "--to", "50", "--out"])
        .arg(&export));
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&export).unwrap();
    assert_eq!(text.lines().count(), 46);
    let (ok, out, err) = run(citadel(data)
        .args(["audit", "verify", "--json", "--key", &vkey, "--export"])
        .arg(&export));
    assert!(ok, "{out}{err}");
    assert_eq!(json_of(&out)["entries"], 45);
    // A line dropped from the middle is caught too.
    let dropped: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 20)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&export, dropped.join("\n") + "\n").unwrap();
    let out = citadel(data)
        .args(["audit", "verify", "--json", "--key", &vkey, "--export"])
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let changed = text.replacen("demo-chat", "demo-chaT", 1);
    std::fs::write(&export, changed).unwrap();
    let out = citadel(data)
        .args(["audit", "verify", "--json", "--key", &vkey, "--export"])
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Tamper with the store: the verifier exits 2 and names the entry.
    let store =
        citadel_store::Store::open(&format!("sqlite://{}", data.join("citadel.db").display()))
            .await
            .unwrap();
    store
        .execute_raw_for_tests("DROP TRIGGER events_no_update")
        .await
        .unwrap();
    store
        .execute_raw_for_tests("UPDATE events SET body = body || ' ' WHERE log_index = 33")
        .await
        .unwrap();
    store.close().await;
    let out = citadel(data)
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failure = json_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(failure["first_bad_index"], 33, "{failure}");
    // A verifier given another log's key refuses every checkpoint.
    let other = "citadel.local/citadel+00000000+AQ==";
    let out = citadel(data)
        .args(["audit", "verify", "--key", other])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a malformed key is a usage error"
    );
}

/// SIGKILL at random points while requests stream in: after every restart
/// each acknowledged request's decision event is stored, and at the end the
/// whole log verifies.
#[tokio::test]
async fn sigkill_during_sustained_appends_never_loses_an_acknowledged_event() {
    let rounds: u64 = std::env::var("CITADEL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    for _ in 0..rounds {
        let (mut child, url, key, ca) = serve(data).await;
        let client = client_trusting(&std::fs::read(&ca).unwrap());
        let stop = Instant::now() + Duration::from_millis(50 + random(250));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    loop {
                        let sent = client
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&json!({"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                acked.push(r.headers()["x-request-id"].to_str().unwrap().to_owned())
                            }
                            _ => return acked,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep_until(stop.into()).await;
        // SIGKILL: no shutdown, no flush, mid-transaction if it so happens.
        child.kill().unwrap();
        child.wait().unwrap();
        for w in workers {
            acknowledged.extend(w.await.unwrap());
        }
    }
    assert!(
        acknowledged.len() as u64 > rounds,
        "too little load: {}",
        acknowledged.len()
    );
    // The store opens (recovering the WAL), and every acknowledged request's
    // authorization decision is there.
    let store =
        citadel_store::Store::open(&format!("sqlite://{}", data.join("citadel.db").display()))
            .await
            .unwrap();
    store
        .check_log()
        .await
        .expect("the log covers exactly the stored events");
    let mut stored = std::collections::HashSet::new();
    let mut cursor = None;
    loop {
        let (events, next) = store
            .query_events(&citadel_store::EventQuery {
                class: Some(citadel_core::EventClass::ApiActivity),
                after_seq: cursor,
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        stored.extend(events.into_iter().filter_map(|e| e.request_id));
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged requests have no decision event: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    store.close().await;
    let (ok, out, err) = run(Command::new(env!("CARGO_BIN_EXE_citadel"))
        .arg("--data")
        .arg(data)
        .args(["audit", "verify", "--json"]));
    assert!(ok, "{out}{err}");
    assert!(json_of(&out)["entries"].as_u64().unwrap() >= acknowledged.len() as u64);
}

#[tokio::test]
async fn a_configured_file_exporter_receives_the_gateway_events() {
    let upstream = Upstream::default().start().await;
    let config = format!(
        "{}\n[[audit.export]]\nkind = \"file\"\nname = \"siem\"\npath = \"exports/ocsf.jsonl\"\n",
        upstream_config(upstream)
    );
    let c = Citadel::start(&config).await;
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, json!({"model": "m1", "messages": []})).await;
    let id = crate::support::request_id(&r);
    let file = c.data.path().join("exports/ocsf.jsonl");
    let metrics = c.metrics_text().await;
    assert!(metrics.contains("citadel_audit_log_entries "), "{metrics}");
    assert!(
        metrics.contains("citadel_audit_export_lag{exporter=\"siem\"}"),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let ours: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e.to_string().contains(&id))
            .collect();
        if ours.len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request's events never reached the file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn erasing_a_person_through_the_admin_api_shreds_their_fields_and_the_log_still_verifies() {
    let upstream = Upstream::default().start().await;
    let c = Citadel::start(&upstream_config(upstream)).await;
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "alice", "roles": ["developer"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, key) = c.key("developer", json!({"user": "alice"})).await;
    let r = c.chat(&key, json!({"model": "m1", "messages": []})).await;
    assert_eq!(r.status(), 200);
    let id = crate::support::request_id(&r);
    c.flush().await;
    // Stored sealed; read back opened.
    let stored = c.running().store.read_log_entries(0, 10_000).await.unwrap();
    let ours: Vec<_> = stored.iter().filter(|e| e.body.contains(&id)).collect();
    assert!(!ours.is_empty());
    for e in &ours {
        assert!(
            !e.body.contains("alice") && !e.body.contains("127.0.0.1"),
            "{}",
            e.body
        );
    }
    let read = |c: &Citadel| {
        let (client, url, key) = (c.client.clone(), c.admin.clone(), c.admin_key.clone());
        let id = id.clone();
        async move {
            let v: Value = client
                .get(format!("{url}/api/v1/events?limit=1000"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e.to_string().contains(&id))
                .cloned()
                .collect::<Vec<Value>>()
        }
    };
    let before = read(&c).await;
    assert!(
        before.iter().any(|e| e["actor"]["user"]["name"] == "alice"),
        "{before:?}"
    );
    c.admin_post("/api/v1/audit/checkpoint", Value::Null).await;

    let r = c.admin_post("/api/v1/users/alice/erase", Value::Null).await;
    assert_eq!(r.status(), 200);
    let erased: Value = r.json().await.unwrap();
    assert_eq!(erased["subject_key_destroyed"], true);
    assert!(erased["user"]["name"]
        .as_str()
        .unwrap()
        .starts_with("erased-"));
    let after = read(&c).await;
    assert_eq!(after.len(), before.len());
    for e in &after {
        assert!(!e.to_string().contains("alice"), "{e}");
        assert_eq!(e["unmapped"]["sealed_subject"]["erased"], true, "{e}");
    }
    // Her key no longer works; the log, old checkpoint included, verifies.
    assert_eq!(c.chat(&key, json!({"model": "m1"})).await.status(), 401);
    c.flush().await;
    c.running().log.checkpoint_now().await.unwrap();
    let report =
        citadel_audit::verify_store(&c.running().store, &c.running().log.verifier(), |_| {})
            .await
            .unwrap();
    assert!(report.checkpoints >= 2);
    // Erasing someone who does not exist: 404, nothing changes.
    let (status, code, _) = code_of(
        c.admin_post("/api/v1/users/nobody/erase", Value::Null)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    c.stop().await;
}
