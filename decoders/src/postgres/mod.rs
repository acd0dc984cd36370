//! The PostgreSQL frontend/backend protocol, version 3.0 (PostgreSQL documentation, chapter 53
//! "Frontend/Backend Protocol", §53.7 "Message Formats").
//!
//! ```text
//! startup phase (frontend only, no type byte):
//!   Int32 length (self included) ‖ Int32 code ‖ body
//!     code 196608  (3.0)  StartupMessage: (CString name ‖ CString value)* ‖ 0
//!     code 80877103       SSLRequest          — the server answers one byte, 'S' or 'N'
//!     code 80877104       GSSENCRequest       — likewise 'G' or 'N'
//!     code 80877102       CancelRequest: Int32 process id ‖ secret key (4 bytes in 3.0)
//! every other message:
//!   Byte1 type ‖ Int32 length (self included, ≥ 4) ‖ body
//! ```
//!
//! Framing first: the length is checked against the configured maximum before a byte of the
//! body is buffered, then the whole frame is parsed. A message keeps its frame as [`Bytes`] and
//! its fields are zero-copy slices of it. Every message has an encoder, and decode(encode(m)) == m.
//! One module per family: [`startup`] (startup phase), [`frontend`], [`backend`].

/// The incremental decoder of one direction's typed messages: bounded framing by
/// [`take_typed`], then that module's `parse`.
macro_rules! typed_decoder {
    ($(#[$doc:meta])* $name:ident, $message:ty, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            max_message: usize,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new($crate::postgres::DEFAULT_MAX_MESSAGE)
            }
        }

        impl $name {
            /// A decoder that refuses messages longer than `max_message` bytes.
            pub fn new(max_message: usize) -> Self {
                Self { max_message }
            }

            /// [`Decoder::decode`](crate::Decoder::decode), also handing out the whole frame as
            /// it arrived (zero-copy).
            pub fn decode_raw(
                &mut self,
                buf: &mut ::bytes::BytesMut,
            ) -> Result<Option<($message, ::bytes::Bytes)>, $crate::DecodeError> {
                match $crate::postgres::take_typed(buf, self.max_message, $what)? {
                    Some(f) => Ok(Some((parse(f.tag, f.body)?, f.raw))),
                    None => Ok(None),
                }
            }
        }

        impl $crate::Decoder for $name {
            type Frame = $message;

            fn decode(&mut self, buf: &mut ::bytes::BytesMut) -> Result<Option<$message>, $crate::DecodeError> {
                Ok(self.decode_raw(buf)?.map(|(m, _)| m))
            }
        }
    };
}

pub mod backend;
pub mod frontend;
pub mod startup;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Default bound on one message (PostgreSQL's own limit is 1 GiB; a gateway needs far less).
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Bound on startup-phase packets (PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` is 10000).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A typed frame: the type byte, the body (length prefix removed), and the whole frame as it
/// arrived (for forwarding and the journal without re-encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type byte.
    pub tag: u8,
    /// The body.
    pub body: Bytes,
    /// Type byte, length and body, exactly as received.
    pub raw: Bytes,
}

/// Takes one typed frame off `buf` once it is whole, checking the length before buffering.
pub fn take_typed(buf: &mut BytesMut, max: usize, what: &'static str) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(DecodeError::Malformed { what, reason: "length field below 4" });
    }
    let len = len as usize;
    let Some(raw) = crate::take_frame(buf, 1 + len, 1 + max, what)? else { return Ok(None) };
    Ok(Some(Frame { tag: raw[0], body: raw.slice(5..), raw }))
}

/// Fuzz logic shared by the typed decoders: decode arbitrary bytes as a stream; every message
/// decoded must re-encode to exactly the frame it came from, and the frames must cover the
/// consumed input in order.
pub(crate) fn fuzz_round_trip<M: std::fmt::Debug>(
    data: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<(M, Bytes)>, DecodeError>,
    encode: impl Fn(&M) -> Bytes,
) {
    let mut buf = BytesMut::from(data);
    let mut at = 0;
    while let Ok(Some((m, raw))) = decode(&mut buf) {
        assert_eq!(&encode(&m)[..], &raw[..], "message did not round-trip: {m:?}");
        assert_eq!(&raw[..], &data[at..at + raw.len()], "frames out of order");
        at += raw.len();
    }
}

/// Writes a typed message: tag, length, body.
pub fn put_typed(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(5 + body.len());
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.extend_from_slice(body);
}

/// A cursor over a message body with the reads the formats need; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader {
    body: Bytes,
    what: &'static str,
}

impl Reader {
    /// Reads `body` of message `what`.
    pub fn new(body: Bytes, what: &'static str) -> Self {
        Self { body, what }
    }

    fn short(&self) -> DecodeError {
        DecodeError::Malformed { what: self.what, reason: "body shorter than its fields" }
    }

    /// An Int8 (a byte).
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.body.is_empty() {
            return Err(self.short());
        }
        Ok(self.body.get_u8())
    }

    /// An Int16.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        if self.body.len() < 2 {
            return Err(self.short());
        }
        Ok(self.body.get_i16())
    }

    /// An Int32.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        if self.body.len() < 4 {
            return Err(self.short());
        }
        Ok(self.body.get_i32())
    }

    /// A count (Int16) that must not be negative.
    pub fn count16(&mut self) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| DecodeError::Malformed { what: self.what, reason: "negative count" })
    }

    /// A CString (its bytes, without the terminator).
    pub fn cstr(&mut self) -> Result<Bytes, DecodeError> {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Malformed { what: self.what, reason: "string without its terminator" })?;
        let s = self.body.split_to(end);
        self.body.advance(1);
        Ok(s)
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.body.len() < n {
            return Err(self.short());
        }
        Ok(self.body.split_to(n))
    }

    /// An Int32 length and that many bytes; -1 is NULL.
    pub fn nullable(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len =
            usize::try_from(len).map_err(|_| DecodeError::Malformed { what: self.what, reason: "negative length" })?;
        self.bytes(len).map(Some)
    }

    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Fails unless the body is used up.
    pub fn end(&self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed { what: self.what, reason: "trailing bytes after the last field" })
        }
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// Writes a CString.
pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.extend_from_slice(s);
    out.put_u8(0);
}

/// Writes an Int32 length and the bytes, or -1 for NULL.
pub fn put_nullable(out: &mut BytesMut, v: Option<&Bytes>) {
    match v {
        None => out.put_i32(-1),
        Some(b) => {
            out.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(b);
        }
    }
}

/// Writes a count as Int16.
pub fn put_count16(out: &mut BytesMut, n: usize) {
    out.put_i16(i16::try_from(n).unwrap_or(i16::MAX));
}

#[cfg(test)]
pub(crate) mod testutil {
    use bytes::BytesMut;

    /// The every-prefix test: each strict prefix is incomplete and leaves the buffer untouched;
    /// the whole input decodes to `expected` and is used up.
    pub(crate) fn every_prefix<T: std::fmt::Debug + PartialEq>(
        input: &[u8],
        expected: &T,
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, crate::DecodeError>,
    ) {
        for i in 0..input.len() {
            let mut buf = BytesMut::from(&input[..i]);
            assert_eq!(decode(&mut buf), Ok(None), "prefix {i} of {}", input.len());
            assert_eq!(&buf[..], &input[..i], "buffer untouched at prefix {i}");
        }
        let mut buf = BytesMut::from(input);
        assert_eq!(decode(&mut buf).unwrap().as_ref(), Some(expected));
        assert!(buf.is_empty());
    }
}
