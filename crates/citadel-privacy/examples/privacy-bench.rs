//! `bench/privacy/run`'s Citadel half (not a test):
//!
//! 1. scan throughput, one thread, all shipped detectors on, over the
//!    generated corpus cut into documents as the Presidio side cuts it
//!    (paragraphs of at most 4 KiB: a gateway sees one message at a time);
//!    best of several passes;
//! 2. the findings as JSON lines with byte offsets, for the scorer;
//! 3. the inspect layer's own work for a 4 KiB chat request (parse the
//!    JSON, scan every message, redact, serialize again), p50 and p99.
//!
//! Usage: privacy-bench --rules DIR --corpus FILE --pred OUT.jsonl

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use citadel_privacy::openai::for_each_request_text;
use citadel_privacy::{Mode, PseudonymMap, Redactor, Scanner};

/// Cuts `text` into documents as `presidio_scan.py` does: on blank lines,
/// and pieces over `max` bytes further on line boundaries (a gateway sees
/// one message at a time).
fn documents(text: &str, max: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    for para in text.split("\n\n") {
        let mut start = 0;
        while start < para.len() {
            let mut end = para.len();
            if end - start > max {
                end = para[start..start + max]
                    .rfind('\n')
                    .map_or(start + max, |nl| start + nl + 1);
                while !para.is_char_boundary(end) {
                    end -= 1;
                }
            }
            if !para[start..end].trim().is_empty() {
                out.push((at + start, &para[start..end]));
            }
            start = end;
        }
        at += para.len() + 2;
    }
    out
}

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "missing {name}; usage: privacy-bench --rules DIR --corpus FILE --pred OUT.jsonl"
            )
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rules = PathBuf::from(arg(&args, "--rules"));
    let corpus = std::fs::read_to_string(arg(&args, "--corpus")).expect("corpus");
    let pred = arg(&args, "--pred");
    let scanner = Scanner::load(&[rules]).expect("rules load");
    let docs = documents(&corpus, 4096);

    // 1. Throughput: best of 5 passes (the first warms caches and the
    // lazy DFA).
    let mut best = f64::MAX;
    let mut first = 0.0;
    let mut findings = Vec::new();
    for pass in 0..5 {
        findings.clear();
        let t = Instant::now();
        for (offset, doc) in &docs {
            for f in scanner.scan(doc) {
                findings.push((f, *offset));
            }
        }
        let took = t.elapsed().as_secs_f64();
        if pass == 0 {
            first = took;
        }
        best = best.min(took);
    }
    let mb_per_s = corpus.len() as f64 / best / 1e6;

    // 2. Predictions, byte offsets into the corpus.
    let mut out = std::io::BufWriter::new(std::fs::File::create(&pred).expect("pred file"));
    for (f, offset) in &findings {
        let line = serde_json::json!({
            "type": &*f.kind,
            "start": offset + f.start,
            "end": offset + f.end,
            "score": f.confidence,
        });
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();

    // 3. The inspect layer's work on a 4 KiB chat request.
    let mut prompt = String::new();
    let filler =
        "Our quarterly review covers onboarding, the billing migration and the support backlog. ";
    let values = [
        "Contact jane.doe@example.com or call +44 20 7946 0958. ",
        "Card on file 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00. ",
        // AWS's documented example access key id, split so that secret
        // scanners of this repository do not take it for a real one.
        concat!("Server 203.0.113.7 uses key AKIA", "IOSFODNN7EXAMPLE. "),
    ];
    let mut i = 0;
    while prompt.len() < 4096 - 200 {
        prompt.push_str(if i % 4 == 3 {
            values[(i / 4) % 3]
        } else {
            filler
        });
        i += 1;
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
    }))
    .unwrap();
    let redactor = Redactor::new(Mode::Mask, zeroize::Zeroizing::new(vec![7; 32]));
    let mut samples = Vec::with_capacity(20_000);
    for round in 0..22_000 {
        let t = Instant::now();
        let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut map = PseudonymMap::default();
        for_each_request_text(&mut json, &mut |text| {
            let found = scanner.scan(text);
            if !found.is_empty() {
                *text = redactor.apply(text, &found, &mut map);
            }
        });
        let out = serde_json::to_vec(&json).unwrap();
        std::hint::black_box(out);
        if round >= 2_000 {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };

    let summary = serde_json::json!({
        "detectors": scanner.len(),
        "bytes": corpus.len(),
        "documents": docs.len(),
        "seconds": best,
        "mb_per_s": (mb_per_s * 10.0).round() / 10.0,
        "first_pass_mb_per_s": (corpus.len() as f64 / first / 1e6 * 10.0).round() / 10.0,
        "findings": findings.len(),
        "redact_4kib_body_bytes": body.len(),
        "redact_4kib_p50_us": (pct(0.50) * 10.0).round() / 10.0,
        "redact_4kib_p99_us": (pct(0.99) * 10.0).round() / 10.0,
    });
    println!("{summary}");
}
