//! Journal append throughput with group commit, strict durability (one fsync per batch), payloads
//! sealed, at 64 B, 1 KiB and 16 KiB. 64 producers each keep records in flight, as the TCP driver
//! does, so the writer thread sees real batches.
//!
//! Run: `cargo bench -p airlock-benches --bench journal_append`. Results and the anchor
//! (RocksDB's own db_bench on this machine) are in BENCHMARKS.md.
#![expect(clippy::unwrap_used, reason = "a benchmark whose set-up fails should stop loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::admin::metrics::Metrics;
use airlock::journal::record::OpenMeta;
use airlock::journal::{Direction, Durability, Journal, JournalSettings, SessionJournal};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PRODUCERS: usize = 64;
const PER_PRODUCER: usize = 32;

fn open(durability: Durability, dir: &std::path::Path) -> Arc<Journal> {
    let mut settings = JournalSettings::for_data_dir(dir);
    settings.durability = durability;
    Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap())
}

async fn sessions(journal: &Arc<Journal>) -> Vec<Arc<SessionJournal>> {
    let mut out = Vec::new();
    for i in 0..PRODUCERS {
        let meta = OpenMeta {
            route: "bench".into(),
            protocol: "tcp".into(),
            client_addr: format!("127.0.0.1:{}", 40000 + i),
            listen_addr: "127.0.0.1:1".into(),
            upstream: "127.0.0.1:2".into(),
            principal: "anonymous".into(),
            identity: None,
            policy_version: None,
            tls: None,
            sealed: false,
            connection: None,
            break_glass: false,
        };
        let sj = SessionJournal::open(journal.clone(), meta).unwrap();
        sj.flush().await.unwrap().await.unwrap();
        out.push(Arc::new(sj));
    }
    out
}

async fn round(sessions: &[Arc<SessionJournal>], payload: &Bytes) {
    let mut tasks = Vec::with_capacity(sessions.len());
    for sj in sessions {
        let sj = sj.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::with_capacity(PER_PRODUCER);
            for _ in 0..PER_PRODUCER {
                receipts.push(sj.data(Direction::ClientToUpstream, false, &payload).await.unwrap());
            }
            for r in receipts {
                r.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn journal_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for durability in [Durability::Strict, Durability::Batched] {
        let dir = tempfile::tempdir().unwrap();
        let journal = open(durability, dir.path());
        let sessions = rt.block_on(sessions(&journal));
        let mut group = c.benchmark_group(format!("journal_append_{durability:?}").to_lowercase());
        group.throughput(Throughput::Elements((PRODUCERS * PER_PRODUCER) as u64));
        group.measurement_time(Duration::from_secs(8));
        group.sample_size(20);
        for size in [64usize, 1024, 16 * 1024] {
            let payload = Bytes::from(vec![0x5au8; size]);
            group.bench_function(format!("{size}B"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            round(&sessions, &payload).await;
                        }
                        start.elapsed()
                    })
                });
            });
        }
        group.finish();
        rt.block_on(async { journal.shutdown().await.unwrap() });
    }
}

criterion_group!(benches, journal_append);
criterion_main!(benches);
