//! The writer and the session journal together: groups, staging and the per-session index.

use std::sync::Arc;

use bytes::Bytes;

use super::record::{CloseMeta, OpenMeta};
use super::verify::{VerifyOptions, verify};
use super::{Direction, Durability, Journal, JournalSettings, SessionJournal, Store, db_path};
use crate::admin::metrics::Metrics;

pub(super) fn meta(client: &str) -> OpenMeta {
    OpenMeta {
        route: "r".into(),
        protocol: "tcp".into(),
        client_addr: client.into(),
        listen_addr: "127.0.0.1:1".into(),
        upstream: "127.0.0.1:2".into(),
        principal: "anonymous".into(),
        identity: None,
        policy_version: None,
        tls: None,
        sealed: false,
        connection: None,
        break_glass: false,
    }
}

fn close() -> CloseMeta {
    CloseMeta {
        reason: "done".into(),
        bytes_from_client: 2,
        bytes_from_upstream: 1,
        duration_us: 1,
        break_glass: false,
        masked: Default::default(),
    }
}

#[tokio::test]
async fn staged_records_go_as_one_group_and_the_index_finds_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JournalSettings::for_data_dir(dir.path());
    settings.durability = Durability::Strict;
    let journal = Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap());
    let a = SessionJournal::open(journal.clone(), meta("127.0.0.1:10")).unwrap();
    let b = SessionJournal::open(journal.clone(), meta("127.0.0.1:11")).unwrap();
    // Nothing reaches the writer while records are only staged.
    a.stage_data(Direction::ClientToUpstream, false, &Bytes::from_static(b"1")).unwrap();
    a.stage_data(Direction::ClientToUpstream, true, &Bytes::from_static(b"2")).unwrap();
    let first = a.flush().await.unwrap();
    // Nothing is left staged: a second flush is a barrier behind the first group.
    let barrier = a.flush().await.unwrap();
    // b's open record rides on its first data record; a's close comes after b's group.
    let second = b.data(Direction::UpstreamToClient, true, &Bytes::from_static(b"x")).await.unwrap();
    // A group's receipt is its last record's sequence number.
    assert_eq!(first.await.unwrap(), 3);
    assert_eq!(barrier.await.unwrap(), 3);
    assert_eq!(second.await.unwrap(), 5);
    assert_eq!(a.close(close()).await.unwrap().await.unwrap(), 6);
    assert_eq!(b.close(close()).await.unwrap().await.unwrap(), 7);
    journal.shutdown().await.unwrap();

    let store = Store::open_reader(&db_path(dir.path())).unwrap();
    assert_eq!(store.session_seqs(&a.id()).unwrap(), [1, 2, 3, 6]);
    assert_eq!(store.session_seqs(&b.id()).unwrap(), [4, 5, 7]);
    let records = super::read::session_records(&store, &a.id(), None).unwrap();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.record.session == a.id()));
    let report = verify(&store, &VerifyOptions::default()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_verified, 7);
}

#[tokio::test]
async fn a_group_larger_than_the_queue_still_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JournalSettings::for_data_dir(dir.path());
    settings.queue_depth = 2;
    let journal = Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap());
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:12")).unwrap();
    for i in 0..9u8 {
        s.stage_data(Direction::UpstreamToClient, false, &Bytes::from(vec![i; 3])).unwrap();
    }
    let receipt = tokio::time::timeout(std::time::Duration::from_secs(10), s.flush()).await.unwrap().unwrap();
    assert_eq!(receipt.await.unwrap(), 10);
    // The room it held is back: the next records find it.
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), s.close(close())).await.unwrap().unwrap();
    assert_eq!(next.await.unwrap(), 11);
    journal.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_writing_one_session_both_get_receipts_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings::for_data_dir(dir.path());
    let journal = Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap());
    let s = Arc::new(SessionJournal::open(journal.clone(), meta("127.0.0.1:13")).unwrap());
    // Each task's record can go out in the other's group; its own call must still get a
    // receipt that covers it, never an error.
    let tasks: Vec<_> = [Direction::ClientToUpstream, Direction::UpstreamToClient]
        .into_iter()
        .map(|dir| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..300u32 {
                    let seq = s.data(dir, false, &Bytes::from(i.to_be_bytes().to_vec())).await.unwrap().await.unwrap();
                    assert!(seq > last, "receipts come in order");
                    last = seq;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    s.close(close()).await.unwrap().await.unwrap();
    journal.shutdown().await.unwrap();
    let store = Store::open_reader(&db_path(dir.path())).unwrap();
    let records = super::read::session_records(&store, &s.id(), Some(&settings.master_key)).unwrap();
    assert_eq!(records.len(), 602);
    assert!(matches!(records[0].record.kind, super::RecordKind::SessionOpen(_)), "the open record comes first");
    // Each direction's payloads are in the order they were written.
    for dir in [Direction::ClientToUpstream, Direction::UpstreamToClient] {
        let sent: Vec<u32> = records
            .iter()
            .filter_map(|r| match (&r.record.kind, &r.content) {
                (super::RecordKind::Data(f), Some(super::read::Content::Bytes(b))) if f.direction == dir => {
                    Some(u32::from_be_bytes(b[..].try_into().unwrap()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(sent, (0..300).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_corrupt_index_run_is_refused_not_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings::for_data_dir(dir.path());
    let journal = Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap());
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:14")).unwrap();
    s.close(close()).await.unwrap().await.unwrap();
    journal.shutdown().await.unwrap();
    drop(journal);
    let store = Store::open_for_repair(&db_path(dir.path())).unwrap();
    assert_eq!(store.session_seqs(&s.id()).unwrap(), [1, 2]);
    let sessions = store.cf(super::store::CF_SESSIONS).unwrap();
    store.db().put_cf(sessions, super::store::index_key(&s.id(), 1), u32::MAX.to_be_bytes()).unwrap();
    let e = store.session_seqs(&s.id()).unwrap_err().to_string();
    assert!(e.contains("passes the last record"), "{e}");
}

/// A journal of `durability` with one session that has written one record.
async fn journal_with_one_record(
    durability: Durability,
) -> (tempfile::TempDir, JournalSettings, Arc<Metrics>, Arc<Journal>, SessionJournal) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JournalSettings::for_data_dir(dir.path());
    settings.durability = durability;
    let metrics = Arc::new(Metrics::new());
    let journal = Arc::new(Journal::open(&settings, metrics.clone()).unwrap());
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:10")).unwrap();
    let receipt = s.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(receipt.await.unwrap(), 2);
    (dir, settings, metrics, journal, s)
}

#[tokio::test]
async fn batched_mode_fsyncs_the_wal_on_the_ticker() {
    let (_dir, settings, metrics, journal, s) = journal_with_one_record(Durability::Batched).await;
    // Only the ticker's syncs are timed: one comes within a tick or two.
    let mut waited = 0;
    while metrics.render().contains("journal_wal_sync_seconds_count 0") && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        waited += 1;
    }
    assert!(!metrics.render().contains("journal_wal_sync_seconds_count 0"), "{}", metrics.render());
    // Shutdown joins the ticker too: the database can be opened again at once.
    journal.shutdown().await.unwrap();
    drop(s);
    drop(journal);
    let again = Journal::open(&settings, Arc::new(Metrics::new())).unwrap();
    again.shutdown().await.unwrap();

    // Strict mode syncs with each write, never on the ticker.
    let (_dir, _, metrics, journal, _s) = journal_with_one_record(Durability::Strict).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(metrics.render().contains("journal_wal_sync_seconds_count 0"), "{}", metrics.render());
    journal.shutdown().await.unwrap();
}

/// After a failed write, a batched session learns of it at its next hand-off, before it
/// forwards anything more: it does not wait for receipts, so the receipt cannot tell it.
#[tokio::test]
async fn a_failed_journal_refuses_the_next_hand_off_in_batched_mode_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JournalSettings::for_data_dir(dir.path());
    settings.durability = Durability::Batched;
    let journal = Arc::new(Journal::open(&settings, Arc::new(Metrics::new())).unwrap());
    let a = SessionJournal::open(journal.clone(), meta("127.0.0.1:10")).unwrap();
    a.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"1")).await.unwrap().await.unwrap();
    journal.poison();
    assert!(a.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"2")).await.is_err());
    a.stage_data(Direction::UpstreamToClient, false, &Bytes::from_static(b"3")).unwrap();
    assert!(a.flush().await.is_err(), "a staged group is refused at its hand-off");
    assert!(SessionJournal::open(journal.clone(), meta("127.0.0.1:11")).unwrap().flush().await.is_err());
}

/// Commits so far, from the metrics' batch-size histogram.
fn commits(metrics: &Metrics) -> u64 {
    let text = metrics.render();
    let line = text.lines().find(|l| l.contains("journal_batch_records_count")).expect("the histogram is rendered");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A batched journal in a fresh directory, with one session open in it.
fn batched(metrics: &Arc<Metrics>) -> (tempfile::TempDir, Arc<Journal>, SessionJournal) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = JournalSettings::for_data_dir(dir.path());
    settings.durability = Durability::Batched;
    let journal = Arc::new(Journal::open(&settings, metrics.clone()).unwrap());
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:14")).unwrap();
    (dir, journal, s)
}

#[tokio::test]
async fn batched_groups_nobody_waits_for_are_gathered_into_few_commits() {
    let metrics = Arc::new(Metrics::new());
    let (_dir, journal, s) = batched(&metrics);
    // The first commit after a quiet spell goes at once.
    s.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"0")).await.unwrap().await.unwrap();
    let before = commits(&metrics);
    let started = std::time::Instant::now();
    // 100 groups, 50 µs apart or more, whose receipts nobody awaits yet (as an HTTP request's):
    // a writer that committed each as it came would make about 100 commits. Gathering, commits
    // are at least a millisecond apart, however slowly the loop runs.
    let mut receipts = Vec::new();
    for i in 0..100u32 {
        receipts
            .push(s.data(Direction::ClientToUpstream, false, &Bytes::from(i.to_be_bytes().to_vec())).await.unwrap());
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    let sent_in = started.elapsed();
    for r in receipts {
        r.await.unwrap();
    }
    let made = commits(&metrics) - before;
    let bound = sent_in.as_millis() as u64 + 2;
    assert!(made <= bound.min(60), "{made} commits for 100 groups sent over {sent_in:?}");
    journal.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_batched_receipt_someone_awaits_is_not_held_back_to_gather() {
    let (_dir, journal, s) = batched(&Arc::new(Metrics::new()));
    // A body pump awaits each unit's receipt before the next: no commit may be held to the end
    // of a gathering for it. Awaited at once; awaited after a pause, as after forwarding (the
    // writer is then gathering and must be woken); and marked as awaited next.
    for i in 0..300u32 {
        let receipt = s.data(Direction::UpstreamToClient, false, &Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
        match i % 3 {
            0 => receipt.await.unwrap(),
            1 => {
                std::thread::sleep(std::time::Duration::from_micros(200));
                receipt.await.unwrap()
            }
            _ => {
                let receipt = receipt.awaited_next();
                std::thread::sleep(std::time::Duration::from_micros(200));
                receipt.await.unwrap()
            }
        };
    }
    // A tick can arrive just after a commit and gather to its end with nobody waiting.
    let full = journal.full_gathers();
    assert!(full <= 10, "{full} of 300 awaited commits were held to the end of a gathering");
    journal.shutdown().await.unwrap();
}

/// A journal with the default settings (strict) in a fresh directory.
fn default_journal() -> (tempfile::TempDir, Arc<Journal>) {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(Journal::open(&JournalSettings::for_data_dir(dir.path()), Arc::new(Metrics::new())).unwrap());
    (dir, journal)
}

#[tokio::test]
async fn the_index_summary_goes_with_the_first_hand_off_and_the_close_has_the_last_word() {
    let (dir, journal) = default_journal();
    // Still open after its first hand-off: the index lists it as open.
    let open = SessionJournal::open(journal.clone(), meta("127.0.0.1:10")).unwrap();
    open.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"1")).await.unwrap().await.unwrap();
    // Opened and closed in one hand-off: the close's summary is the one written.
    let short = SessionJournal::open(journal.clone(), meta("127.0.0.1:11")).unwrap();
    short.stage_data(Direction::ClientToUpstream, true, &Bytes::from_static(b"2")).unwrap();
    short.close(close()).await.unwrap().await.unwrap();
    // Closed after an earlier hand-off: the later summary replaces the first.
    let long = SessionJournal::open(journal.clone(), meta("127.0.0.1:12")).unwrap();
    long.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"3")).await.unwrap().await.unwrap();
    long.close(close()).await.unwrap().await.unwrap();
    journal.shutdown().await.unwrap();

    let store = Store::open_reader(&db_path(dir.path())).unwrap();
    let summary = |id| store.session(&id).unwrap().unwrap_or_else(|| panic!("no summary for {id}"));
    let o = summary(open.id());
    assert_eq!((o.client_addr.as_str(), o.closed_us, o.close_reason), ("127.0.0.1:10", None, None));
    for s in [summary(short.id()), summary(long.id())] {
        assert!(s.closed_us.is_some(), "{s:?}");
        assert_eq!((s.close_reason.as_deref(), s.bytes_from_client), (Some("done"), 2));
    }
}

#[tokio::test]
async fn a_close_that_failed_to_stage_leaves_the_index_saying_open() {
    let (dir, journal) = default_journal();
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:10")).unwrap();
    // Metadata over the record limit: the close is refused before it is staged.
    let too_long = CloseMeta { reason: "x".repeat(super::record::MAX_META_LEN + 1), ..close() };
    assert!(s.stage_close(too_long).is_err());
    s.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"1")).await.unwrap().await.unwrap();
    journal.shutdown().await.unwrap();

    let store = Store::open_reader(&db_path(dir.path())).unwrap();
    let summary = store.session(&s.id()).unwrap().unwrap();
    assert_eq!((summary.closed_us, summary.close_reason), (None, None));
    let report = verify(&store, &VerifyOptions::default()).unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn a_session_dropped_after_shutdown_knows_its_records_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(Journal::open(&JournalSettings::for_data_dir(dir.path()), Arc::new(Metrics::new())).unwrap());
    let s = SessionJournal::open(journal.clone(), meta("127.0.0.1:12")).unwrap();
    s.stage_data(Direction::ClientToUpstream, true, &Bytes::from_static(b"late")).unwrap();
    assert!(!journal.is_closed());
    journal.shutdown().await.unwrap();
    // The writer is gone: the dropped session says so instead of handing its records over.
    assert!(journal.is_closed());
    drop(s);
}
