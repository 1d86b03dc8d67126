//! Detector rule files: what to look for is data in `rules/privacy/*.toml`
//! (and in directories operators add), never code. A file holds
//! `[[detector]]` tables (a pattern, an optional validator, context words,
//! a confidence and a data class) and `[[dictionary]]` tables (a list of
//! terms, for code names, customer names and the like).
//!
//! Loading checks everything: unknown keys, patterns that do not compile,
//! unknown validators and classes. A problem is reported with its file,
//! line and reason, and nothing of a set with a problem is used, so a reload
//! that fails leaves the rules in force as they were.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::class::DataClass;
use crate::validate::Validator;

/// One detector, as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetectorRule {
    /// Entity type it finds (`EMAIL_ADDRESS`, `AWS_ACCESS_KEY`, …).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// Data class of what it finds.
    pub(crate) class: DataClass,
    /// The pattern (regex-automata syntax: linear time, no look-around or
    /// back-references). `\b` is an ASCII word boundary.
    pub(crate) pattern: String,
    /// Confidence of a match that passes its validator, 0..1.
    pub(crate) confidence: f32,
    /// A check the matched text must pass (checksum, range, structure).
    #[serde(default)]
    pub(crate) validator: Option<Validator>,
    /// Words that, near a match, raise its confidence (case-insensitive).
    #[serde(default)]
    pub(crate) context: Vec<String>,
    /// Only a match with a context word nearby counts.
    #[serde(default)]
    pub(crate) context_required: bool,
    /// Added to the confidence when a context word is near.
    #[serde(default = "default_boost")]
    pub(crate) context_boost: f32,
    /// Longest text a match may span, bytes (longer matches are dropped).
    #[serde(default = "default_max_len")]
    pub(crate) max_len: usize,
    /// What it finds, for people reading the rule.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
}

/// A list of terms that are sensitive by themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DictionaryRule {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) class: DataClass,
    pub(crate) terms: Vec<String>,
    #[serde(default)]
    pub(crate) case_sensitive: bool,
    #[serde(default = "default_dictionary_confidence")]
    pub(crate) confidence: f32,
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
}

fn default_boost() -> f32 {
    0.1
}
fn default_max_len() -> usize {
    256
}
fn default_dictionary_confidence() -> f32 {
    0.9
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    detector: Vec<toml::Spanned<DetectorRule>>,
    #[serde(default)]
    dictionary: Vec<toml::Spanned<DictionaryRule>>,
}

/// A detector ready to compile, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) rule: DetectorRule,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
}

/// One thing wrong with a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Everything wrong with a set of rule files; none of them is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleProblems(pub Vec<RuleProblem>);

impl std::fmt::Display for RuleProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The `*.toml` files of each directory (or the file itself), sorted, so
/// that detector order, which breaks ties between overlapping matches, is
/// stable.
pub(crate) fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleProblems> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut here: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                here.sort();
                files.extend(here);
            }
            Err(e) => problems.push(RuleProblem {
                file: path.clone(),
                line: 0,
                reason: format!("cannot read the rule directory: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(RuleProblems(problems))
    }
}

/// Reads one rule file's text into detectors (dictionaries become
/// detectors of their terms).
pub(crate) fn parse_rule_file(file: &Path, text: &str) -> Result<Vec<Located>, Vec<RuleProblem>> {
    let problem = |line: usize, reason: String| RuleProblem {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let parsed: RuleFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        vec![problem(line, e.message().to_owned())]
    })?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for spanned in parsed.detector {
        let line = line_of(text, spanned.span().start);
        let rule = spanned.into_inner();
        if let Err(reason) = check_common(&rule.kind, rule.confidence) {
            problems.push(problem(line, reason));
            continue;
        }
        if rule.max_len == 0 {
            problems.push(problem(
                line,
                format!("detector {}: max_len must be at least 1", rule.kind),
            ));
            continue;
        }
        out.push(Located {
            rule,
            file: file.to_path_buf(),
            line,
        });
    }
    for spanned in parsed.dictionary {
        let line = line_of(text, spanned.span().start);
        let dict = spanned.into_inner();
        if let Err(reason) = check_common(&dict.kind, dict.confidence) {
            problems.push(problem(line, reason));
            continue;
        }
        let terms: Vec<&str> = dict
            .terms
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if terms.is_empty() {
            problems.push(problem(
                line,
                format!("dictionary {}: `terms` holds no term", dict.kind),
            ));
            continue;
        }
        // `\b` (ASCII) only at an edge that is an ASCII word character:
        // after "José" there is no ASCII word boundary to find.
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let escaped: Vec<String> = terms
            .iter()
            .map(|t| {
                let open = if word(t.chars().next()) { r"\b" } else { "" };
                let close = if word(t.chars().last()) { r"\b" } else { "" };
                format!("{open}{}{close}", escape(t))
            })
            .collect();
        let flags = if dict.case_sensitive { "" } else { "(?i)" };
        let max_len = terms.iter().map(|t| t.len()).max().unwrap_or(1);
        out.push(Located {
            rule: DetectorRule {
                kind: dict.kind,
                class: dict.class,
                pattern: format!("{flags}(?:{})", escaped.join("|")),
                confidence: dict.confidence,
                validator: None,
                context: Vec::new(),
                context_required: false,
                context_boost: 0.0,
                max_len,
                description: dict.description,
            },
            file: file.to_path_buf(),
            line,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn check_common(kind: &str, confidence: f32) -> Result<(), String> {
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "type `{kind}` must be UPPER_SNAKE_CASE (A-Z, 0-9, _)"
        ));
    }
    if !(0.0..=1.0).contains(&confidence) {
        return Err(format!("{kind}: confidence {confidence} is outside 0..1"));
    }
    Ok(())
}

/// Escapes a dictionary term for the pattern syntax.
fn escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 4);
    for c in term.chars() {
        if "\\.+*?()|[]{}^$#&-~ ".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_is_reported_with_its_line() {
        let text =
            "[[detector]]\ntype = \"X\"\nclass = \"secret\"\npattern = \"a\"\nconfidence = 0.5\n";
        let err = parse_rule_file(Path::new("r.toml"), text).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].reason.contains("unknown variant"),
            "{}",
            err[0].reason
        );
        assert_eq!(err[0].line, 3);

        let text = "[[detector]]\ntype = \"X\"\nclass = \"public\"\npattern = \"a\"\nconfidence = 0.5\nfrobnicate = 1\n";
        let err = parse_rule_file(Path::new("r.toml"), text).unwrap_err();
        assert!(err[0].reason.contains("frobnicate"), "{}", err[0].reason);

        let text = "\n\n[[detector]]\ntype = \"lower\"\nclass = \"public\"\npattern = \"a\"\nconfidence = 0.5\n";
        let err = parse_rule_file(Path::new("r.toml"), text).unwrap_err();
        assert_eq!(err[0].line, 3);
        assert!(err[0].reason.contains("UPPER_SNAKE_CASE"));
    }

    #[test]
    fn dictionaries_become_escaped_alternations() {
        let text = "[[dictionary]]\ntype = \"CODENAME\"\nclass = \"restricted\"\nterms = [\"Blue Bird\", \"a.b\", \" \"]\n";
        let rules = parse_rule_file(Path::new("d.toml"), text).unwrap();
        assert_eq!(rules[0].rule.pattern, r"(?i)(?:\bBlue\ Bird\b|\ba\.b\b)");
        assert_eq!(rules[0].rule.max_len, 9);
    }
}
