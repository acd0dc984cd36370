//! Tamper evidence: edit the RocksDB directly and `airlock journal verify` must fail and name the
//! sequence number; an untouched journal verifies.

use std::path::Path;

use airlock::journal::{Store, db_path};
use airlock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Builds a journal with a few sessions and returns its data dir (gateway stopped).
async fn journal_with_traffic(checkpoint_every: u64) -> tempfile::TempDir {
    journal_with(&format!("checkpoint_every_records = {checkpoint_every}\n"), 4).await
}

/// The same, with these `[journal]` settings and this many sessions.
async fn journal_with(settings: &str, sessions: u32) -> tempfile::TempDir {
    let upstream = echo_server().await;
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "[journal]\ndata_dir = \"{}\"\n{settings}[admin]\nenabled = false\n{}",
        data.path().display(),
        route("echo", upstream, "")
    );
    let gw = airlock::Gateway::start(airlock::config::Config::parse(&text).unwrap().build().unwrap()).await.unwrap();
    let addr = gw.route_addr("echo").unwrap();
    for i in 0..sessions {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[i as u8; 100]).await.unwrap();
        let mut buf = [0u8; 100];
        c.read_exact(&mut buf).await.unwrap();
    }
    gw.shutdown().await.unwrap();
    data
}

fn verify(data: &Path, extra: &[&str]) -> (bool, serde_json::Value) {
    let dir = data.display().to_string();
    let mut args = vec!["journal", "verify", "--json", "--data-dir", &dir];
    args.extend_from_slice(extra);
    let out = airlock(&args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(out.status.success(), report["ok"] == true);
    (out.status.success(), report)
}

fn repair(data: &Path) -> Store {
    Store::open_for_repair(&db_path(data)).unwrap()
}

fn break_seq(report: &serde_json::Value) -> u64 {
    report["first_break"]["seq"].as_u64().unwrap_or_else(|| panic!("no break named: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_journal_verifies() {
    let data = journal_with_traffic(5).await;
    let (ok, report) = verify(data.path(), &[]);
    assert!(ok, "{report}");
    assert!(report["records_verified"].as_u64().unwrap() >= 4 * 6);
    assert!(report["checkpoints_verified"].as_u64().unwrap() >= 4);
    assert_eq!(report["unsigned_tail"], 0, "shutdown signs the last record");
    assert_eq!(report["sessions_verified"], 4, "{report}");
    assert!(report["index_break"].is_null(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_found() {
    let data = journal_with_traffic(5).await;
    {
        let store = repair(data.path());
        let mut v = store.record(7).unwrap().unwrap().to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        store.put_raw_record(7, &v).unwrap();
    }
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), 7, "{report}");
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("hash mismatch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_record_is_found() {
    let data = journal_with_traffic(5).await;
    repair(data.path()).delete_raw_record(9).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), 9, "{report}");
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_records_are_found() {
    let data = journal_with_traffic(5).await;
    {
        let store = repair(data.path());
        let a = store.record(11).unwrap().unwrap();
        let b = store.record(12).unwrap().unwrap();
        store.put_raw_record(11, &b).unwrap();
        store.put_raw_record(12, &a).unwrap();
    }
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), 11, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_tail_is_found_with_an_exported_anchor() {
    let data = journal_with_traffic(1000).await;
    let dir = data.path().display().to_string();
    let anchor = data.path().join("anchor.json");
    let out = airlock(&["journal", "checkpoint", "--export", &anchor.display().to_string(), "--data-dir", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let anchored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&anchor).unwrap()).unwrap();
    let last = anchored["seq"].as_u64().unwrap();
    // Cut the last five records and the checkpoint that vouched for them, as an attacker would.
    {
        let store = repair(data.path());
        for seq in last - 4..=last {
            store.delete_raw_record(seq).unwrap();
        }
        store.delete_checkpoints_after(last - 5).unwrap();
    }
    let (ok, report) = verify(data.path(), &[]);
    assert!(report["first_break"].is_null(), "the chain that is left is whole: {report}");
    // The session index still names the records that were cut, and the last session's summary
    // its close: only a cut that also rewrites the index would pass without the anchor.
    assert!(!ok, "{report}");
    assert!(report["index_break"]["problem"].as_str().is_some(), "{report}");
    let anchor_arg = anchor.display().to_string();
    let (ok, report) = verify(data.path(), &["--anchor", &anchor_arg]);
    assert!(!ok);
    assert_eq!(break_seq(&report), last - 4, "{report}");
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("truncated"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_by_another_key_is_refused() {
    let data = journal_with_traffic(5).await;
    let other = tempfile::tempdir().unwrap();
    let key = airlock::journal::crypto::SigningKey::load_or_create(&other.path().join("k"), true).unwrap();
    let pk = other.path().join("pk.hex");
    std::fs::write(&pk, airlock::journal::crypto::hex(key.public_key())).unwrap();
    let (ok, report) = verify(data.path(), &["--public-key", &pk.display().to_string()]);
    assert!(!ok);
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("untrusted key"), "{report}");
}

/// The first session's id and its first record's sequence number.
fn first_session(data: &Path) -> (airlock::journal::SessionSummary, u64) {
    let store = Store::open_reader(&db_path(data)).unwrap();
    let s = store.sessions(None).unwrap().remove(0);
    let first = store.session_seqs(&s.id).unwrap()[0];
    (s, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dropped_from_the_index_is_found() {
    let data = journal_with_traffic(5).await;
    let (s, first) = first_session(data.path());
    let id = s.id;
    repair(data.path()).put_raw_index(&id, first, None).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok && report["first_break"].is_null(), "{report}");
    assert_eq!(report["index_break"]["seq"], first, "{report}");
    assert!(report["index_break"]["problem"].as_str().unwrap().contains("no session's index"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_summary_is_found() {
    let data = journal_with_traffic(5).await;
    let (s, first) = first_session(data.path());
    let id = s.id;
    let store = Store::open_reader(&db_path(data.path())).unwrap();
    let mut summary = serde_json::to_value(store.session(&id).unwrap().unwrap()).unwrap();
    drop(store);
    summary["principal"] = "someone-else".into();
    repair(data.path()).put_raw_summary(&id, summary.to_string().as_bytes()).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["index_break"]["seq"], first, "{report}");
    assert!(report["index_break"]["problem"].as_str().unwrap().contains("principal"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shredded_session_verifies_and_a_mangled_key_is_found() {
    let data = journal_with_traffic(5).await;
    let (s, first) = first_session(data.path());
    let id = s.id;
    // Deleting a session's key is crypto-shredding (DESIGN.md): the chain still verifies.
    repair(data.path()).put_raw_key(&id, None).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(ok, "{report}");
    assert_eq!(report["sessions_shredded"], 1, "{report}");
    // A key that is not a wrapped key was altered.
    repair(data.path()).put_raw_key(&id, Some(b"short")).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok, "{report}");
    assert_eq!(report["index_break"]["seq"], first, "{report}");
    assert!(report["index_break"]["problem"].as_str().unwrap().contains("malformed"), "{report}");
}

/// With the master key (found in the data directory, or given), every data key must unwrap
/// for its own session: two sessions' keys swapped are found, and the report says the keys
/// were checked; without it, only their form can be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_session_keys_are_found_with_the_master_key() {
    let data = journal_with_traffic(5).await;
    let (ok, report) = verify(data.path(), &[]);
    assert!(ok && report["keys_unwrapped"] == true, "{report}");
    let (a, b) = {
        let store = Store::open_reader(&db_path(data.path())).unwrap();
        let list = store.sessions(None).unwrap();
        (list[0].id, list[1].id)
    };
    {
        let store = repair(data.path());
        let (ka, kb) = (store.wrapped_key(&a).unwrap().unwrap(), store.wrapped_key(&b).unwrap().unwrap());
        store.put_raw_key(&a, Some(&kb)).unwrap();
        store.put_raw_key(&b, Some(&ka)).unwrap();
    }
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok, "{report}");
    assert!(report["index_break"]["problem"].as_str().unwrap().contains("does not unwrap"), "{report}");
    // Without the master key the swap cannot be seen, and the report does not claim it was.
    let none = data.path().join("no-such.key").display().to_string();
    let (ok, report) = verify(data.path(), &["--master-key", &none]);
    assert!(ok && report["keys_unwrapped"] == false, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_checkpoint_is_a_break_not_an_error() {
    let data = journal_with_traffic(5).await;
    let seq = {
        let store = repair(data.path());
        let seq = store.checkpoints().unwrap()[0].seq;
        store.put_raw_checkpoint(seq, b"{").unwrap();
        seq
    };
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), seq, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_index_run_is_refused_not_allocated() {
    let data = journal_with_traffic(5).await;
    let (s, first) = first_session(data.path());
    let id = s.id;
    {
        let store = repair(data.path());
        store.put_raw_record(u64::MAX, b"x").unwrap();
        store.put_raw_index(&id, first, Some(&u32::MAX.to_be_bytes())).unwrap();
    }
    let store = Store::open_reader(&db_path(data.path())).unwrap();
    let err = store.session_seqs(&id).unwrap_err().to_string();
    assert!(err.contains("index run"), "{err}");
}

/// A gateway will not append to a journal whose tail was cut behind its newest checkpoint: the
/// next checkpoint would sign over the gap (and overwrite the one that shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_a_journal_cut_behind_its_checkpoint() {
    let data = journal_with_traffic(1000).await;
    let last = {
        let store = repair(data.path());
        let last = store.checkpoints().unwrap().last().unwrap().seq;
        for seq in last - 4..=last {
            store.delete_raw_record(seq).unwrap();
        }
        last
    };
    let upstream = echo_server().await;
    let text = format!(
        "[journal]\ndata_dir = \"{}\"\n[admin]\nenabled = false\n{}",
        data.path().display(),
        route("echo", upstream, "")
    );
    let err = airlock::Gateway::start(airlock::config::Config::parse(&text).unwrap().build().unwrap())
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("newest signed checkpoint") && err.contains(&format!("{last}")), "{err}");
}

/// An anchor is evidence: `journal checkpoint --export` refuses one whose record was altered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_is_not_exported_over_an_altered_record() {
    let data = journal_with_traffic(1000).await;
    let dir = data.path().display().to_string();
    let anchor = data.path().join("anchor.json").display().to_string();
    {
        let store = repair(data.path());
        let seq = store.checkpoints().unwrap().last().unwrap().seq;
        let mut value = store.record(seq).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        store.put_raw_record(seq, &value).unwrap();
    }
    let out = airlock(&["journal", "checkpoint", "--export", &anchor, "--data-dir", &dir]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("journal verify"), "{}", stderr(&out));
    assert!(!std::path::Path::new(&anchor).exists());
}

/// Checkpoints name the one before them and how many records their gateway leaves unsigned:
/// deleting one in the middle, or the newest ones (to rewrite what they signed), is found, and
/// the gateway will not start on such a journal to sign over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_checkpoints_are_found() {
    // At most 5 + 1024 records unsigned after each checkpoint.
    let data = journal_with("checkpoint_every_records = 5\nqueue_depth = 1\n", 4).await;
    let (ok, report) = verify(data.path(), &[]);
    assert!(ok, "{report}");
    let seqs: Vec<u64> = repair(data.path()).checkpoint_entries().unwrap().into_iter().map(|(s, _)| s).collect();
    assert!(seqs.len() >= 4, "{seqs:?}");
    // One in the middle.
    {
        let store = repair(data.path());
        store.delete_checkpoint(seqs[1]).unwrap();
    }
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), seqs[1], "{report}");
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("is gone"), "{report}");

    // Every one after the first: the records after it are more than its gateway leaves.
    let data = journal_with("checkpoint_every_records = 5\nqueue_depth = 1\n", 250).await;
    let seqs: Vec<u64> = repair(data.path()).checkpoint_entries().unwrap().into_iter().map(|(s, _)| s).collect();
    repair(data.path()).delete_checkpoints_after(seqs[0]).unwrap();
    let (ok, report) = verify(data.path(), &[]);
    assert!(!ok);
    assert_eq!(break_seq(&report), seqs[0] + 1, "{report}");
    assert!(report["first_break"]["problem"].as_str().unwrap().contains("deleted"), "{report}");
    let text = format!(
        "[journal]\ndata_dir = \"{}\"\ncheckpoint_every_records = 5\nqueue_depth = 1\n[admin]\nenabled = false\n{}",
        data.path().display(),
        route("echo", "127.0.0.1:9".parse().unwrap(), "")
    );
    let built = airlock::config::Config::parse(&text).unwrap().build().unwrap();
    let Err(refused) = airlock::Gateway::start(built).await else { panic!("the gateway refuses the journal") };
    let refused = refused.to_string();
    assert!(refused.contains("deleted"), "{refused}");
}

/// A gateway started with a longer checkpoint interval signs the newest checkpoint again with
/// its own bound, so that a crash before its next checkpoint does not read as deleted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_interval_restates_the_bound_at_start() {
    let data = journal_with("checkpoint_every_records = 5\nqueue_depth = 1\n", 4).await;
    let newest = |data: &Path| Store::open_reader(&db_path(data)).unwrap().checkpoints().unwrap().pop().unwrap();
    let before = newest(data.path());
    assert_eq!(before.unsigned_max, 5 + 1024);
    let text = format!(
        "[journal]\ndata_dir = \"{}\"\ncheckpoint_every_records = 100000\n[admin]\nenabled = false\n{}",
        data.path().display(),
        route("echo", "127.0.0.1:9".parse().unwrap(), "")
    );
    let gw = airlock::Gateway::start(airlock::config::Config::parse(&text).unwrap().build().unwrap()).await.unwrap();
    gw.shutdown().await.unwrap();
    let after = newest(data.path());
    assert_eq!((after.seq, after.prev, after.unsigned_max), (before.seq, before.prev, 100_000 + 8192));
    let (ok, report) = verify(data.path(), &[]);
    assert!(ok, "{report}");
}
