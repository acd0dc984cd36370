//! The one writer thread: group commit, the hash chain, checkpoints, durability receipts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::crypto::{GENESIS, MasterKey, SigningKey, chain_hash};
use super::record::{self, Hash};
use super::store::{
    CF_KEYS, CF_META, CF_RECORDS, CF_SESSIONS, Checkpoint, META_PUBLIC_KEY, Store, checkpoint_key, index_key,
    index_value, summary_key,
};
use super::{Durability, JournalError, JournalSettings, db_path};
use crate::admin::metrics::Metrics;

/// Most records committed in one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// Most body bytes committed in one batch.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most body bytes queued for the writer and not yet committed, whatever the record count. Half
/// a full batch: enough to keep the writer busy, little enough to keep memory flat.
const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Batched mode, under steady traffic: the shortest time from one commit to the next. Nothing
/// waits for a batched commit before forwarding, so gathering a millisecond of groups into one
/// write costs no request any time, and it spares the writer a wake-up and a RocksDB write per
/// group (about 12 % of the gateway's CPU per HTTP request in `benches/http_compare.sh`). The
/// first group after a quiet spell is committed at once.
const GATHER: Duration = Duration::from_millis(1);
/// How often the ticker wakes the writer (timed checkpoints) and, in batched mode, fsyncs the WAL.
const TICK: Duration = Duration::from_millis(10);

/// Batched mode: the WAL is fsynced by the ticker thread, so the writer goes on committing while
/// the disk syncs (RocksDB allows a WAL sync concurrent with writes).
#[derive(Debug, Default)]
struct WalSync {
    /// Written since the last sync.
    dirty: AtomicBool,
    /// A sync failed: the writer refuses everything after it.
    failed: AtomicBool,
}

/// One record on its way to disk.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) session: Uuid,
    /// The body behind room for its envelope header.
    pub(crate) enveloped: record::Enveloped,
    /// New value of the session's summary in the index.
    pub(crate) summary: Option<Vec<u8>>,
    /// The session's wrapped data key, written with its first record.
    pub(crate) wrapped_key: Option<Vec<u8>>,
}

/// Records handed over together: one channel message and one receipt, for the last of them.
#[derive(Debug)]
pub(crate) enum Group {
    One(Submission),
    Many(Vec<Submission>),
    /// No records: its receipt resolves once everything queued before it is committed (or fails
    /// if anything did), for a caller whose records went with another caller's group.
    Barrier,
}

impl Group {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(v) => v.len(),
            Self::Barrier => 0,
        }
    }

    fn body_bytes(&self) -> usize {
        self.iter().map(|s| s.body().len()).sum()
    }

    fn iter(&self) -> std::slice::Iter<'_, Submission> {
        match self {
            Self::One(s) => std::slice::from_ref(s).iter(),
            Self::Many(v) => v.iter(),
            Self::Barrier => [].iter(),
        }
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Submission> {
        match self {
            Self::One(s) => std::slice::from_mut(s).iter_mut(),
            Self::Many(v) => v.iter_mut(),
            Self::Barrier => [].iter_mut(),
        }
    }
}

impl Submission {
    /// The encoded record body, as the chain hashes it.
    pub(crate) fn body(&self) -> &[u8] {
        self.enveloped.body()
    }
}

/// Room in the writer's queue for one group, reserved ahead: sending into it cannot wait, so a
/// caller that reserves first and only then takes its records can never be cancelled between the
/// two and lose them.
pub(crate) struct Reserved<'a> {
    slot: mpsc::Permit<'a, Command>,
    room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    /// Batched mode only: the writer never gathers in strict mode.
    waiters: Option<&'a Arc<Waiters>>,
}

impl Reserved<'_> {
    /// Queues `group` in the reserved room; its records should be no more than were reserved
    /// for (more still goes, over the bound).
    pub(crate) fn send(self, group: Group) -> Receipt {
        let (tx, rx) = oneshot::channel();
        self.slot.send(Command::Append(group, Ack { tx, _room: self.room }));
        Receipt { rx, waiters: self.waiters.cloned(), counted: false, patient: false }
    }
}

/// Batched mode: who waits for a commit, so that the writer gathers (see [`GATHER`]) only while
/// nobody does. A body pump that awaits each unit's receipt must not wait a millisecond for it.
#[derive(Debug, Default)]
struct Waiters {
    /// Receipts polled and not yet resolved or dropped.
    count: AtomicUsize,
    /// The writer is gathering: a new waiter wakes it.
    gathering: AtomicBool,
    writer: OnceLock<thread::Thread>,
    /// Gatherings that ran to their end (none was cut short).
    full: AtomicU64,
}

impl Waiters {
    /// One more receipt waited on: a gathering writer commits now.
    fn add(&self) {
        // Counted before the flag is read, and the writer sets the flag before it reads the
        // count: one of the two sees the other.
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.gathering.load(Ordering::SeqCst)
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
    }
}

enum Command {
    Append(Group, Ack),
    Tick,
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>, Arc<JournalError>>>),
    Shutdown(oneshot::Sender<Result<Option<Checkpoint>, Arc<JournalError>>>),
}

/// Where a group's outcome goes, and the queue room it holds until it is committed.
struct Ack {
    tx: oneshot::Sender<Result<u64, Arc<JournalError>>>,
    _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Ack {
    fn send(self, outcome: Result<u64, Arc<JournalError>>) {
        let _ = self.tx.send(outcome);
    }
}

/// Resolves when a record is durable (strict) or written (batched), with its sequence number.
#[derive(Debug)]
pub struct Receipt {
    rx: oneshot::Receiver<Result<u64, Arc<JournalError>>>,
    waiters: Option<Arc<Waiters>>,
    /// Counted in `waiters` (polled while pending).
    counted: bool,
    /// Awaited by someone who does not mind the writer gathering first (see [`Receipt::patient`]).
    patient: bool,
}

impl Receipt {
    /// This receipt awaited off the path of any data, only to learn the outcome (a session-close
    /// record): the writer need not cut its gathering short for it.
    pub fn patient(mut self) -> Self {
        self.patient = true;
        self
    }

    /// This receipt will be awaited right after the caller forwards its data: counted as
    /// waited on from now, so the writer commits while the data moves instead of gathering
    /// and being woken again when the caller comes to wait.
    pub fn awaited_next(mut self) -> Self {
        self.count();
        self
    }

    fn count(&mut self) {
        if !self.counted
            && !self.patient
            && let Some(w) = &self.waiters
        {
            self.counted = true;
            w.add();
        }
    }

    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted)
            && let Some(w) = &self.waiters
        {
            w.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Future for Receipt {
    type Output = Result<u64, Arc<JournalError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(r) => {
                this.uncount();
                Poll::Ready(r.unwrap_or_else(|_| Err(Arc::new(JournalError::Closed))))
            }
            Poll::Pending => {
                this.count();
                Poll::Pending
            }
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.uncount();
    }
}

/// Handle to the journal writer. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    /// Queue room in records: producers wait for it, so a fast source (a large query result in
    /// batched mode) cannot pile records up in memory. The channel's own bound counts groups,
    /// whatever their size.
    room: Arc<Semaphore>,
    /// The room's size (`queue_depth`).
    depth: usize,
    /// Queue room in body bytes ([`MAX_QUEUED_BYTES`]): a few large records hold as much memory
    /// as many small ones.
    bytes: Arc<Semaphore>,
    /// False once a write failed: the journal refuses everything after that.
    healthy: Arc<AtomicBool>,
    durability: Durability,
    master: Option<Arc<MasterKey>>,
    public_key: Vec<u8>,
    /// The writer and the ticker, joined at shutdown (the ticker holds the database open in
    /// batched mode).
    thread: std::sync::Mutex<Option<(thread::JoinHandle<()>, thread::JoinHandle<()>)>>,
    wal: Arc<WalSync>,
    waiters: Arc<Waiters>,
}

impl Journal {
    /// Opens the database, recovers the chain head, loads (or creates) keys and starts the writer.
    pub fn open(settings: &JournalSettings, metrics: Arc<Metrics>) -> Result<Self, JournalError> {
        let store = Store::open_primary(&db_path(&settings.data_dir), settings.memtable_bytes, settings.encrypt)?;
        let last = store.last_record()?;
        // Keys are created only with a new journal: a missing key later is an error, never a
        // silent replacement that would orphan old sessions or old checkpoints.
        let fresh = last.is_none();
        let signing = SigningKey::load_or_create(&settings.signing_key, fresh)?;
        if let Some(recorded) = store.public_key()?
            && recorded != signing.public_key()
        {
            return Err(JournalError::KeyMismatch(settings.signing_key.clone()));
        }
        let master = if settings.encrypt {
            Some(Arc::new(MasterKey::load_or_create(&settings.master_key, fresh || !store.has_session_keys()?)?))
        } else {
            None
        };
        let (seq, hash) = match last {
            None => (0, GENESIS),
            Some((seq, value)) => {
                let env = record::decode_envelope(&value).map_err(|source| JournalError::Record { seq, source })?;
                (seq, env.hash)
            }
        };
        // Appending to a journal whose tail was cut, or whose last checkpointed record was
        // edited, would chain new records to a head no signature vouches for, and the next
        // checkpoint would sign over the gap (even overwrite the checkpoint that shows it).
        let newest = store.last_checkpoint()?;
        let signed_up_to = match &newest {
            None => 0,
            Some(cp) => {
                if let Some(problem) = super::verify::checkpoint_problem(&store, cp, signing.public_key())? {
                    return Err(JournalError::Tampered(problem));
                }
                cp.seq
            }
        };
        // More records after the newest checkpoint than a gateway leaves unsigned: checkpoints
        // after it were deleted, and the next checkpoint would sign whatever took their place.
        let depth = settings.queue_depth.clamp(1, Semaphore::MAX_PERMITS);
        // After a checkpoint is due, one more batch may commit before it is signed: at most the
        // queue's room in records, or one group larger than the room (a few records; 1024 is
        // far more than any group the drivers hand over).
        let unsigned_max = settings.checkpoint_every_records.max(1).saturating_add(depth.max(1024) as u64);
        if let Some(problem) = super::verify::unsigned_tail_problem(newest.as_ref(), seq, unsigned_max) {
            return Err(JournalError::Tampered(problem));
        }
        if store.public_key()?.is_none() {
            store.db().put_cf(store.cf(CF_META)?, META_PUBLIC_KEY, signing.public_key())?;
        }
        let public_key = signing.public_key().to_vec();
        info!(last_seq = seq, durability = ?settings.durability, "Journal opened.");
        let (tx, rx) = mpsc::channel(depth);
        let healthy = Arc::new(AtomicBool::new(true));
        let wal = Arc::new(WalSync::default());
        let sync_db = (settings.durability == Durability::Batched).then(|| store.shared_db());
        let (tick_wal, tick_metrics) = (wal.clone(), metrics.clone());
        let room = Arc::new(Semaphore::new(depth));
        let bytes = Arc::new(Semaphore::new(MAX_QUEUED_BYTES));
        let waiters = Arc::new(Waiters::default());
        let mut writer = Writer {
            queue: (room.clone(), bytes.clone(), depth),
            waiters: waiters.clone(),
            store,
            signing,
            durability: settings.durability,
            seq,
            hash,
            // Records after the newest checkpoint (a crash before the next one) are signed with
            // the next checkpoint, timed or at shutdown, even if no new record arrives.
            since_checkpoint: seq.saturating_sub(signed_up_to),
            last_checkpoint: Instant::now(),
            checkpoint_every: settings.checkpoint_every_records.max(1),
            checkpoint_interval: settings.checkpoint_interval,
            wal: wal.clone(),
            metrics,
            failed: false,
            healthy: healthy.clone(),
            last_checkpoint_written: None,
            signed_up_to,
            unsigned_max,
        };
        // Records a crash left unsigned are signed now, so that an unsigned tail never grows
        // across restarts beyond the bound each checkpoint states.
        if writer.since_checkpoint > 0 {
            writer.sign_checkpoint()?;
        } else if let Some(cp) = &newest
            && cp.seq == seq
            && (cp.version < 2 || cp.unsigned_max < unsigned_max)
        {
            // Started with a longer checkpoint interval (or by a version that stated none): the
            // newest checkpoint is signed again with this gateway's bound, or a crash before its
            // next checkpoint would leave more unsigned records than the old bound allows.
            writer.resign_newest(cp.prev)?;
        }
        let tick_tx = tx.downgrade();
        let tick = thread::Builder::new()
            .name("airlock-journal-tick".into())
            .spawn(move || {
                while let Some(tx) = tick_tx.upgrade() {
                    let closed = matches!(tx.try_send(Command::Tick), Err(mpsc::error::TrySendError::Closed(_)));
                    drop(tx);
                    if closed {
                        break;
                    }
                    thread::sleep(TICK);
                    if let Some(db) = &sync_db
                        && !tick_wal.failed.load(Ordering::Acquire)
                        && tick_wal.dirty.swap(false, Ordering::AcqRel)
                    {
                        let started = Instant::now();
                        match db.flush_wal(true) {
                            Ok(()) => tick_metrics.journal_wal_sync_seconds.observe(started.elapsed().as_secs_f64()),
                            Err(e) => {
                                error!(error = %e, "Journal WAL sync failed; refusing further records.");
                                tick_wal.failed.store(true, Ordering::Release);
                            }
                        }
                    }
                }
            })
            .map_err(|e| JournalError::io(&settings.data_dir, e))?;
        let handle = thread::Builder::new()
            .name("airlock-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| JournalError::io(&settings.data_dir, e))?;
        let _ = waiters.writer.set(handle.thread().clone());
        Ok(Self {
            tx,
            room,
            depth,
            bytes,
            healthy,
            durability: settings.durability,
            master,
            public_key,
            thread: std::sync::Mutex::new(Some((handle, tick))),
            wal,
            waiters,
        })
    }

    /// False once a write has failed; the gateway is then not ready.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Marks the journal failed, as a failed write does (tests: a real write failure needs a
    /// full or failing disk).
    #[cfg(test)]
    pub(crate) fn poison(&self) {
        self.healthy.store(false, Ordering::Release);
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The master key, when payloads are sealed.
    pub fn master_key(&self) -> Option<&Arc<MasterKey>> {
        self.master.as_ref()
    }

    /// Public half of the checkpoint signing key.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Queues records, in order and as one hand-off to the writer; waits only for room in the
    /// queue (backpressure), not for the disk. The receipt is the last record's, and covers them
    /// all: they are committed in one batch or refused together.
    pub(crate) async fn submit(&self, group: Group) -> Result<Receipt, JournalError> {
        Ok(self.reserve(group.len(), group.body_bytes()).await?.send(group))
    }

    /// Waits for room for a group of `records` records and `bytes` body bytes, and for a slot in
    /// the channel (backpressure).
    pub(crate) async fn reserve(&self, records: usize, bytes: usize) -> Result<Reserved<'_>, JournalError> {
        // After a failed write or sync nothing more is taken: a batched session, which does not
        // wait for its receipts, learns of the failure here, before it forwards anything else.
        if !self.is_healthy() || self.wal.failed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        // A group larger than the whole room takes all of it rather than wait forever.
        let records = u32::try_from(records.min(self.depth)).unwrap_or(u32::MAX);
        let room = self.room.clone().acquire_many_owned(records).await.map_err(|_| JournalError::Closed)?;
        let size = u32::try_from(bytes.min(MAX_QUEUED_BYTES)).unwrap_or(u32::MAX);
        let bytes = self.bytes.clone().acquire_many_owned(size).await.map_err(|_| JournalError::Closed)?;
        let slot = self.tx.reserve().await.map_err(|_| JournalError::Closed)?;
        // Half the room taken while the writer gathers: it commits now rather than let the
        // next producer wait for room.
        if self.waiters.gathering.load(Ordering::SeqCst)
            && !mostly_free(&self.room, &self.bytes, self.depth)
            && let Some(writer) = self.waiters.writer.get()
        {
            writer.unpark();
        }
        let waiters = (self.durability == Durability::Batched).then_some(&self.waiters);
        Ok(Reserved { slot, room: (room, bytes), waiters })
    }

    /// Batched mode: how many times the writer gathered to the end of its interval.
    #[cfg(test)]
    pub(crate) fn full_gathers(&self) -> u64 {
        self.waiters.full.load(Ordering::Relaxed)
    }

    /// Writes a signed checkpoint now if records arrived since the last one.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, Arc<JournalError>> {
        let (ack, rx) = oneshot::channel();
        self.tx.send(Command::Checkpoint(ack)).await.map_err(|_| Arc::new(JournalError::Closed))?;
        rx.await.unwrap_or_else(|_| Err(Arc::new(JournalError::Closed)))
    }

    /// Whether the writer has gone (shut down or failed): nothing handed over now is written.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Writes a final checkpoint, syncs, and stops the writer thread. Later submissions fail.
    pub async fn shutdown(&self) -> Result<Option<Checkpoint>, Arc<JournalError>> {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(ack)).await.is_err() {
            return Err(Arc::new(JournalError::Closed));
        }
        let result = rx.await.unwrap_or_else(|_| Err(Arc::new(JournalError::Closed)));
        let handles = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some((writer, tick)) = handles {
            let _ = tokio::task::spawn_blocking(move || (writer.join(), tick.join())).await;
        }
        // A sync that failed on the ticker after the writer's last look is still a failure.
        if self.wal.failed.load(Ordering::Acquire) {
            return Err(Arc::new(JournalError::Internal("a write-ahead log sync failed")));
        }
        result
    }
}

/// Whether more than half of the queue's room, in records (of `depth`) and in bytes, is free.
fn mostly_free(room: &Semaphore, bytes: &Semaphore, depth: usize) -> bool {
    room.available_permits() * 2 >= depth && bytes.available_permits() * 2 >= MAX_QUEUED_BYTES
}

struct Writer {
    /// The queue's room in records and in bytes, and its size in records: the writer gathers
    /// (see [`GATHER`]) only while more than half of both is free, so no producer waits for it.
    queue: (Arc<Semaphore>, Arc<Semaphore>, usize),
    waiters: Arc<Waiters>,
    store: Store,
    signing: SigningKey,
    durability: Durability,
    seq: u64,
    hash: Hash,
    since_checkpoint: u64,
    /// The newest checkpoint's record: the next one links to it.
    signed_up_to: u64,
    /// The most records left after a checkpoint before the next (see [`Checkpoint::unsigned_max`]).
    unsigned_max: u64,
    last_checkpoint: Instant,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    /// Batched mode: what is written but not yet fsynced, and whether a sync failed.
    wal: Arc<WalSync>,
    metrics: Arc<Metrics>,
    /// A write failed: refuse everything after it so nothing continues unrecorded.
    failed: bool,
    healthy: Arc<AtomicBool>,
    /// The newest checkpoint, returned when asked for one and nothing new arrived since.
    last_checkpoint_written: Option<Checkpoint>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<(Group, Ack)> = Vec::with_capacity(MAX_BATCH_RECORDS);
        let mut last_commit = None;
        while let Some(first) = rx.blocking_recv() {
            if self.durability == Durability::Batched
                && let Some(since) = last_commit
            {
                self.gather(since);
            }
            let mut control = Vec::new();
            let (mut records, mut bytes) = (0usize, 0usize);
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(group, ack) => {
                        records += group.len();
                        bytes += group.body_bytes();
                        batch.push((group, ack));
                    }
                    other => control.push(other),
                }
                if records < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
                last_commit = Some(Instant::now());
            }
            let due = self.since_checkpoint >= self.checkpoint_every
                || (self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.checkpoint_interval);
            if due && let Err(e) = self.write_checkpoint() {
                error!(error = %e, "Checkpoint write failed; refusing further records.");
            }
            self.check_sync();
            for cmd in control {
                match cmd {
                    Command::Tick | Command::Append(..) => {}
                    Command::Checkpoint(ack) => {
                        let _ = ack.send(self.write_checkpoint().map_err(Arc::new));
                    }
                    Command::Shutdown(ack) => {
                        let result = self.write_checkpoint();
                        self.sync_wal();
                        let _ = ack.send(result.map_err(Arc::new));
                        info!(last_seq = self.seq, "Journal closed.");
                        return;
                    }
                }
            }
        }
    }

    /// Waits until [`GATHER`] after the last commit (`since`), while nobody waits for a receipt
    /// and more than half the queue's room is free.
    fn gather(&self, since: Instant) {
        let until = since + GATHER;
        let w = &self.waiters;
        w.gathering.store(true, Ordering::SeqCst);
        let (room, bytes, depth) = &self.queue;
        let full = loop {
            let now = Instant::now();
            if now >= until {
                break true;
            }
            if w.count.load(Ordering::SeqCst) > 0 || !mostly_free(room, bytes, *depth) {
                break false;
            }
            thread::park_timeout(until - now);
        };
        if full {
            w.full.fetch_add(1, Ordering::Relaxed);
        }
        w.gathering.store(false, Ordering::SeqCst);
    }

    /// Batched mode, at shutdown: fsync what the ticker has not.
    fn sync_wal(&mut self) {
        if !self.wal.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        match self.store.db().flush_wal(true) {
            Ok(()) => {}
            Err(e) => {
                error!(error = %e, "Journal WAL sync failed; refusing further records.");
                self.fail("journal_sync");
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<(Group, Ack)>) {
        let started = Instant::now();
        self.check_sync();
        if self.failed {
            for (_, ack) in batch.drain(..) {
                ack.send(Err(Arc::new(JournalError::Closed)));
            }
            return;
        }
        let (seq0, hash0) = (self.seq, self.hash);
        let result = self.write_batch(batch.as_mut_slice());
        let n = (self.seq - seq0) as usize;
        match result {
            Ok(()) => {
                self.since_checkpoint += n as u64;
                let mut last = seq0;
                for (group, ack) in batch.drain(..) {
                    last += group.len() as u64;
                    ack.send(Ok(last));
                }
                self.metrics.journal_commit(n, started.elapsed());
                debug!(records = n, last_seq = self.seq, "Journal batch committed.");
            }
            Err(e) => {
                error!(error = %e, records = n, "Journal write failed; the affected sessions will close.");
                self.fail("journal_write");
                self.seq = seq0;
                self.hash = hash0;
                let e = Arc::new(e);
                for (_, ack) in batch.drain(..) {
                    ack.send(Err(e.clone()));
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &mut [(Group, Ack)]) -> Result<(), JournalError> {
        let records = self.store.cf(CF_RECORDS)?;
        let sessions = self.store.cf(CF_SESSIONS)?;
        let keys = self.store.cf(CF_KEYS)?;
        // Sized up front: a batch of large records grown by doubling copied each of them again
        // on every growth.
        let capacity = 12
            + batch
                .iter()
                .flat_map(|(group, _)| group.iter())
                .map(|sub| {
                    const PER_ENTRY: usize = 64; // tag, column family, key, lengths; an index entry
                    let extra = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, |v| v.len() + PER_ENTRY);
                    PER_ENTRY + sub.enveloped.len() + extra(&sub.summary) + extra(&sub.wrapped_key)
                })
                .sum::<usize>();
        let mut wb = WriteBatch::with_capacity_bytes(capacity);
        // One index entry per run of a session's consecutive records (a group is one run).
        let mut run: Option<(Uuid, u64, u32)> = None;
        let end_run = |wb: &mut WriteBatch, run: Option<(Uuid, u64, u32)>| {
            if let Some((session, first, count)) = run {
                wb.put_cf(sessions, index_key(&session, first), index_value(count));
            }
        };
        for sub in batch.iter_mut().flat_map(|(group, _)| group.iter_mut()) {
            self.seq += 1;
            self.hash = chain_hash(&self.hash, self.seq, sub.body());
            wb.put_cf(records, self.seq.to_be_bytes(), sub.enveloped.with_header(&self.hash));
            run = match run {
                Some((session, first, count)) if session == sub.session && count < u32::MAX => {
                    Some((session, first, count + 1))
                }
                other => {
                    end_run(&mut wb, other);
                    Some((sub.session, self.seq, 1))
                }
            };
            if let Some(summary) = &sub.summary {
                wb.put_cf(sessions, summary_key(&sub.session), summary);
            }
            if let Some(key) = &sub.wrapped_key {
                wb.put_cf(keys, sub.session.as_bytes(), key);
            }
        }
        end_run(&mut wb, run);
        let mut opts = WriteOptions::default();
        opts.set_sync(self.durability == Durability::Strict);
        self.store.db().write_opt(wb, &opts)?;
        if self.durability == Durability::Batched {
            self.wal.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// A failed sync on the ticker stops the journal as a failed write does.
    fn check_sync(&mut self) {
        if !self.failed && self.wal.failed.load(Ordering::Acquire) {
            self.fail("journal_sync");
        }
    }

    fn fail(&mut self, kind: &'static str) {
        self.metrics.error(kind);
        self.failed = true;
        self.healthy.store(false, Ordering::Release);
    }

    fn write_checkpoint(&mut self) -> Result<Option<Checkpoint>, JournalError> {
        // Never sign over records whose sync failed.
        self.check_sync();
        if self.failed {
            return Err(JournalError::Closed);
        }
        if self.since_checkpoint == 0 || self.seq == 0 {
            return Ok(self.last_checkpoint_written.clone());
        }
        let result = self.sign_checkpoint();
        if result.is_err() {
            self.fail("journal_checkpoint");
        }
        result.map(Some)
    }

    /// Signs the newest checkpoint's record again, with the same link and this gateway's bound.
    fn resign_newest(&mut self, prev: u64) -> Result<(), JournalError> {
        let cp = Checkpoint::sign(&self.signing, self.seq, &self.hash, crate::time::now_us(), prev, self.unsigned_max);
        let json = serde_json::to_vec(&cp).map_err(|e| JournalError::Index(e.to_string()))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.store.db().put_cf_opt(self.store.cf(CF_META)?, checkpoint_key(self.seq), json, &opts)?;
        self.last_checkpoint_written = Some(cp);
        Ok(())
    }

    fn sign_checkpoint(&mut self) -> Result<Checkpoint, JournalError> {
        let cp = Checkpoint::sign(
            &self.signing,
            self.seq,
            &self.hash,
            crate::time::now_us(),
            self.signed_up_to,
            self.unsigned_max,
        );
        let json = serde_json::to_vec(&cp).map_err(|e| JournalError::Index(e.to_string()))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut wb = WriteBatch::default();
        wb.put_cf(self.store.cf(CF_META)?, checkpoint_key(self.seq), json);
        self.store.db().write_opt(wb, &opts)?;
        self.since_checkpoint = 0;
        self.signed_up_to = self.seq;
        self.last_checkpoint = Instant::now();
        self.metrics.journal_checkpoints.inc();
        debug!(seq = cp.seq, "Checkpoint signed.");
        self.last_checkpoint_written = Some(cp.clone());
        Ok(cp)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.wal.dirty.swap(false, Ordering::AcqRel) {
            warn!("Journal writer stopped with unsynced records; syncing.");
            let _ = self.store.db().flush_wal(true);
        }
    }
}
