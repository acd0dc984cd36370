#!/usr/bin/env bash
# Raw TCP on loopback, side by side in one run: direct vs Airlock (batched and strict) vs HAProxy
# (`mode tcp`, one thread). Rounds are interleaved so drift hits every target alike.
#
#   benches/tcp_compare.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s per measurement)
#
# Needs haproxy (apt) and release builds of `airlock` and `tcp_load` (built here). Prints a
# Markdown table of medians and ratios against direct and HAProxy for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-3}
SECS=${2:-5}
# Both gateways keep their journals across rounds: each journals ~500 MB/s of echo throughput, so
# a run needs about 1 GB per measured second. A full disk stops the journal (fail closed) and the
# run with it, so check first.
need_kb=$((ROUNDS * SECS * 1024 * 1024))
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
  echo "tcp_compare: about $((need_kb / 1024 / 1024)) GB free needed in $WORK, $((free_kb / 1024 / 1024)) GB there" >&2
  exit 1
fi
cargo build --profile bench -q -p airlock -p airlock-benches --bins --benches
LOAD=$TARGET/release/tcp_load

ECHO=127.0.0.1:17100; HAP=127.0.0.1:17101; BATCHED=127.0.0.1:17102; STRICT=127.0.0.1:17103
"$LOAD" serve --listen $ECHO & PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind $HAP
  default_backend b
backend b
  server echo $ECHO
CFG
haproxy -f "$WORK/haproxy.cfg" -db -q & PIDS+=($!)

for mode in batched strict; do
  addr=$BATCHED; [ $mode = strict ] && addr=$STRICT
  start_airlock $mode <<CFG
[[route]]
name = "bench"
listen = "$addr"
protocol = "tcp"
upstream = "$ECHO"
max_connections = 10000
CFG
done
wait_listening $ECHO $HAP $BATCHED $STRICT

declare -A TP CR
names=(direct haproxy airlock_batched airlock_strict)
declare -A ADDR=([direct]=$ECHO [haproxy]=$HAP [airlock_batched]=$BATCHED [airlock_strict]=$STRICT)
for r in $(seq "$ROUNDS"); do
  for n in "${names[@]}"; do
    TP[$n]+="$("$LOAD" throughput --addr "${ADDR[$n]}" --conns 4 --secs "$SECS") "
    CR[$n]+="$("$LOAD" connrate --addr "${ADDR[$n]}" --conns 8 --secs "$SECS") "
  done
  echo "round $r done" >&2
done

echo
echo "| target | MB/s echoed (median, range) | × direct | × HAProxy | conns/s (median, range) | × direct | × HAProxy |"
echo "|---|---|---|---|---|---|---|"
d_tp=$(echo "${TP[direct]}" | median); h_tp=$(echo "${TP[haproxy]}" | median)
d_cr=$(echo "${CR[direct]}" | median); h_cr=$(echo "${CR[haproxy]}" | median)
for n in "${names[@]}"; do
  tp=$(echo "${TP[$n]}" | median); cr=$(echo "${CR[$n]}" | median)
  printf "| %s | %s (%s) | %.2f | %.2f | %s (%s) | %.2f | %.2f |\n" "$n" "$tp" "$(echo "${TP[$n]}" | range)" \
    "$(echo "$tp / $d_tp" | bc -l)" "$(echo "$tp / $h_tp" | bc -l)" "$cr" "$(echo "${CR[$n]}" | range)" \
    "$(echo "$cr / $d_cr" | bc -l)" "$(echo "$cr / $h_cr" | bc -l)"
done
