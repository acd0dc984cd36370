#!/usr/bin/env bash
# Time to the first server-sent event, direct to the OpenAI-compatible demo model vs through an
# Airlock `http` route (API key, credential injection, journal batched and strict), one run.
#
#   benches/sse_compare.sh [ROUNDS] [N]      (defaults: 3 rounds of 200 sequential streams)
#
# Prints the median and p90 per target and round, then a Markdown table of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-3}
N=${2:-200}
cargo build --profile bench -q -p airlock -p airlock-benches --bins
TTFE=$TARGET/release/sse_ttfe

UP=127.0.0.1:17400; BATCHED=127.0.0.1:17401; STRICT=127.0.0.1:17402
UPKEY=sk-upstream-bench; KEY=ak_bench_0123456789
"$TTFE" upstream --listen $UP --key $UPKEY & PIDS+=($!)
HASH=$(printf '%s' "$KEY" | "$AIRLOCK" identity hash-key)
printf '%s' "$UPKEY" >"$WORK/upstream.key"
for mode in batched strict; do
  addr=$BATCHED; [ $mode = strict ] && addr=$STRICT
  start_airlock $mode <<CFG
[[route]]
name = "llm"
listen = "$addr"
protocol = "http"
upstream = "$UP"
[[route.credential]]
header = "authorization"
prefix = "Bearer "
file = "$WORK/upstream.key"
[[identity.api_key]]
name = "bench"
sha256 = "$HASH"
CFG
done
wait_listening $UP $BATCHED $STRICT

declare -A P50 P90
for round in $(seq "$ROUNDS"); do
  for t in direct airlock_batched airlock_strict; do
    case $t in direct) a=$UP; k=$UPKEY;; airlock_batched) a=$BATCHED; k=$KEY;; airlock_strict) a=$STRICT; k=$KEY;; esac
    read -r p50 p90 < <("$TTFE" measure --target $a --key $k --n "$N")
    echo "round $round  $t  first event p50 ${p50} ms  p90 ${p90} ms"
    P50[$t]="${P50[$t]:-} $p50"; P90[$t]="${P90[$t]:-} $p90"
  done
done
d=$(median <<<"${P50[direct]}")
echo
echo "| target | first event p50 ms (median of rounds) | p90 ms | added p50 vs direct |"
echo "|---|---|---|---|"
for t in direct airlock_batched airlock_strict; do
  m=$(median <<<"${P50[$t]}"); q=$(median <<<"${P90[$t]}")
  printf '| %s | %.3f | %.3f | %+.3f |\n' "$t" "$m" "$q" "$(echo "$m - $d" | bc -l)"
done
