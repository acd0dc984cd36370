//! Newline-delimited JSON (NDJSON / JSON Lines), as streaming runtimes such as Ollama send it: one
//! JSON text per line, lines ended by LF (a CR before it is tolerated), blank lines skipped.
//!
//! Framing first: the decoder looks for the LF within the line limit and refuses a longer line
//! before buffering more; then the whole line is checked to be one JSON text.

use bytes::{Bytes, BytesMut};

use crate::{DecodeError, Decoder};

/// Default bound on one line.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdjsonLine {
    /// The line as received, terminator included.
    pub raw: Bytes,
    /// The JSON text (no terminator, no surrounding whitespace); `None` for a blank line.
    pub json: Option<Bytes>,
}

/// Incremental NDJSON decoder.
#[derive(Debug, Clone)]
pub struct NdjsonDecoder {
    max_line: usize,
    /// How much of the buffered line has been scanned for its LF: each byte is scanned once
    /// however the line arrives.
    scanned: usize,
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

fn line(raw: Bytes) -> Result<NdjsonLine, DecodeError> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    if start >= end {
        return Ok(NdjsonLine { raw, json: None });
    }
    let json = raw.slice(start..end);
    serde_json::from_slice::<serde::de::IgnoredAny>(&json)
        .map_err(|_| DecodeError::Malformed { what: "NDJSON line", reason: "not one JSON text" })?;
    Ok(NdjsonLine { raw, json: Some(json) })
}

impl NdjsonDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self { max_line, scanned: 0 }
    }

    /// At the end of the stream: a last line without its LF is still a line.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<NdjsonLine>, DecodeError> {
        if let Some(l) = self.decode(buf)? {
            return Ok(Some(l));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.scanned = 0;
        line(buf.split().freeze()).map(Some)
    }
}

impl Decoder for NdjsonDecoder {
    type Frame = NdjsonLine;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<NdjsonLine>, DecodeError> {
        let window = &buf[..buf.len().min(self.max_line + 1)];
        let from = self.scanned.min(window.len());
        match memchr::memchr(b'\n', &window[from..]).map(|k| from + k) {
            Some(i) => {
                self.scanned = 0;
                line(buf.split_to(i + 1).freeze()).map(Some)
            }
            None if buf.len() <= self.max_line => {
                self.scanned = window.len();
                Ok(None)
            }
            None => Err(DecodeError::TooLong { what: "NDJSON line", len: buf.len(), max: self.max_line }),
        }
    }
}

/// Fuzz entry point: arbitrary bytes as a stream; the lines handed out must cover the input exactly.
pub fn fuzz_stream(data: &[u8]) {
    let mut dec = NdjsonDecoder::new(4096);
    let mut buf = BytesMut::from(data);
    let mut seen = Vec::new();
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(l)) => seen.extend_from_slice(&l.raw),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    assert_eq!(seen, data, "lines do not cover the input");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A line arriving byte by byte is scanned once.
    #[test]
    fn a_line_arriving_in_pieces_is_scanned_once() {
        let mut dec = NdjsonDecoder::default();
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for &b in b"{\"a\":1}\n{\"b\":2}\n".iter() {
            buf.extend_from_slice(&[b]);
            if let Some(l) = dec.decode(&mut buf).unwrap() {
                lines.push(l.raw);
            }
            assert_eq!(dec.scanned, buf.len());
        }
        assert_eq!(lines, [&b"{\"a\":1}\n"[..], b"{\"b\":2}\n"]);
    }

    /// Two lines of an Ollama `/api/generate` stream.
    const OLLAMA: &[u8] = b"{\"model\":\"llama3\",\"response\":\"Hel\",\"done\":false}\n\
        {\"model\":\"llama3\",\"response\":\"lo\",\"done\":true}\n";

    #[test]
    fn every_prefix_waits_then_gives_the_line() {
        let first_len = OLLAMA.iter().position(|&b| b == b'\n').unwrap() + 1;
        for i in 0..first_len {
            let mut buf = BytesMut::from(&OLLAMA[..i]);
            assert_eq!(NdjsonDecoder::default().decode(&mut buf), Ok(None), "prefix {i}");
            assert_eq!(&buf[..], &OLLAMA[..i]);
        }
        let mut buf = BytesMut::from(OLLAMA);
        let mut dec = NdjsonDecoder::default();
        let a = dec.decode(&mut buf).unwrap().unwrap();
        let b = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(a.json.as_deref(), Some(&OLLAMA[..first_len - 1]));
        assert!(b.json.unwrap().ends_with(b"true}"));
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn crlf_blank_lines_and_a_last_line_without_lf() {
        let mut dec = NdjsonDecoder::default();
        let mut buf = BytesMut::from(&b"{\"a\":1}\r\n\n  \n[2]"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().json.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().json, None);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().json, None);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.decode_eof(&mut buf).unwrap().unwrap().json.as_deref(), Some(&b"[2]"[..]));
        assert_eq!(dec.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn bad_and_oversized_lines_are_refused() {
        let mut buf = BytesMut::from(&b"{\"a\":1} trailing\n"[..]);
        assert!(matches!(NdjsonDecoder::default().decode(&mut buf), Err(DecodeError::Malformed { .. })));
        let mut buf = BytesMut::from(&b"{\"a\":"[..]);
        assert!(matches!(NdjsonDecoder::default().decode_eof(&mut buf), Err(DecodeError::Malformed { .. })));
        let mut buf = BytesMut::from(&b"[1,2,3,4,5,6,7,8]"[..]);
        assert!(matches!(NdjsonDecoder::new(8).decode(&mut buf), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("ndjson_stream", 2, fuzz_stream);
    }

    proptest! {
        #[test]
        fn lines_round_trip_in_any_split(values in proptest::collection::vec(any::<i64>(), 0..10), step in 1usize..20) {
            let stream: Vec<u8> = values.iter().flat_map(|v| format!("{{\"n\":{v}}}\n").into_bytes()).collect();
            let mut dec = NdjsonDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(l) = dec.decode(&mut buf).unwrap() {
                    let v: serde_json::Value = serde_json::from_slice(&l.json.unwrap()).unwrap();
                    out.push(v["n"].as_i64().unwrap());
                }
            }
            prop_assert_eq!(out, values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_stream(&data);
        }
    }
}
