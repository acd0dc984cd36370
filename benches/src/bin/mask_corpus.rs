//! Masking throughput over a labeled corpus, for `benches/mask_compare.sh`.
//!
//! `mask_corpus CORPUS.jsonl --repeat N` masks the `text` of every line of a
//! `tests/python/phi_corpus.py` corpus with a profile that redacts every entity, N times over, on
//! one thread, and prints `{"mb_per_s", "bytes", "seconds", "docs"}` (MB = 10^6 bytes; the loop
//! only, not the start-up) — the same measure `benches/presidio_eval.py` prints for Presidio.

use std::sync::Arc;
use std::time::Instant;

use airlock::mask::{Detector, Profile, ProfileSpec, Tally};
use anyhow::Context as _;
use clap::Parser;

/// The gateway's allocator (see `core/src/main.rs`), so the numbers are the ones it runs at.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    corpus: std::path::PathBuf,
    #[arg(long, default_value_t = 10)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.corpus).with_context(|| format!("read {}", cli.corpus.display()))?;
    let mut docs = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        docs.push(v["text"].as_str().context("a line without text")?.to_owned());
    }
    let det = Arc::new(Detector::new(&[], &[])?);
    let spec = ProfileSpec { min_confidence: 0.5, ..ProfileSpec::redact_all("all") };
    let profile = Profile::new(det, spec, None)?;
    let tally = Tally::default();
    // One warm-up pass (lazy DFA states, name sets).
    let mut sink = 0usize;
    for d in &docs {
        sink += profile.mask_text(d.as_bytes(), &tally).len();
    }
    let bytes: usize = docs.iter().map(String::len).sum::<usize>() * cli.repeat;
    let start = Instant::now();
    for _ in 0..cli.repeat {
        for d in &docs {
            sink += profile.mask_text(d.as_bytes(), &tally).len();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mb_per_s": bytes as f64 / seconds / 1e6, "bytes": bytes, "seconds": seconds, "docs": docs.len(), "output_bytes": sink})
    );
    Ok(())
}
