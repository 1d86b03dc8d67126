//! People through the real gateway over TLS: password sign-in, session
//! cookies and CSRF, second factors required by policy, lockout, step-up,
//! sign-out, and the bad input each must refuse.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

const PASSWORD: &str = "a long and fine passphrase";

/// RFC 4648 base32 (no padding), decoded here rather than by the crate
/// Citadel uses, so the test checks Citadel against the standard.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base32") as u64;
        value = (value << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30 s) computed with ring's HMAC,
/// independently of the crate Citadel uses.
pub(crate) fn totp_now(secret_base32: &str, offset_steps: i64) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        &base32_decode(secret_base32),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = (now / 30 + offset_steps) as u64;
    let mac = ring::hmac::sign(&key, &step.to_be_bytes());
    let h = mac.as_ref();
    let o = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]);
    format!("{:06}", bin % 1_000_000)
}

fn secret_of(otpauth_uri: &str) -> String {
    otpauth_uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned()
}

/// A signed-in browser: its cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn start() -> (Citadel, Upstream) {
    let upstream = Upstream::default();
    let addr = upstream.start().await;
    let citadel = Citadel::start(&upstream_config(addr)).await;
    (citadel, upstream)
}

async fn create_user(c: &Citadel, name: &str, role: &str) {
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": name, "roles": [role], "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn login(c: &Citadel, body: Value) -> reqwest::Response {
    c.client
        .post(format!("{}/auth/login", c.gateway))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn sign_in(c: &Citadel, body: Value) -> Browser {
    let r = login(c, body).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    Browser {
        cookie: cookie.split(';').next().unwrap().to_owned(),
        csrf: v["csrf_token"].as_str().unwrap().to_owned(),
    }
}

async fn chat_as(c: &Citadel, b: &Browser, csrf: Option<&str>) -> reqwest::Response {
    let mut req = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .header("cookie", format!("{}; theme=dark", b.cookie))
        .json(&json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    req.send().await.unwrap()
}

async fn all_event_bodies(c: &Citadel) -> String {
    c.flush().await;
    let (events, _) = c
        .running()
        .store
        .query_events(&citadel_store::EventQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    events
        .iter()
        .map(|e| e.to_json_line())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn password_sign_in_gives_a_locked_down_cookie_that_works_with_csrf_until_logout() {
    let (c, _up) = start().await;
    create_user(&c, "alice", "developer").await;
    let r = login(&c, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in [
        "__Host-citadel_session=cts_",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert_eq!(r.headers()["cache-control"], "no-store");
    let login_id = request_id(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"]["name"], "alice");
    assert_eq!(v["session"]["methods"], json!(["pwd"]));
    let b = Browser {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        csrf: v["csrf_token"].as_str().unwrap().to_owned(),
    };

    // Reading needs only the cookie.
    let who: Value = c
        .client
        .get(format!("{}/auth/session", c.gateway))
        .header("cookie", &b.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["user"]["name"], "alice");

    // Changing needs the CSRF token too.
    let (status, code, _) = code_of(chat_as(&c, &b, None).await).await;
    assert_eq!((status, code.as_str()), (403, "csrf_failed"));
    let (status, code, _) = code_of(chat_as(&c, &b, Some("forged-token")).await).await;
    assert_eq!((status, code.as_str()), (403, "csrf_failed"));
    let r = chat_as(&c, &b, Some(&b.csrf)).await;
    assert_eq!(r.status(), 200);
    let chat_id = request_id(&r);
    let answer: Value = r.json().await.unwrap();
    // Neither the session cookie nor the CSRF token reaches the upstream;
    // the client's other cookies do.
    let seen = &answer["seen_headers"];
    assert_eq!(seen["cookie"], "theme=dark");
    assert!(seen.get("x-csrf-token").is_none());
    assert!(seen.get("authorization").is_none());

    // Events: the sign-in (3002) and the call's principal, never a secret.
    let events = c.events_for(&login_id).await;
    let signin = events.iter().find(|e| e.body["class_uid"] == 3002).unwrap();
    assert_eq!(signin.body["status_id"], 1);
    assert_eq!(signin.body["status_detail"], "signed_in");
    assert_eq!(signin.body["is_mfa"], false);
    let events = c.events_for(&chat_id).await;
    assert!(events
        .iter()
        .any(|e| e.body["class_uid"] == 6003 && e.body["status_id"] == 1));

    // Logout ends the session and deletes the cookie.
    let r = c
        .client
        .post(format!("{}/auth/logout", c.gateway))
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, code, _) = code_of(chat_as(&c, &b, Some(&b.csrf)).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));

    let all = all_event_bodies(&c).await;
    assert!(!all.contains(PASSWORD), "a password reached an event");
    assert!(!all.contains(&b.csrf), "a CSRF token reached an event");
    assert!(
        !all.contains(b.cookie.split('=').nth(1).unwrap()),
        "a session token reached an event"
    );
    assert!(all.contains("\"status_detail\":\"csrf_token_missing\""));
    assert!(all.contains("\"status_detail\":\"revoked_session\""));
    c.stop().await;
}

#[tokio::test]
async fn admins_must_prove_totp_each_code_works_once_and_step_up_rotates_the_cookie() {
    let (c, _up) = start().await;
    create_user(&c, "root", "admin").await;
    let r = login(&c, json!({"username": "root", "password": PASSWORD})).await;
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (403, "mfa_enrollment_required"));

    let r = c
        .admin_post("/api/v1/users/root/mfa/totp", Value::Null)
        .await;
    assert_eq!(r.status(), 200);
    let enrolled: Value = r.json().await.unwrap();
    let uri = enrolled["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Citadel:root?"), "{uri}");
    assert!(enrolled["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = secret_of(uri);

    let (status, code, _) =
        code_of(login(&c, json!({"username": "root", "password": PASSWORD})).await).await;
    assert_eq!((status, code.as_str()), (401, "mfa_required"));
    let wrong = if totp_now(&secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (status, code, _) = code_of(
        login(
            &c,
            json!({"username": "root", "password": PASSWORD, "totp": wrong}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "mfa_failed"));
    let code_now = totp_now(&secret, 0);
    let r = login(
        &c,
        json!({"username": "root", "password": PASSWORD, "totp": code_now}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session"]["methods"], json!(["pwd", "otp"]));
    let r = login(
        &c,
        json!({"username": "root", "password": PASSWORD, "totp": code_now}),
    )
    .await;
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "mfa_failed"),
        "a replayed code"
    );
    let replay = c.events_for(&id).await;
    assert!(replay
        .iter()
        .any(|e| e.body["status_detail"] == "replayed_code"));

    // Step-up: a developer session proves a second factor and gets a new
    // cookie; the old one stops working.
    create_user(&c, "dev", "developer").await;
    let r = c
        .admin_post("/api/v1/users/dev/mfa/totp", Value::Null)
        .await;
    let dev_secret = secret_of(
        r.json::<Value>().await.unwrap()["otpauth_uri"]
            .as_str()
            .unwrap(),
    );
    // TOTP enrolled: a code is asked for at sign-in too.
    let b = sign_in(
        &c,
        json!({"username": "dev", "password": PASSWORD, "totp": totp_now(&dev_secret, -1)}),
    )
    .await;
    let r = c
        .client
        .post(format!("{}/auth/step-up", c.gateway))
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .json(&json!({"totp": totp_now(&dev_secret, 0)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let v: Value = r.json().await.unwrap();
    assert_ne!(new_cookie, b.cookie);
    let stepped = Browser {
        cookie: new_cookie,
        csrf: v["csrf_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(
        chat_as(&c, &stepped, Some(&stepped.csrf)).await.status(),
        200
    );
    let (status, _, _) = code_of(chat_as(&c, &b, Some(&b.csrf)).await).await;
    assert_eq!(status, 401, "the cookie from before the step-up is dead");

    // Recovery codes: one works once in place of a TOTP code.
    let r = c
        .admin_post("/api/v1/users/root/mfa/recovery-codes", Value::Null)
        .await;
    let codes: Value = r.json().await.unwrap();
    let first = codes["recovery_codes"][0].as_str().unwrap().to_owned();
    let body = json!({"username": "root", "password": PASSWORD, "recovery_code": first});
    assert_eq!(login(&c, body.clone()).await.status(), 200);
    let (status, code, _) = code_of(login(&c, body).await).await;
    assert_eq!((status, code.as_str()), (401, "mfa_failed"));

    let all = all_event_bodies(&c).await;
    assert!(
        !all.contains(&secret) && !all.contains(&first),
        "a secret reached an event"
    );
    c.stop().await;
}

/// A client whose connections come from `source` (a loopback alias).
fn client_from(c: &Citadel, source: &str) -> reqwest::Client {
    let ca = std::fs::read(&c.running().ca_path).unwrap();
    let gateway: SocketAddr = c.running().gateway_addr;
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .local_address(source.parse::<IpAddr>().unwrap())
        .resolve(
            "localhost",
            SocketAddr::new("127.0.0.1".parse().unwrap(), gateway.port()),
        )
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn brute_force_locks_the_guessing_address_but_not_the_owner_elsewhere() {
    let (c, _up) = start().await;
    create_user(&c, "alice", "developer").await;
    let attacker = client_from(&c, "127.0.0.1");
    let owner = client_from(&c, "127.0.0.2");
    let url = format!("{}/auth/login", c.gateway);
    for i in 0..5 {
        let r = attacker
            .post(&url)
            .json(&json!({"username": "alice", "password": format!("guess {i} of many")}))
            .send()
            .await
            .unwrap();
        let (status, code, _) = code_of(r).await;
        assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    }
    let r = attacker
        .post(&url)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (429, "login_locked"));
    let events = c.events_for(&id).await;
    assert_eq!(events[0].body["status_detail"], "locked");
    assert!(events[0].body["unmapped"]["locked_until"]
        .as_i64()
        .is_some());

    let r = owner
        .post(&url)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the owner from another address signs in");

    // An operator lifts the lock.
    let r = c
        .admin_post("/api/v1/users/alice/unlock", Value::Null)
        .await;
    assert_eq!(r.status(), 200);
    let r = attacker
        .post(&url)
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn bad_sign_in_input_is_refused_with_stable_codes_and_changes_nothing() {
    let (c, _up) = start().await;
    create_user(&c, "alice", "developer").await;
    let post = |body: reqwest::Body| {
        c.client
            .post(format!("{}/auth/login", c.gateway))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, expected) in [
        ("not json".to_owned(), (400, "invalid_json")),
        ("{\"username\":\"alice\"}".to_owned(), (400, "invalid_json")),
        (
            json!({"username": "alice", "password": PASSWORD, "admin": true}).to_string(),
            (400, "invalid_json"),
        ),
        (
            json!({"username": "alice", "password": "x".repeat(20_000)}).to_string(),
            (413, "payload_too_large"),
        ),
        (
            json!({"username": "no such user", "password": PASSWORD}).to_string(),
            (401, "invalid_credentials"),
        ),
        (
            json!({"username": "bob", "password": PASSWORD}).to_string(),
            (401, "invalid_credentials"),
        ),
    ] {
        let (status, code, v) = code_of(post(body.clone().into()).await.unwrap()).await;
        assert_eq!((status, code.as_str()), expected, "{body:.60}: {v}");
        if status == 400 {
            assert!(
                !v.to_string().contains(PASSWORD),
                "the error echoes no secret"
            );
        }
    }
    let (status, code, _) = code_of(
        c.client
            .get(format!("{}/auth/login", c.gateway))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));

    // Forged, tampered and doubled cookies.
    let real = sign_in(&c, json!({"username": "alice", "password": PASSWORD})).await;
    let mut tampered = real.cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (cookie, reason) in [
        (
            format!("__Host-citadel_session=cts_{}", "A".repeat(43)),
            "unknown_session",
        ),
        (tampered, "unknown_session"),
        (
            "__Host-citadel_session=garbage".to_owned(),
            "malformed_session",
        ),
        (format!("{0}; {0}", real.cookie), "malformed_session"),
    ] {
        let r = c
            .client
            .get(format!("{}/auth/session", c.gateway))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let id = request_id(&r);
        let (status, code, _) = code_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_credentials"),
            "{cookie}"
        );
        let events = c.events_for(&id).await;
        assert_eq!(events[0].body["status_detail"], reason, "{cookie}");
    }

    // A weak password is refused before anything is made.
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "weak", "roles": ["developer"], "password": "password"}),
        )
        .await;
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (400, "weak_password"));
    let users = c.admin_get("/api/v1/users").await;
    assert!(!users.to_string().contains("\"weak\""));
    c.stop().await;
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_and_operators_cannot_take_over_admins() {
    let (c, _up) = start().await;
    create_user(&c, "alice", "developer").await;
    let one = sign_in(&c, json!({"username": "alice", "password": PASSWORD})).await;
    let two = sign_in(&c, json!({"username": "alice", "password": PASSWORD})).await;
    let sessions = c.admin_get("/api/v1/users/alice/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);
    assert!(
        !sessions.to_string().contains("cts_"),
        "no tokens are listed"
    );
    let r = c
        .admin_post("/api/v1/users/alice/sign-out", Value::Null)
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["sessions_ended"], 2);
    for b in [&one, &two] {
        assert_eq!(chat_as(&c, b, Some(&b.csrf)).await.status(), 401);
    }

    // An operator may reset a developer's password, not an admin's.
    create_user(&c, "root", "admin").await;
    let (_, operator_key) = c.key("operator", json!({})).await;
    let put = |user: &str| {
        c.client
            .put(format!("{}/api/v1/users/{user}/password", c.admin))
            .bearer_auth(&operator_key)
            .json(&json!({"password": "another long passphrase"}))
            .send()
    };
    assert_eq!(put("alice").await.unwrap().status(), 200);
    let (status, code, _) = code_of(put("root").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let r = c
        .client
        .post(format!("{}/api/v1/users/root/mfa/totp", c.admin))
        .bearer_auth(&operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The reset password works, the old one does not.
    assert_eq!(
        login(
            &c,
            json!({"username": "alice", "password": "another long passphrase"})
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        login(&c, json!({"username": "alice", "password": PASSWORD}))
            .await
            .status(),
        401
    );
    c.stop().await;
}

/// Reads a streamed answer until it ends (or 5 s pass); returns the text
/// and how long after `since` it ended.
async fn read_to_end(r: reqwest::Response, since: std::time::Instant) -> (String, Duration) {
    use futures_util::StreamExt;
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
    }
    (text, since.elapsed())
}

async fn first_event(r: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("first event in time")
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&chunk).into_owned()
}

#[tokio::test]
async fn revoking_a_key_or_signing_out_cuts_off_a_streamed_answer_within_a_second() {
    let (c, up) = start().await;
    let stream_body =
        json!({"model": "m1", "stream": true, "messages": [{"role": "user", "content": "long"}]});

    // An API key revoked mid-answer.
    let (key_id, key) = c.key("developer", json!({})).await;
    let mut r = c.chat(&key, stream_body.clone()).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    assert!(first_event(&mut r).await.contains("first"));
    let revoked = std::time::Instant::now();
    let rv = c
        .admin_post(&format!("/api/v1/keys/{key_id}/revoke"), Value::Null)
        .await;
    assert_eq!(rv.status(), 200);
    let (rest, took) = read_to_end(r, revoked).await;
    assert!(
        rest.contains("event: error") && rest.contains("access_revoked"),
        "{rest}"
    );
    assert!(
        !rest.contains("second"),
        "the upstream's later tokens never arrive"
    );
    assert!(took < Duration::from_secs(1), "cut off after {took:?}");
    c.flush().await;
    let events = c.events_for(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e.body["class_uid"] == 3002 && e.body["status_detail"] == "revoked_key"),
        "{events:?}"
    );

    // A browser session signed out everywhere (from the admin API) mid-answer.
    create_user(&c, "alice", "developer").await;
    let b = sign_in(&c, json!({"username": "alice", "password": PASSWORD})).await;
    let mut r = c
        .client
        .post(format!("{}/v1/chat/completions", c.gateway))
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(first_event(&mut r).await.contains("first"));
    let revoked = std::time::Instant::now();
    let out = c
        .admin_post("/api/v1/users/alice/sign-out", Value::Null)
        .await;
    assert_eq!(out.status(), 200);
    let (rest, took) = read_to_end(r, revoked).await;
    assert!(rest.contains("access_revoked"), "{rest}");
    assert!(took < Duration::from_secs(1), "cut off after {took:?}");

    // A stream whose credential stays valid is untouched.
    let (_, key2) = c.key("developer", json!({"name": "steady"})).await;
    let mut r = c.chat(&key2, stream_body).await;
    assert!(first_event(&mut r).await.contains("first"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    up.release.notify_waiters();
    let (rest, _) = read_to_end(r, std::time::Instant::now()).await;
    assert!(
        rest.contains("second") && !rest.contains("access_revoked"),
        "{rest}"
    );
    c.stop().await;
}

#[tokio::test]
async fn policy_demanding_a_fresh_second_factor_answers_with_the_rfc_9470_challenge() {
    let upstream = Upstream::default();
    let addr = upstream.start().await;
    let config = format!(
        "{}\n[[upstream]]\nname = \"hosted\"\nurl = \"http://{addr}\"\nkind = \"openai\"\nmodels = [\"ext-1\"]\nplacement = \"external\"\n",
        upstream_config(addr)
    );
    let c = Citadel::start(&config).await;
    std::fs::write(
        c.data.path().join("policies").join("step-up.cedar"),
        r#"
@id("external-models-need-fresh-mfa")
@step_up("mfa")
@max_age("900")
forbid (principal, action == Citadel::Action::"invoke_model", resource)
when { resource.placement == "external" }
unless { context.mfa && context.mfa_age_seconds < 900 };
"#,
    )
    .unwrap();
    // Wait for the policy poller to load it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c
        .running()
        .policy
        .policy_origins()
        .iter()
        .any(|(id, _)| id == "external-models-need-fresh-mfa")
    {
        assert!(std::time::Instant::now() < deadline, "policy not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ext = json!({"model": "ext-1", "messages": [{"role": "user", "content": "hi"}]});

    // An API key cannot carry a second factor: challenged.
    let (_, key) = c.key("developer", json!({})).await;
    let r = c.chat(&key, ext.clone()).await;
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "step_up_required"));
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("acr_values=\"mfa\"") && challenge.contains("max_age=900"),
        "{challenge}"
    );
    // The on-prem model is not affected.
    assert_eq!(
        c.chat(&key, json!({"model": "m1", "messages": []}))
            .await
            .status(),
        200
    );

    // A browser session signed in with a password only is challenged, steps
    // up, and is let through.
    create_user(&c, "alice", "developer").await;
    let r = c
        .admin_post("/api/v1/users/alice/mfa/totp", Value::Null)
        .await;
    let secret = secret_of(
        r.json::<Value>().await.unwrap()["otpauth_uri"]
            .as_str()
            .unwrap(),
    );
    let b = sign_in(
        &c,
        json!({"username": "alice", "password": PASSWORD, "totp": totp_now(&secret, -1)}),
    )
    .await;
    let send = |b: &Browser| {
        c.client
            .post(format!("{}/v1/chat/completions", c.gateway))
            .header("cookie", &b.cookie)
            .header("x-csrf-token", &b.csrf)
            .json(&ext)
            .send()
    };
    // Signed in with TOTP just now: the factor is fresh.
    assert_eq!(send(&b).await.unwrap().status(), 200);
    // With the authenticator removed, a password-only session is challenged.
    let r = c
        .client
        .delete(format!("{}/api/v1/users/alice/mfa/totp", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plain = sign_in(&c, json!({"username": "alice", "password": PASSWORD})).await;
    let r = send(&plain).await.unwrap();
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "step_up_required"));
    let r = c
        .admin_post("/api/v1/users/alice/mfa/totp", Value::Null)
        .await;
    let secret = secret_of(
        r.json::<Value>().await.unwrap()["otpauth_uri"]
            .as_str()
            .unwrap(),
    );
    let r = c
        .client
        .post(format!("{}/auth/step-up", c.gateway))
        .header("cookie", &plain.cookie)
        .header("x-csrf-token", &plain.csrf)
        .json(&json!({"totp": totp_now(&secret, 0)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let v: Value = r.json().await.unwrap();
    let stepped = Browser {
        cookie,
        csrf: v["csrf_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(send(&stepped).await.unwrap().status(), 200);
    c.stop().await;
}

#[tokio::test]
async fn data_key_rotation_keeps_totp_sign_in_working_and_is_recorded() {
    let (c, _up) = start().await;
    create_user(&c, "root", "admin").await;
    let r = c
        .admin_post("/api/v1/users/root/mfa/totp", Value::Null)
        .await;
    let enrolled: Value = r.json().await.unwrap();
    let secret = secret_of(enrolled["otpauth_uri"].as_str().unwrap());

    let keys = c.admin_get("/api/v1/data-keys").await;
    assert_eq!(keys["keys"][0]["purpose"], "authenticator");
    assert_eq!(keys["keys"][0]["version"], 1);
    assert!(keys["root"].as_str().unwrap().starts_with("file:"));
    let r = c
        .admin_post(
            "/api/v1/data-keys/rotate",
            json!({"purpose": "authenticator"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    assert_eq!(rotated["rotated"][0]["version"], 2);
    let keys = c.admin_get("/api/v1/data-keys").await;
    let current: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["version"], 2);
    assert!(
        !keys.to_string().contains("wrapped"),
        "no key material is shown"
    );

    // The seed sealed under version 1 still signs in (and is re-sealed).
    let r = login(
        &c,
        json!({"username": "root", "password": PASSWORD, "totp": totp_now(&secret, 0)}),
    )
    .await;
    assert_eq!(r.status(), 200);

    let (status, code, _) = code_of(
        c.admin_post("/api/v1/data-keys/rotate", json!({"purpose": "nope"}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));

    let events = all_event_bodies(&c).await;
    assert!(events.contains("data_keys.create"), "first key recorded");
    assert!(events.contains("data_keys.rotate"), "rotation recorded");
    c.stop().await;
}
