#!/usr/bin/env python3
"""Score PHI span predictions against a phi_corpus.py corpus.

  python3 phi_score.py corpus.jsonl preds.jsonl [--json]

preds.jsonl lines: {"id": int, "entities": [{"type": T, "start": s, "end": e}]}; a corpus id
missing from preds means no predictions for that document.

Matching (per document, per type, spans are [start, end)):
  - a prediction is a true positive if it is matched to an overlapping gold entity of the same
    type; each gold entity is matched at most once (maximum bipartite matching, so a gold split
    into two predictions yields one TP and one FP);
  - a gold entity is recalled if any same-type prediction overlaps it.
Per type: gold, pred, tp, precision = tp/pred, recall = recalled/gold. Types that only appear in
predictions are listed too and count against overall precision. "overall" is micro-averaged over
all types; "checksum" is the micro average over CREDIT_CARD, NPI, DEA, IBAN, VIN, IMEI.
overall.recall_any_type additionally counts a gold entity as covered when a prediction of any type
overlaps it (what matters to a masking gateway, which redacts whatever the label).
"""
import argparse
import collections
import json
import sys

CHECKSUM_TYPES = ["CREDIT_CARD", "NPI", "DEA", "IBAN", "VIN", "IMEI"]


def overlaps(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def max_matching(preds, golds):
    """Size of a maximum matching between predictions and overlapping golds (Kuhn's algorithm)."""
    adj = [[j for j, g in enumerate(golds) if overlaps(p, g)] for p in preds]
    owner = [-1] * len(golds)

    def augment(i, seen):
        for j in adj[i]:
            if j not in seen:
                seen.add(j)
                if owner[j] == -1 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(1 for i in range(len(preds)) if augment(i, set()))


def read_jsonl(path):
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: {e}")


def ratio(a, b):
    return round(a / b, 4) if b else None


def score(corpus, preds):
    stats = collections.defaultdict(lambda: collections.Counter())
    any_type_recalled = 0
    for doc in corpus:
        gold = doc["entities"]
        pred = preds.get(doc["id"], [])
        n = len(doc["text"])
        for p in pred:
            if not (0 <= p["start"] < p["end"] <= n):
                sys.exit(f"doc {doc['id']}: prediction span out of range: {p}")
        types = {e["type"] for e in gold} | {p["type"] for p in pred}
        for t in types:
            g_t = [e for e in gold if e["type"] == t]
            p_t = [p for p in pred if p["type"] == t]
            s = stats[t]
            s["gold"] += len(g_t)
            s["pred"] += len(p_t)
            s["tp"] += max_matching(p_t, g_t)
            s["recalled"] += sum(1 for g in g_t if any(overlaps(p, g) for p in p_t))
        any_type_recalled += sum(1 for g in gold if any(overlaps(p, g) for p in pred))

    def summarize(counter):
        return {"gold": counter["gold"], "pred": counter["pred"], "tp": counter["tp"],
                "recalled": counter["recalled"],
                "precision": ratio(counter["tp"], counter["pred"]),
                "recall": ratio(counter["recalled"], counter["gold"])}

    per_type = {t: summarize(stats[t]) for t in sorted(stats)}
    total = sum((stats[t] for t in stats), collections.Counter())
    overall = summarize(total)
    overall["recall_any_type"] = ratio(any_type_recalled, total["gold"])
    chk = sum((stats[t] for t in CHECKSUM_TYPES if t in stats), collections.Counter())
    checksum = summarize(chk)
    checksum["types"] = CHECKSUM_TYPES
    return {"per_type": per_type, "overall": overall, "checksum": checksum}


def fmt(x):
    return "-" if x is None else f"{x:.3f}"


def markdown(result):
    rows = ["| type | gold | pred | TP | precision | recall |", "|---|---:|---:|---:|---:|---:|"]
    for t, s in result["per_type"].items():
        rows.append(f"| {t} | {s['gold']} | {s['pred']} | {s['tp']} | {fmt(s['precision'])} "
                    f"| {fmt(s['recall'])} |")
    for name in ("overall", "checksum"):
        s = result[name]
        rows.append(f"| **{name}** | {s['gold']} | {s['pred']} | {s['tp']} | "
                    f"**{fmt(s['precision'])}** | **{fmt(s['recall'])}** |")
    rows.append("")
    rows.append(f"Recall if any predicted type counts (masking view): "
                f"{fmt(result['overall']['recall_any_type'])}")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("preds")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    corpus = list(read_jsonl(a.corpus))
    ids = {d["id"] for d in corpus}
    preds = {}
    for rec in read_jsonl(a.preds):
        if rec["id"] not in ids:
            sys.exit(f"prediction for unknown document id {rec['id']}")
        preds.setdefault(rec["id"], []).extend(rec.get("entities", []))
    result = score(corpus, preds)
    print(json.dumps(result) if a.json else markdown(result))


if __name__ == "__main__":
    main()
