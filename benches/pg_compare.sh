#!/usr/bin/env bash
# PostgreSQL side by side in one run: pgbench -S (8 clients, simple and prepared) direct vs
# pgbouncer (session pooling) vs Airlock (API-key auth, SQL classification, journal batched and
# strict); then the peak RSS of the Airlock process while a 1,000,000-row result streams through.
#
#   benches/pg_compare.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 5 s per measurement)
#
# Needs postgresql, pgbouncer (apt) and a release build of `airlock` (built here). Run as root
# (the server runs as `postgres`) or as a user who may run initdb.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-3}
SECS=${2:-5}
cargo build --profile bench -q -p airlock
cleanup_extra() {
  pkill -f "pgbouncer -q $WORK" 2>/dev/null || true
  stop_postgres
}

PG=17500; BOUNCER=17501; BATCHED=17502; STRICT=17503
KEY=ak_bench_0123456789
start_postgres $PG max_connections=100

cat >"$WORK/pgbouncer.ini" <<CFG
[databases]
postgres = host=127.0.0.1 port=$PG user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER
auth_type = any
pool_mode = session
max_client_conn = 100
default_pool_size = 20
unix_socket_dir =
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
CFG
chmod 644 "$WORK/pgbouncer.ini"
as_pg pgbouncer -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 & PIDS+=($!)

HASH=$(printf '%s' "$KEY" | "$AIRLOCK" identity hash-key)
for mode in batched strict; do
  port=$BATCHED; [ $mode = strict ] && port=$STRICT
  start_airlock $mode <<CFG
[[route]]
name = "pg"
listen = "127.0.0.1:$port"
protocol = "postgres"
upstream = "127.0.0.1:$PG"
plaintext_password_on_loopback = true
[[identity.api_key]]
name = "bench"
sha256 = "$HASH"
CFG
  [ $mode = batched ] && BATCHED_PID=${PIDS[-1]}
done
wait_listening 127.0.0.1:$BOUNCER 127.0.0.1:$BATCHED 127.0.0.1:$STRICT
export PGPASSWORD=$KEY PGSSLMODE=disable
pgbench -h 127.0.0.1 -p $PG -U postgres -i -s 10 -q postgres >/dev/null 2>&1

tps() { pgbench -h 127.0.0.1 -p "$1" -U postgres -S -c 8 -j 2 -T "$SECS" -M "$2" postgres 2>/dev/null | awk '/^tps/ {print $3}'; }
declare -A R
targets="direct pgbouncer airlock_batched airlock_strict"
port_of() { case $1 in direct) echo $PG;; pgbouncer) echo $BOUNCER;; airlock_batched) echo $BATCHED;; airlock_strict) echo $STRICT;; esac; }
for round in $(seq "$ROUNDS"); do
  for mode in simple prepared; do
    for t in $targets; do
      v=$(tps "$(port_of $t)" $mode)
      echo "round $round  $mode  $t  ${v} tps"
      R[$t.$mode]="${R[$t.$mode]:-} $v"
    done
  done
done

# Peak memory while a 1,000,000-row result streams through the batched gateway.
before=$(awk '/VmHWM/ {print $2}' /proc/$BATCHED_PID/status)
rows=$(psql -X -A -t -h 127.0.0.1 -p $BATCHED -U postgres -d postgres -c "select g, repeat('x', 40) from generate_series(1, 1000000) g" | wc -l)
after=$(awk '/VmHWM/ {print $2}' /proc/$BATCHED_PID/status)
echo "1M-row result: $rows rows through Airlock; peak RSS ${before} kB before, ${after} kB after"

echo
echo "| target | simple tps (median) | × pgbouncer | × direct | prepared tps (median) | × pgbouncer | × direct |"
echo "|---|---|---|---|---|---|---|"
for t in $targets; do
  s=$(median <<<"${R[$t.simple]}"); p=$(median <<<"${R[$t.prepared]}")
  bs=$(median <<<"${R[pgbouncer.simple]}"); bp=$(median <<<"${R[pgbouncer.prepared]}")
  ds=$(median <<<"${R[direct.simple]}"); dp=$(median <<<"${R[direct.prepared]}")
  printf '| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f |\n' "$t" "$s" "$(echo "$s/$bs" | bc -l)" "$(echo "$s/$ds" | bc -l)" \
    "$p" "$(echo "$p/$bp" | bc -l)" "$(echo "$p/$dp" | bc -l)"
done
