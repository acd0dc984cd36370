//! Server-sent events (`text/event-stream`), as the HTML Living Standard §9.2.6 "Interpreting an
//! event stream" defines them.
//!
//! ```text
//! stream        = [ bom ] *event
//! event         = *( comment / field ) end-of-line
//! comment       = colon *any-char end-of-line
//! field         = 1*name-char [ colon [ space ] *any-char ] end-of-line
//! end-of-line   = ( cr lf / cr / lf )
//! ```
//!
//! The decoder frames by *block* first: it finds the blank line that ends an event (any mix of
//! CR, LF and CRLF), with a hard maximum on the block's size, and only then parses the whole block.
//! A CR as the very last buffered byte is ambiguous — it may be the first half of a CRLF — so the
//! decoder waits for the next byte, or for [`SseDecoder::decode_eof`] at the end of the stream.
//!
//! Each block comes out as an [`SseBlock`]: the raw bytes exactly as received (for forwarding and
//! the journal) and the event it dispatches, if any. Per the standard a block whose data buffer is
//! empty dispatches nothing (comments and keep-alives), and `id` / `retry` still apply.

use bytes::{Bytes, BytesMut};

use crate::{DecodeError, Decoder};

/// Default bound on one event block.
pub const DEFAULT_MAX_BLOCK: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event` field; `None` means the default type `message`.
    pub event: Option<String>,
    /// The data: every `data` field's value joined by LF (the trailing LF removed).
    pub data: String,
    /// The `id` field of this block, if it had one (an `id` containing NUL is ignored).
    pub id: Option<String>,
    /// The `retry` field, if it was all ASCII digits.
    pub retry: Option<u64>,
}

/// A block of the stream, up to and including the blank line that ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseBlock {
    /// The block's bytes as received.
    pub raw: Bytes,
    /// The event it dispatches; `None` for comments, keep-alives and blocks without data.
    pub event: Option<Event>,
    /// The `retry` value it sets, even when it dispatches nothing.
    pub retry: Option<u64>,
    /// The `id` it sets, even when it dispatches nothing.
    pub id: Option<String>,
}

/// Incremental decoder of an event stream.
#[derive(Debug, Clone)]
pub struct SseDecoder {
    max_block: usize,
    /// Whether the stream's first bytes have been checked for a BOM.
    started: bool,
    /// How far the buffered block has been scanned without finding its end, and where its
    /// current line starts: each byte is scanned once however the block arrives (scanning it
    /// from its start at every chunk would make a block sent byte by byte cost its length
    /// squared).
    scanned: (usize, usize),
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BLOCK)
    }
}

/// Where the first blank line ends, if the buffer holds one: the length of the block including it.
/// `Err(())` when a CR at the very end leaves the answer open. The scan starts at `at.0`, with
/// the current line starting at `at.1` (both 0 for a new block), and `at` is left where it
/// stopped.
fn block_end(buf: &[u8], at: &mut (usize, usize)) -> Result<Option<usize>, ()> {
    let (mut i, mut line_start) = *at;
    let result = block_end_from(buf, &mut i, &mut line_start);
    *at = (i, line_start);
    result
}

fn block_end_from(buf: &[u8], at: &mut usize, line_start: &mut usize) -> Result<Option<usize>, ()> {
    let i = at;
    while *i < buf.len() {
        let b = buf[*i];
        if b == b'\n' || b == b'\r' {
            let empty = *i == *line_start;
            let mut next = *i + 1;
            if b == b'\r' {
                match buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The CR might be half of a CRLF: only the next byte can tell.
                    None => return Err(()),
                }
            }
            if empty {
                return Ok(Some(next));
            }
            *line_start = next;
            *i = next;
        } else {
            // The rest of a line at once.
            *i = memchr::memchr2(b'\n', b'\r', &buf[*i..]).map_or(buf.len(), |k| *i + k);
        }
    }
    Ok(None)
}

/// Splits a block into lines, any terminator.
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = block;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        let line = &rest[..end];
        let mut skip = end;
        if rest.get(end) == Some(&b'\r') && rest.get(end + 1) == Some(&b'\n') {
            skip += 2;
        } else if end < rest.len() {
            skip += 1;
        }
        rest = &rest[skip..];
        Some(line)
    })
}

/// Parses a whole block (§9.2.6 "process the field").
fn parse_block(raw: Bytes) -> SseBlock {
    let mut event_type: Option<String> = None;
    let mut data = String::new();
    let mut has_data = false;
    let mut id = None;
    let mut retry = None;
    for line in lines(&raw) {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => event_type = Some(value.into_owned()),
            b"data" => {
                data.push_str(&value);
                data.push('\n');
                has_data = true;
            }
            b"id" if !value.contains('\0') => id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse().ok();
            }
            _ => {}
        }
    }
    let event = has_data.then(|| {
        data.pop();
        Event { event: event_type.filter(|t| !t.is_empty()), data, id: id.clone(), retry }
    });
    SseBlock { raw, event, retry, id }
}

impl SseDecoder {
    /// A decoder that refuses blocks longer than `max_block` bytes.
    pub fn new(max_block: usize) -> Self {
        Self { max_block, started: false, scanned: (0, 0) }
    }

    /// A decoder for blocks from the middle of a stream: a byte-order mark there is content,
    /// not the stream's start (a client does not skip it).
    pub fn mid_stream(max_block: usize) -> Self {
        Self { started: true, ..Self::new(max_block) }
    }

    /// Skips a UTF-8 BOM at the very start of the stream (§9.2.6: "a single leading BOM is
    /// ignored"). Returns false while too few bytes are buffered to tell.
    fn skip_bom(&mut self, buf: &mut BytesMut) -> bool {
        if self.started {
            return true;
        }
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let n = buf.len().min(3);
        if buf[..n] != BOM[..n] {
            self.started = true;
            return true;
        }
        if n < 3 {
            return false;
        }
        let _ = buf.split_to(3);
        self.started = true;
        true
    }

    /// At the end of the stream: the standard discards an unterminated last block, so this only
    /// resolves a final CR (the blank line was complete after all) and reports what is left over.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<SseBlock>, DecodeError> {
        if let Some(block) = self.decode(buf)? {
            return Ok(Some(block));
        }
        if buf.last() == Some(&b'\r') {
            buf.extend_from_slice(b"\n");
            let block = self.decode(buf)?;
            if block.is_none() {
                buf.truncate(buf.len() - 1);
            }
            return Ok(block);
        }
        Ok(None)
    }
}

impl Decoder for SseDecoder {
    type Frame = SseBlock;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<SseBlock>, DecodeError> {
        if buf.is_empty() || !self.skip_bom(buf) {
            return Ok(None);
        }
        let scan = &buf[..buf.len().min(self.max_block + 2)];
        let found = block_end(scan, &mut self.scanned);
        if matches!(found, Ok(Some(_))) {
            self.scanned = (0, 0);
        }
        match found {
            Ok(Some(len)) if len <= self.max_block => Ok(Some(parse_block(buf.split_to(len).freeze()))),
            Ok(Some(len)) => Err(DecodeError::TooLong { what: "SSE event", len, max: self.max_block }),
            Ok(None) | Err(()) if buf.len() > self.max_block => {
                Err(DecodeError::TooLong { what: "SSE event", len: buf.len(), max: self.max_block })
            }
            Ok(None) | Err(()) => Ok(None),
        }
    }
}

/// Encodes an event in canonical form: `event:`, `id:`, `retry:`, one `data:` line per line of
/// data (any of CR, LF, CRLF in the data splits it), then a blank line. Decoding the result gives
/// the same event back; an `event` or `id` with a line break cannot be represented and is cut at
/// the first one.
pub fn encode(event: &Event) -> Bytes {
    let first_line = |s: &str| s.split(['\r', '\n']).next().unwrap_or("").to_owned();
    let mut out = String::new();
    if let Some(t) = &event.event {
        out.push_str(&format!("event: {}\n", first_line(t)));
    }
    if let Some(id) = &event.id {
        out.push_str(&format!("id: {}\n", first_line(id)));
    }
    if let Some(r) = event.retry {
        out.push_str(&format!("retry: {r}\n"));
    }
    for line in event.data.replace("\r\n", "\n").split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Fuzz entry point: decodes arbitrary bytes as a stream, whole and in pieces of a size the input
/// chooses, and checks that the blocks do not depend on the split (an oversized block is an error
/// either way) and that every dispatched event survives encode → decode.
pub fn fuzz_stream(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let whole = decode_all(data, data.len().max(1));
    let pieces = decode_all(data, usize::from(split).max(1));
    assert_eq!(whole.is_err(), pieces.is_err(), "one split failed and the other did not: {whole:?} / {pieces:?}");
    if let (Ok(a), Ok(b)) = (&whole, &pieces) {
        assert_eq!(a, b, "decoding depends on how the stream was split");
    }
    for event in whole.iter().flatten().filter_map(|b| b.event.as_ref()) {
        let mut buf = BytesMut::from(&encode(event)[..]);
        let reread = SseDecoder::default().decode(&mut buf).ok().flatten().and_then(|b| b.event);
        assert_eq!(reread.as_ref(), Some(event), "encode→decode changed the event");
    }
}

/// Feeds `data` in pieces of `step` bytes and collects every block, then the end of stream.
pub fn decode_all(data: &[u8], step: usize) -> Result<Vec<SseBlock>, DecodeError> {
    let mut dec = SseDecoder::new(4096);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(b) = dec.decode(&mut buf)? {
            out.push(b);
        }
    }
    while let Some(b) = dec.decode_eof(&mut buf)? {
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
