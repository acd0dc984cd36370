//! gRPC length-prefixed messages, as gRPC over HTTP/2 ("PROTOCOL-HTTP2.md") frames them inside
//! a stream's DATA:
//!
//! ```text
//! Length-Prefixed-Message → Compressed-Flag Message-Length Message
//! Compressed-Flag         → 0 / 1            ; 1 byte, "encoded using the mechanism declared by
//!                                            ;  the Message-Encoding header"
//! Message-Length          → {length of Message}  ; 4 bytes, big-endian
//! ```
//!
//! The length is checked against the limit before anything is buffered or allocated. Compressed
//! messages can be inflated with [`decompress`] (`identity` and `gzip`), which bounds the output
//! too, so a small compressed message cannot expand past the limit (a decompression bomb).

use std::io::Read as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{DecodeError, Decoder, take_frame};

/// Default bound on one message (gRPC's own default receive limit is 4 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Flag byte plus length.
pub const PREFIX_LEN: usize = 5;

/// One message of a gRPC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMessage {
    /// The compressed flag: the message is encoded with the stream's `grpc-encoding`.
    pub compressed: bool,
    /// The message bytes (a serialized protobuf, usually), still compressed if flagged.
    pub message: Bytes,
}

/// Incremental decoder of length-prefixed messages.
#[derive(Debug, Clone)]
pub struct GrpcDecoder {
    max_message: usize,
}

impl Default for GrpcDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl GrpcDecoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self { max_message }
    }
}

impl Decoder for GrpcDecoder {
    type Frame = GrpcMessage;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<GrpcMessage>, DecodeError> {
        if buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let compressed = match buf[0] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Malformed { what: "gRPC message", reason: "compressed flag is not 0 or 1" }),
        };
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > self.max_message {
            return Err(DecodeError::TooLong { what: "gRPC message", len, max: self.max_message });
        }
        let Some(mut frame) = take_frame(buf, PREFIX_LEN + len, PREFIX_LEN + self.max_message, "gRPC message")? else {
            return Ok(None);
        };
        let message = frame.split_off(PREFIX_LEN);
        Ok(Some(GrpcMessage { compressed, message }))
    }
}

/// Encodes one message with its prefix.
pub fn encode(msg: &GrpcMessage) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_LEN + msg.message.len());
    out.put_u8(u8::from(msg.compressed));
    out.put_u32(u32::try_from(msg.message.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&msg.message);
    out.freeze()
}

/// The plain message bytes: as they are when not compressed, inflated per `grpc-encoding`
/// (`identity` or `gzip`) when compressed, never more than `max` bytes.
pub fn decompress(msg: &GrpcMessage, encoding: Option<&str>, max: usize) -> Result<Bytes, DecodeError> {
    if !msg.compressed {
        return Ok(msg.message.clone());
    }
    match encoding.unwrap_or("identity") {
        // A compressed flag with `identity` is a protocol error (PROTOCOL-HTTP2.md, "Compressed-Flag").
        "identity" => {
            Err(DecodeError::Malformed { what: "gRPC message", reason: "compressed flag set without a grpc-encoding" })
        }
        "gzip" => {
            let mut out = Vec::new();
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::GzDecoder::new(&msg.message[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|_| DecodeError::Malformed { what: "gRPC message", reason: "gzip data is corrupt" })?;
            if out.len() > max {
                return Err(DecodeError::TooLong { what: "inflated gRPC message", len: out.len(), max });
            }
            Ok(Bytes::from(out))
        }
        _ => Err(DecodeError::Malformed { what: "gRPC message", reason: "unsupported grpc-encoding" }),
    }
}

/// Fuzz entry point: arbitrary bytes as a message stream; every message decoded must re-encode to
/// exactly the bytes it came from, and inflating must respect its bound.
pub fn fuzz_stream(data: &[u8]) {
    let mut dec = GrpcDecoder::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(m)) = dec.decode(&mut buf) {
        let again = encode(&m);
        assert_eq!(&again[..], &data[consumed..consumed + again.len()], "message did not round-trip");
        consumed += again.len();
        if let Ok(plain) = decompress(&m, Some("gzip"), 1024) {
            assert!(plain.len() <= 1024 || !m.compressed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use proptest::prelude::*;

    use super::*;

    /// A unary `helloworld.Greeter/SayHello` request as grpcio sends it: `HelloRequest{name:"you"}`.
    const HELLO: &[u8] = b"\x00\x00\x00\x00\x05\x0a\x03you";

    #[test]
    fn every_prefix_waits_then_gives_the_message() {
        for i in 0..HELLO.len() {
            let mut buf = BytesMut::from(&HELLO[..i]);
            assert_eq!(GrpcDecoder::default().decode(&mut buf), Ok(None), "prefix {i}");
            assert_eq!(&buf[..], &HELLO[..i]);
        }
        let mut buf = BytesMut::from(HELLO);
        let m = GrpcDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(m, GrpcMessage { compressed: false, message: Bytes::from_static(b"\x0a\x03you") });
        assert!(buf.is_empty());
        assert_eq!(&encode(&m)[..], HELLO);
    }

    #[test]
    fn limits_and_flags_are_checked_before_buffering() {
        let mut buf = BytesMut::from(&b"\x00\xff\xff\xff\xff"[..]);
        assert!(matches!(GrpcDecoder::default().decode(&mut buf), Err(DecodeError::TooLong { .. })));
        let mut buf = BytesMut::from(&b"\x02\x00\x00\x00\x00"[..]);
        assert!(matches!(GrpcDecoder::default().decode(&mut buf), Err(DecodeError::Malformed { .. })));
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x00"[..]);
        let empty = GrpcDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(empty.message.is_empty(), "a zero-length message is valid");
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn gzip_messages_inflate_within_the_bound() {
        let m = GrpcMessage { compressed: true, message: gzip(b"\x0a\x03you") };
        assert_eq!(&decompress(&m, Some("gzip"), 100).unwrap()[..], b"\x0a\x03you");
        let bomb = GrpcMessage { compressed: true, message: gzip(&vec![0u8; 1 << 20]) };
        assert!(bomb.message.len() < 4096, "a small message");
        assert!(matches!(decompress(&bomb, Some("gzip"), 64 * 1024), Err(DecodeError::TooLong { .. })));
        let bad = GrpcMessage { compressed: true, message: Bytes::from_static(b"not gzip") };
        assert!(matches!(decompress(&bad, Some("gzip"), 100), Err(DecodeError::Malformed { .. })));
        assert!(decompress(&m, None, 100).is_err(), "flagged but no encoding");
        assert!(decompress(&m, Some("zstd"), 100).is_err());
        let plain = GrpcMessage { compressed: false, message: Bytes::from_static(b"x") };
        assert_eq!(&decompress(&plain, Some("gzip"), 100).unwrap()[..], b"x");
    }

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("grpc_stream", 2, fuzz_stream);
    }

    proptest! {
        #[test]
        fn streams_round_trip(msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8), step in 1usize..64) {
            let msgs: Vec<GrpcMessage> = msgs.into_iter().map(|(c, m)| GrpcMessage { compressed: c, message: Bytes::from(m) }).collect();
            let stream: Vec<u8> = msgs.iter().flat_map(|m| encode(m).to_vec()).collect();
            let mut dec = GrpcDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(m) = dec.decode(&mut buf).unwrap() {
                    out.push(m);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_stream(&data);
        }
    }
}
