#!/usr/bin/env python3
"""Run Microsoft Presidio over the benchmark corpus (bench/privacy).

What: analyzes corpus.txt with presidio-analyzer's AnalyzerEngine (language
"en", every predefined recognizer Presidio enables by default) and writes one
JSON line per finding,

    {"type": "EMAIL_ADDRESS", "start": 1234, "end": 1255, "score": 1.0}

with byte offsets into the corpus file, plus, with --timing, how long the
analyze() calls took.

Why: score.py scores these predictions and Citadel's against the same labels
(make_corpus.py). Presidio's entity names for the shared types (EMAIL_ADDRESS,
PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS) are the names the
labels use, so no mapping is needed; its other types (DATE_TIME, URL,
US_DRIVER_LICENSE, US_BANK_NUMBER, ...) are written as they are and score.py
ignores them unless asked for them.

How:
  * NLP engine. Presidio normally loads a spaCy model (en_core_web_lg), which
    is fetched from GitHub, not PyPI, so it cannot be installed here. The
    engine below is spaCy's blank English pipeline (tokenizer, stop words)
    plus spaCy's lookup lemmatizer (tables from the spacy-lookups-data
    package). The pattern recognizers (e-mail, phone, credit card, IBAN, US
    SSN, IP, ...) therefore work as usual, including the context words that
    raise their scores ("phone", "card", "iban", ...), which Presidio matches
    on lemmas. What is lost is spaCy's NER: PERSON, LOCATION, NRP and the
    NER half of DATE_TIME are never found. None of those is a labelled type.
  * Threshold. Presidio's own default: analyze() without score_threshold, so
    each recognizer's threshold applies, 0 when it has none; low-score hits
    (e.g. a phone number or SSN without context words) are kept, with their
    score. score.py --min-score can apply a threshold afterwards.
  * Documents. A gateway sees one message at a time, so the corpus is split
    on blank lines and any piece longer than 4 KiB is cut further on line
    boundaries; each piece is analyzed on its own and its results are moved
    back to corpus offsets.
  * Timing. Only the analyze() calls are timed (time.perf_counter), not the
    engine construction nor one warm-up call that loads Presidio's lazy data.
  * Offline. tldextract (used by the e-mail recognizer) is told not to fetch
    the public suffix list and uses the snapshot it ships.

    target/bench-venv/bin/python bench/privacy/presidio_scan.py \\
        --corpus /tmp/pb/corpus.txt --out /tmp/pb/presidio.jsonl --timing /tmp/pb/presidio-timing.json
"""

import argparse
import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from importlib.metadata import version

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import spacy  # noqa: E402
from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402

CHUNK = 4096


class BlankSpacyNlpEngine(SpacyNlpEngine):
    """SpacyNlpEngine on spacy.blank("en") + lookup lemmatizer: tokens and lemmas, no NER."""

    def __init__(self):
        super().__init__(models=[{"lang_code": "en", "model_name": "blank:en"}])

    def load(self):
        nlp = spacy.blank("en")
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()
        self.nlp = {"en": nlp}


def documents(text):
    """Yield (offset, piece): blank-line separated paragraphs, cut to <= CHUNK chars on line boundaries."""
    for para in re.finditer(r"[^\n]+(?:\n[^\n]+)*", text):
        start, end = para.span()
        while start < end:
            stop = end
            if end - start > CHUNK:
                cut = text.rfind("\n", start, start + CHUNK)
                if cut == -1:  # a single line longer than CHUNK stays whole
                    cut = text.find("\n", start + CHUNK, end)
                stop = end if cut == -1 else cut + 1
            yield start, text[start:stop]
            start = stop


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="corpus.txt from make_corpus.py")
    ap.add_argument("--out", required=True, help="predictions, JSON lines")
    ap.add_argument("--timing", help="write timing and setup as JSON here")
    args = ap.parse_args()

    raw = open(args.corpus, "rb").read()
    text = raw.decode("utf-8")
    if text.isascii():
        byte_at = range(len(text) + 1)
    else:
        byte_at = list(itertools.accumulate((len(c.encode("utf-8")) for c in text), initial=0))

    nlp_engine = BlankSpacyNlpEngine()
    nlp_engine.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
    docs = list(documents(text))
    analyzer.analyze(text=docs[0][1], language="en")  # warm-up, not timed

    found = []
    seconds = 0.0
    for offset, doc in docs:
        t0 = time.perf_counter()
        results = analyzer.analyze(text=doc, language="en")
        seconds += time.perf_counter() - t0
        found.extend((offset + r.start, offset + r.end, r.entity_type, r.score) for r in results)

    found.sort()
    with open(args.out, "w", encoding="utf-8") as f:
        for start, end, typ, score in found:
            f.write(json.dumps({"type": typ, "start": byte_at[start], "end": byte_at[end],
                                "score": round(score, 4)}) + "\n")

    timing = {
        "bytes": len(raw),
        "seconds": round(seconds, 3),
        "mb_per_s": round(len(raw) / 1e6 / seconds, 4),
        "presidio_version": version("presidio-analyzer"),
        "spacy_version": spacy.__version__,
        "nlp": "spacy.blank(en)",
        "lemmatizer": "spacy lookup (spacy-lookups-data)",
        "score_threshold": "presidio default (per-recognizer, else 0): all results kept",
        "documents": len(docs),
        "predictions": len(found),
    }
    if args.timing:
        with open(args.timing, "w", encoding="utf-8") as f:
            json.dump(timing, f, indent=2)
            f.write("\n")
    per_type = " ".join(f"{t}={n}" for t, n in sorted(Counter(t for *_, t, _ in found).items()))
    print(f"presidio {timing['presidio_version']}: {len(docs)} documents, {len(raw)} bytes in "
          f"{seconds:.2f} s ({timing['mb_per_s']} MB/s); {per_type}", file=sys.stderr)


if __name__ == "__main__":
    main()
