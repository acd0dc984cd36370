//! Reading sessions back: filters over the index, and a session's records with payloads opened.

use std::path::Path;

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use super::JournalError;
use super::crypto::{MasterKey, SessionCipher};
use super::record::{Direction, FrameFlags, Payload, Record, RecordKind, data_aad, decode_body, decode_envelope};
use super::store::{SessionSummary, Store};

/// Which sessions to list.
#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Started at or after (µs since the epoch).
    pub since_us: Option<i64>,
    /// Started before (µs since the epoch).
    pub until_us: Option<i64>,
    /// Only principals whose short form (`oidc:corp/alice`, `mtls:svc.internal`) contains this.
    pub principal: Option<String>,
}

/// Sessions matching `filter`, oldest first.
pub fn list_sessions(store: &Store, filter: &SessionFilter) -> Result<Vec<SessionSummary>, JournalError> {
    // UUIDv7 starts with the millisecond timestamp, so `since` seeks instead of scanning.
    let from = filter.since_us.map(|us| {
        let ms = u64::try_from(us.max(0) / 1000).unwrap_or(0);
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Uuid::from_bytes(b)
    });
    Ok(store
        .sessions(from)?
        .into_iter()
        .filter(|s| filter.route.as_ref().is_none_or(|r| &s.route == r))
        .filter(|s| filter.principal.as_ref().is_none_or(|p| s.principal.contains(p.as_str())))
        .filter(|s| filter.since_us.is_none_or(|t| s.opened_us >= t))
        .filter(|s| filter.until_us.is_none_or(|t| s.opened_us < t))
        .collect())
}

/// A session's payload as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The bytes that crossed.
    Bytes(Bytes),
    /// The session's data key is gone (shredded) or no master key was given.
    Unavailable(String),
}

/// One record of a session, ready to show.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Sequence number.
    pub seq: u64,
    /// The decoded record.
    pub record: Record,
    /// For data records, the opened payload.
    pub content: Option<Content>,
}

/// A session's records in order, with payloads decrypted when `master_key` is available.
pub fn session_records(
    store: &Store,
    session: &Uuid,
    master_key: Option<&Path>,
) -> Result<Vec<SessionRecord>, JournalError> {
    let cipher = session_cipher(store, session, master_key);
    let mut out = Vec::new();
    for seq in store.session_seqs(session)? {
        let Some(value) = store.record(seq)? else {
            return Err(JournalError::Index(format!(
                "record {seq} is indexed but missing; run `airlock journal verify`"
            )));
        };
        let env = decode_envelope(&value).map_err(|source| JournalError::Record { seq, source })?;
        let record = decode_body(&env.body).map_err(|source| JournalError::Record { seq, source })?;
        if record.session != *session {
            return Err(JournalError::Index(format!(
                "record {seq} belongs to another session; run `airlock journal verify`"
            )));
        }
        let content = match &record.kind {
            RecordKind::Data(frame) => Some(match (&frame.payload, &cipher) {
                (Payload::Plain(b), _) => Content::Bytes(b.clone()),
                (Payload::Sealed { nonce, ciphertext }, Ok(cipher)) => {
                    let aad = data_aad(
                        &record.session,
                        record.time_us,
                        frame.direction,
                        FrameFlags { fin: frame.fin, break_glass: frame.break_glass, head: frame.head },
                    );
                    match cipher.open(&aad, *nonce, ciphertext) {
                        Ok(plain) => Content::Bytes(Bytes::from(plain)),
                        Err(e) => Content::Unavailable(e.to_string()),
                    }
                }
                (Payload::Sealed { .. }, Err(why)) => Content::Unavailable(why.clone()),
            }),
            _ => None,
        };
        out.push(SessionRecord { seq, record, content });
    }
    Ok(out)
}

fn session_cipher(store: &Store, session: &Uuid, master_key: Option<&Path>) -> Result<SessionCipher, String> {
    let path = master_key.ok_or_else(|| "no master key given".to_string())?;
    let master = MasterKey::load_or_create(path, false).map_err(|e| e.to_string())?;
    let wrapped = store
        .wrapped_key(session)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the session's data key has been shredded".to_string())?;
    master.unwrap_session_key(session.as_bytes(), &wrapped).map_err(|e| e.to_string())
}

/// JSON view of a record for `replay --format json` (one object per line).
#[derive(Debug, Serialize)]
pub struct FrameJson<'a> {
    /// Sequence number.
    pub seq: u64,
    /// RFC 3339 time with microseconds.
    pub time: String,
    /// Microseconds since the epoch.
    pub time_us: i64,
    /// `session_open`, `data`, ...
    pub kind: &'static str,
    /// For data: which way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// For data: half-close after these bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fin: Option<bool>,
    /// For data: the record carries the break-glass mark (absent when it does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<bool>,
    /// For data: the payload is an HTTP message head (absent when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<bool>,
    /// For data: payload, base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// For data: payload length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    /// For data whose key is gone: why the payload cannot be shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<&'a str>,
    /// For metadata records: the metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl<'a> FrameJson<'a> {
    /// Builds the JSON view.
    pub fn new(r: &'a SessionRecord) -> Self {
        use base64::Engine as _;
        let mut f = FrameJson {
            seq: r.seq,
            time: crate::time::format_us(r.record.time_us),
            time_us: r.record.time_us,
            kind: r.record.kind.name(),
            direction: None,
            fin: None,
            break_glass: None,
            head: None,
            payload_base64: None,
            len: None,
            unavailable: None,
            meta: None,
        };
        match &r.record.kind {
            RecordKind::Data(frame) => {
                f.direction = Some(frame.direction);
                f.fin = Some(frame.fin);
                f.break_glass = frame.break_glass.then_some(true);
                f.head = frame.head.then_some(true);
                match &r.content {
                    Some(Content::Bytes(b)) => {
                        f.payload_base64 = Some(base64::engine::general_purpose::STANDARD.encode(b));
                        f.len = Some(b.len());
                    }
                    Some(Content::Unavailable(why)) => f.unavailable = Some(why),
                    None => {}
                }
            }
            RecordKind::SessionOpen(m) => f.meta = serde_json::to_value(m).ok(),
            RecordKind::SessionClose(m) => f.meta = serde_json::to_value(m).ok(),
            RecordKind::UpstreamConnected(m) => f.meta = serde_json::to_value(m).ok(),
            RecordKind::Decision(m) => f.meta = serde_json::to_value(m).ok(),
        }
        f
    }
}
