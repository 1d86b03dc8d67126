use super::*;

fn config() -> JwtIssuerConfig {
    JwtIssuerConfig {
        name: "corp".into(),
        issuer: "https://idp.example".into(),
        jwks_url: "http://127.0.0.1:9/jwks.json".into(),
        audiences: vec!["citadel".into()],
        algorithms: default_algorithms(),
        leeway: default_leeway(),
        roles_claim: default_roles_claim(),
        role_map: BTreeMap::new(),
        name_claim: default_name_claim(),
        jwks_ca: None,
        max_token_bytes: default_max_token_bytes(),
        refresh_interval: default_refresh(),
        min_refetch_interval: default_refetch(),
    }
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn symmetric_and_none_algorithms_cannot_be_configured() {
    for bad in ["HS256", "none", "HS512", "rs256"] {
        let c = JwtIssuerConfig {
            algorithms: vec![bad.into()],
            ..config()
        };
        assert!(c.validate().unwrap_err().contains("not accepted"), "{bad}");
    }
    let plain = JwtIssuerConfig {
        jwks_url: "http://idp.example/jwks".into(),
        ..config()
    };
    assert!(plain.validate().unwrap_err().contains("https"));
    let no_aud = JwtIssuerConfig {
        audiences: vec![],
        ..config()
    };
    assert!(no_aud.validate().is_err());
    assert!(JwtVerifier::new(&[config(), config()])
        .unwrap_err()
        .contains("twice"));
}

#[tokio::test]
async fn tokens_are_refused_before_any_key_is_fetched_when_their_shape_is_wrong() {
    let v = JwtVerifier::new(&[config()]).unwrap();
    let header = b64(&serde_json::json!({"alg": "ES256", "kid": "k1"}));
    let ours = b64(&serde_json::json!({"iss": "https://idp.example", "sub": "a"}));
    let theirs = b64(&serde_json::json!({"iss": "https://evil.example", "sub": "a"}));
    let cases = [
        ("not a jwt".to_owned(), JwtFailure::Malformed),
        (format!("{header}.%%%.sig"), JwtFailure::Malformed),
        (format!("{header}.{theirs}.sig"), JwtFailure::UnknownIssuer),
        (
            format!("{}.{ours}.", b64(&serde_json::json!({"alg": "none"}))),
            JwtFailure::AlgorithmNotAllowed,
        ),
        (
            format!(
                "{}.{ours}.c2ln",
                b64(&serde_json::json!({"alg": "HS256", "kid": "k1"}))
            ),
            JwtFailure::AlgorithmNotAllowed,
        ),
        (
            format!("{header}.{}.sig", "A".repeat(9000)),
            JwtFailure::Oversized,
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            v.verify(&token, 0).await.unwrap_err(),
            expected,
            "{token:.40}"
        );
    }
    assert!(looks_like_jwt("a.b.c") && !looks_like_jwt("ctd_0123_abc"));
}
