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
use super::writer::{Journal, Receipt, Submission};
use crate::time::now_us;

/// One session's writer into the journal.
#[derive(Debug)]
pub struct SessionJournal {
    journal: Arc<Journal>,
    id: Uuid,
    cipher: Option<SessionCipher>,
    summary: Mutex<SessionSummary>,
    /// Set from the session-open record: every later record carries the mark.
    break_glass: bool,
}

impl SessionJournal {
    /// Starts a session: assigns a UUIDv7, creates its data key, and queues the session-open
    /// record. The receipt resolves once the record is durable.
    pub async fn open(journal: Arc<Journal>, meta: OpenMeta) -> Result<(Self, Receipt), JournalError> {
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
        let receipt =
            journal.submit(Submission { session: id, body, summary: Some(summary_json), wrapped_key }).await?;
        Ok((Self { journal, id, cipher, summary: Mutex::new(summary), break_glass }, receipt))
    }

    /// The session id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Queues a data record (split into several if over the per-record limit). The receipt of the
    /// last piece resolves once all of them are written: the writer commits in order and refuses
    /// everything after a failure.
    pub async fn data(&self, direction: Direction, fin: bool, bytes: &Bytes) -> Result<Receipt, JournalError> {
        self.frames(direction, FrameFlags { fin, ..FrameFlags::default() }, bytes).await
    }

    /// Queues an HTTP message head (HTTP/1.1 text form, credentials already redacted) as a
    /// sealed data frame marked `head`.
    pub async fn http_head(&self, direction: Direction, head: &Bytes) -> Result<Receipt, JournalError> {
        self.frames(direction, FrameFlags { head: true, ..FrameFlags::default() }, head).await
    }

    async fn frames(&self, direction: Direction, flags: FrameFlags, bytes: &Bytes) -> Result<Receipt, JournalError> {
        let mut rest = bytes.clone();
        loop {
            let piece = rest.split_to(rest.len().min(MAX_PAYLOAD_LEN));
            let last = rest.is_empty();
            let flags = FrameFlags { fin: flags.fin && last, ..flags };
            let receipt = self.data_piece(direction, flags, piece).await?;
            if last {
                return Ok(receipt);
            }
        }
    }

    async fn data_piece(&self, direction: Direction, flags: FrameFlags, piece: Bytes) -> Result<Receipt, JournalError> {
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
        self.submit(time_us, RecordKind::Data(frame), None).await
    }

    /// Queues an upstream-connected record.
    pub async fn upstream_connected(&self, meta: UpstreamMeta) -> Result<Receipt, JournalError> {
        let meta = UpstreamMeta { break_glass: self.break_glass, ..meta };
        self.submit(now_us(), RecordKind::UpstreamConnected(meta), None).await
    }

    /// Queues an access-decision record.
    pub async fn decision(&self, meta: DecisionMeta) -> Result<Receipt, JournalError> {
        let meta = DecisionMeta { break_glass: self.break_glass, ..meta };
        self.submit(now_us(), RecordKind::Decision(meta), None).await
    }

    /// Queues the session-close record and the final index summary.
    pub async fn close(&self, meta: CloseMeta) -> Result<Receipt, JournalError> {
        let meta = CloseMeta { break_glass: self.break_glass, ..meta };
        let time_us = now_us();
        let summary = {
            let mut s = self.summary.lock().map_err(|_| JournalError::Crypto("session summary lock poisoned"))?;
            s.closed_us = Some(time_us);
            s.close_reason = Some(meta.reason.clone());
            s.bytes_from_client = meta.bytes_from_client;
            s.bytes_from_upstream = meta.bytes_from_upstream;
            encode_summary(&s)?
        };
        self.submit(time_us, RecordKind::SessionClose(meta), Some(summary)).await
    }

    async fn submit(&self, time_us: i64, kind: RecordKind, summary: Option<Vec<u8>>) -> Result<Receipt, JournalError> {
        let body = encode_body(&Record { session: self.id, time_us, kind })?;
        self.journal.submit(Submission { session: self.id, body, summary, wrapped_key: None }).await
    }
}

fn encode_summary(s: &SessionSummary) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(s).map_err(|e| JournalError::Index(e.to_string()))
}
