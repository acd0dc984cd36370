#!/usr/bin/env python3
"""Run Microsoft Presidio's pattern/checksum recognizers over a phi_corpus.py corpus.

  python3 benches/presidio_eval.py corpus.jsonl --preds out.jsonl --stats stats.json \
      [--repeat N] [--nlp tokens|noop] [--threshold X] [--with-disabled-us-health]
  python3 tests/python/phi_score.py corpus.jsonl out.jsonl

What runs: presidio-analyzer's AnalyzerEngine with the predefined recognizers of its default
configuration for English (regex + checksum validation + context words), minus the NER
recognizer: no spaCy model can be downloaded here, so PERSON/LOCATION/ORG (NER-only in Presidio)
are never predicted. The NLP engine is one of:
  tokens (default)  spaCy's rule-based English tokenizer (spacy.blank("en"), ships with spaCy,
                    no model) with each token's lower-cased text standing in for its lemma, so
                    Presidio's LemmaContextAwareEnhancer can still use context words in the text
                    (it matches context words as substrings of those lemmas);
  noop              Presidio's NoOpNlpEngine: no tokens, so no context boost from the text.
Score threshold: Presidio's default, AnalyzerEngine(default_score_threshold=0), i.e. every result
is kept whatever its score (override with --threshold).

Presidio entity types are mapped onto the corpus types (MAPPING below); results of unmapped types
(US_ITIN, US_PASSPORT, UK_NHS, UUID, CRYPTO, ...) are dropped and counted under "dropped".
Throughput: corpus text bytes x repeat / wall seconds of the analyze loop only (engine start-up
and one warm-up call excluded); MB = 10^6 bytes. Stats go to stderr and to --stats if given.
"""
import argparse
import collections
import json
import os
import sys
import time
import warnings

# tldextract (used by Presidio's EmailRecognizer) would otherwise try to download the public
# suffix list on first use; an empty URL list makes it use the snapshot bundled in the wheel.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

MAPPING = {
    "US_SSN": "SSN",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "URL": "URL",
    "IP_ADDRESS": "IP_ADDRESS",
    "DATE_TIME": "DATE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "MEDICAL_LICENSE": "DEA",  # Presidio's MedicalLicenseRecognizer is the DEA-number pattern
    "US_DRIVER_LICENSE": "LICENSE",
    "US_BANK_NUMBER": "ACCOUNT",
    "MAC_ADDRESS": "MAC_ADDRESS",
    # Only produced with --with-disabled-us-health (off in Presidio's default config):
    "US_NPI": "NPI",
    "US_HEALTH_INSURANCE_MEMBER_ID": "HEALTH_PLAN",
    "US_MBI": "HEALTH_PLAN",
}
DISABLED_US_HEALTH = ["UsNpiRecognizer", "UsHealthInsuranceMemberIdRecognizer", "UsMbiRecognizer"]


def token_nlp_engine():
    """SpacyNlpEngine over spacy.blank('en'): tokens + stop words, lower-cased text as lemmas."""
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class TokenOnlyNlpEngine(SpacyNlpEngine):
        def load(self):
            self.nlp = {"en": spacy.blank("en")}

        def _doc_to_nlp_artifact(self, doc, language):
            return NlpArtifacts(entities=[], tokens=doc,
                                tokens_indices=[t.idx for t in doc],
                                lemmas=[t.lower_ for t in doc],
                                nlp_engine=self, language=language, scores=[])

    engine = TokenOnlyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.load()
    return engine


def build_engine(nlp_mode, threshold, with_disabled):
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer import predefined_recognizers as pr
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    if nlp_mode == "noop":
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        nlp.load()
    else:
        nlp = token_nlp_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp)
    # Drop the NER recognizer: without a trained pipeline it would only add overhead.
    registry.recognizers = [r for r in registry.recognizers
                            if not isinstance(r, pr.SpacyRecognizer)]
    if with_disabled:
        for name in DISABLED_US_HEALTH:
            registry.add_recognizer(getattr(pr, name)())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoOp + lemma enhancer warning; documented above
        engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"],
                                default_score_threshold=threshold)
    return engine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--preds", required=True, help="write predictions (phi_score.py format)")
    ap.add_argument("--stats", help="also write the stats JSON here")
    ap.add_argument("--repeat", type=int, default=1, help="analyze the corpus N times (timing)")
    ap.add_argument("--nlp", choices=["tokens", "noop"], default="tokens")
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="score threshold (Presidio's AnalyzerEngine default is 0)")
    ap.add_argument("--with-disabled-us-health", action="store_true",
                    help="also enable " + ", ".join(DISABLED_US_HEALTH))
    a = ap.parse_args()

    with open(a.corpus) as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    total_bytes = sum(len(d["text"].encode()) for d in docs)

    t0 = time.perf_counter()
    engine = build_engine(a.nlp, a.threshold, a.with_disabled_us_health)
    engine.analyze("Warm-up: call 617-253-1000 or mail a.b@example.com, https://x.org", "en")
    startup = time.perf_counter() - t0

    results = {}
    t0 = time.perf_counter()
    for _ in range(a.repeat):
        for d in docs:
            results[d["id"]] = engine.analyze(text=d["text"], language="en")
    seconds = time.perf_counter() - t0

    dropped, kept = collections.Counter(), collections.Counter()
    with open(a.preds, "w") as out:
        for d in docs:
            ents = []
            for r in sorted(results[d["id"]], key=lambda r: (r.start, r.end, r.entity_type)):
                ours = MAPPING.get(r.entity_type)
                if ours is None:
                    dropped[r.entity_type] += 1
                    continue
                kept[r.entity_type] += 1
                ents.append({"type": ours, "start": r.start, "end": r.end,
                             "score": round(r.score, 3), "presidio": r.entity_type})
            out.write(json.dumps({"id": d["id"], "entities": ents}) + "\n")

    from importlib.metadata import version
    stats = {
        "mb_per_s": round(total_bytes * a.repeat / seconds / 1e6, 4),
        "docs": len(docs) * a.repeat,
        "bytes": total_bytes * a.repeat,
        "seconds": round(seconds, 3),
        "repeat": a.repeat,
        "startup_seconds": round(startup, 3),
        "presidio_analyzer": version("presidio-analyzer"),
        "nlp": a.nlp,
        "score_threshold": a.threshold,
        "recognizers": sorted(r.name for r in engine.registry.recognizers),
        "kept": dict(sorted(kept.items())),
        "dropped": dict(sorted(dropped.items())),
        "mapping": {k: v for k, v in MAPPING.items()
                    if a.with_disabled_us_health or v not in ("NPI", "HEALTH_PLAN")},
    }
    line = json.dumps(stats)
    print(line, file=sys.stderr)
    if a.stats:
        with open(a.stats, "w") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
