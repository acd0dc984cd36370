# Shared by the side-by-side scripts in benches/; sourced from the repository root after the
# script has built what it runs. A scratch directory, every started process killed on exit (a
# script may define `cleanup_extra` for more), the Airlock gateways under test, and the medians.
TARGET=${CARGO_TARGET_DIR:-target}
AIRLOCK=$TARGET/release/airlock
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_airlock MODE: runs a gateway with journal durability MODE (batched or strict) whose routes
# and identities are the TOML on stdin; its pid is the last of PIDS.
start_airlock() {
  { printf '[journal]\ndata_dir = "%s"\ndurability = "%s"\n[admin]\nenabled = false\n' "$WORK/data-$1" "$1"; cat; } \
    >"$WORK/$1.toml"
  "$AIRLOCK" run --config "$WORK/$1.toml" --log=warn & PIDS+=($!)
}

# wait_listening HOST:PORT...: waits up to 10 s for each, and fails if one never listens.
wait_listening() {
  local a
  for a in "$@"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null || { echo "nothing listens on $a" >&2; exit 1; }
  done
}

# median / range: of the whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}'; }

# A scratch PostgreSQL cluster in $WORK/pg (trust auth), for the scripts that need one. Run as
# root (the server runs as `postgres`) or as a user who may run initdb. `as_pg` runs a command as
# the server's user (pgbouncer too).
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort | tail -1 || true)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# start_postgres PORT [SETTING...]: starts it on 127.0.0.1:PORT, with `-c SETTING` for each.
start_postgres() {
  local port=$1 opts="" s
  shift
  for s in "$@"; do opts="$opts -c $s"; done
  chmod 755 "$WORK"
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK" "$WORK/pg"; fi
  as_pg "$PGBIN/initdb" -A trust -U postgres --no-sync -D "$WORK/pg" >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$WORK/pg$opts" \
    -l "$WORK/pg/log" -w start >/dev/null
}
stop_postgres() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true; }
