//! The on-disk record format, version 1.
//!
//! The format belongs to the journal and is independent of in-memory types: a change to a session
//! or a driver never changes how old records read. Records read back from disk are untrusted input,
//! so [`decode_envelope`] and [`decode_body`] bound every length, never panic, and are fuzzed
//! (`fuzz/fuzz_targets/journal_record.rs`).
//!
//! ```text
//! stored value (column family `records`, key = big-endian u64 sequence number)
//!   u8      envelope version (1)
//!   [32]    hash = SHA-256(prev_hash ‖ seq_be ‖ body)
//!   ...     body
//!
//! body
//!   u8      body version (1)
//!   u8      kind: 1 session-open, 2 data, 3 session-close, 4 upstream-connected, 5 decision
//!   [16]    session id (UUIDv7)
//!   i64     time, microseconds since the Unix epoch
//!   kind 1, 3, 4, 5: u32 length ‖ UTF-8 JSON metadata (the `*Meta` structs below)
//!   kind 2:       u8 direction (0 client→upstream, 1 upstream→client)
//!                 u8 flags (bit 0 FIN: the sender half-closed; bit 1 sealed; bit 2 break-glass;
//!                          bit 3 head: the payload is an HTTP message head in HTTP/1.1 text
//!                          form, credentials redacted — the body follows in later frames)
//!                 [12] nonce, only when sealed
//!                 u32 length ‖ payload (AES-256-GCM ciphertext with tag when sealed)
//! ```
//!
//! The hash chain is computed over the body as stored, so the payload ciphertext is covered and a
//! session's data key can be destroyed (crypto-shredding) without breaking the chain.
//!
//! Compatibility: format additions are backward compatible — new JSON fields have defaults, kind 5
//! and flag bit 2 were added without changing the layout — so every build reads the journals of
//! older builds. The reverse does not hold: a build from before kind 5 reports such a record as
//! unreadable, so verify a journal with the Airlock that wrote it or a newer one.

use bytes::{BufMut, Bytes, BytesMut};
use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_i64, be_u8, be_u32};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version byte of the stored envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// Version byte of the record body.
pub const BODY_VERSION: u8 = 1;
/// Length of a SHA-256 hash.
pub const HASH_LEN: usize = 32;
/// A chain hash.
pub type Hash = [u8; HASH_LEN];
/// Largest data payload one record carries. Drivers split larger reads.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Largest JSON metadata block.
pub const MAX_META_LEN: usize = 64 * 1024;
/// AEAD nonce length (AES-256-GCM).
pub const NONCE_LEN: usize = 12;
/// AEAD tag length (AES-256-GCM).
pub const TAG_LEN: usize = 16;
/// Fixed part of every body: version, kind, session, time.
pub const BODY_HEADER_LEN: usize = 1 + 1 + 16 + 8;

const FLAG_FIN: u8 = 0b001;
const FLAG_SEALED: u8 = 0b010;
const FLAG_BREAK_GLASS: u8 = 0b100;
const FLAG_HEAD: u8 = 0b1000;

/// Which way bytes travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the caller towards the upstream.
    ClientToUpstream,
    /// From the upstream towards the caller.
    UpstreamToClient,
}

impl Direction {
    fn to_byte(self) -> u8 {
        match self {
            Self::ClientToUpstream => 0,
            Self::UpstreamToClient => 1,
        }
    }

    /// Short arrow form for transcripts: `>>` towards the upstream, `<<` towards the caller.
    pub fn arrow(self) -> &'static str {
        match self {
            Self::ClientToUpstream => ">>",
            Self::UpstreamToClient => "<<",
        }
    }
}

/// TLS parameters of one side of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TlsMeta {
    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher_suite: String,
    /// Server name the client asked for (client side) or verified (upstream side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Negotiated ALPN protocol, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
}

/// Metadata of a session-open record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMeta {
    /// Route name from the configuration.
    pub route: String,
    /// Protocol driver (`tcp`, ...).
    pub protocol: String,
    /// Address of the caller.
    pub client_addr: String,
    /// Address the gateway accepted on.
    pub listen_addr: String,
    /// Configured upstream.
    pub upstream: String,
    /// The authenticated principal in short form (`anonymous` when the route has no identity).
    pub principal: String,
    /// Who the principal is, in full (absent in records written before identities existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Box<PrincipalMeta>>,
    /// Version of the access policy in force when the session opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Client-facing TLS, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMeta>,
    /// Whether data payloads of this session are sealed with a per-session key.
    pub sealed: bool,
    /// HTTP: each request is its own session; this names the connection it came on, so a
    /// connection's requests can be put back together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The principal acts under the emergency (break-glass) role: every record of the session
    /// carries this mark.
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An authenticated principal as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PrincipalMeta {
    /// Subject.
    pub subject: String,
    /// Issuer (JWT `iss`, `api-key`, certificate issuer DN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Airlock roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// IdP groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `anonymous`, `oidc`, `api_key` or `mtls`.
    pub method: String,
    /// OIDC provider name or certificate fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_detail: Option<String>,
    /// End of the credential's validity, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Metadata of a decision record: one access decision (authentication, session admission, or a
/// request), allow or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionMeta {
    /// `authenticate`, `session` or `request`.
    pub phase: String,
    /// `allow`, `deny` or `require_approval`.
    pub effect: String,
    /// The rule that decided (or `authn:<code>` for a refused credential).
    pub rule: String,
    /// Why.
    pub reason: String,
    /// The principal in short form.
    pub principal: String,
    /// What was asked, in one line.
    pub request: String,
    /// Policy version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// The session is under break-glass.
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
}

/// Metadata of an upstream-connected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamMeta {
    /// Address actually connected to.
    pub addr: String,
    /// Upstream TLS, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMeta>,
    /// The session is under break-glass.
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
}

/// Metadata of a session-close record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseMeta {
    /// Why the session ended, in words for an auditor.
    pub reason: String,
    /// Bytes passed on from the caller to the upstream, as forwarded.
    pub bytes_from_client: u64,
    /// Bytes passed on from the upstream to the caller, as delivered (after masking).
    pub bytes_from_upstream: u64,
    /// Session duration in microseconds.
    pub duration_us: u64,
    /// The session is under break-glass.
    #[serde(default, skip_serializing_if = "is_false")]
    pub break_glass: bool,
    /// Values masked in what the caller received, counted by entity or field label (never the
    /// values themselves).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub masked: std::collections::BTreeMap<String, u64>,
}

/// A data payload as stored: plaintext, or sealed with the session's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Stored in the clear.
    Plain(Bytes),
    /// AES-256-GCM ciphertext with its tag.
    Sealed {
        /// The per-record nonce.
        nonce: [u8; NONCE_LEN],
        /// Ciphertext followed by the tag.
        ciphertext: Bytes,
    },
}

impl Payload {
    fn stored_len(&self) -> usize {
        match self {
            Self::Plain(b) => b.len(),
            Self::Sealed { ciphertext, .. } => ciphertext.len(),
        }
    }
}

/// One chunk of bytes that crossed the gateway, or a half-close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// Which way the bytes went.
    pub direction: Direction,
    /// The sender half-closed after these bytes.
    pub fin: bool,
    /// The session is under break-glass.
    pub break_glass: bool,
    /// The payload is an HTTP message head (request line or status line and headers, HTTP/1.1
    /// text form, credentials redacted); body frames follow.
    pub head: bool,
    /// The bytes.
    pub payload: Payload,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A caller connected.
    SessionOpen(OpenMeta),
    /// Bytes crossed.
    Data(DataFrame),
    /// The session ended.
    SessionClose(CloseMeta),
    /// The upstream connection was established.
    UpstreamConnected(UpstreamMeta),
    /// An access decision.
    Decision(DecisionMeta),
}

impl RecordKind {
    fn code(&self) -> u8 {
        match self {
            Self::SessionOpen(_) => 1,
            Self::Data(_) => 2,
            Self::SessionClose(_) => 3,
            Self::UpstreamConnected(_) => 4,
            Self::Decision(_) => 5,
        }
    }

    /// Lower-case name, as used in JSON output.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SessionOpen(_) => "session_open",
            Self::Data(_) => "data",
            Self::SessionClose(_) => "session_close",
            Self::UpstreamConnected(_) => "upstream_connected",
            Self::Decision(_) => "decision",
        }
    }
}

/// A decoded record body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The session it belongs to.
    pub session: Uuid,
    /// Microseconds since the Unix epoch.
    pub time_us: i64,
    /// What it says.
    pub kind: RecordKind,
}

/// A stored value split into its chain hash and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The chain hash stored with the record.
    pub hash: Hash,
    /// The encoded body, exactly as hashed.
    pub body: Bytes,
}

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The value ended before a field it announced.
    #[error("record is truncated")]
    Truncated,
    /// A version byte this build does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// `envelope` or `body`.
        what: &'static str,
        /// The byte found.
        version: u8,
    },
    /// A kind byte this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A field that must be 0 or 1 was not.
    #[error("invalid {field} value {value}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A length over its limit.
    #[error("{field} length {len} exceeds the limit of {max}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// Metadata that is not the JSON the kind requires.
    #[error("invalid metadata: {0}")]
    Metadata(String),
}

// === encode ===

/// Encodes a record body. Fails only if a field exceeds its limit.
pub fn encode_body(record: &Record) -> Result<Bytes, RecordError> {
    encode_body_after(BytesMut::with_capacity(BODY_HEADER_LEN + 64), record).map(BytesMut::freeze)
}

/// Bytes of a stored envelope before the body: the version and the chain hash.
pub const ENVELOPE_HEADER_LEN: usize = 1 + HASH_LEN;

/// A record body behind room for its envelope header, which the writer fills in place once the
/// chain hash is known, so the body is not copied again to make the stored value. Made only by
/// [`encode_body_in_envelope`], so the room is always there.
#[derive(Debug)]
pub struct Enveloped(BytesMut);

impl Enveloped {
    /// The encoded body, as the chain hashes it.
    pub fn body(&self) -> &[u8] {
        self.0.get(ENVELOPE_HEADER_LEN..).unwrap_or_default()
    }

    /// Bytes of the stored value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: the header's room is there.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the header and returns the stored value: [`encode_envelope`] of the body.
    pub fn with_header(&mut self, hash: &Hash) -> &[u8] {
        if let Some((version, rest)) = self.0.split_first_mut()
            && let Some(slot) = rest.get_mut(..HASH_LEN)
        {
            *version = ENVELOPE_VERSION;
            slot.copy_from_slice(hash);
        }
        &self.0
    }
}

/// Encodes a record body behind [`ENVELOPE_HEADER_LEN`] bytes of room for its envelope header.
pub fn encode_body_in_envelope(record: &Record) -> Result<Enveloped, RecordError> {
    let mut out = BytesMut::with_capacity(ENVELOPE_HEADER_LEN + BODY_HEADER_LEN + 64);
    out.put_bytes(0, ENVELOPE_HEADER_LEN);
    encode_body_after(out, record).map(Enveloped)
}

fn encode_body_after(mut out: BytesMut, record: &Record) -> Result<BytesMut, RecordError> {
    put_header(&mut out, record.kind.code(), &record.session, record.time_us);
    match &record.kind {
        RecordKind::SessionOpen(m) => put_meta(&mut out, m)?,
        RecordKind::SessionClose(m) => put_meta(&mut out, m)?,
        RecordKind::UpstreamConnected(m) => put_meta(&mut out, m)?,
        RecordKind::Decision(m) => put_meta(&mut out, m)?,
        RecordKind::Data(frame) => {
            let len = frame.payload.stored_len();
            let max = MAX_PAYLOAD_LEN + if matches!(frame.payload, Payload::Sealed { .. }) { TAG_LEN } else { 0 };
            if len > max {
                return Err(RecordError::TooLong { field: "payload", len, max });
            }
            out.reserve(2 + NONCE_LEN + 4 + len);
            out.put_u8(frame.direction.to_byte());
            let sealed = matches!(frame.payload, Payload::Sealed { .. });
            out.put_u8(data_flags(frame.fin, sealed, frame.break_glass, frame.head));
            match &frame.payload {
                Payload::Plain(b) => put_len_prefixed(&mut out, b),
                Payload::Sealed { nonce, ciphertext } => {
                    out.put_slice(nonce);
                    put_len_prefixed(&mut out, ciphertext);
                }
            }
        }
    }
    Ok(out)
}

/// The fixed header of a data record, used as the AEAD's associated data so that a sealed payload
/// cannot be moved to another session, time, direction or position in the stream.
pub fn data_aad(
    session: &Uuid,
    time_us: i64,
    direction: Direction,
    frame_flags: FrameFlags,
) -> [u8; BODY_HEADER_LEN + 2] {
    let mut aad = [0; BODY_HEADER_LEN + 2];
    let mut out = &mut aad[..];
    put_header(&mut out, 2, session, time_us);
    out.put_u8(direction.to_byte());
    out.put_u8(data_flags(frame_flags.fin, true, frame_flags.break_glass, frame_flags.head));
    aad
}

/// Encodes the stored value for a body and its chain hash.
pub fn encode_envelope(hash: &Hash, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HASH_LEN + body.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(hash);
    out.extend_from_slice(body);
    out
}

/// The flags of a data frame that the AEAD binds (besides `sealed`, which it implies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags {
    /// Half-close after the payload.
    pub fin: bool,
    /// Break-glass session.
    pub break_glass: bool,
    /// HTTP message head.
    pub head: bool,
}

fn data_flags(fin: bool, sealed: bool, break_glass: bool, head: bool) -> u8 {
    (if fin { FLAG_FIN } else { 0 })
        | (if sealed { FLAG_SEALED } else { 0 })
        | (if break_glass { FLAG_BREAK_GLASS } else { 0 })
        | (if head { FLAG_HEAD } else { 0 })
}

fn put_header(out: &mut impl BufMut, kind: u8, session: &Uuid, time_us: i64) {
    out.put_u8(BODY_VERSION);
    out.put_u8(kind);
    out.put_slice(session.as_bytes());
    out.put_i64(time_us);
}

fn put_len_prefixed(out: &mut BytesMut, bytes: &[u8]) {
    // Lengths were checked against limits far below u32::MAX by the callers.
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

/// The metadata as length-prefixed JSON, written in place (the length is filled in after).
fn put_meta<T: Serialize>(out: &mut BytesMut, meta: &T) -> Result<(), RecordError> {
    let at = out.len();
    out.put_u32(0);
    let written = serde_json::to_writer((&mut *out).writer(), meta);
    let len = out.len() - at - 4;
    if let Err(e) = written {
        out.truncate(at);
        return Err(RecordError::Metadata(e.to_string()));
    }
    if len > MAX_META_LEN {
        out.truncate(at);
        return Err(RecordError::TooLong { field: "metadata", len, max: MAX_META_LEN });
    }
    // At most MAX_META_LEN, far below u32::MAX.
    out[at..at + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    Ok(())
}

// === decode ===

/// Splits a stored value into hash and body. The body is not parsed: the chain is verified over
/// the bytes as stored, whatever they say.
pub fn decode_envelope(value: &Bytes) -> Result<Envelope, RecordError> {
    let Some((&version, rest)) = value.split_first() else {
        return Err(RecordError::Truncated);
    };
    if version != ENVELOPE_VERSION {
        return Err(RecordError::UnknownVersion { what: "envelope", version });
    }
    if rest.len() < HASH_LEN {
        return Err(RecordError::Truncated);
    }
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&rest[..HASH_LEN]);
    let body_len = rest.len() - HASH_LEN;
    let max = BODY_HEADER_LEN + 2 + NONCE_LEN + 4 + MAX_PAYLOAD_LEN + TAG_LEN + MAX_META_LEN;
    if body_len > max {
        return Err(RecordError::TooLong { field: "body", len: body_len, max });
    }
    Ok(Envelope { hash, body: value.slice(1 + HASH_LEN..) })
}

type Res<'a, T> = IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

fn u8_(i: &[u8]) -> Res<'_, u8> {
    be_u8(i)
}

fn u32_(i: &[u8]) -> Res<'_, u32> {
    be_u32(i)
}

fn i64_(i: &[u8]) -> Res<'_, i64> {
    be_i64(i)
}

fn bytes_(n: usize) -> impl Fn(&[u8]) -> Res<'_, &[u8]> {
    move |i| take(n).parse(i)
}

/// Parses a body. Zero-copy: payloads are slices of `body`.
pub fn decode_body(body: &Bytes) -> Result<Record, RecordError> {
    let trunc = |_| RecordError::Truncated;
    let input: &[u8] = body;
    let (i, version) = u8_(input).map_err(trunc)?;
    if version != BODY_VERSION {
        return Err(RecordError::UnknownVersion { what: "body", version });
    }
    let (i, kind) = u8_(i).map_err(trunc)?;
    let (i, sid) = bytes_(16)(i).map_err(trunc)?;
    let (i, time_us) = i64_(i).map_err(trunc)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(sid);
    let session = Uuid::from_bytes(id);
    let (rest, kind) = match kind {
        1 => {
            let (i, m) = meta(i)?;
            (i, RecordKind::SessionOpen(m))
        }
        3 => {
            let (i, m) = meta(i)?;
            (i, RecordKind::SessionClose(m))
        }
        4 => {
            let (i, m) = meta(i)?;
            (i, RecordKind::UpstreamConnected(m))
        }
        5 => {
            let (i, m) = meta(i)?;
            (i, RecordKind::Decision(m))
        }
        2 => {
            let (i, dir) = u8_(i).map_err(trunc)?;
            let direction = match dir {
                0 => Direction::ClientToUpstream,
                1 => Direction::UpstreamToClient,
                value => return Err(RecordError::InvalidField { field: "direction", value }),
            };
            let (i, flags) = u8_(i).map_err(trunc)?;
            if flags & !(FLAG_FIN | FLAG_SEALED | FLAG_BREAK_GLASS | FLAG_HEAD) != 0 {
                return Err(RecordError::InvalidField { field: "flags", value: flags });
            }
            let fin = flags & FLAG_FIN != 0;
            let break_glass = flags & FLAG_BREAK_GLASS != 0;
            let head = flags & FLAG_HEAD != 0;
            let (i, nonce) = if flags & FLAG_SEALED != 0 {
                let (i, n) = bytes_(NONCE_LEN)(i).map_err(trunc)?;
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(n);
                (i, Some(nonce))
            } else {
                (i, None)
            };
            let (i, len) = u32_(i).map_err(trunc)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let max = MAX_PAYLOAD_LEN + if nonce.is_some() { TAG_LEN } else { 0 };
            if len > max {
                return Err(RecordError::TooLong { field: "payload", len, max });
            }
            let (i, data) = bytes_(len)(i).map_err(trunc)?;
            let data = body.slice_ref(data);
            let payload = match nonce {
                Some(nonce) => Payload::Sealed { nonce, ciphertext: data },
                None => Payload::Plain(data),
            };
            (i, RecordKind::Data(DataFrame { direction, fin, break_glass, head, payload }))
        }
        other => return Err(RecordError::UnknownKind(other)),
    };
    if !rest.is_empty() {
        return Err(RecordError::Trailing(rest.len()));
    }
    Ok(Record { session, time_us, kind })
}

fn meta<T: for<'de> Deserialize<'de>>(i: &[u8]) -> Result<(&[u8], T), RecordError> {
    let (i, len) = u32_(i).map_err(|_| RecordError::Truncated)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_META_LEN {
        return Err(RecordError::TooLong { field: "metadata", len, max: MAX_META_LEN });
    }
    let (i, json) = bytes_(len)(i).map_err(|_| RecordError::Truncated)?;
    let m = serde_json::from_slice(json).map_err(|e| RecordError::Metadata(e.to_string()))?;
    Ok((i, m))
}

/// Fuzz entry point: decodes arbitrary bytes as a stored value and, if that works, re-encodes the
/// body and checks that it reads back the same. Panics only on a round-trip mismatch, which is a
/// bug the fuzzer should report.
pub fn fuzz_decode(data: &[u8]) {
    let value = Bytes::copy_from_slice(data);
    let Ok(env) = decode_envelope(&value) else { return };
    let Ok(record) = decode_body(&env.body) else { return };
    if let Ok(again) = encode_body(&record) {
        let reread = decode_body(&again);
        assert_eq!(reread.as_ref(), Ok(&record), "record did not round-trip");
    }
}

#[cfg(test)]
mod tests;
