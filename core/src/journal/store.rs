//! The RocksDB layout and its read side.
//!
//! Column families:
//! - `records`: big-endian u64 sequence → stored envelope ([`super::record`]).
//! - `sessions`: `S ‖ session id` → [`SessionSummary`] (JSON); `R ‖ session id ‖ seq` → the
//!   per-session record index: a run of consecutive records of that session starting at `seq`,
//!   whose length is the value (u32, big-endian), or 1 when the value is empty. Session ids are UUIDv7, so `S` keys sort by start time.
//! - `approvals`: reserved for the approval gate.
//! - `keys`: session id → that session's data key wrapped by the master key.
//! - `meta`: `checkpoint/ ‖ seq` → [`Checkpoint`] (JSON); `signing_public_key` → 32 bytes.
//!
//! RocksDB allows one writer process. Readers (the CLI) open the database as a *secondary*
//! instance, which works while the gateway runs and never takes its lock.

use std::path::Path;

use bytes::Bytes;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction as IterDirection, IteratorMode, Options};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JournalError;
use super::crypto::{self, hex};
use super::record::Hash;

pub(crate) const CF_RECORDS: &str = "records";
pub(crate) const CF_SESSIONS: &str = "sessions";
pub(crate) const CF_APPROVALS: &str = "approvals";
pub(crate) const CF_KEYS: &str = "keys";
pub(crate) const CF_META: &str = "meta";
const ALL_CFS: [&str; 5] = [CF_RECORDS, CF_SESSIONS, CF_APPROVALS, CF_KEYS, CF_META];

/// Most records one session's index may name. The index is untrusted input, and a stray record
/// key near `u64::MAX` would lift the bound of the records present; 2^26 records of up to 1 MiB
/// each is far beyond any real session.
const MAX_SESSION_RECORDS: u64 = 1 << 26;
pub(crate) const SUMMARY_PREFIX: u8 = b'S';
pub(crate) const INDEX_PREFIX: u8 = b'R';
pub(crate) const CHECKPOINT_PREFIX: &[u8] = b"checkpoint/";
pub(crate) const META_PUBLIC_KEY: &[u8] = b"signing_public_key";

/// What the session index says about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id (UUIDv7).
    pub id: Uuid,
    /// Route name.
    pub route: String,
    /// Protocol driver.
    pub protocol: String,
    /// Caller address.
    pub client_addr: String,
    /// Principal.
    pub principal: String,
    /// Start, microseconds since the Unix epoch.
    pub opened_us: i64,
    /// End, if the session has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_us: Option<i64>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// Bytes from the caller (final once closed).
    pub bytes_from_client: u64,
    /// Bytes from the upstream (final once closed).
    pub bytes_from_upstream: u64,
}

/// A stored checkpoint as read: the checkpoint, or why its value does not parse.
pub type StoredCheckpoint = Result<Checkpoint, String>;

/// One entry of the session index as read: `(session, first sequence number, count)`, or the raw
/// key of an entry that does not parse.
pub(crate) type IndexRun = Result<(Uuid, u64, u32), Vec<u8>>;

/// A signed statement that the record with sequence `seq` has chain hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version of this statement.
    pub version: u32,
    /// Sequence number covered.
    pub seq: u64,
    /// Chain hash of that record (hex).
    pub hash: String,
    /// When it was signed, microseconds since the Unix epoch.
    pub time_us: i64,
    /// Ed25519 public key that signed it (hex).
    pub public_key: String,
    /// Ed25519 signature over [`Checkpoint::signed_message`] (hex).
    pub signature: String,
    /// Version 2: the sequence number of the checkpoint before it (0 for the first), so that
    /// a deleted checkpoint is missed by the one after it.
    #[serde(default)]
    pub prev: u64,
    /// Version 2: the most records the gateway that signed it leaves after a checkpoint before
    /// it signs the next (its record interval plus one batch); more after the newest
    /// checkpoint means checkpoints were deleted (or records appended by someone else).
    #[serde(default)]
    pub unsigned_max: u64,
}

impl Checkpoint {
    /// The exact bytes that are signed: version 1 covers the sequence number, hash and time,
    /// version 2 also the link to the checkpoint before and the unsigned-tail bound.
    pub fn signed_message(&self, hash: &Hash) -> Vec<u8> {
        let mut m =
            if self.version == 1 { b"airlock-checkpoint-v1\0".to_vec() } else { b"airlock-checkpoint-v2\0".to_vec() };
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(hash);
        m.extend_from_slice(&self.time_us.to_be_bytes());
        if self.version >= 2 {
            m.extend_from_slice(&self.prev.to_be_bytes());
            m.extend_from_slice(&self.unsigned_max.to_be_bytes());
        }
        m
    }

    /// Signs a new (version 2) checkpoint of record `seq`, linked to the checkpoint at `prev`.
    pub fn sign(key: &crypto::SigningKey, seq: u64, hash: &Hash, time_us: i64, prev: u64, unsigned_max: u64) -> Self {
        let mut cp = Self {
            version: 2,
            seq,
            hash: hex(hash),
            time_us,
            public_key: hex(key.public_key()),
            signature: String::new(),
            prev,
            unsigned_max,
        };
        cp.signature = hex(&key.sign(&cp.signed_message(hash)));
        cp
    }

    /// Checks the signature against the embedded public key. Returns the hash it vouches for.
    pub fn check_signature(&self) -> Result<Hash, &'static str> {
        let hash: Hash = crypto::unhex(&self.hash)
            .and_then(|h| h.try_into().ok())
            .ok_or("checkpoint hash is not 32 bytes of hex")?;
        let key = crypto::unhex(&self.public_key).ok_or("checkpoint public key is not hex")?;
        let sig = crypto::unhex(&self.signature).ok_or("checkpoint signature is not hex")?;
        if !(1..=2).contains(&self.version) {
            return Err("unknown checkpoint version");
        }
        if crypto::verify_signature(&key, &self.signed_message(&hash), &sig) {
            Ok(hash)
        } else {
            Err("checkpoint signature does not verify")
        }
    }
}

/// A stored record as `(key, value)`, unparsed.
pub type RawRecord = (Box<[u8]>, Bytes);

/// An open journal database.
pub struct Store {
    db: Arc<DB>,
    // Secondary instances keep their own info log and manifest copy here.
    _secondary_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

/// Whether files in `dir` can be opened with `O_DIRECT` (not on every filesystem: tmpfs before
/// Linux 6.6, some network and FUSE filesystems).
fn direct_io_supported(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join(".direct-io-probe");
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

fn cf_options(memtable_bytes: usize, compress: bool) -> Options {
    let mut o = Options::default();
    o.set_compression_type(if compress { rocksdb::DBCompressionType::Lz4 } else { rocksdb::DBCompressionType::None });
    o.set_write_buffer_size(memtable_bytes);
    o
}

impl Store {
    /// Opens (creating if needed) the database for writing. Only the writer thread does this.
    /// `sealed` says whether data payloads are sealed: their ciphertext does not compress, so the
    /// records column family then skips LZ4 (it cost about 2 % of the gateway's CPU on small HTTP
    /// requests, all of it wasted).
    pub(crate) fn open_primary(path: &Path, memtable_bytes: usize, sealed: bool) -> Result<Self, JournalError> {
        std::fs::create_dir_all(path).map_err(|e| JournalError::io(path, e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        // Tables written by flushes and compactions bypass the page cache: every journaled byte
        // is written twice (WAL, then the first table), and copying the second write into the
        // page cache cost more CPU than anything else on a streaming load.
        opts.set_use_direct_io_for_flush_and_compaction(direct_io_supported(path));
        // A WAL file is deleted once every column family has flushed past it, and the small
        // ones (sessions, keys, meta) would otherwise hold every file until RocksDB's default
        // bound (four times all write buffers: 2.5 GiB here). Bounding the total at two
        // memtables' worth makes them flush, so WAL files go away about as fast as they fill.
        // That made streaming through the journal ~15 % faster here: the writer's largest cost
        // is the kernel copying the WAL into page-cache pages, and freed pages come back cheaper
        // than ones the VM has not touched for a while. (Reusing the
        // WAL files themselves, `recycle_log_file_num`, was faster still but makes RocksDB's
        // secondary reader, which the CLI uses, loop forever on the stale tail of a reused file.)
        opts.set_max_total_wal_size((memtable_bytes as u64).saturating_mul(2));
        let cfs = ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(memtable_bytes, !(sealed && *n == CF_RECORDS))));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self { db: Arc::new(db), _secondary_dir: None })
    }

    /// Opens the database read-only as a secondary instance; safe while the gateway runs.
    pub fn open_reader(path: &Path) -> Result<Self, JournalError> {
        if !path.join("CURRENT").exists() {
            return Err(JournalError::NotFound(path.to_path_buf()));
        }
        let dir = tempfile::Builder::new()
            .prefix("airlock-reader-")
            .tempdir()
            .map_err(|e| JournalError::io(&std::env::temp_dir(), e))?;
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        let db = DB::open_cf_as_secondary(&opts, path, dir.path(), ALL_CFS)?;
        db.try_catch_up_with_primary()?;
        Ok(Self { db: Arc::new(db), _secondary_dir: Some(dir) })
    }

    /// Opens the database for direct modification by tests and repair tools. The gateway must not
    /// be running.
    pub fn open_for_repair(path: &Path) -> Result<Self, JournalError> {
        if !path.join("CURRENT").exists() {
            return Err(JournalError::NotFound(path.to_path_buf()));
        }
        Self::open_primary(path, super::DEFAULT_MEMTABLE_BYTES, false)
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The database, for a thread that outlives a borrow (the batched-mode WAL sync).
    pub(crate) fn shared_db(&self) -> Arc<DB> {
        self.db.clone()
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, JournalError> {
        self.db.cf_handle(name).ok_or(JournalError::MissingColumnFamily(name))
    }

    /// The record stored at `seq`, raw.
    pub fn record(&self, seq: u64) -> Result<Option<Bytes>, JournalError> {
        Ok(self.db.get_cf(self.cf(CF_RECORDS)?, seq.to_be_bytes())?.map(Bytes::from))
    }

    /// All records in key order, raw: `(key, value)`. Keys that are not 8 bytes are returned as
    /// they are so that a verifier can report them.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<RawRecord, JournalError>> + '_, JournalError> {
        let iter = self.db.iterator_cf(self.cf(CF_RECORDS)?, IteratorMode::Start);
        Ok(iter.map(|r| r.map(|(k, v)| (k, Bytes::from(v.into_vec()))).map_err(JournalError::from)))
    }

    /// The highest sequence number and its stored value.
    pub fn last_record(&self) -> Result<Option<(u64, Bytes)>, JournalError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_RECORDS)?, IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r?;
                let seq = seq_from_key(&k).ok_or_else(|| JournalError::Index(format!("record key {}", hex(&k))))?;
                Ok(Some((seq, Bytes::from(v.into_vec()))))
            }
        }
    }

    /// Session summaries in start-time order, from `from` (a UUIDv7 lower bound) on.
    pub fn sessions(&self, from: Option<Uuid>) -> Result<Vec<SessionSummary>, JournalError> {
        let mut start = vec![SUMMARY_PREFIX];
        if let Some(id) = from {
            start.extend_from_slice(id.as_bytes());
        }
        let iter = self.db.iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::From(&start, IterDirection::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if k.first() != Some(&SUMMARY_PREFIX) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| JournalError::Index(e.to_string()))?);
        }
        Ok(out)
    }

    /// One session's summary.
    pub fn session(&self, id: &Uuid) -> Result<Option<SessionSummary>, JournalError> {
        let key = summary_key(id);
        match self.db.get_cf(self.cf(CF_SESSIONS)?, key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| JournalError::Index(e.to_string())),
        }
    }

    /// Sequence numbers of one session's records, in order.
    pub fn session_seqs(&self, id: &Uuid) -> Result<Vec<u64>, JournalError> {
        let prefix = index_prefix(id);
        let iter = self.db.iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::From(&prefix, IterDirection::Forward));
        // Index entries are untrusted input: a run must lie after the one before it and within
        // the records that exist, so a corrupt count cannot make this allocate without bound.
        let newest = self.last_record()?.map_or(0, |(seq, _)| seq);
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(&prefix[..]) else { break };
            let first = seq_from_key(rest).ok_or_else(|| JournalError::Index(format!("index key {}", hex(&k))))?;
            let count = run_length(&v).ok_or_else(|| JournalError::Index(format!("index value {}", hex(&v))))?;
            let last = first.checked_add(u64::from(count) - 1).filter(|&last| last <= newest);
            let after_previous = out.last().is_none_or(|&prev| first > prev);
            let Some(last) = last.filter(|_| after_previous) else {
                return Err(JournalError::Index(format!(
                    "index run {first}+{count} overlaps another or passes the last record ({newest})"
                )));
            };
            if out.len() as u64 + u64::from(count) > MAX_SESSION_RECORDS {
                return Err(JournalError::Index(format!(
                    "index runs of session {id} claim more than {MAX_SESSION_RECORDS} records"
                )));
            }
            out.extend(first..=last);
        }
        Ok(out)
    }

    /// A session's wrapped data key, if it has one and it has not been shredded.
    pub fn wrapped_key(&self, id: &Uuid) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self.db.get_cf(self.cf(CF_KEYS)?, id.as_bytes())?)
    }

    /// Whether any session data key is stored.
    pub fn has_session_keys(&self) -> Result<bool, JournalError> {
        Ok(self.db.iterator_cf(self.cf(CF_KEYS)?, IteratorMode::Start).next().is_some())
    }

    /// Every stored checkpoint, in sequence order.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, JournalError> {
        let iter =
            self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::From(CHECKPOINT_PREFIX, IterDirection::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(CHECKPOINT_PREFIX) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(|e| JournalError::Index(format!("checkpoint: {e}")))?);
        }
        Ok(out)
    }

    /// The checkpoint with the highest sequence number, if any.
    pub fn last_checkpoint(&self) -> Result<Option<Checkpoint>, JournalError> {
        let end = checkpoint_key(u64::MAX);
        let mut iter = self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::From(&end, IterDirection::Reverse));
        match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                if !k.starts_with(CHECKPOINT_PREFIX) {
                    return Ok(None);
                }
                serde_json::from_slice(&v).map(Some).map_err(|e| JournalError::Index(format!("checkpoint: {e}")))
            }
            None => Ok(None),
        }
    }

    /// Every stored checkpoint as its sequence number (from its key) and what its value says:
    /// the checkpoint, or why it does not parse.
    pub fn checkpoint_entries(&self) -> Result<Vec<(u64, StoredCheckpoint)>, JournalError> {
        let iter =
            self.db.iterator_cf(self.cf(CF_META)?, IteratorMode::From(CHECKPOINT_PREFIX, IterDirection::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(CHECKPOINT_PREFIX) else { break };
            let seq = seq_from_key(rest).unwrap_or(0);
            out.push((seq, serde_json::from_slice(&v).map_err(|e| format!("checkpoint does not parse: {e}"))));
        }
        Ok(out)
    }

    /// Index runs in key order (session, then first sequence number): `(session, first, count)`,
    /// or the raw key of an entry that does not parse.
    pub(crate) fn index_runs(&self) -> Result<impl Iterator<Item = Result<IndexRun, JournalError>> + '_, JournalError> {
        let from = [INDEX_PREFIX];
        let iter = self.db.iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::From(&from, IterDirection::Forward));
        Ok(iter.map_while(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((k, v)) => {
                if k.first() != Some(&INDEX_PREFIX) {
                    return None;
                }
                let run = (k.len() == 25)
                    .then(|| Some((Uuid::from_slice(&k[1..17]).ok()?, seq_from_key(&k[17..])?, run_length(&v)?)))
                    .flatten();
                Some(Ok(run.ok_or_else(|| k.to_vec())))
            }
        }))
    }

    /// Session ids that have a summary, in order, or the raw key of one that is malformed.
    pub(crate) fn summary_ids(
        &self,
    ) -> Result<impl Iterator<Item = Result<Result<Uuid, Vec<u8>>, JournalError>> + '_, JournalError> {
        let from = [SUMMARY_PREFIX];
        let iter = self.db.iterator_cf(self.cf(CF_SESSIONS)?, IteratorMode::From(&from, IterDirection::Forward));
        Ok(iter.map_while(|item| match item {
            Err(e) => Some(Err(e.into())),
            Ok((k, _)) => {
                if k.first() != Some(&SUMMARY_PREFIX) {
                    return None;
                }
                Some(Ok(Uuid::from_slice(&k[1..]).map_err(|_| k.to_vec())))
            }
        }))
    }

    /// The public key the journal was created with.
    pub fn public_key(&self) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self.db.get_cf(self.cf(CF_META)?, META_PUBLIC_KEY)?)
    }

    // === raw access for tamper tests and repair ===

    /// Overwrites the raw value at `seq`.
    pub fn put_raw_record(&self, seq: u64, value: &[u8]) -> Result<(), JournalError> {
        Ok(self.db.put_cf(self.cf(CF_RECORDS)?, seq.to_be_bytes(), value)?)
    }

    /// Deletes every checkpoint that covers a sequence number above `seq`.
    pub fn delete_checkpoints_after(&self, seq: u64) -> Result<(), JournalError> {
        let from = checkpoint_key(seq.saturating_add(1));
        let to = checkpoint_key(u64::MAX);
        let cf = self.cf(CF_META)?;
        self.db.delete_range_cf(cf, from, to.clone())?;
        Ok(self.db.delete_cf(cf, to)?)
    }

    /// Deletes the checkpoint of record `seq`.
    pub fn delete_checkpoint(&self, seq: u64) -> Result<(), JournalError> {
        Ok(self.db.delete_cf(self.cf(CF_META)?, checkpoint_key(seq))?)
    }

    /// Deletes the record at `seq`.
    pub fn delete_raw_record(&self, seq: u64) -> Result<(), JournalError> {
        Ok(self.db.delete_cf(self.cf(CF_RECORDS)?, seq.to_be_bytes())?)
    }

    /// Writes (`Some`) or deletes (`None`) the index entry of a run of `session` from `first`.
    pub fn put_raw_index(&self, session: &Uuid, first: u64, value: Option<&[u8]>) -> Result<(), JournalError> {
        let (cf, key) = (self.cf(CF_SESSIONS)?, index_key(session, first));
        match value {
            Some(v) => self.db.put_cf(cf, key, v)?,
            None => self.db.delete_cf(cf, key)?,
        }
        Ok(())
    }

    /// Overwrites a session's summary with raw bytes.
    pub fn put_raw_summary(&self, session: &Uuid, value: &[u8]) -> Result<(), JournalError> {
        Ok(self.db.put_cf(self.cf(CF_SESSIONS)?, summary_key(session), value)?)
    }

    /// Writes (`Some`) or deletes (`None`) a session's wrapped data key.
    pub fn put_raw_key(&self, session: &Uuid, value: Option<&[u8]>) -> Result<(), JournalError> {
        let cf = self.cf(CF_KEYS)?;
        match value {
            Some(v) => self.db.put_cf(cf, session.as_bytes(), v)?,
            None => self.db.delete_cf(cf, session.as_bytes())?,
        }
        Ok(())
    }

    /// Overwrites the checkpoint stored for `seq` with raw bytes.
    pub fn put_raw_checkpoint(&self, seq: u64, value: &[u8]) -> Result<(), JournalError> {
        Ok(self.db.put_cf(self.cf(CF_META)?, checkpoint_key(seq), value)?)
    }
}

pub(crate) fn seq_from_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

pub(crate) fn summary_key(id: &Uuid) -> [u8; 17] {
    let mut k = [SUMMARY_PREFIX; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// The index entry of a run of `count` consecutive records of one session from `first`.
pub(crate) fn index_key(id: &Uuid, first: u64) -> [u8; 25] {
    let mut k = [0; 25];
    k[..17].copy_from_slice(&index_prefix(id));
    k[17..].copy_from_slice(&first.to_be_bytes());
    k
}

/// Empty for one record (the form journals before runs were written), else the count.
pub(crate) fn index_value(count: u32) -> impl AsRef<[u8]> {
    let bytes = count.to_be_bytes();
    // (A run of one is stored as an empty value.)
    IndexValue { bytes, len: if count == 1 { 0 } else { 4 } }
}

struct IndexValue {
    bytes: [u8; 4],
    len: usize,
}

impl AsRef<[u8]> for IndexValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The run length an index value says; `None` if it is not one.
pub(crate) fn run_length(v: &[u8]) -> Option<u32> {
    match v.len() {
        0 => Some(1),
        4 => Some(u32::from_be_bytes(v.try_into().ok()?)).filter(|&n| n > 0),
        _ => None,
    }
}

pub(crate) fn index_prefix(id: &Uuid) -> [u8; 17] {
    let mut k = [INDEX_PREFIX; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

pub(crate) fn checkpoint_key(seq: u64) -> Vec<u8> {
    let mut k = CHECKPOINT_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
