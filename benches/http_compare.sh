#!/usr/bin/env bash
# HTTP on loopback, side by side in one run: direct (nginx serving a small JSON body) vs nginx
# `proxy_pass` (keep-alive upstream pool) vs Airlock (API-key auth, credential injection, journal
# batched and strict) vs a bare hyper proxy (`hyper_floor`: the gateway's HTTP parts and nothing
# else, the floor under Airlock's own work; also run with one single-threaded runtime per core,
# the best hyper did here). wrk drives HTTP/1.1 keep-alive, h2load drives HTTP/2
# (h2c). Rounds are interleaved so drift hits every target alike. A target that answers anything
# but 2xx stops the script: an error page served fast is not a result.
#
#   benches/http_compare.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 5 s per measurement)
#
# Needs nginx-light, wrk and nghttp2-client (apt) and a release build of `airlock` (built here).
# Prints one line per measurement and a Markdown table of medians for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-3}
SECS=${2:-5}
cargo build --profile bench -q -p airlock -p airlock-benches --bin airlock --bin hyper_floor

ORIGIN=17200; ORIGIN_H2=17201; NGINX=17202; NGINX_H2=17203; BATCHED=17204; STRICT=17205; FLOOR=17206; FLOOR_PC=17207
KEY=ak_bench_0123456789
# Two nginx instances. The origin has one worker, shared by every target. The proxy is its own
# instance with `worker_processes auto` (one per core, as Debian ships it), the same CPUs Airlock's
# runtime gets. (Until stop 20 one worker served both roles: measuring nginx's proxy, that worker
# also did the origin's work and held nginx to one core, which flattered every ratio by about a
# quarter.)
nginx_conf() { # NAME WORKERS SERVER-BLOCKS
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1.conf" <<CFG
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1; proxy_temp_path $WORK/$1; fastcgi_temp_path $WORK/$1;
  uwsgi_temp_path $WORK/$1; scgi_temp_path $WORK/$1;
  keepalive_requests 1000000;
$3
}
CFG
  nginx -c "$WORK/$1.conf" -g 'daemon off;' & PIDS+=($!)
}
nginx_conf origin 1 "
  server {
    listen 127.0.0.1:$ORIGIN;
    listen 127.0.0.1:$ORIGIN_H2 http2;
    location / { default_type application/json; return 200 '{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"}}]}'; }
  }"
nginx_conf proxy auto "
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    listen 127.0.0.1:$NGINX_H2 http2;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

HASH=$(printf '%s' "$KEY" | "$AIRLOCK" identity hash-key)
printf 'sk-upstream-bench' >"$WORK/upstream.key"
for mode in batched strict; do
  port=$BATCHED; [ $mode = strict ] && port=$STRICT
  start_airlock $mode <<CFG
[[route]]
name = "bench"
listen = "127.0.0.1:$port"
protocol = "http"
upstream = "127.0.0.1:$ORIGIN"
max_connections = 10000
[[route.credential]]
header = "authorization"
prefix = "Bearer "
file = "$WORK/upstream.key"
[[identity.api_key]]
name = "bench"
sha256 = "$HASH"
roles = ["agent"]
CFG
done
"$TARGET/release/hyper_floor" 127.0.0.1:$FLOOR 127.0.0.1:$ORIGIN & PIDS+=($!)
FLOOR_PER_CORE=1 "$TARGET/release/hyper_floor" 127.0.0.1:$FLOOR_PC 127.0.0.1:$ORIGIN & PIDS+=($!)
wait_listening 127.0.0.1:$ORIGIN 127.0.0.1:$NGINX 127.0.0.1:$BATCHED 127.0.0.1:$STRICT 127.0.0.1:$FLOOR 127.0.0.1:$FLOOR_PC

# wrk: rps and p50 latency (ms).
h1() {
  local out; out=$(wrk -t2 -c32 -d"${SECS}s" --latency -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1/v1/chat" 2>&1)
  if grep -q 'Non-2xx' <<<"$out"; then echo "wrk: non-2xx answers from port $1" >&2; exit 1; fi
  local rps p50
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  echo "$rps $p50"
}
# wrk with one connection, one request at a time: p50 latency (ms) of an unloaded gateway, where
# the 32-connection p50 above also holds the wait behind other requests.
h1_idle() {
  local out; out=$(wrk -t1 -c1 -d"${SECS}s" --latency -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1/v1/chat" 2>&1)
  if grep -q 'Non-2xx' <<<"$out"; then echo "wrk: non-2xx answers from port $1" >&2; exit 1; fi
  awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out"
}
# h2load: rps (32 clients, 10 streams each).
h2() {
  local n=$((SECS * 8000))
  local out; out=$(h2load -n "$n" -c 32 -m 10 -H "authorization: Bearer $KEY" "http://127.0.0.1:$1/v1/chat" 2>&1)
  if ! grep -qE "^status codes: $n 2xx" <<<"$out"; then echo "h2load: not every answer from port $1 was 2xx" >&2; exit 1; fi
  awk '/^finished in/ {gsub(/,/,""); print $4}' <<<"$out"
}

declare -A H1 H2 P50 IDLE
targets="direct nginx hyper_floor hyper_floor_per_core airlock_batched airlock_strict"
port_h1() { case $1 in direct) echo $ORIGIN;; nginx) echo $NGINX;; hyper_floor) echo $FLOOR;; hyper_floor_per_core) echo $FLOOR_PC;; airlock_batched) echo $BATCHED;; airlock_strict) echo $STRICT;; esac; }
port_h2() { case $1 in direct) echo $ORIGIN_H2;; nginx) echo $NGINX_H2;; hyper_floor) echo $FLOOR;; hyper_floor_per_core) echo $FLOOR_PC;; airlock_batched) echo $BATCHED;; airlock_strict) echo $STRICT;; esac; }
for round in $(seq "$ROUNDS"); do
  for t in $targets; do
    read -r rps p50 < <(h1 "$(port_h1 $t)")
    r2=$(h2 "$(port_h2 $t)")
    idle=$(h1_idle "$(port_h1 $t)")
    [ -n "$rps" ] && [ -n "$r2" ] && [ -n "$idle" ] || { echo "a measurement of $t failed" >&2; exit 1; }
    echo "round $round  $t  http1 ${rps} req/s p50 ${p50} ms  http2 ${r2} req/s  one connection p50 ${idle} ms"
    H1[$t]="${H1[$t]:-} $rps"; P50[$t]="${P50[$t]:-} $p50"; H2[$t]="${H2[$t]:-} $r2"; IDLE[$t]="${IDLE[$t]:-} $idle"
  done
done

nginx1=$(median <<<"${H1[nginx]}"); nginx2=$(median <<<"${H2[nginx]}"); direct_p50=$(median <<<"${P50[direct]}")
direct_idle=$(median <<<"${IDLE[direct]}"); nginx_idle=$(median <<<"${IDLE[nginx]}")
echo
echo "| target | HTTP/1.1 req/s (median, range) | × nginx | p50 ms | added p50 vs direct | HTTP/2 req/s (median, range) | × nginx |"
echo "|---|---|---|---|---|---|---|"
for t in $targets; do
  m1=$(median <<<"${H1[$t]}"); m2=$(median <<<"${H2[$t]}"); p=$(median <<<"${P50[$t]}")
  printf '| %s | %.0f (%s) | %.2f | %.3f | %+.3f | %.0f (%s) | %.2f |\n' "$t" "$m1" "$(range <<<"${H1[$t]}")" \
    "$(echo "$m1 / $nginx1" | bc -l)" "$p" "$(echo "$p - $direct_p50" | bc -l)" "$m2" "$(range <<<"${H2[$t]}")" \
    "$(echo "$m2 / $nginx2" | bc -l)"
done
echo
echo "| target | one connection: p50 ms (median, range) | added vs direct | added vs nginx |"
echo "|---|---|---|---|"
for t in $targets; do
  p=$(median <<<"${IDLE[$t]}")
  printf '| %s | %.3f (%s) | %+.3f | %+.3f |\n' "$t" "$p" "$(range <<<"${IDLE[$t]}")" \
    "$(echo "$p - $direct_idle" | bc -l)" "$(echo "$p - $nginx_idle" | bc -l)"
done
