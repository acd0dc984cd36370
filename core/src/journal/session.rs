//! The journal as one session sees it: encodes its records, seals its payloads, keeps its index
//! summary up to date.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use uuid::Uuid;

use super::JournalError;
use super::crypto::SessionCipher;
use super::record::{
    CloseMeta, DataFrame, DecisionMeta, Direction, FrameFlags, MAX_PAYLOAD_LEN, OpenMeta, Payload, Record, RecordKind,
    UpstreamMeta, data_aad, encode_body_in_envelope,
};
use super::store::SessionSummary;
use super::writer::{Group, Journal, Receipt, Submission};
use crate::time::now_us;

/// One session's writer into the journal.
///
/// Records are either queued at once (`data`, `decision`, …, each returning the receipt the
/// caller may await) or *staged* (`stage_*`): held in the session and handed to the writer with
/// the next queued record, or by [`SessionJournal::flush`], as one group. Staging is for records
/// that nothing waits on by themselves — the session-open record, a decision in batched mode, the
/// head, body and close of a response that is delivered whole — so that one hand-off to the
/// writer thread and one receipt cover several records. Staged records keep their order and come
/// before the record that carries them; one task should stage and flush.
#[derive(Debug)]
pub struct SessionJournal {
    journal: Arc<Journal>,
    id: Uuid,
    cipher: Option<SessionCipher>,
    /// The index summary as the session opened (a close writes its own, closed copy).
    summary: SessionSummary,
    /// The index summary has not been handed to the writer yet. It goes with the first hand-off,
    /// encoded then — unless that hand-off carries the close, whose summary is the final one
    /// (a short session's summary is encoded and written once, not twice).
    summary_pending: AtomicBool,
    /// Set from the session-open record: every later record carries the mark.
    break_glass: bool,
    /// Records waiting for the next hand-off.
    staged: Mutex<Vec<Submission>>,
    /// Held across a hand-off, so a session's groups reach the writer in the order their records
    /// were taken.
    turn: tokio::sync::Mutex<()>,
}

impl SessionJournal {
    /// Starts a session: assigns a UUIDv7, creates its data key, and stages the session-open
    /// record, which goes to the writer with the session's next record (every driver writes one
    /// at once: the admission decision, or the close of a refusal).
    pub fn open(journal: Arc<Journal>, meta: OpenMeta) -> Result<Self, JournalError> {
        let id = Uuid::now_v7();
        let time_us = now_us();
        let (cipher, wrapped_key) = match journal.master_key() {
            Some(master) => {
                let (cipher, wrapped) = master.new_session_key(id.as_bytes())?;
                (Some(cipher), Some(wrapped))
            }
            None => (None, None),
        };
        let meta = OpenMeta { sealed: cipher.is_some(), ..meta };
        let break_glass = meta.break_glass;
        let summary = SessionSummary {
            id,
            route: meta.route.clone(),
            protocol: meta.protocol.clone(),
            client_addr: meta.client_addr.clone(),
            principal: meta.principal.clone(),
            opened_us: time_us,
            closed_us: None,
            close_reason: None,
            bytes_from_client: 0,
            bytes_from_upstream: 0,
        };
        let enveloped = encode_body_in_envelope(&Record { session: id, time_us, kind: RecordKind::SessionOpen(meta) })?;
        let open = Submission { session: id, enveloped, summary: None, wrapped_key };
        Ok(Self {
            journal,
            id,
            cipher,
            summary,
            summary_pending: AtomicBool::new(true),
            break_glass,
            staged: Mutex::new(vec![open]),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// The session id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Queues a data record (split into several if over the per-record limit). The receipt of the
    /// last piece resolves once all of them are written: the writer commits in order and refuses
    /// everything after a failure.
    pub async fn data(&self, direction: Direction, fin: bool, bytes: &Bytes) -> Result<Receipt, JournalError> {
        self.stage_data(direction, fin, bytes)?;
        self.flush().await
    }

    /// Stages a data record (split like [`SessionJournal::data`]).
    pub fn stage_data(&self, direction: Direction, fin: bool, bytes: &Bytes) -> Result<(), JournalError> {
        self.frames(direction, FrameFlags { fin, ..FrameFlags::default() }, bytes)
    }

    /// Queues an HTTP message head (HTTP/1.1 text form, credentials already redacted) as a
    /// sealed data frame marked `head`; with `fin`, the message ends with its head.
    pub async fn http_head(&self, direction: Direction, head: &Bytes, fin: bool) -> Result<Receipt, JournalError> {
        self.stage_http_head(direction, head, fin)?;
        self.flush().await
    }

    /// Stages an HTTP message head; with `fin`, it also says that no body follows in that
    /// direction (the message ends with its head).
    pub fn stage_http_head(&self, direction: Direction, head: &Bytes, fin: bool) -> Result<(), JournalError> {
        self.frames(direction, FrameFlags { head: true, fin, ..FrameFlags::default() }, head)
    }

    fn frames(&self, direction: Direction, flags: FrameFlags, bytes: &Bytes) -> Result<(), JournalError> {
        let mut rest = bytes.clone();
        loop {
            let piece = rest.split_to(rest.len().min(MAX_PAYLOAD_LEN));
            let last = rest.is_empty();
            let flags = FrameFlags { fin: flags.fin && last, ..flags };
            self.data_piece(direction, flags, piece)?;
            if last {
                return Ok(());
            }
        }
    }

    fn data_piece(&self, direction: Direction, flags: FrameFlags, piece: Bytes) -> Result<(), JournalError> {
        let time_us = now_us();
        let flags = FrameFlags { break_glass: self.break_glass, ..flags };
        let payload = match &self.cipher {
            Some(cipher) => {
                let aad = data_aad(&self.id, time_us, direction, flags);
                let (nonce, ciphertext) = cipher.seal(&aad, &piece)?;
                Payload::Sealed { nonce, ciphertext: Bytes::from(ciphertext) }
            }
            None => Payload::Plain(piece),
        };
        let frame = DataFrame { direction, fin: flags.fin, break_glass: flags.break_glass, head: flags.head, payload };
        self.stage(time_us, RecordKind::Data(frame), None)
    }

    /// Stages an upstream-connected record.
    pub fn stage_upstream_connected(&self, meta: UpstreamMeta) -> Result<(), JournalError> {
        let meta = UpstreamMeta { break_glass: self.break_glass, ..meta };
        self.stage(now_us(), RecordKind::UpstreamConnected(meta), None)
    }

    /// Queues an access-decision record.
    pub async fn decision(&self, meta: DecisionMeta) -> Result<Receipt, JournalError> {
        self.stage_decision(meta)?;
        self.flush().await
    }

    /// Stages an access-decision record.
    pub fn stage_decision(&self, meta: DecisionMeta) -> Result<(), JournalError> {
        let meta = DecisionMeta { break_glass: self.break_glass, ..meta };
        self.stage(now_us(), RecordKind::Decision(meta), None)
    }

    /// Queues the session-close record and the final index summary.
    pub async fn close(&self, meta: CloseMeta) -> Result<Receipt, JournalError> {
        self.stage_close(meta)?;
        self.flush().await
    }

    /// Stages the session-close record and the final index summary.
    pub fn stage_close(&self, meta: CloseMeta) -> Result<(), JournalError> {
        let meta = CloseMeta { break_glass: self.break_glass, ..meta };
        let time_us = now_us();
        // The closed summary goes with the close record only: the session's own stays as it was
        // opened, so a hand-off that does not carry the close (an earlier one still waiting for
        // room, or one after a close that failed to stage) never calls the session closed.
        let summary = {
            let mut s = self.summary.clone();
            s.closed_us = Some(time_us);
            s.close_reason = Some(meta.reason.clone());
            s.bytes_from_client = meta.bytes_from_client;
            s.bytes_from_upstream = meta.bytes_from_upstream;
            encode_summary(&s)?
        };
        self.stage(time_us, RecordKind::SessionClose(meta), Some(summary))
    }

    /// Hands every staged record to the writer as one group. The receipt covers every record
    /// this session staged before the call: if nothing is left to hand over (nothing was staged,
    /// or another task's hand-off took it along), it is a barrier behind what was queued before.
    ///
    /// Room in the writer's queue is reserved before the records are taken, and the send into it
    /// cannot wait: a caller cancelled while it waits leaves the records staged (for the next
    /// hand-off, or `Drop`) instead of losing them.
    pub async fn flush(&self) -> Result<Receipt, JournalError> {
        let _turn = self.turn.lock().await;
        let (records, bytes) = {
            let staged = self.staged_records()?;
            (staged.len(), staged.iter().map(|s| s.body().len()).sum())
        };
        let reserved = self.journal.reserve(records, bytes).await?;
        // Records staged since the count was taken stay for their own hand-off.
        let group = {
            let mut staged = self.staged_records()?;
            let records = records.min(staged.len());
            self.attach_summary(&mut staged[..records])?;
            match records {
                0 => Group::Barrier,
                1 => Group::One(staged.remove(0)),
                n if n == staged.len() => Group::Many(std::mem::take(&mut *staged)),
                n => Group::Many(staged.drain(..n).collect()),
            }
        };
        Ok(reserved.send(group))
    }

    /// Gives the first records handed over the session's summary, if it is still pending and
    /// they do not carry the close's.
    fn attach_summary(&self, subs: &mut [Submission]) -> Result<(), JournalError> {
        if subs.is_empty() || !self.summary_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        if !subs.iter().any(|s| s.summary.is_some()) {
            subs[0].summary = Some(encode_summary(&self.summary)?);
        }
        self.summary_pending.store(false, Ordering::Release);
        Ok(())
    }

    fn stage(&self, time_us: i64, kind: RecordKind, summary: Option<Vec<u8>>) -> Result<(), JournalError> {
        let enveloped = encode_body_in_envelope(&Record { session: self.id, time_us, kind })?;
        self.staged_records()?.push(Submission { session: self.id, enveloped, summary, wrapped_key: None });
        Ok(())
    }

    fn staged_records(&self) -> Result<std::sync::MutexGuard<'_, Vec<Submission>>, JournalError> {
        self.staged.lock().map_err(|_| JournalError::Internal("staged records lock poisoned"))
    }
}

impl Drop for SessionJournal {
    fn drop(&mut self) {
        // Every driver ends a session with a queued close record, so nothing should be left; if
        // something is (a task cancelled before its hand-off), it is handed over rather than lost.
        let mut staged = match self.staged.lock() {
            Ok(mut staged) => std::mem::take(&mut *staged),
            Err(_) => {
                tracing::error!(session = %self.id, "Staged records lock poisoned; they are not written.");
                return;
            }
        };
        if staged.is_empty() {
            return;
        }
        if self.journal.is_closed() {
            // Shutdown, past its bounds: the session was dropped with its runtime.
            tracing::error!(session = %self.id, records = staged.len(), "Session ended after the journal shut down; its staged records are not written.");
            return;
        }
        tracing::warn!(session = %self.id, records = staged.len(), "Session ended with staged records; queuing them.");
        if let Err(e) = self.attach_summary(&mut staged) {
            tracing::error!(session = %self.id, error = %e, "The session's index summary is not written.");
        }
        let journal = self.journal.clone();
        let id = self.id;
        let submit = async move {
            if let Err(e) = journal.submit(Group::Many(staged)).await {
                tracing::error!(session = %id, error = %e, "Staged records of an ended session were not written.");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(submit)),
            Err(_) => tracing::error!(session = %id, "No runtime to queue staged records on; they are not written."),
        }
    }
}

fn encode_summary(s: &SessionSummary) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(s).map_err(|e| JournalError::Index(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{Group, SessionJournal};
    use crate::admin::metrics::Metrics;
    use crate::journal::record::Direction;
    use crate::journal::{Journal, JournalSettings};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_another_hand_off_took_along_still_gets_a_receipt_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Arc::new(Journal::open(&JournalSettings::for_data_dir(dir.path()), Arc::new(Metrics::new())).unwrap());
        let s = Arc::new(SessionJournal::open(journal.clone(), crate::journal::tests::meta("127.0.0.1:1")).unwrap());
        // Another hand-off is under way: its turn is held.
        let turn = s.turn.lock().await;
        let a = {
            let s = s.clone();
            tokio::spawn(async move { s.data(Direction::ClientToUpstream, false, &Bytes::from_static(b"y")).await })
        };
        for _ in 0..1000 {
            if s.staged.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // That hand-off takes everything staged, the open record and `y` too, and sends it.
        let taken = std::mem::take(&mut *s.staged.lock().unwrap());
        assert_eq!(taken.len(), 2, "the open record and y were staged");
        let theirs = journal.submit(Group::Many(taken)).await.unwrap();
        drop(turn);
        // The caller that staged `y` finds nothing left, and still gets a receipt behind it.
        let ours = a.await.unwrap().unwrap().await.unwrap();
        assert_eq!(theirs.await.unwrap(), 2);
        assert!(ours >= 2, "the receipt covers y's group: {ours}");
        journal.shutdown().await.unwrap();
    }
}
