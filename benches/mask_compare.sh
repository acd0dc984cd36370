#!/usr/bin/env bash
# Masking throughput on the labeled synthetic corpus (tests/python/phi_corpus.py, seed 7): Airlock's
# detectors (benches/src/bin/mask_corpus.rs, one thread) vs Microsoft Presidio's pattern and
# checksum recognizers (benches/presidio_eval.py; no spaCy model can be downloaded here, so its NER
# recognizer does not run), on the same texts in the same run; then both engines' precision and
# recall per entity (tests/python/phi_score.py).
#
#   benches/mask_compare.sh [DOCS] [ROUNDS]     (defaults: 2000 documents, 3 rounds)
#
# Presidio runs in a virtualenv at ${PRESIDIO_VENV:-/tmp/presidio-venv}, created from
# benches/requirements-presidio.txt when missing (about 30 s and 400 MB: it pulls spaCy).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
DOCS=${1:-2000}
ROUNDS=${2:-3}
VENV=${PRESIDIO_VENV:-/tmp/presidio-venv}
cargo build --profile bench -q -p airlock-benches --bin mask_corpus
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r benches/requirements-presidio.txt
fi
python3 tests/python/phi_corpus.py --seed 7 --docs "$DOCS" --out "$WORK/corpus.jsonl"
echo "corpus: $DOCS documents, $(python3 -c "import json,sys; print(sum(len(json.loads(l)['text']) for l in open(sys.argv[1])))" "$WORK/corpus.jsonl") bytes of text"

airlock_mbs=(); presidio_mbs=()
for r in $(seq "$ROUNDS"); do
  a=$("$TARGET/release/mask_corpus" "$WORK/corpus.jsonl" --repeat 20 | python3 -c "import json,sys; print(json.load(sys.stdin)['mb_per_s'])")
  "$VENV/bin/python" benches/presidio_eval.py "$WORK/corpus.jsonl" --preds "$WORK/presidio.jsonl" \
    --stats "$WORK/presidio.json" --repeat 1 2>/dev/null
  p=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mb_per_s'])" "$WORK/presidio.json")
  echo "round $r: airlock $a MB/s, presidio $p MB/s, ratio $(echo "$a / $p" | bc -l | xargs printf '%.0f')x"
  airlock_mbs+=("$a"); presidio_mbs+=("$p")
done
a=$(echo "${airlock_mbs[@]}" | median); p=$(echo "${presidio_mbs[@]}" | median)
echo
echo "| engine | MB/s per core (median of $ROUNDS) | range |"
echo "|---|---:|---|"
echo "| Airlock | $(printf '%.1f' "$a") | $(echo "${airlock_mbs[@]}" | range) |"
echo "| Presidio (patterns + checksums) | $(printf '%.3f' "$p") | $(echo "${presidio_mbs[@]}" | range) |"
echo "| ratio | $(echo "$a / $p" | bc -l | xargs printf '%.0f')x | |"
echo
echo "Presidio accuracy on the same corpus:"
python3 tests/python/phi_score.py "$WORK/corpus.jsonl" "$WORK/presidio.jsonl"
