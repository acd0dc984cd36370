//! Sans-IO protocol decoders for Airlock: no sockets, no tokio, no allocation a peer can steer
//! past a limit.
//!
//! Every protocol module implements [`Decoder`]: frame by length first against a hard maximum,
//! then parse the complete frame with nom `complete` parsers, handing out zero-copy [`Bytes`].
//! `Ok(None)` means "need more bytes" and leaves the buffer untouched. Decoders never panic on any
//! input; each ships the every-prefix test, an encode→decode round trip, golden fixtures from a
//! real peer, a proptest and a fuzz target whose logic lives here.
//!
//! Modules: [`sse`] (text/event-stream), [`ndjson`] (JSON Lines), [`grpc`] (length-prefixed
//! messages, gzip), [`jsonrpc`] (JSON-RPC 2.0 and MCP tool calls), [`postgres`] (the
//! frontend/backend protocol 3.0). The raw TCP driver forwards bytes without decoding.

pub mod grpc;
pub mod jsonrpc;
pub mod ndjson;
pub mod postgres;
pub mod sse;

use bytes::{Bytes, BytesMut};

/// Why a decoder refused its input. The connection it came from cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length field announced more than the configured maximum.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which frame or field.
        what: &'static str,
        /// Announced length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The frame is complete but does not follow the protocol.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which frame or field.
        what: &'static str,
        /// What rule it breaks.
        reason: &'static str,
    },
}

/// The decoder contract shared by every protocol module.
pub trait Decoder {
    /// One decoded unit of the protocol.
    type Frame;

    /// Takes one whole frame off the front of `buf`, or returns `Ok(None)` and leaves `buf`
    /// untouched when more bytes are needed.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, DecodeError>;
}

/// Returns the first `len` bytes of `buf` as a frame once they are all there, after checking
/// `len` against `max` — the "frame by length first" step every decoder starts with.
pub fn take_frame(
    buf: &mut BytesMut,
    len: usize,
    max: usize,
    what: &'static str,
) -> Result<Option<Bytes>, DecodeError> {
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(buf.split_to(len).freeze()))
}

/// Test helpers shared by the decoder modules.
#[cfg(test)]
pub(crate) mod testutil {
    /// Runs `fuzz` over every file of `fuzz/corpus/<target>` (at least `min` of them): the seed
    /// corpus the fuzzer starts from is also decoded on every test run.
    pub(crate) fn seed_corpus(target: &str, min: usize, fuzz: fn(&[u8])) {
        // The directory cargo runs the test from (a test binary reused from a build in another
        // checkout would otherwise look in that checkout).
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = std::path::Path::new(&manifest).join("../fuzz/corpus").join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            fuzz(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= min, "seed corpus missing from {}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_frame_checks_the_limit_before_waiting() {
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(take_frame(&mut buf, 10, 5, "x"), Err(DecodeError::TooLong { what: "x", len: 10, max: 5 }));
        assert_eq!(take_frame(&mut buf, 4, 5, "x"), Ok(None));
        assert_eq!(buf.len(), 3, "buffer untouched while incomplete");
        assert_eq!(take_frame(&mut buf, 2, 5, "x"), Ok(Some(Bytes::from_static(b"ab"))));
        assert_eq!(&buf[..], b"c");
    }
}
