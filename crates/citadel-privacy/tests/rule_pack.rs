//! The shipped rule pack (`rules/privacy`): each detector finds what it
//! should, with exact offsets, and leaves look-alikes alone.

use std::path::PathBuf;

use citadel_privacy::Scanner;

fn scanner() -> Scanner {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules/privacy");
    Scanner::load(&[dir]).expect("the shipped rules load")
}

/// `(text, [(type, value)])`: every finding in the text, in order.
const CASES: &[(&str, &[(&str, &str)])] = &[
    ("write to jane.doe+ml@mail.example.co.uk today", &[("EMAIL_ADDRESS", "jane.doe+ml@mail.example.co.uk")]),
    ("call +44 20 7946 0958 now", &[("PHONE_NUMBER", "+44 20 7946 0958")]),
    ("phone (415) 555-0132 or 415-555-0199", &[("PHONE_NUMBER", "(415) 555-0132"), ("PHONE_NUMBER", "415-555-0199")]),
    ("mobile: 07700 900123", &[("PHONE_NUMBER", "07700 900123")]),
    ("invoice 07700 900123", &[]),
    ("card 4111 1111 1111 1111 exp 12/29", &[("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("order 4111 1111 1111 1112 shipped", &[]),
    ("IBAN GB29 NWBK 6016 1331 9268 19 please", &[("IBAN_CODE", "GB29 NWBK 6016 1331 9268 19")]),
    ("pay DE89370400440532013000 now", &[("IBAN_CODE", "DE89370400440532013000")]),
    ("ref DE89370400440532013001 now", &[]),
    ("SSN 536-22-1234.", &[("US_SSN", "536-22-1234")]),
    ("SSN 666-22-1234.", &[]),
    ("my ssn is 536221234", &[("US_SSN", "536221234")]),
    ("order 536221234", &[]),
    ("from 203.0.113.7 and 2001:db8::8a2e:370:7334", &[("IP_ADDRESS", "203.0.113.7"), ("IP_ADDRESS", "2001:db8::8a2e:370:7334")]),
    ("at 12:30:45 on 999.1.1.1", &[]),
    ("she was born on 12 March 1985", &[("DATE_OF_BIRTH", "12 March 1985")]),
    ("DOB: 1985-03-12", &[("DATE_OF_BIRTH", "1985-03-12")]),
    ("released 1985-03-12", &[]),
    ("ask Dr. Amelia Watson", &[("PERSON", "Amelia Watson")]),
    ("Hi, my name is John Smith.", &[("PERSON", "John Smith")]),
    ("I live in New York", &[("LOCATION", "New York")]),
    ("ship to 221 Baker Street today", &[("LOCATION", "221 Baker Street")]),
    ("key AKIAIOSFODNN7EXAMPLE", &[("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")]),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &[("AWS_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")]),
    ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a", &[("GITHUB_TOKEN", "ghp_16C7e42F292c6912E7710c838347Ae178B4a")]),
    ("glpat-xYz12345678901234567 ok", &[("GITLAB_TOKEN", "glpat-xYz12345678901234567")]),
    ("use sk_live_4eC39HqLyjWDarjtT1zdp7dc", &[("STRIPE_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc")]),
    ("hf_abcdefghijklmnopqrstuvwxyz01234567 x", &[("HUGGINGFACE_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz01234567")]),
    ("AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", &[("GCP_API_KEY", "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI")]),
    ("xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy", &[("SLACK_TOKEN", "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy")]),
    ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP012345", &[("OPENAI_API_KEY", "sk-proj-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP012345")]),
    ("db postgres://app:s3cr3t-Pa55@db.internal:5432/prod", &[("CONNECTION_STRING_PASSWORD", "s3cr3t-Pa55")]),
    ("jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        &[("JWT", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")]),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        &[("PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----")]),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (cut off here)",
        &[("PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----")]),
    ("password: hunter2hunter", &[("PASSWORD", "hunter2hunter")]),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", &[("BEARER_TOKEN", "abcdefghijklmnopqrstuvwxyz012345")]),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        &[("JWT", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")]),
    ("The quick brown fox jumps over the lazy dog in version 1.2.3 on port 8080.", &[]),
];

#[test]
fn the_rule_pack_finds_each_kind_exactly() {
    let s = scanner();
    let mut failures = Vec::new();
    for (text, expected) in CASES {
        let found: Vec<(String, String)> = s
            .scan(text)
            .iter()
            .map(|f| (f.kind.to_string(), text[f.start..f.end].to_owned()))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if found != expected {
            failures.push(format!(
                "{text:?}\n  found    {found:?}\n  expected {expected:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_rule_pack_covers_every_kind_the_docs_promise() {
    let kinds: Vec<String> = scanner()
        .kinds()
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect();
    for k in [
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "IBAN_CODE",
        "US_SSN",
        "IP_ADDRESS",
        "DATE_OF_BIRTH",
        "PERSON",
        "LOCATION",
        "AWS_ACCESS_KEY",
        "GCP_API_KEY",
        "AZURE_STORAGE_KEY",
        "GITHUB_TOKEN",
        "GITLAB_TOKEN",
        "SLACK_TOKEN",
        "STRIPE_KEY",
        "OPENAI_API_KEY",
        "HUGGINGFACE_TOKEN",
        "JWT",
        "PRIVATE_KEY",
        "CONNECTION_STRING_PASSWORD",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing");
    }
}

#[test]
fn repeated_key_headers_do_not_make_a_scan_quadratic() {
    // Each header starts a candidate that could run to the end of the text
    // if the pattern were unbounded; bounded, 200 KiB of them is quick.
    let text = "-----BEGIN PRIVATE KEY----- ".repeat(7_500);
    let s = scanner();
    let started = std::time::Instant::now();
    let found = s.scan(&text);
    assert_eq!(found.len(), 7_500);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
