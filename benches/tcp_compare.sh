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
ROUNDS=${1:-3}
SECS=${2:-5}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --profile bench -q -p airlock -p airlock-benches --bins --benches
AIRLOCK=$TARGET/release/airlock
LOAD=$TARGET/release/tcp_load
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

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
  cat >"$WORK/$mode.toml" <<CFG
[journal]
data_dir = "$WORK/data-$mode"
durability = "$mode"
[admin]
enabled = false
[[route]]
name = "bench"
listen = "$addr"
protocol = "tcp"
upstream = "$ECHO"
max_connections = 10000
CFG
  "$AIRLOCK" run --config "$WORK/$mode.toml" --log=warn & PIDS+=($!)
done
for a in $ECHO $HAP $BATCHED $STRICT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/${a%:*}/${a#*:}) 2>/dev/null && break; sleep 0.1; done
  (exec 3<>/dev/tcp/${a%:*}/${a#*:}) 2>/dev/null || { echo "nothing listens on $a" >&2; exit 1; }
done

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

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[1] "–" a[NR]}'; }
echo
echo "| target | MB/s echoed (median, range) | × direct | × HAProxy | conns/s (median, range) | × direct | × HAProxy |"
echo "|---|---|---|---|---|---|---|"
d_tp=$(echo "${TP[direct]}" | median); h_tp=$(echo "${TP[haproxy]}" | median)
d_cr=$(echo "${CR[direct]}" | median); h_cr=$(echo "${CR[haproxy]}" | median)
for n in "${names[@]}"; do
  tp=$(echo "${TP[$n]}" | median); cr=$(echo "${CR[$n]}" | median)
  printf "| %s | %s (%s) | %.2f | %.2f | %s (%s) | %.2f | %.2f |\n" "$n" "$tp" "$(echo "${TP[$n]}" | spread)" \
    "$(echo "$tp / $d_tp" | bc -l)" "$(echo "$tp / $h_tp" | bc -l)" "$cr" "$(echo "${CR[$n]}" | spread)" \
    "$(echo "$cr / $d_cr" | bc -l)" "$(echo "$cr / $h_cr" | bc -l)"
done
