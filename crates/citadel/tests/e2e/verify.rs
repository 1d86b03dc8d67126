//! Continuous verification through the real gateway: impossible travel
//! from a GeoIP database (a small MaxMind DB file this test writes itself,
//! following the format's specification), risk scores set by an operator
//! and raised by failed sign-ins, and policy turning each into allow,
//! step-up or deny.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

/// Writes MaxMind DB fields (MaxMind DB File Format Specification 2.0).
struct Mmdb(Vec<u8>);

impl Mmdb {
    fn control(&mut self, kind: u8, size: usize) {
        assert!(size < 29);
        if kind <= 7 {
            self.0.push((kind << 5) | size as u8);
        } else {
            self.0.push(size as u8);
            self.0.push(kind - 7);
        }
    }
    fn string(&mut self, s: &str) {
        self.control(2, s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn double(&mut self, v: f64) {
        self.control(3, 8);
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn uint(&mut self, kind: u8, v: u64) {
        let bytes: Vec<u8> = v
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        self.control(kind, bytes.len());
        self.0.extend_from_slice(&bytes);
    }
    fn map(&mut self, pairs: usize) {
        self.control(7, pairs);
    }
}

enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// An IPv4 GeoIP2-City style database: `(network, prefix length, country,
/// latitude, longitude)`.
fn write_mmdb(entries: &[([u8; 4], u32, &str, f64, f64)]) -> Vec<u8> {
    let mut data = Mmdb(Vec::new());
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty, Record::Empty]];
    for (net, len, country, lat, lon) in entries {
        let offset = data.0.len();
        data.map(2);
        data.string("country");
        data.map(1);
        data.string("iso_code");
        data.string(country);
        data.string("location");
        data.map(2);
        data.string("latitude");
        data.double(*lat);
        data.string("longitude");
        data.double(*lon);
        let bits = u32::from_be_bytes(*net);
        let mut node = 0;
        for i in 0..*len {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i == len - 1 {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(n) => n,
                    _ => {
                        nodes.push([Record::Empty, Record::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for r in pair {
            let v = match r {
                Record::Empty => count,
                Record::Node(n) => *n,
                Record::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data.0);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Mmdb(Vec::new());
    meta.map(9);
    meta.string("binary_format_major_version");
    meta.uint(5, 2);
    meta.string("binary_format_minor_version");
    meta.uint(5, 0);
    meta.string("build_epoch");
    meta.uint(9, 1_700_000_000);
    meta.string("database_type");
    meta.string("GeoIP2-City");
    meta.string("description");
    meta.map(0);
    meta.string("ip_version");
    meta.uint(5, 4);
    meta.string("languages");
    meta.control(11, 0);
    meta.string("node_count");
    meta.uint(6, count as u64);
    meta.string("record_size");
    meta.uint(5, 24);
    out.extend_from_slice(&meta.0);
    out
}

/// A client whose connections come from `source` (a loopback address).
fn client_from(c: &Citadel, source: &str) -> reqwest::Client {
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .local_address(source.parse::<IpAddr>().unwrap())
        .resolve(
            "localhost",
            SocketAddr::new(
                "127.0.0.1".parse().unwrap(),
                c.running().gateway_addr.port(),
            ),
        )
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn chat(client: &reqwest::Client, c: &Citadel, key: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .bearer_auth(key)
        .json(&json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn set_risk(c: &Citadel, principal: &str, score: i64) {
    let r = c
        .client
        .put(format!("{}/api/v1/risk", c.admin))
        .bearer_auth(&c.admin_key)
        .json(&json!({"principal": principal, "score": score, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn impossible_travel_steps_up_and_risk_scores_step_up_or_deny_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("geo.mmdb");
    std::fs::write(
        &mmdb,
        write_mmdb(&[
            ([127, 0, 0, 1], 32, "US", 40.7128, -74.0060),
            ([127, 0, 1, 0], 24, "GB", 51.5074, -0.1278),
        ]),
    )
    .unwrap();
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[identity.verify]\ngeoip_db = \"{}\"\nfailed_sign_in_risk = 60\n",
        upstream_config(addr),
        mmdb.display()
    ))
    .await;
    let (_, key) = c.key("developer", json!({})).await;
    let new_york = client_from(&c, "127.0.0.1");
    let london = client_from(&c, "127.0.1.5");

    let r = chat(&new_york, &c, &key).await;
    let id = request_id(&r);
    assert_eq!(r.status(), 200);
    let events = c.events_for(&id).await;
    let decision = events.iter().find(|e| e.body["class_uid"] == 6003).unwrap();
    assert_eq!(decision.body["unmapped"]["verification"]["country"], "US");
    let principal = decision.body["actor"]["user"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();

    // London a moment later: faster than any airliner.
    let r = chat(&london, &c, &key).await;
    let id = request_id(&r);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "step_up_required"));
    assert!(challenge.contains("insufficient_user_authentication"));
    let events = c.events_for(&id).await;
    let decision = events.iter().find(|e| e.body["class_uid"] == 6003).unwrap();
    let v = &decision.body["unmapped"]["verification"];
    assert_eq!(v["country"], "GB");
    assert!(v["travel_kmh"].as_i64().unwrap() > 1000, "{v}");
    assert_eq!(v["network_changed"], true);
    assert!(decision.body["policy"]["uid"]
        .as_str()
        .unwrap()
        .contains("impossible-travel-needs-fresh-mfa"));
    // A challenged request does not become the reference: London is still
    // measured against the last request let through (New York).
    let (status, _, _) = code_of(chat(&london, &c, &key).await).await;
    assert_eq!(status, 401);
    assert_eq!(chat(&new_york, &c, &key).await.status(), 200);

    // Risk scores: policy denies at 90+ (any credential); 50+ asks browser
    // and JWT sessions for a fresh factor, and leaves API keys be.
    set_risk(&c, &principal, 95).await;
    let (status, code, _) = code_of(chat(&new_york, &c, &key).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    set_risk(&c, &principal, 60).await;
    assert_eq!(chat(&new_york, &c, &key).await.status(), 200);
    set_risk(&c, &principal, 0).await;
    assert_eq!(chat(&new_york, &c, &key).await.status(), 200);

    // A burst of failed sign-ins that locks an account raises its owner's
    // risk, capped where it asks for a factor but never denies.
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "alice", "roles": ["developer"], "password": "a long and fine passphrase"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for i in 0..7 {
        c.client
            .post(format!("{}/auth/login", c.gateway))
            .json(&json!({"username": "alice", "password": format!("wrong guess {i}")}))
            .send()
            .await
            .unwrap();
    }
    let risk = c.admin_get("/api/v1/risk?principal=alice").await;
    assert_eq!(risk["risk_score"], 60, "{risk}");
    c.stop().await;
}

#[test]
fn the_test_database_reads_back_with_the_maxminddb_reader() {
    let bytes = write_mmdb(&[([10, 1, 0, 0], 16, "FR", 48.85, 2.35)]);
    let reader = maxminddb::Reader::from_source(bytes).unwrap();
    let city: maxminddb::geoip2::City =
        reader.lookup("10.1.2.3".parse().unwrap()).unwrap().unwrap();
    assert_eq!(city.country.unwrap().iso_code, Some("FR"));
    assert_eq!(city.location.unwrap().latitude, Some(48.85));
    let none: Option<maxminddb::geoip2::City> = reader.lookup("10.2.0.1".parse().unwrap()).unwrap();
    assert!(none.is_none());
}
