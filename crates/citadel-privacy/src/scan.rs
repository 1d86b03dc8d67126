//! The scanner: every detector compiled into one multi-pattern regex, so a
//! text is read once, left to right, in linear time, whatever the number of
//! detectors. Each candidate is then checked by its detector's validator
//! and context words; only what passes is a finding.
//!
//! Overlaps: at one position the detector listed first wins (files load in
//! name order, so `10-secrets.toml` outranks `30-personal.toml`); a
//! candidate that fails its validator gives way to whatever matches from
//! the next character on.

use std::path::PathBuf;
use std::sync::Arc;

use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::meta::Regex;
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use serde::Serialize;

use crate::class::DataClass;
use crate::rules::{parse_rule_file, rule_files, Located, RuleProblem, RuleProblems};
use crate::validate::Validator;

/// Bytes before a match searched for context words.
const CONTEXT_BEFORE: usize = 48;
/// Bytes after a match searched for context words.
const CONTEXT_AFTER: usize = 24;
/// Room for the lazy DFA's states. All detectors in one automaton make
/// many states on code- and digit-heavy text; with regex-automata's 2 MiB
/// default the cache thrashes and the search falls back to a slower
/// engine (measured: 20 MB/s instead of several hundred).
const HYBRID_CACHE_BYTES: usize = 32 << 20;
/// Confidence below which a candidate is not reported.
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.5;

/// The lazy automaton could not answer (its cache thrashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pattern automaton gave up on this text")]
pub struct GaveUp;

/// One thing found in a text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Entity type (`EMAIL_ADDRESS`, `CREDIT_CARD`, …).
    #[serde(rename = "type", serialize_with = "as_str")]
    pub kind: Arc<str>,
    /// Byte offset where it starts.
    pub start: usize,
    /// Byte offset just past its end.
    pub end: usize,
    /// Its data class.
    pub class: DataClass,
    /// How sure the detector is, 0..1.
    #[serde(serialize_with = "rounded")]
    pub confidence: f32,
}

fn rounded<S: serde::Serializer>(c: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((f64::from(*c) * 1000.0).round() / 1000.0)
}

fn as_str<S: serde::Serializer>(kind: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind)
}

#[derive(Debug)]
struct Detector {
    kind: Arc<str>,
    class: DataClass,
    confidence: f32,
    validator: Option<Validator>,
    context: Vec<Vec<u8>>,
    context_required: bool,
    context_boost: f32,
    max_len: usize,
    /// The detector alone, with captures, when its pattern marks the
    /// sensitive part as `(?P<value>…)`.
    value: Option<Regex>,
}

/// All detectors, compiled. Cheap to share (`Arc`); scanning needs no lock.
#[derive(Debug)]
pub struct Scanner {
    all: Regex,
    /// The same patterns as a lazy DFA, anchored, for asking "could a match
    /// starting here still be in progress?" at the end of a streamed chunk.
    prefixes: DFA,
    detectors: Vec<Detector>,
    min_confidence: f32,
    longest: usize,
}

fn syntax_config() -> syntax::Config {
    // ASCII semantics: `\b`, `\w`, `\d` and case folding are ASCII, which
    // is what identifiers and secrets are made of, and keeps the automata
    // small and fast. Patterns run over UTF-8 bytes; offsets are moved to
    // character boundaries before use.
    syntax::Config::new().unicode(false).utf8(false)
}

impl Scanner {
    /// Loads the rule files in `paths` (directories of `*.toml`, or files).
    pub fn load(paths: &[PathBuf]) -> Result<Self, RuleProblems> {
        let files = rule_files(paths)?;
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for file in &files {
            match std::fs::read_to_string(file) {
                Ok(text) => match parse_rule_file(file, &text) {
                    Ok(r) => rules.extend(r),
                    Err(p) => problems.extend(p),
                },
                Err(e) => problems.push(RuleProblem {
                    file: file.clone(),
                    line: 0,
                    reason: format!("cannot read: {e}"),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(RuleProblems(problems));
        }
        Self::compile(rules)
    }

    /// Compiles rules from text (for tests and tools): `(file name, text)`.
    pub fn from_texts(texts: &[(&str, &str)]) -> Result<Self, RuleProblems> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (name, text) in texts {
            match parse_rule_file(std::path::Path::new(name), text) {
                Ok(r) => rules.extend(r),
                Err(p) => problems.extend(p),
            }
        }
        if !problems.is_empty() {
            return Err(RuleProblems(problems));
        }
        Self::compile(rules)
    }

    fn compile(rules: Vec<Located>) -> Result<Self, RuleProblems> {
        if rules.is_empty() {
            return Err(RuleProblems(vec![RuleProblem {
                file: PathBuf::from("(rules)"),
                line: 0,
                reason: "no detector is defined; add rule files (see rules/privacy)".into(),
            }]));
        }
        let problem = |r: &Located, reason: String| RuleProblem {
            file: r.file.clone(),
            line: r.line,
            reason: format!("detector {}: {reason}", r.rule.kind),
        };
        let mut problems = Vec::new();
        let mut detectors = Vec::with_capacity(rules.len());
        for r in &rules {
            // Every match must have a bounded length: with an unbounded
            // repetition one candidate could run to the end of the text and
            // each retry after it again, which makes a scan quadratic.
            match max_match_len(&r.rule.pattern) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    problems.push(problem(
                        r,
                        "the pattern has no maximum match length (an unbounded `*`, `+` or `{n,}`); bound every repetition, e.g. `{1,64}`".into(),
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(problem(r, format!("the pattern does not compile: {e}")));
                    continue;
                }
            }
            // Each pattern alone first, so an error names its rule.
            let single = Regex::builder()
                .syntax(syntax_config())
                .configure(Regex::config().utf8_empty(false))
                .build(&r.rule.pattern);
            let single = match single {
                Ok(re) => re,
                Err(e) => {
                    problems.push(problem(r, format!("the pattern does not compile: {e}")));
                    continue;
                }
            };
            let has_value = single
                .group_info()
                .to_index(regex_automata::PatternID::ZERO, "value")
                .is_some();
            detectors.push(Detector {
                kind: Arc::from(r.rule.kind.as_str()),
                class: r.rule.class,
                confidence: r.rule.confidence,
                validator: r.rule.validator,
                context: r
                    .rule
                    .context
                    .iter()
                    .map(|w| w.to_ascii_lowercase().into_bytes())
                    .collect(),
                context_required: r.rule.context_required,
                context_boost: r.rule.context_boost,
                max_len: r.rule.max_len,
                value: has_value.then_some(single),
            });
        }
        if !problems.is_empty() {
            return Err(RuleProblems(problems));
        }
        let patterns: Vec<&str> = rules.iter().map(|r| r.rule.pattern.as_str()).collect();
        let whole = |reason: String| {
            RuleProblems(vec![RuleProblem {
                file: PathBuf::from("(rules)"),
                line: 0,
                reason,
            }])
        };
        let all = Regex::builder()
            .syntax(syntax_config())
            .configure(
                Regex::config()
                    .utf8_empty(false)
                    .hybrid_cache_capacity(HYBRID_CACHE_BYTES),
            )
            .build_many(&patterns)
            .map_err(|e| whole(format!("the detectors together do not compile: {e}")))?;
        let prefixes = DFA::builder()
            .syntax(syntax_config())
            .thompson(thompson::Config::new().utf8(false))
            .build_many(&patterns)
            .map_err(|e| whole(format!("the detectors together do not compile: {e}")))?;
        let longest = detectors.iter().map(|d| d.max_len).max().unwrap_or(1);
        Ok(Self {
            all,
            prefixes,
            detectors,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            longest,
        })
    }

    /// Reports only findings at least this confident (default 0.5).
    pub fn with_min_confidence(mut self, min: f32) -> Self {
        self.min_confidence = min;
        self
    }

    /// Number of detectors.
    pub fn len(&self) -> usize {
        self.detectors.len()
    }

    /// Whether there are no detectors (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// The entity types detected, in rule order, without repeats.
    pub fn kinds(&self) -> Vec<(Arc<str>, DataClass)> {
        let mut out: Vec<(Arc<str>, DataClass)> = Vec::new();
        for d in &self.detectors {
            if !out.iter().any(|(k, _)| *k == d.kind) {
                out.push((d.kind.clone(), d.class));
            }
        }
        out
    }

    /// The longest match any detector allows, bytes.
    pub fn longest_match(&self) -> usize {
        self.longest
    }

    /// Everything found in `text`, in order, not overlapping.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_into(text, &mut out);
        out
    }

    /// [`Scanner::scan`], appending to `out`.
    pub fn scan_into(&self, text: &str, out: &mut Vec<Finding>) {
        let hay = text.as_bytes();
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = self.all.search(&Input::new(hay).span(at..hay.len())) else {
                break;
            };
            let detector = &self.detectors[m.pattern().as_usize()];
            let (start, end) = match &detector.value {
                None => (m.start(), m.end()),
                Some(re) => {
                    let mut caps = re.create_captures();
                    re.search_captures(
                        &Input::new(hay).span(m.range()).anchored(Anchored::Yes),
                        &mut caps,
                    );
                    match caps.get_group_by_name("value") {
                        Some(span) => (span.start, span.end),
                        None => (m.start(), m.end()),
                    }
                }
            };
            let (start, end) = (floor_char(text, start), ceil_char(text, end));
            // A generic detector's value that is wholly a specific kind of
            // thing (a JWT after `Bearer`) is reported as that kind.
            let detector = match &detector.value {
                Some(_) => self.specific_kind(text, start, end).unwrap_or(detector),
                None => detector,
            };
            match self.judge(detector, text, start, end) {
                Some(confidence) => {
                    out.push(Finding {
                        kind: detector.kind.clone(),
                        start,
                        end,
                        class: detector.class,
                        confidence,
                    });
                    at = m.end().max(m.start() + 1);
                }
                None => at = m.start() + 1,
            }
        }
    }

    /// The detector without a value group whose match is exactly
    /// `start..end` and which accepts it, if any.
    fn specific_kind(&self, text: &str, start: usize, end: usize) -> Option<&Detector> {
        let input = Input::new(text.as_bytes())
            .span(start..end)
            .anchored(Anchored::Yes);
        let m = self.all.search(&input)?;
        let d = &self.detectors[m.pattern().as_usize()];
        (m.end() == end && d.value.is_none() && self.judge(d, text, start, end).is_some())
            .then_some(d)
    }

    /// The confidence of a candidate, or `None` if it does not count.
    fn judge(&self, d: &Detector, text: &str, start: usize, end: usize) -> Option<f32> {
        if end <= start || end - start > d.max_len {
            return None;
        }
        if let Some(v) = d.validator {
            if !v.check(&text[start..end]) {
                return None;
            }
        }
        let mut confidence = d.confidence;
        if !d.context.is_empty() {
            let from = start.saturating_sub(CONTEXT_BEFORE);
            let to = (end + CONTEXT_AFTER).min(text.len());
            let near = |w: &Vec<u8>| {
                contains_ignore_case(&text.as_bytes()[from..start], w)
                    || contains_ignore_case(&text.as_bytes()[end..to], w)
            };
            if d.context.iter().any(near) {
                confidence = (confidence + d.context_boost).min(1.0);
            } else if d.context_required {
                return None;
            }
        }
        (confidence >= self.min_confidence).then_some(confidence)
    }

    /// The first position at or after `from` where a match could have
    /// begun and still be going on at the end of `text` (so more text
    /// could complete it). `None` when nothing can be in progress.
    ///
    /// Streaming redaction holds back text from there on. `Err` when the
    /// lazy DFA gave up (its cache thrashed); callers then hold back the
    /// longest match length instead.
    pub fn in_progress_from(&self, text: &str, from: usize) -> Result<Option<usize>, GaveUp> {
        let hay = text.as_bytes();
        let mut cache: DfaCache = self.prefixes.create_cache();
        for p in from..hay.len() {
            if !text.is_char_boundary(p) {
                continue;
            }
            let input = Input::new(hay).span(p..hay.len()).anchored(Anchored::Yes);
            let mut sid = self
                .prefixes
                .start_state_forward(&mut cache, &input)
                .map_err(|_| GaveUp)?;
            let mut alive = !sid.is_dead();
            if alive {
                for &b in &hay[p..] {
                    sid = self
                        .prefixes
                        .next_state(&mut cache, sid, b)
                        .map_err(|_| GaveUp)?;
                    if sid.is_dead() || sid.is_quit() {
                        alive = false;
                        break;
                    }
                }
            }
            if alive {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

/// The longest a match of `pattern` can be, in bytes (`None`: unbounded).
fn max_match_len(pattern: &str) -> Result<Option<usize>, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    Ok(hir.properties().maximum_len())
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i.min(text.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A few detectors for the unit tests of this crate.
    pub(crate) const RULES: &str = r#"
[[detector]]
type = "EMAIL_ADDRESS"
class = "confidential"
pattern = '''(?i)\b[a-z0-9._%+-]{1,64}@(?:[a-z0-9-]{1,63}\.){1,8}[a-z]{2,24}\b'''
confidence = 0.9
validator = "email"

[[detector]]
type = "CREDIT_CARD"
class = "restricted"
pattern = '''\b(?:\d[ -]?){11,18}\d\b'''
confidence = 0.9
validator = "luhn"

[[detector]]
type = "AWS_SECRET_KEY"
class = "restricted"
pattern = '''(?i)aws.{0,20}secret.{0,20}[=:]\s{0,4}["']?(?P<value>[a-z0-9/+=]{40})\b'''
confidence = 0.9

[[detector]]
type = "DATE_OF_BIRTH"
class = "confidential"
pattern = '''\b\d{4}-\d{2}-\d{2}\b'''
confidence = 0.6
validator = "date"
context = ["born", "birth"]
context_required = true
"#;

    fn scanner() -> Scanner {
        Scanner::from_texts(&[("t.toml", RULES)]).unwrap()
    }

    #[test]
    fn finds_validated_values_with_byte_offsets() {
        let text = "Mail bob@example.org, card 4111 1111 1111 1111, not 4111 1111 1111 1112.";
        let found = scanner().scan(text);
        let kinds: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (&*f.kind, &text[f.start..f.end]))
            .collect();
        assert_eq!(
            kinds,
            [
                ("EMAIL_ADDRESS", "bob@example.org"),
                ("CREDIT_CARD", "4111 1111 1111 1111")
            ]
        );
    }

    #[test]
    fn context_can_be_required_and_value_groups_narrow_the_finding() {
        let s = scanner();
        assert!(s.scan("release 2024-05-01 is out").is_empty());
        let text = "she was born 1985-03-12 in Leeds";
        let f = s.scan(text);
        assert_eq!(&text[f[0].start..f[0].end], "1985-03-12");
        assert!((f[0].confidence - 0.7).abs() < 1e-6);
        let text = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let f = s.scan(text);
        assert_eq!(
            &text[f[0].start..f[0].end],
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
    }

    #[test]
    fn offsets_stay_on_character_boundaries() {
        let text = "é bob@example.org ü";
        let f = scanner().scan(text);
        assert_eq!(&text[f[0].start..f[0].end], "bob@example.org");
    }

    #[test]
    fn in_progress_marks_where_a_value_may_continue() {
        let s = scanner();
        let text = "write to bob@exam";
        assert_eq!(s.in_progress_from(text, 0), Ok(Some(9)));
        // A finished sentence has nothing in progress.
        assert_eq!(s.in_progress_from("all done. ", 0), Ok(None));
        assert_eq!(s.in_progress_from("card 4111 1111", 0), Ok(Some(5)));
    }

    #[test]
    fn broken_patterns_name_their_rule() {
        let bad = "[[detector]]\ntype = \"X\"\nclass = \"public\"\npattern = \"(unclosed\"\nconfidence = 0.5\n";
        let err = Scanner::from_texts(&[("bad.toml", bad)]).unwrap_err();
        assert_eq!(err.0[0].line, 1);
        assert!(
            err.0[0].reason.contains("does not compile"),
            "{}",
            err.0[0].reason
        );
        let backref = "[[detector]]\ntype = \"X\"\nclass = \"public\"\npattern = '(a)\\1'\nconfidence = 0.5\n";
        assert!(Scanner::from_texts(&[("b.toml", backref)]).is_err());
        let unbounded =
            "[[detector]]\ntype = \"X\"\nclass = \"public\"\npattern = 'a+b'\nconfidence = 0.5\n";
        let err = Scanner::from_texts(&[("u.toml", unbounded)]).unwrap_err();
        assert!(
            err.0[0].reason.contains("no maximum match length"),
            "{}",
            err.0[0].reason
        );
    }
}
