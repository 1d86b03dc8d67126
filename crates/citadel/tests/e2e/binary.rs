//! The real binary, as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) fn citadel(data: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_citadel"));
    c.arg("--data")
        .arg(data)
        .env_remove("CITADEL_CONFIG")
        .env_remove("CITADEL_DATABASE");
    c
}

pub(crate) fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Server(Child);

/// Starts `citadel serve --demo` with the admin listener on `admin` and
/// reads its output up to the curl line it prints (`None` if it exits
/// without printing one).
pub(crate) async fn spawn_demo(
    data: &std::path::Path,
    admin: &str,
    stderr: Stdio,
) -> (Child, Option<String>) {
    let mut child = citadel(data)
        .args([
            "--log",
            "info",
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
        ])
        .arg(admin)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("curl "))
    })
    .await
    .unwrap();
    (child, line)
}

/// Starts `citadel serve --demo` on free ports and waits for the curl line
/// it prints; stderr is piped for the caller when asked, else discarded.
pub(crate) async fn serve_demo(data: &std::path::Path, keep_stderr: bool) -> (Child, String) {
    let stderr = if keep_stderr {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let (child, line) = spawn_demo(data, "127.0.0.1:0", stderr).await;
    (child, line.expect("serve --demo prints a curl line"))
}

/// The HTTP status of running the printed curl line.
fn curl_status(line: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{line} -s -o /dev/null -w '%{{http_code}}' --max-time 5"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_demo_prints_a_curl_line_that_works_and_cli_revocation_reaches_the_server() {
    let data = tempfile::tempdir().unwrap();
    let (child, line) = serve_demo(data.path(), false).await;
    let server = Server(child);
    // Run the printed line as a user would.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -sS --max-time 10"))
        .output()
        .unwrap();
    let answer: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("curl said: {out:?}"));
    assert!(answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Hello, Citadel"));

    // Revoke the demo key from another process; the server notices quickly.
    let key = line
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_owned();
    let id = key.split('_').nth(1).unwrap().to_owned();
    let (ok, _, err) = run(citadel(data.path()).args(["key", "revoke", &id, "--json"]));
    assert!(ok, "{err}");
    let revoked_at = Instant::now();
    let mut refused = false;
    while revoked_at.elapsed() < Duration::from_secs(3) {
        if curl_status(&line) == "401" {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a key revoked by the CLI still worked after 3 s");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "revocation took {:?}",
        revoked_at.elapsed()
    );

    // The events are there for the CLI to read, as JSON lines.
    let (ok, out, _) =
        run(citadel(data.path())
            .args(["events", "list", "--since", "1h", "--json", "--limit", "0"]));
    assert!(ok);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .any(|e| e["class_uid"] == 3002 && e["status_detail"] == "revoked_key"));
    assert!(events
        .iter()
        .any(|e| e["api"]["operation"] == "keys.revoke"));
    drop(server);
}

#[tokio::test]
async fn sighup_reloads_policies_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    // Files are polled only hourly here, so the reload below can only come from SIGHUP.
    std::fs::write(
        data.path().join("citadel.toml"),
        "[policy]\npoll_interval = \"1h\"\n",
    )
    .unwrap();
    let (mut child, line) = serve_demo(data.path(), true).await;
    let stderr = child.stderr.take().unwrap();
    assert_eq!(curl_status(&line), "200");
    // A forbid policy, with the file-watch interval far away: only SIGHUP can apply it now.
    std::fs::write(
        data.path().join("policies/zz-deny.cedar"),
        "@id(\"maintenance\")\nforbid (principal, action == Citadel::Action::\"invoke_model\", resource);\n",
    )
    .unwrap();
    let pid = child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let started = Instant::now();
    let mut denied = false;
    while started.elapsed() < Duration::from_secs(5) {
        if curl_status(&line) == "403" {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(denied, "the policy was not applied after SIGHUP");
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        exit.success(),
        "serve did not exit cleanly on SIGTERM: {exit:?}"
    );
    let log: String = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(log.contains("policies reloaded"), "{log}");
}

#[test]
fn key_commands_print_json_and_never_store_the_secret() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(citadel(data.path()).args([
        "key",
        "create",
        "--name",
        "ci",
        "--role",
        "service",
        "--expires",
        "30d",
        "--json",
    ]));
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("ctd_"));
    assert!(created["id"].is_string() && created["expires_at"].is_i64());
    let (ok, out, _) = run(citadel(data.path()).args(["key", "list", "--json"]));
    assert!(ok);
    assert_eq!(out.lines().count(), 1);
    assert!(!out.contains(secret));
    let db = std::fs::read(data.path().join("citadel.db")).unwrap();
    let wal = std::fs::read(data.path().join("citadel.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is in the database"
        );
    }
    let (ok, _, err) =
        run(citadel(data.path()).args(["key", "create", "--name", "x", "--role", "wizard"]));
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, _, err) = run(citadel(data.path()).args(["key", "revoke", "nope"]));
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, out, _) = run(citadel(data.path()).args([
        "user", "create", "--name", "erin", "--role", "auditor", "--json",
    ]));
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["name"], "erin");
}

#[test]
fn invalid_config_and_policies_exit_non_zero_with_file_and_line() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("bad.toml");
    std::fs::write(&config, "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[upstream]]\nname = \"x\"\nurl = \"http://10.0.0.1\"\nkind = \"openai\"\nmodels = [\"m\"]\nplacement = \"on_prem\"\n").unwrap();
    let (ok, _, err) = run(citadel(data.path())
        .arg("--config")
        .arg(&config)
        .arg("serve"));
    assert!(!ok);
    assert!(err.contains("bad.toml:4:"), "{err}");
    std::fs::write(&config, "[limits]\nmax_body_bytes = \"lots\"\n").unwrap();
    let (ok, _, err) = run(citadel(data.path())
        .arg("--config")
        .arg(&config)
        .arg("serve"));
    assert!(!ok && err.contains("bad.toml:2:"), "{err}");

    let policies = data.path().join("p");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("a.cedar"),
        "permit (principal, action, resource)\nwhen { 1 + };\n",
    )
    .unwrap();
    let (ok, _, err) = run(citadel(data.path())
        .args(["policy", "validate", "--dir"])
        .arg(&policies));
    assert!(!ok && err.contains("a.cedar:2:"), "{err}");
    let (ok, out, _) = run(citadel(data.path())
        .args(["policy", "validate", "--json", "--dir"])
        .arg(&policies));
    assert!(!ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["problems"][0]["line"],
        2
    );
}

#[test]
fn init_writes_a_config_that_serve_accepts() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(citadel(data.path()).arg("init"));
    assert!(ok, "{err}");
    assert!(data.path().join("citadel.toml").exists());
    let (ok, _, err) = run(citadel(data.path()).arg("init"));
    assert!(!ok && err.contains("--force"));
    let (ok, out, _) = run(citadel(data.path()).arg("--help"));
    assert!(ok && out.contains("serve") && out.contains("--data"));
}

/// The acceptance interface for people: a user made with a password on
/// standard input, a TOTP authenticator enrolled as JSON, and a sign-in on
/// the running gateway that needs the code.
#[tokio::test]
async fn user_create_with_password_stdin_totp_enroll_and_sign_in_through_the_binary() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let create = |name: &str, password: &str| {
        let mut child = citadel(data.path())
            .args([
                "user",
                "create",
                "--name",
                name,
                "--role",
                "developer",
                "--password-stdin",
                "--json",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = create("weakling", "password");
    assert!(!ok && err.contains("weak_password"), "{err}");
    let (ok, out, err) = create("carol", "carols long passphrase");
    assert!(!ok && err.contains("user name"), "{out}{err}");
    let (ok, out, err) = create("carol", "a long and fine passphrase");
    assert!(ok, "{err}");
    let user: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(user["password_set"], true);
    let (ok, out, err) =
        run(citadel(data.path()).args(["user", "mfa", "totp", "enroll", "carol", "--json"]));
    assert!(ok, "{err}");
    let enrolled: Value = serde_json::from_str(&out).unwrap();
    let uri = enrolled["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Citadel:carol?secret="),
        "{uri}"
    );
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned();

    let (child, line) = serve_demo(data.path(), false).await;
    let server = Server(child);
    let words: Vec<&str> = line.split_whitespace().collect();
    let cacert = words[words.iter().position(|w| *w == "--cacert").unwrap() + 1];
    let url = words
        .iter()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .replace("/v1/chat/completions", "/auth/login");
    let login = |body: String| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cacert,
                "-i",
                &url,
                "-d",
                &body,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let without = login(r#"{"username":"carol","password":"a long and fine passphrase"}"#.into());
    assert!(without.contains("mfa_required"), "{without}");
    let code = crate::identity::totp_now(&secret, 0);
    let with = login(format!(
        r#"{{"username":"carol","password":"a long and fine passphrase","totp":"{code}"}}"#
    ));
    assert!(
        with.starts_with("HTTP/2 200") || with.starts_with("HTTP/1.1 200"),
        "{with}"
    );
    assert!(with
        .to_ascii_lowercase()
        .contains("set-cookie: __host-citadel_session=cts_"));
    drop(server);
}

#[test]
fn segments_prints_the_reachability_matrix_as_json_and_as_a_table() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("citadel.toml"),
        "[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:9\"\nkind = \"openai\"\nmodels = [\"llama\"]\nplacement = \"on_prem\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(citadel(data.path()).args(["segments", "--json"]));
    assert!(ok, "{err}");
    let m: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["targets"][0]["name"], "llama");
    let access = |role: &str| {
        m["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["role"] == role && c["target"] == 0)
            .unwrap()["access"]
            .clone()
    };
    assert_eq!(access("developer"), "allow");
    assert_eq!(access("auditor"), "deny");
    let (ok, table, _) = run(citadel(data.path()).arg("segments"));
    assert!(ok);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("developer") && l.contains("allow")),
        "{table}"
    );
}

#[test]
fn device_enroll_token_and_workload_issue_through_the_binary() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(citadel(data.path()).args(["device", "enroll-token", "--json"]));
    assert!(ok, "{err}");
    let token: Value = serde_json::from_str(&out).unwrap();
    assert!(token["token"].as_str().unwrap().starts_with("cte_"));
    assert!(token["expires_at"].as_i64().is_some());

    let dir = data.path().join("svid");
    let id = "spiffe://citadel.local/ns/batch/sa/indexer";
    let (ok, out, err) = run(citadel(data.path()).args([
        "workload",
        "issue",
        "--spiffe-id",
        id,
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]));
    assert!(ok, "{err}");
    let issued: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(issued["roles"], serde_json::json!(["service"]));
    let chain = std::fs::read_to_string(dir.join("svid.pem")).unwrap();
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(chain.as_bytes()).unwrap();
    let facts = citadel_crypto::read_cert(&der).unwrap();
    assert_eq!(facts.uris, vec![id.to_owned()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("svid-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.join("bundle.pem").exists());

    // Bad SPIFFE IDs and unknown roles are refused with a reason.
    for (args, says) in [
        (
            vec!["--spiffe-id", "spiffe://other.domain/x"],
            "trust domain",
        ),
        (vec!["--spiffe-id", "https://citadel.local/x"], "spiffe://"),
        (vec!["--spiffe-id", id, "--role", "wizard"], "unknown role"),
    ] {
        let mut cmd = citadel(data.path());
        cmd.args(["workload", "issue", "--out", dir.to_str().unwrap()])
            .args(&args);
        let (ok, _, err) = run(&mut cmd);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let (ok, out, _) = run(citadel(data.path()).args(["workload", "list", "--json"]));
    assert!(ok && out.contains(id));

    // Rotation: re-issuing without --role keeps the roles given before.
    let issue = |extra: &[&str]| {
        let mut cmd = citadel(data.path());
        cmd.args([
            "workload",
            "issue",
            "--spiffe-id",
            id,
            "--out",
            dir.to_str().unwrap(),
            "--json",
        ])
        .args(extra);
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    assert_eq!(
        issue(&["--role", "developer"])["roles"],
        serde_json::json!(["developer"])
    );
    assert_eq!(issue(&[])["roles"], serde_json::json!(["developer"]));
    assert!(!dir.join(".svid.pem.new").exists());
    // A timer that runs often: nothing to do while the certificate is fresh.
    let fresh = issue(&["--renew-before", "1h"]);
    assert_eq!(fresh["renewed"], false);
    let due = issue(&["--renew-before", "48h"]);
    assert_eq!(
        due["renewed"], true,
        "a 24 h certificate is due within 48 h"
    );
}

/// Credential commands need no identity provider's secret: an operator
/// without the OIDC client secret in their environment can still reset a
/// password.
#[test]
fn credential_commands_run_without_identity_provider_secrets() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("citadel.toml"),
        "[[identity.oidc]]\nname = \"corp\"\nissuer = \"https://idp.example\"\nclient_id = \"citadel\"\nclient_secret_env = \"CITADEL_TEST_UNSET_SECRET\"\nredirect_url = \"https://localhost:8443/auth/oidc/corp/callback\"\n",
    )
    .unwrap();
    let mut child = citadel(data.path())
        .env_remove("CITADEL_TEST_UNSET_SECRET")
        .args([
            "user",
            "create",
            "--name",
            "dana",
            "--role",
            "developer",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long and fine passphrase\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` with `input` on stdin.
fn run_with_stdin(cmd: &mut Command, input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn privacy_scan_prints_one_json_object_per_finding_with_byte_offsets() {
    let data = tempfile::tempdir().unwrap();
    let text = "Grüße: mail bob@example.org, card 4111 1111 1111 1111, not 4111 1111 1111 1112.";
    let (ok, out, err) = run_with_stdin(
        citadel(data.path()).args(["privacy", "scan", "--json"]),
        text,
    );
    assert!(ok, "{err}");
    let findings: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(findings.len(), 2, "{out}");
    for f in &findings {
        let (start, end) = (
            f["start"].as_u64().unwrap() as usize,
            f["end"].as_u64().unwrap() as usize,
        );
        let value = &text.as_bytes()[start..end];
        match f["type"].as_str().unwrap() {
            "EMAIL_ADDRESS" => {
                assert_eq!(value, b"bob@example.org");
                assert_eq!(f["class"], "confidential");
            }
            "CREDIT_CARD" => {
                assert_eq!(value, b"4111 1111 1111 1111");
                assert_eq!(f["class"], "restricted");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(f["confidence"].as_f64().unwrap() > 0.5);
    }

    // Redaction from the CLI with the same rules.
    let (ok, out, _) = run_with_stdin(
        citadel(data.path()).args(["privacy", "redact", "--mode", "mask"]),
        text,
    );
    assert!(ok);
    assert_eq!(
        out,
        "Grüße: mail <EMAIL_ADDRESS>, card <CREDIT_CARD>, not 4111 1111 1111 1112."
    );

    // A broken rule file: non-zero exit, file, line and reason.
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("bad.toml"),
        "# mine\n[[detector]]\ntype = \"X\"\nclass = \"public\"\npattern = '(?=look)'\nconfidence = 0.5\n",
    )
    .unwrap();
    let (ok, _, err) = run(citadel(data.path())
        .args(["privacy", "check"])
        .arg(rules.path()));
    assert!(!ok);
    assert!(
        err.contains("bad.toml:2") && err.contains("does not compile"),
        "{err}"
    );
}

#[test]
fn consent_commands_grant_withdraw_and_print_receipts() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("citadel.toml"),
        "[[privacy.purpose]]\nname = \"analytics\"\nversion = \"1\"\ntext = \"I agree to analytics.\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(citadel(data.path()).args([
        "consent",
        "grant",
        "cust-7",
        "analytics",
        "--source",
        "paper-form",
        "--json",
    ]));
    assert!(ok, "{err}");
    let granted: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(granted["version"], "1");
    assert_ne!(granted["subject_ref"], "cust-7");

    let (ok, _, err) = run(citadel(data.path()).args(["consent", "grant", "cust-7", "marketing"]));
    assert!(!ok);
    assert!(
        err.contains("unknown purpose `marketing`") && err.contains("analytics"),
        "{err}"
    );

    let (ok, _, err) =
        run(citadel(data.path()).args(["consent", "withdraw", "cust-7", "analytics"]));
    assert!(ok, "{err}");
    let (ok, out, _) = run(citadel(data.path()).args(["consent", "receipt", "cust-7"]));
    assert!(ok);
    let receipt: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(receipt["consents"][0]["source"], "paper-form");
    assert_eq!(receipt["consents"][0]["withdrawn_source"], "cli");
    assert_eq!(receipt["consents"][0]["current"], false);
}

#[test]
fn keys_commands_list_rotate_and_move_the_data_keys_to_another_root() {
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(citadel(data.path()).args(["keys", "list", "--json"]));
    assert!(ok, "{err}");
    let keys: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(keys[0]["purpose"], "authenticator");
    assert!(keys[0]["root"].as_str().unwrap().starts_with("file:"));

    let (ok, out, err) = run(citadel(data.path()).args(["keys", "rotate", "--json"]));
    assert!(ok, "{err}");
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rotated[0]["version"], 2);

    // Move to a root key in the environment: refused until re-wrapped.
    std::fs::write(
        data.path().join("citadel.toml"),
        "[keys]\nroot = \"env\"\nroot_env = \"CITADEL_TEST_NEW_ROOT\"\n",
    )
    .unwrap();
    let new_root = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let (ok, _, err) = run(citadel(data.path())
        .env("CITADEL_TEST_NEW_ROOT", new_root)
        .args(["keys", "list"]));
    assert!(!ok);
    assert!(err.contains("does not unwrap under the root key"), "{err}");
    let (ok, out, err) = run(citadel(data.path())
        .env("CITADEL_TEST_NEW_ROOT", new_root)
        .args(["keys", "rewrap", "--json", "--from-file"])
        .arg(data.path().join("keys/root.key")));
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["data_keys_rewrapped"], 2);
    let (ok, out, err) = run(citadel(data.path())
        .env("CITADEL_TEST_NEW_ROOT", new_root)
        .args(["keys", "list", "--json"]));
    assert!(ok, "{err}");
    assert!(out.contains("env:CITADEL_TEST_NEW_ROOT"), "{out}");

    // A loose root key file is refused, with what to do.
    use std::os::unix::fs::PermissionsExt;
    std::fs::remove_file(data.path().join("citadel.toml")).unwrap();
    let key = data.path().join("keys/root.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, _, err) = run(citadel(data.path()).args(["keys", "list"]));
    assert!(!ok);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn subject_commands_export_and_erase() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("citadel.toml"),
        "[[privacy.purpose]]\nname = \"support\"\nversion = \"1\"\ntext = \"I agree.\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(citadel(data.path()).args(["consent", "grant", "cust-3", "support"]));
    assert!(ok, "{err}");
    let (ok, out, err) = run(citadel(data.path()).args(["subject", "export", "cust-3"]));
    assert!(ok, "{err}");
    let export: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(export["format"], "citadel-subject-export/1");
    assert_eq!(export["consent"]["consents"][0]["purpose"], "support");

    let (ok, out, err) = run(citadel(data.path()).args(["subject", "erase", "cust-3", "--json"]));
    assert!(ok, "{err}");
    let tombstone: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tombstone["consents_deleted"], 1);
    assert!(
        !out.contains("cust-3"),
        "the tombstone names the subject only by its keyed hash"
    );
    let (ok, out, _) = run(citadel(data.path()).args(["subject", "export", "cust-3"]));
    assert!(ok);
    let export: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(export["consent"]["consents"].as_array().unwrap().is_empty());

    let (ok, _, err) = run(citadel(data.path()).args(["subject", "export", ""]));
    assert!(!ok);
    assert!(err.contains("1 to 256 bytes"), "{err}");
}
