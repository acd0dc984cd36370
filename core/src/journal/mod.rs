//! The session journal: an embedded RocksDB database that holds every session, every byte that
//! crossed the gateway, and signed checkpoints over a SHA-256 hash chain.
//!
//! Guarantees:
//! - **Write-ahead.** One writer thread owns the database; producers send records over a bounded
//!   channel and await a durability receipt. With [`Durability::Strict`] a receipt means the record
//!   is fsynced, and drivers forward bytes only after their receipt (group commit: one WAL fsync per
//!   batch, never one per record).
//! - **Tamper evidence.** Each record stores `SHA-256(prev_hash ‖ seq ‖ body)`; Ed25519-signed
//!   checkpoints are written every N records, every T seconds and at shutdown. [`verify`] recomputes
//!   everything offline and names the first sequence number that is wrong.
//! - **Encryption at rest.** Data payloads are sealed with a per-session AES-256-GCM key wrapped by
//!   a master key; the chain covers the ciphertext, so deleting a session's key erases its content
//!   and the chain still verifies.
//! - **Fail closed.** A write failure is returned to every producer in the batch; drivers close the
//!   session rather than continue unrecorded.

pub mod crypto;
pub mod read;
pub mod record;
pub mod session;
pub mod store;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use record::{Direction, Hash, Record, RecordKind};
pub use session::SessionJournal;
pub use store::{Checkpoint, SessionSummary, Store};
pub use writer::{Journal, Receipt};

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A record is fsynced before its receipt resolves, and drivers forward bytes only after the
    /// receipt. Nothing the caller or upstream received can be missing after a crash.
    #[default]
    Strict,
    /// Records are written to the WAL as soon as the writer reaches them and fsynced at most
    /// 10 ms later; drivers forward without waiting. A process crash loses the records still
    /// queued for the writer (at most `queue_depth` records or 8 MiB, normally a batch or two),
    /// a power loss also the last ~10 ms written. A failed write stops every session at its
    /// next hand-off.
    Batched,
}

/// Validated journal settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Directory that holds the database and, by default, the keys.
    pub data_dir: PathBuf,
    /// When a record counts as written.
    pub durability: Durability,
    /// Write a signed checkpoint after this many records.
    pub checkpoint_every_records: u64,
    /// Write a signed checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Ed25519 signing key (PKCS#8).
    pub signing_key: PathBuf,
    /// Master key that wraps per-session data keys (32 raw bytes).
    pub master_key: PathBuf,
    /// Seal data payloads with per-session keys.
    pub encrypt: bool,
    /// Capacity of the channel to the writer thread, in records.
    pub queue_depth: usize,
    /// Bytes of records RocksDB holds in a memtable before it writes them to a table file.
    pub memtable_bytes: usize,
}

/// The default `memtable_bytes` (RocksDB's own default write buffer).
pub const DEFAULT_MEMTABLE_BYTES: usize = 64 << 20;

impl JournalSettings {
    /// Defaults for a data directory, with keys inside it.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            signing_key: default_signing_key(&data_dir),
            master_key: default_master_key(&data_dir),
            data_dir,
            durability: Durability::Strict,
            checkpoint_every_records: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            encrypt: true,
            queue_depth: 8192,
            memtable_bytes: DEFAULT_MEMTABLE_BYTES,
        }
    }
}

/// Where the RocksDB files live inside a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal")
}

/// Default signing key location.
pub fn default_signing_key(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing.key")
}

/// Default master key location.
pub fn default_master_key(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("master.key")
}

/// What went wrong in the journal. Every variant is an internal-side failure: the caller and the
/// upstream did nothing wrong, and the session they were in is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// RocksDB refused an operation.
    #[error("journal database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or cipher operation failed.
    #[error("journal crypto: {0}")]
    Crypto(&'static str),
    /// A stored record does not parse.
    #[error("record {seq}: {source}")]
    Record {
        /// Its sequence number.
        seq: u64,
        /// The cause.
        source: record::RecordError,
    },
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(#[from] record::RecordError),
    /// The writer thread has stopped (shutdown or an earlier fatal error).
    #[error("the journal writer has stopped")]
    Closed,
    /// A column family is missing: not an Airlock journal.
    #[error("journal database has no column family `{0}`: not an Airlock journal")]
    MissingColumnFamily(&'static str),
    /// A stored index entry does not parse.
    #[error("corrupt journal index entry: {0}")]
    Index(String),
    /// The signing key does not match the key this journal was created with.
    #[error("signing key {0} is not the key this journal was created with; restore the original key")]
    KeyMismatch(PathBuf),
    /// The records do not reach the newest signed checkpoint, or differ from it: the journal was
    /// cut or edited, and the gateway will not append to it (nor sign over it).
    #[error("the journal does not match its newest signed checkpoint: {0}; run `airlock journal verify`")]
    Tampered(String),
    /// An internal invariant broke (a poisoned lock); the session is closed.
    #[error("journal internal error: {0}")]
    Internal(&'static str),
    /// No journal at the given place.
    #[error("no journal at {0} (is --data-dir right?)")]
    NotFound(PathBuf),
}

impl JournalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
