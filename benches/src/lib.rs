//! Benchmarks for Airlock: criterion micro-benchmarks under `benches/`, and `tcp_load`, the load
//! generator the side-by-side comparison script (`tcp_compare.sh`) drives. See BENCHMARKS.md.
