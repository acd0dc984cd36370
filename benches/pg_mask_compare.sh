#!/usr/bin/env bash
# A masked SELECT through the gateway: psql reads a table of PHI-dense rows (the JSON bench's
# records as columns: name, SSN, phone, e-mail, date of birth, MRN, a note) straight from
# PostgreSQL — the anchor, in the same run — and through an Airlock `postgres` route whose
# profile redacts every entity the detectors find. Each value is masked with its column name as
# context; the journal (batched) records the masked rows.
#
#   benches/pg_mask_compare.sh [ROUNDS] [ROWS]    (defaults: 5 rounds, 100000 rows)
#
# AIRLOCK_OTHER=/path/to/airlock runs a second gateway binary beside this tree's build (the
# rounds alternate), to compare two versions on the same table in the same run. Needs
# postgresql (apt). Run as root (the server runs as `postgres`) or as a user who may run initdb.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
ROUNDS=${1:-5}
ROWS=${2:-100000}
cargo build --profile bench -q -p airlock
cleanup_extra() { stop_postgres; }

PG=17510; THIS=17511; OTHER=17512
KEY=ak_bench_0123456789
start_postgres $PG

HASH=$(printf '%s' "$KEY" | "$AIRLOCK" identity hash-key)
gateway() { # BINARY NAME PORT: a gateway whose route masks every entity it finds
  cat >"$WORK/$2.toml" <<CFG
[journal]
data_dir = "$WORK/data-$2"
durability = "batched"
[admin]
enabled = false
[[masking.profile]]
name = "agent"
default_action = "redact"
[[route]]
name = "pg"
listen = "127.0.0.1:$3"
protocol = "postgres"
upstream = "127.0.0.1:$PG"
plaintext_password_on_loopback = true
mask = "agent"
[[identity.api_key]]
name = "bench"
sha256 = "$HASH"
CFG
  "$1" run --config "$WORK/$2.toml" --log=warn & PIDS+=($!)
  wait_listening "127.0.0.1:$3"
}
gateway "$AIRLOCK" airlock $THIS
targets="direct airlock"
if [ -n "${AIRLOCK_OTHER:-}" ]; then
  gateway "$AIRLOCK_OTHER" other $OTHER
  targets="direct airlock other"
fi
export PGPASSWORD=$KEY PGSSLMODE=disable

psql -X -q -h 127.0.0.1 -p $PG -U postgres -d postgres <<SQL
create table patients as
select g as id, f || ' ' || l as patient_name,
       format('%s-%s-%s', 100 + g % 500, 10 + g % 89, 1000 + g % 8999) as ssn, -- no area 666: not an SSN
       format('(617) 555-%s', 1000 + g % 8999) as phone,
       lower(f) || '.' || lower(l) || '@example.org' as email,
       format('19%s-0%s-1%s', 50 + g % 49, 1 + g % 9, g % 10) as dob,
       'MRN-' || (10000000 + g) as mrn,
       format('Seen by Dr. %s; card 4111 1111 1111 1111 on file, call back at 617-555-%s.', l, 1000 + g % 8999) as note
from generate_series(1, $ROWS) g,
     lateral (select (array['Maria','James','Linda','Robert','Aisha','Chen','Olivia','Mohammed'])[1 + g % 8] as f,
                     (array['Garcia','Smith','Johnson','Nguyen','Patel','Brown','Lopez','Miller'])[1 + (g / 8) % 8] as l) n;
SQL
BYTES=$(psql -X -A -t -h 127.0.0.1 -p $PG -U postgres -d postgres -c \
  "select sum(octet_length(id::text) + octet_length(patient_name) + octet_length(ssn) + octet_length(phone)
          + octet_length(email) + octet_length(dob) + octet_length(mrn) + octet_length(note)) from patients")
port_of() { case $1 in direct) echo $PG;; airlock) echo $THIS;; other) echo $OTHER;; esac; }
declare -A R
for round in $(seq "$ROUNDS"); do
  for t in $targets; do
    start=$(date +%s.%N)
    psql -X -A -t -h 127.0.0.1 -p "$(port_of $t)" -U postgres -d postgres -c "select * from patients" >"$WORK/out-$t"
    secs=$(printf '%.3f' "$(echo "$(date +%s.%N) - $start" | bc -l)")
    rows=$(wc -l <"$WORK/out-$t")
    [ "$rows" -eq "$ROWS" ] || { echo "$t returned $rows rows, not $ROWS" >&2; exit 1; }
    echo "round $round  $t  $secs s"
    R[$t]="${R[$t]:-} $secs"
  done
done
# Each gateway masked what the detectors find: no SSN, phone number, e-mail address, date of
# birth or card number left.
leak='[0-9]{3}-[0-9]{2}-[0-9]{4}|555-[0-9]{4}|@example\.org|19[0-9]{2}-0[0-9]-1[0-9]|4111 1111'
for t in $targets; do
  [ "$t" = direct ] && continue
  if grep -Eq "$leak" "$WORK/out-$t"; then
    echo "unmasked values came through $t:" >&2
    grep -E -m3 "$leak" "$WORK/out-$t" >&2; exit 1
  fi
done

echo
echo "$ROWS rows, $BYTES bytes of values"
echo "| target | seconds (median) | range | rows/s | MiB/s of values | × direct |"
echo "|---|---|---|---|---|---|"
d=$(median <<<"${R[direct]}")
for t in $targets; do
  s=$(median <<<"${R[$t]}")
  printf '| %s | %.3f | %s | %.0f | %.1f | %.2f |\n' "$t" "$s" "$(range <<<"${R[$t]}")" "$(echo "$ROWS/$s" | bc -l)" \
    "$(echo "$BYTES/$s/1048576" | bc -l)" "$(echo "$d/$s" | bc -l)"
done
