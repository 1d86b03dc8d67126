#!/usr/bin/env python3
"""Score detectors' predictions against the benchmark labels (bench/privacy).

What: for each type and each tool, precision, recall and F1 of the tool's
predictions (JSON lines {"type", "start", "end"[, "score"]}, byte offsets)
against labels.jsonl from make_corpus.py, printed as a Markdown table
(type | tool | labels | predicted | TP | precision | recall | F1), with one
"all" row per tool that sums the counts over the scored types (micro
average). --json OUT writes the same rows as JSON.

Why: one scorer, one matching rule, for every tool in the comparison.

How: a prediction is a true positive when it has the same type as a label and
their byte spans overlap; each label and each prediction counts at most once,
and where several pairs compete the pairs with the greatest overlap are
matched first. Predictions of types outside --types are ignored, so a tool is
neither rewarded nor punished for types the labels do not cover. Default
types: every type in the labels. --min-score drops predictions whose "score"
is below it (predictions without a score are kept).

    python3 bench/privacy/score.py --labels /tmp/pb/labels.jsonl \\
        --pred presidio=/tmp/pb/presidio.jsonl --pred citadel=/tmp/pb/citadel.jsonl
"""

import argparse
import bisect
import json
import sys
from collections import defaultdict


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def spans_by_type(rows, types):
    out = defaultdict(list)
    for r in rows:
        if r["type"] in types:
            out[r["type"]].append((r["start"], r["end"]))
    return {t: sorted(v) for t, v in out.items()}


def true_positives(labels, preds):
    """Matched pairs: overlapping spans, each used once, greatest overlap first."""
    starts = [s for s, _ in labels]
    longest = max((e - s for s, e in labels), default=0)
    pairs = []
    for j, (ps, pe) in enumerate(preds):
        # candidate labels start in [ps - longest, pe); they overlap if they end after ps
        for i in range(bisect.bisect_left(starts, ps - longest), bisect.bisect_left(starts, pe)):
            ls, le = labels[i]
            if le > ps:
                pairs.append((min(le, pe) - max(ls, ps), i, j))
    pairs.sort(key=lambda p: -p[0])
    used_labels, used_preds = set(), set()
    for _, i, j in pairs:
        if i not in used_labels and j not in used_preds:
            used_labels.add(i)
            used_preds.add(j)
    return len(used_labels)


def row(typ, tool, n_labels, n_pred, tp):
    precision = tp / n_pred if n_pred else None
    recall = tp / n_labels if n_labels else None
    f1 = 2 * tp / (n_labels + n_pred) if n_labels + n_pred else None
    return {"type": typ, "tool": tool, "labels": n_labels, "predicted": n_pred, "tp": tp,
            "precision": precision, "recall": recall, "f1": f1}


def fmt(x):
    return "-" if x is None else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", required=True, help="labels.jsonl from make_corpus.py")
    ap.add_argument("--pred", action="append", required=True, metavar="NAME=FILE",
                    help="a tool's predictions (JSON lines); repeat for each tool")
    ap.add_argument("--types", help="comma-separated types to score (default: all label types)")
    ap.add_argument("--min-score", type=float, default=0.0,
                    help="ignore predictions whose score is below this (default 0: keep all)")
    ap.add_argument("--json", metavar="OUT", help="also write the rows as JSON here")
    args = ap.parse_args()

    label_rows = load(args.labels)
    types = args.types.split(",") if args.types else sorted({r["type"] for r in label_rows})
    labels = spans_by_type(label_rows, set(types))

    rows = []
    for spec in args.pred:
        name, sep, path = spec.partition("=")
        if not sep:
            sys.exit(f"--pred wants NAME=FILE, got {spec!r}")
        kept = [r for r in load(path) if r.get("score", 1.0) >= args.min_score]
        preds = spans_by_type(kept, set(types))
        totals = [0, 0, 0]
        for typ in types:
            ls, ps = labels.get(typ, []), preds.get(typ, [])
            tp = true_positives(ls, ps)
            rows.append(row(typ, name, len(ls), len(ps), tp))
            totals = [totals[0] + len(ls), totals[1] + len(ps), totals[2] + tp]
        rows.append(row("all", name, *totals))

    rows.sort(key=lambda r: (r["type"] == "all", r["type"]))  # stable: tools stay in --pred order
    print("| type | tool | labels | predicted | TP | precision | recall | F1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['type']} | {r['tool']} | {r['labels']} | {r['predicted']} | {r['tp']} | "
              f"{fmt(r['precision'])} | {fmt(r['recall'])} | {fmt(r['f1'])} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"types": types, "min_score": args.min_score, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
