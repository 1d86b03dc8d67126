//! Citadel's privacy room: finding personal data and secrets in text,
//! classifying it, and redacting it.
//!
//! - **Detectors are data.** `rules/privacy/*.toml` define each detector:
//!   a pattern, a validator (Luhn, IBAN mod 97, SSN ranges, …), context
//!   words, a confidence and a [`DataClass`]; dictionaries of terms too.
//!   A broken file is refused with file, line and reason.
//! - **One pass.** [`Scanner`] compiles every detector into one
//!   multi-pattern automaton (regex-automata): linear time in the text,
//!   whatever the number of detectors, no backtracking.
//! - **Redaction** ([`Redactor`]): mask, keyed hash, or reversible
//!   pseudonyms; [`StreamRedactor`] does it on text that arrives in pieces
//!   (streamed answers) with a bounded hold-back, so a value split across
//!   pieces is still caught.
//! - **OpenAI bodies** ([`openai`]): which strings of a request or an answer
//!   are text to inspect.
//!
//! Non-features: no network at run time and no statistical NER model:
//! names and places are found only with context words (honorifics, "my
//! name is", street suffixes), which `docs/data-protection.md` says. Storage
//! of pseudonyms, consent and retention belong to the store and the gateway.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod class;
mod config;
pub mod consent;
pub mod openai;
mod redact;
mod rules;
mod scan;
mod stream;
mod validate;

pub use class::DataClass;
pub use config::{seed_rules, Privacy, PrivacyConfig, RecordKind, Redaction, RetentionRule};
pub use consent::{ConsentError, Consents, PurposeConfig};
pub use redact::{Mode, Pseudonym, PseudonymMap, Redactor};
pub use rules::{RuleProblem, RuleProblems};
pub use scan::{Finding, GaveUp, Scanner, DEFAULT_MIN_CONFIDENCE};
pub use stream::{StreamRedactor, StreamReidentifier, Tally};
pub use validate::Validator;

/// The shipped detector rules (`rules/privacy`), written into a new data
/// directory's `privacy-rules` folder: `(file name, contents)`.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    (
        "10-secrets.toml",
        include_str!("../../../rules/privacy/10-secrets.toml"),
    ),
    (
        "20-identifiers.toml",
        include_str!("../../../rules/privacy/20-identifiers.toml"),
    ),
    (
        "30-personal.toml",
        include_str!("../../../rules/privacy/30-personal.toml"),
    ),
];
