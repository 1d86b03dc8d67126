//! `[privacy]` in `citadel.toml`, and the rules in force: loaded at start,
//! reloaded when their files change; a reload that fails leaves the rules
//! in force as they were.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::redact::{Mode, Redactor};
use crate::rules::{rule_files, RuleProblems};
use crate::scan::{Scanner, DEFAULT_MIN_CONFIDENCE};

/// Whether and how text is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Redaction {
    /// Not unless policy asks (a `send_data` denial; then masked).
    #[default]
    None,
    /// `<TYPE>`.
    Mask,
    /// `<TYPE:keyed-hash>`.
    Hash,
    /// `<TYPE_token>`, given back in answers where policy allows.
    Pseudonymize,
}

impl Redaction {
    /// The mode, if redacting.
    pub fn mode(self) -> Option<Mode> {
        match self {
            Self::None => None,
            Self::Mask => Some(Mode::Mask),
            Self::Hash => Some(Mode::Hash),
            Self::Pseudonymize => Some(Mode::Pseudonymize),
        }
    }
}

/// `[privacy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Directories (or files) of detector rules, in addition to the data
    /// directory's `privacy-rules` (seeded with the shipped pack).
    pub rules: Vec<PathBuf>,
    /// Redaction of requests and answers on every model route (an upstream
    /// may set its own `redact`).
    pub redact: Redaction,
    /// Findings below this confidence are ignored (0..1).
    pub min_confidence: f32,
    /// Most bytes of a streamed answer held back while a value may still be
    /// arriving.
    pub stream_hold_bytes: usize,
    /// Largest non-streamed answer inspected; a larger one is refused
    /// (502 `answer_not_inspectable`) rather than passed uninspected.
    pub max_answer_bytes: usize,
    /// The request header naming the data subject, on routes with a
    /// `purpose`.
    pub subject_header: String,
    /// `[[privacy.purpose]]`: what data may be used for, with consent texts.
    pub purpose: Vec<crate::consent::PurposeConfig>,
    /// Keep prompts and answers of model requests, sealed per data subject
    /// (off by default; an upstream may set its own `capture`).
    pub capture: bool,
    /// `[[privacy.retention]]`: how long captured records are kept.
    pub retention: Vec<RetentionRule>,
    /// How often the retention purge runs.
    #[serde(deserialize_with = "duration")]
    pub purge_interval: std::time::Duration,
}

/// What a retention rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The text a request sent (its content; the row stays).
    Prompt,
    /// The answer (its content; the row stays).
    Answer,
    /// The capture's metadata row itself (route, model, class, time).
    Metadata,
    /// Stored pseudonyms and their values (any class).
    Pseudonyms,
}

impl RecordKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::Answer => "answer",
            Self::Metadata => "metadata",
            Self::Pseudonyms => "pseudonyms",
        }
    }
}

/// `[[privacy.retention]]`: records of `record` kind (and `class`, if set)
/// are purged once older than `keep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// `prompt`, `answer` or `metadata`.
    pub record: RecordKind,
    /// Only records of this data class (default: every class).
    #[serde(default)]
    pub class: Option<crate::DataClass>,
    /// How long they are kept (`30d`, `12h`, …).
    #[serde(deserialize_with = "duration")]
    pub keep: std::time::Duration,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    citadel_core::clock::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            redact: Redaction::None,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            stream_hold_bytes: 8192,
            max_answer_bytes: 16 * 1024 * 1024,
            subject_header: "x-data-subject".into(),
            purpose: Vec::new(),
            capture: false,
            retention: Vec::new(),
            purge_interval: std::time::Duration::from_secs(3600),
        }
    }
}

impl PrivacyConfig {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err("privacy.min_confidence must be between 0 and 1".into());
        }
        if !(256..=1 << 20).contains(&self.stream_hold_bytes) {
            return Err("privacy.stream_hold_bytes must be between 256 and 1048576".into());
        }
        if self.max_answer_bytes < 1024 {
            return Err("privacy.max_answer_bytes must be at least 1024".into());
        }
        if !is_header_name(&self.subject_header) {
            return Err(format!(
                "privacy.subject_header {:?} is not a valid header name",
                self.subject_header
            ));
        }
        if self.purge_interval < std::time::Duration::from_secs(1) {
            return Err("privacy.purge_interval must be at least 1s".into());
        }
        if let Some(r) = self.retention.iter().find(|r| r.keep.is_zero()) {
            return Err(format!(
                "privacy.retention for {}: keep must be more than 0",
                r.record.as_str()
            ));
        }
        crate::consent::validate_purposes(&self.purpose)
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The detector rules in force and the redactors, shared by the gateway and
/// the CLI.
pub struct Privacy {
    /// The configuration.
    pub config: PrivacyConfig,
    paths: Vec<PathBuf>,
    scanner: ArcSwap<Scanner>,
    fingerprint: std::sync::Mutex<Fingerprint>,
    mask: Arc<Redactor>,
    hash: Arc<Redactor>,
    pseudonymize: Arc<Redactor>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Modification times and sizes of the rule files, to notice edits.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    rule_files(paths)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified: Option<SystemTime> = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect()
}

impl Privacy {
    /// Loads the rules in `paths`; `key` keys hashes and pseudonyms.
    pub fn load(
        config: PrivacyConfig,
        paths: Vec<PathBuf>,
        key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, RuleProblems> {
        let fp = fingerprint(&paths);
        let scanner = Scanner::load(&paths)?.with_min_confidence(config.min_confidence);
        let redactor = |mode| Arc::new(Redactor::new(mode, key.clone()));
        Ok(Self {
            mask: redactor(Mode::Mask),
            hash: redactor(Mode::Hash),
            pseudonymize: redactor(Mode::Pseudonymize),
            config,
            paths,
            scanner: ArcSwap::from_pointee(scanner),
            fingerprint: std::sync::Mutex::new(fp),
        })
    }

    /// The rule paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The scanner in force.
    pub fn scanner(&self) -> Arc<Scanner> {
        self.scanner.load_full()
    }

    /// The redactor for `mode`.
    pub fn redactor(&self, mode: Mode) -> Arc<Redactor> {
        match mode {
            Mode::Mask => self.mask.clone(),
            Mode::Hash => self.hash.clone(),
            Mode::Pseudonymize => self.pseudonymize.clone(),
        }
    }

    /// Whether a rule file changed since the rules in force were loaded.
    pub fn changed_on_disk(&self) -> bool {
        let now = fingerprint(&self.paths);
        *self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Reloads the rules: on success they are in force for the next
    /// request and the number of detectors is returned; on failure the
    /// old rules stay and the problems are returned.
    pub fn reload(&self) -> Result<usize, RuleProblems> {
        let fp = fingerprint(&self.paths);
        let mut seen = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        // Remember what was tried, good or bad, so a broken file is
        // reported once, not on every poll.
        *seen = fp;
        let scanner = Scanner::load(&self.paths)?.with_min_confidence(self.config.min_confidence);
        let count = scanner.len();
        self.scanner.store(Arc::new(scanner));
        Ok(count)
    }
}

/// Writes the shipped rule pack into `dir` if it holds no rule file yet.
pub fn seed_rules(dir: &Path) -> std::io::Result<bool> {
    let has_any = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .unwrap_or(false);
    if has_any {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    for (name, text) in crate::DEFAULT_RULES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(true)
}
