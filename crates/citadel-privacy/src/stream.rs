//! Redaction of text that arrives in pieces (a streamed answer's deltas).
//!
//! A value may be split across pieces (`bob@exa` + `mple.com`), so text is
//! not passed on until it is known not to be the start of a value still
//! arriving: after each piece the scanner's automaton is asked where a
//! match could still be in progress, and only the text before that point
//! is redacted and released. Ordinary prose is released at once; a
//! half-written address or card number waits for its end. The hold is
//! bounded ([`StreamRedactor::new`]'s `max_hold`), so memory stays small
//! whatever the answer; a value longer than the hold is not guaranteed to
//! be caught whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::class::DataClass;
use crate::redact::{PseudonymMap, Redactor};
use crate::scan::{Finding, Scanner};

/// Bytes of already released text kept for context words.
const CONTEXT_TAIL: usize = 48;

/// What was found, by type: counts and the highest class, never values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Findings per type.
    pub counts: BTreeMap<String, u64>,
    /// The highest class found (`None` when nothing was found).
    pub class: Option<DataClass>,
    /// Every class found.
    pub classes: BTreeSet<DataClass>,
}

impl Tally {
    /// Counts findings.
    pub fn add(&mut self, findings: &[Finding]) {
        for f in findings {
            *self.counts.entry(f.kind.to_string()).or_default() += 1;
            self.class = self.class.max(Some(f.class));
            self.classes.insert(f.class);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        for (k, n) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += n;
        }
        self.class = self.class.max(other.class);
        self.classes.extend(other.classes.iter().copied());
    }

    /// Total findings.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Redacts one stream of text pieces.
#[derive(Debug)]
pub struct StreamRedactor {
    scanner: Arc<Scanner>,
    redactor: Arc<Redactor>,
    /// Released raw text, the last few bytes (context only).
    tail: String,
    /// Text not yet released.
    pending: String,
    max_hold: usize,
    /// What was found so far.
    pub tally: Tally,
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl StreamRedactor {
    /// A redactor holding back at most `max_hold` bytes.
    pub fn new(scanner: Arc<Scanner>, redactor: Arc<Redactor>, max_hold: usize) -> Self {
        Self {
            scanner,
            redactor,
            tail: String::new(),
            pending: String::new(),
            max_hold: max_hold.max(1),
            tally: Tally::default(),
        }
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next piece; returns the redacted text that may go out now.
    pub fn push(&mut self, piece: &str, map: &mut PseudonymMap) -> String {
        self.pending.push_str(piece);
        self.release(false, map)
    }

    /// The stream ended: everything held, redacted.
    pub fn finish(&mut self, map: &mut PseudonymMap) -> String {
        self.release(true, map)
    }

    fn release(&mut self, end: bool, map: &mut PseudonymMap) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let offset = self.tail.len();
        let mut text = String::with_capacity(offset + self.pending.len());
        text.push_str(&self.tail);
        text.push_str(&self.pending);
        let findings: Vec<Finding> = self
            .scanner
            .scan(&text)
            .into_iter()
            .filter(|f| f.start >= offset)
            .collect();
        let mut cut = if end {
            text.len()
        } else {
            match self.scanner.in_progress_from(&text, offset) {
                Ok(Some(p)) => p,
                Ok(None) => text.len(),
                Err(_) => text.len().saturating_sub(self.scanner.longest_match()),
            }
        };
        // Never hold more than the bound.
        let floor = floor_char(&text, text.len().saturating_sub(self.max_hold)).max(offset);
        let forced = cut < floor;
        cut = cut.max(floor);
        // A finding across the cut is released whole or held whole.
        for f in &findings {
            if f.start < cut && f.end > cut {
                cut = if forced { f.end } else { f.start };
            }
        }
        let cut = cut.max(offset);
        let released: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.end <= cut)
            .map(|mut f| {
                f.start -= offset;
                f.end -= offset;
                f
            })
            .collect();
        self.tally.add(&released);
        let raw = &text[offset..cut];
        let out = self.redactor.apply(raw, &released, map);
        // Keep the raw tail for context words of what follows.
        let tail_from = floor_char(&text, cut.saturating_sub(CONTEXT_TAIL));
        self.tail = text[tail_from..cut].to_owned();
        self.pending = text[cut..].to_owned();
        out
    }
}

/// Gives back pseudonymized values in text that arrives in pieces: a
/// token split across pieces (`<EMAIL_ADDR` + `ESS_1a2b3c4d>`) is held
/// until it is whole (at most as long as the longest token).
#[derive(Debug, Default)]
pub struct StreamReidentifier {
    pending: String,
    /// Tokens given back so far.
    pub replaced: u64,
}

impl StreamReidentifier {
    /// Takes the next piece; returns what may go out now, re-identified.
    pub fn push(&mut self, piece: &str, map: &PseudonymMap) -> String {
        self.pending.push_str(piece);
        if map.is_empty() {
            return std::mem::take(&mut self.pending);
        }
        // Hold from the last `<` that is not closed, if it could still
        // become a token.
        let hold_from = match self.pending.rfind('<') {
            Some(open)
                if !self.pending[open..].contains('>')
                    && self.pending.len() - open < map.longest_token() =>
            {
                open
            }
            _ => self.pending.len(),
        };
        let ready: String = self.pending.drain(..hold_from).collect();
        map.reidentify_counting(&ready, &mut self.replaced)
    }

    /// The stream ended: whatever is held.
    pub fn finish(&mut self, map: &PseudonymMap) -> String {
        let rest = std::mem::take(&mut self.pending);
        map.reidentify_counting(&rest, &mut self.replaced)
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::redact::Mode;
    use crate::scan::tests::RULES;

    fn redactor() -> StreamRedactor {
        let scanner = Arc::new(Scanner::from_texts(&[("t.toml", RULES)]).unwrap());
        let redactor = Arc::new(Redactor::new(Mode::Mask, Zeroizing::new(vec![1])));
        StreamRedactor::new(scanner, redactor, 512)
    }

    #[test]
    fn values_split_at_every_point_are_still_redacted() {
        let text = "Contact bob@example.org or pay with 4111 1111 1111 1111 today.";
        for split in 1..text.len() {
            // Three pieces: the second ends a few bytes later (or at once).
            for second in [
                split,
                (split + 3).min(text.len()),
                (split + 11).min(text.len()),
            ] {
                let mut r = redactor();
                let mut map = PseudonymMap::default();
                let mut out = r.push(&text[..split], &mut map);
                out += &r.push(&text[split..second], &mut map);
                out += &r.push(&text[second..], &mut map);
                out += &r.finish(&mut map);
                assert_eq!(
                    out, "Contact <EMAIL_ADDRESS> or pay with <CREDIT_CARD> today.",
                    "split at {split} and {second}"
                );
                assert_eq!(r.tally.total(), 2);
            }
        }
    }

    #[test]
    fn pseudonyms_split_across_pieces_are_given_back() {
        use crate::redact::Pseudonym;
        let mut map = PseudonymMap::default();
        map.insert(Pseudonym {
            token: "<EMAIL_ADDRESS_1a2b3c4d>".into(),
            kind: "EMAIL_ADDRESS".into(),
            value: Zeroizing::new("bob@example.org".into()),
        });
        let answer = "Sure, <EMAIL_ADDRESS_1a2b3c4d> is noted; 1 < 2.";
        for split in 1..answer.len() {
            let mut r = StreamReidentifier::default();
            let mut out = r.push(&answer[..split], &map);
            out += &r.push(&answer[split..], &map);
            out += &r.finish(&map);
            assert_eq!(
                out, "Sure, bob@example.org is noted; 1 < 2.",
                "split {split}"
            );
        }
    }

    #[test]
    fn prose_is_released_at_once_and_holding_is_bounded() {
        let mut r = redactor();
        let mut map = PseudonymMap::default();
        assert_eq!(r.push("Hello there. ", &mut map), "Hello there. ");
        assert_eq!(r.push("Write to bob@exa", &mut map), "Write to ");
        assert_eq!(r.held(), 7);
        let mut r = StreamRedactor::new(r.scanner.clone(), r.redactor.clone(), 16);
        let long = "a".repeat(40);
        let out = r.push(&long, &mut map);
        assert!(r.held() <= 16 && out.len() + r.held() == 40);
    }
}
