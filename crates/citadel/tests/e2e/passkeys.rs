//! Passkeys through the real gateway over TLS, with a software
//! authenticator (webauthn-authenticator-rs's SoftPasskey) playing the
//! browser and the device: registration by a signed-in person, sign-in with
//! the passkey alone, and the refusals — another origin, a replayed
//! ceremony, a cloned authenticator whose counter went back.

use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

use crate::support::{code_of, request_id, upstream_config, Citadel, Upstream};

const PASSWORD: &str = "a long and fine passphrase";

async fn post(c: &Citadel, path: &str, body: Value, auth: &[(&str, &str)]) -> reqwest::Response {
    let mut req = c.client.post(format!("{}{path}", c.gateway)).json(&body);
    for (k, v) in auth {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn login_with_passkey(
    c: &Citadel,
    soft: &mut SoftPasskey,
    origin: &Url,
) -> (reqwest::Response, String, Value) {
    let r = post(
        c,
        "/auth/webauthn/login/start",
        json!({"username": "alice"}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    let options: RequestChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let assertion = soft.do_authentication(origin.clone(), options).unwrap();
    let body = json!({"ceremony": started["ceremony"], "credential": assertion});
    let r = post(c, "/auth/webauthn/login/finish", body.clone(), &[]).await;
    let id = request_id(&r);
    (r, id, body)
}

#[tokio::test]
async fn a_passkey_registered_in_a_session_signs_in_alone_and_clones_and_other_origins_are_refused()
{
    let up = Upstream::default();
    let addr = up.start().await;
    let c = Citadel::start(&format!(
        "{}\n[identity.webauthn]\nrp_id = \"localhost\"\nrp_origin = \"https://localhost:8443\"\ndangerous_allow_any_port = true\n",
        upstream_config(addr)
    ))
    .await;
    let origin = Url::parse(&c.gateway).unwrap();
    let r = c
        .admin_post(
            "/api/v1/users",
            json!({"name": "alice", "roles": ["developer"], "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = post(
        &c,
        "/auth/login",
        json!({"username": "alice", "password": PASSWORD}),
        &[],
    )
    .await;
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];

    // Registration needs a session (and its CSRF token).
    let (status, _, _) =
        code_of(post(&c, "/auth/webauthn/register/start", json!({}), &[]).await).await;
    assert_eq!(status, 401);
    let r = post(&c, "/auth/webauthn/register/start", json!({}), &session).await;
    assert_eq!(r.status(), 200);
    let started: Value = r.json().await.unwrap();
    let options: CreationChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let mut soft = SoftPasskey::new(true);
    let credential = soft.do_registration(origin.clone(), options).unwrap();
    let r = post(
        &c,
        "/auth/webauthn/register/finish",
        json!({"ceremony": started["ceremony"], "credential": credential, "name": "laptop"}),
        &session,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Sign-in with the passkey alone: a multi-factor session.
    let (r, id, replay) = login_with_passkey(&c, &mut soft, &origin).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["session"]["methods"], json!(["webauthn"]));
    assert!(v["session"]["mfa_at"].as_i64().is_some());
    let events = c.events_for(&id).await;
    assert_eq!(events[0].body["auth_protocol"], "WebAuthn");
    assert_eq!(events[0].body["status_detail"], "signed_in");

    // With a passkey registered, the password-only session may not add
    // another (a stolen password must not be enough); a fresh passkey
    // session may.
    let (status, code, _) =
        code_of(post(&c, "/auth/webauthn/register/start", json!({}), &session).await).await;
    assert_eq!((status, code.as_str()), (401, "step_up_required"));
    // The password session steps up with the passkey: a new cookie, fresh.
    let r = post(
        &c,
        "/auth/webauthn/login/start",
        json!({"username": "alice"}),
        &[],
    )
    .await;
    let started: Value = r.json().await.unwrap();
    let options: RequestChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let assertion = soft.do_authentication(origin.clone(), options).unwrap();
    let r = post(
        &c,
        "/auth/step-up",
        json!({"webauthn": {"ceremony": started["ceremony"], "credential": assertion}}),
        &session,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (login_again, _, _) = login_with_passkey(&c, &mut soft, &origin).await;
    let fresh_cookie = login_again.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let fresh_csrf = login_again.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let fresh = [
        ("cookie", fresh_cookie.as_str()),
        ("x-csrf-token", fresh_csrf.as_str()),
    ];
    assert_eq!(
        post(&c, "/auth/webauthn/register/start", json!({}), &fresh)
            .await
            .status(),
        200
    );

    // The same ceremony cannot be finished twice.
    let r = post(&c, "/auth/webauthn/login/finish", replay, &[]).await;
    let id = request_id(&r);
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    assert_eq!(
        c.events_for(&id).await[0].body["status_detail"],
        "unknown_ceremony"
    );

    // An assertion made for another origin is refused.
    let evil = Url::parse(&format!(
        "https://evil.localhost:{}",
        origin.port().unwrap()
    ))
    .unwrap();
    let (r, id, _) = login_with_passkey(&c, &mut soft, &evil).await;
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    assert_eq!(
        c.events_for(&id).await[0].body["status_detail"],
        "wrong_origin"
    );

    // A clone: the stored counter is ahead of what the authenticator sends.
    c.running()
        .store
        .execute_raw_for_tests(
            "UPDATE webauthn_credentials SET passkey = json_set(passkey, '$.cred.counter', 1000)",
        )
        .await
        .unwrap();
    let (r, id, _) = login_with_passkey(&c, &mut soft, &origin).await;
    let (status, code, _) = code_of(r).await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    let events = c.events_for(&id).await;
    let refusal = events.iter().find(|e| e.body["class_uid"] == 3002).unwrap();
    assert_eq!(refusal.body["status_detail"], "cloned_authenticator");
    // The raised risk score is on record with its reason.
    let raised = events
        .iter()
        .find(|e| e.body["api"]["operation"] == "risk.raise")
        .unwrap();
    assert_eq!(
        raised.body["resources"][0]["reason"],
        "cloned_authenticator"
    );
    let risk = c.admin_get("/api/v1/risk?principal=alice").await;
    assert!(risk["risk_score"].as_i64().unwrap() >= 50, "{risk}");

    // An operator lists and removes the (possibly cloned) passkey; it no
    // longer signs anyone in.
    let status = c.admin_get("/api/v1/users/alice/mfa").await;
    let keys = status["passkeys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{status}");
    assert!(
        keys[0].get("passkey").is_none(),
        "the key material is not listed"
    );
    let id = keys[0]["credential_id"].as_str().unwrap().to_owned();
    let r = c
        .client
        .delete(format!("{}/api/v1/users/alice/mfa/passkeys/{id}", c.admin))
        .bearer_auth(&c.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
    let (status, code, _) = code_of(
        post(
            &c,
            "/auth/webauthn/login/start",
            json!({"username": "alice"}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "invalid_credentials"));
    c.stop().await;
}
