#!/usr/bin/env bash
# The journal-append anchor, measured in the same run as the criterion benchmark: RocksDB's own
# db_bench (Debian rocksdb-tools) writing the same value sizes with one fsync per 100 writes
# (`--sync=1 --batch_size=100`), then `cargo bench --bench journal_append`.
#
#   benches/journal_anchor.sh            prints db_bench ops/s per size, then criterion's output
set -euo pipefail
cd "$(dirname "$0")/.."
command -v db_bench >/dev/null || { echo "db_bench missing: apt-get install rocksdb-tools" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "| value size | db_bench fillseq, fsync per 100 writes (ops/s) |"
echo "|---|---|"
for size in 64 1024 16384; do
  num=$(( size >= 16384 ? 20000 : 200000 ))
  ops=$(db_bench --benchmarks=fillseq --num=$num --value_size=$size --sync=1 --batch_size=100 \
        --compression_type=lz4 --db="$WORK/db-$size" 2>/dev/null | awk '/^fillseq/ {print $5}')
  echo "| $size B | $ops |"
done
cargo bench -q -p airlock-benches --bench journal_append -- --noplot 2>&1 | grep -E '^journal_append|thrpt'
