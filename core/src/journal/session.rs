//! The journal as one session sees it: encodes its records, seals its payloads, keeps its index
//! summary up to date.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use uuid::Uuid;

use super::JournalError;
use super::crypto::SessionCipher;
use super::record::{
    CloseMeta, DataFrame, DecisionMeta, Direction, FrameFlags, MAX_PAYLOAD_LEN, OpenMeta, Payload, Record, RecordKind,
    UpstreamMeta, data_aad, encode_body,
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
    summary: Mutex<SessionSummary>,
    /// Set from the session-open record: every later record carries the mark.
    break_glass: bool,
    /// Records waiting for the next hand-off.
    staged: Mutex<Vec<Submission>>,
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
        let body = encode_body(&Record { session: id, time_us, kind: RecordKind::SessionOpen(meta) })?;
        let summary_json = encode_summary(&summary)?;
        let open = Submission { session: id, body, summary: Some(summary_json), wrapped_key };
        Ok(Self { journal, id, cipher, summary: Mutex::new(summary), break_glass, staged: Mutex::new(vec![open]) })
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
        self.flush_staged().await
    }

    /// Stages a data record (split like [`SessionJournal::data`]).
    pub fn stage_data(&self, direction: Direction, fin: bool, bytes: &Bytes) -> Result<(), JournalError> {
        self.frames(direction, FrameFlags { fin, ..FrameFlags::default() }, bytes)
    }

    /// Queues an HTTP message head (HTTP/1.1 text form, credentials already redacted) as a
    /// sealed data frame marked `head`; with `fin`, the message ends with its head.
    pub async fn http_head(&self, direction: Direction, head: &Bytes, fin: bool) -> Result<Receipt, JournalError> {
        self.stage_http_head(direction, head, fin)?;
        self.flush_staged().await
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
        self.flush_staged().await
    }

    /// Stages an access-decision record.
    pub fn stage_decision(&self, meta: DecisionMeta) -> Result<(), JournalError> {
        let meta = DecisionMeta { break_glass: self.break_glass, ..meta };
        self.stage(now_us(), RecordKind::Decision(meta), None)
    }

    /// Queues the session-close record and the final index summary.
    pub async fn close(&self, meta: CloseMeta) -> Result<Receipt, JournalError> {
        self.stage_close(meta)?;
        self.flush_staged().await
    }

    /// Stages the session-close record and the final index summary.
    pub fn stage_close(&self, meta: CloseMeta) -> Result<(), JournalError> {
        let meta = CloseMeta { break_glass: self.break_glass, ..meta };
        let time_us = now_us();
        let summary = {
            let mut s = self.summary.lock().map_err(|_| JournalError::Internal("session summary lock poisoned"))?;
            s.closed_us = Some(time_us);
            s.close_reason = Some(meta.reason.clone());
            s.bytes_from_client = meta.bytes_from_client;
            s.bytes_from_upstream = meta.bytes_from_upstream;
            encode_summary(&s)?
        };
        self.stage(time_us, RecordKind::SessionClose(meta), Some(summary))
    }

    /// Hands every staged record to the writer as one group. `None` if nothing was staged.
    pub async fn flush(&self) -> Result<Option<Receipt>, JournalError> {
        match self.take_staged()? {
            None => Ok(None),
            Some(group) => self.journal.submit(group).await.map(Some),
        }
    }

    fn stage(&self, time_us: i64, kind: RecordKind, summary: Option<Vec<u8>>) -> Result<(), JournalError> {
        let body = encode_body(&Record { session: self.id, time_us, kind })?;
        self.staged_records()?.push(Submission { session: self.id, body, summary, wrapped_key: None });
        Ok(())
    }

    /// Hands the staged records to the writer; the caller has just staged at least one.
    async fn flush_staged(&self) -> Result<Receipt, JournalError> {
        let group = self.take_staged()?.ok_or(JournalError::Internal("nothing staged to submit"))?;
        self.journal.submit(group).await
    }

    fn take_staged(&self) -> Result<Option<Group>, JournalError> {
        let mut staged = self.staged_records()?;
        Ok(match staged.len() {
            0 => None,
            1 => staged.pop().map(Group::One),
            _ => Some(Group::Many(std::mem::take(&mut *staged))),
        })
    }

    fn staged_records(&self) -> Result<std::sync::MutexGuard<'_, Vec<Submission>>, JournalError> {
        self.staged.lock().map_err(|_| JournalError::Internal("staged records lock poisoned"))
    }
}

impl Drop for SessionJournal {
    fn drop(&mut self) {
        // Every driver ends a session with a queued close record, so nothing should be left; if
        // something is, it is handed over rather than lost.
        let Ok(mut staged) = self.staged.lock() else { return };
        if staged.is_empty() {
            return;
        }
        let group = Group::Many(std::mem::take(&mut *staged));
        tracing::warn!(session = %self.id, records = group.len(), "Session ended with staged records; queuing them.");
        self.journal.submit_now(group);
    }
}

fn encode_summary(s: &SessionSummary) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(s).map_err(|e| JournalError::Index(e.to_string()))
}
