//! Typed messages from the client (§53.7): simple and extended query, COPY, authentication
//! responses, termination.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Reader, put_count16, put_cstr, put_nullable, put_typed};
use crate::DecodeError;

/// `Describe`/`Close` target: a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

impl Target {
    fn from_byte(b: u8, what: &'static str) -> Result<Self, DecodeError> {
        match b {
            b'S' => Ok(Self::Statement),
            b'P' => Ok(Self::Portal),
            _ => Err(DecodeError::Malformed { what, reason: "target is neither 'S' nor 'P'" }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Statement => b'S',
            Self::Portal => b'P',
        }
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Q`: a simple query (one or more statements).
    Query {
        /// The SQL text.
        sql: Bytes,
    },
    /// `P`: prepare a statement.
    Parse {
        /// Statement name (empty: the unnamed statement).
        name: Bytes,
        /// The SQL text.
        sql: Bytes,
        /// Parameter type OIDs the client fixes (0: unspecified).
        param_types: Vec<i32>,
    },
    /// `B`: bind parameters to a statement, creating a portal.
    Bind {
        /// Portal name.
        portal: Bytes,
        /// Statement name.
        statement: Bytes,
        /// Parameter format codes (0 text, 1 binary).
        param_formats: Vec<i16>,
        /// Parameter values (`None` is NULL).
        params: Vec<Option<Bytes>>,
        /// Result column format codes.
        result_formats: Vec<i16>,
    },
    /// `D`: describe a statement or a portal.
    Describe {
        /// What to describe.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `E`: execute a portal.
    Execute {
        /// Portal name.
        portal: Bytes,
        /// Row limit (0: no limit).
        max_rows: i32,
    },
    /// `S`: end of an extended-query cycle.
    Sync,
    /// `H`: flush pending output.
    Flush,
    /// `C`: close a statement or a portal.
    Close {
        /// What to close.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `d`: COPY data.
    CopyData(Bytes),
    /// `c`: COPY done.
    CopyDone,
    /// `f`: COPY failed.
    CopyFail {
        /// Why.
        message: Bytes,
    },
    /// `p`: a password, or a SASL initial response or response. Which one only the
    /// authentication exchange knows: see [`FrontendMessage::sasl_initial`].
    Password(Bytes),
    /// `X`: terminate.
    Terminate,
    /// `F`: the legacy fast-path function call, kept whole (a gateway refuses it).
    FunctionCall(Bytes),
}

/// A SASLInitialResponse's fields (§53.7, `p` after AuthenticationSASL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitial {
    /// Mechanism, e.g. `SCRAM-SHA-256`.
    pub mechanism: Bytes,
    /// The client-first-message (`None` when the length is -1).
    pub data: Option<Bytes>,
}

impl FrontendMessage {
    /// Reads a `p` message as a SASLInitialResponse.
    pub fn sasl_initial(body: &Bytes) -> Result<SaslInitial, DecodeError> {
        let mut r = Reader::new(body.clone(), "SASLInitialResponse");
        let mechanism = r.cstr()?;
        let data = r.nullable()?;
        r.end()?;
        Ok(SaslInitial { mechanism, data })
    }

    /// Reads a `p` message as a cleartext (or MD5) PasswordMessage: the string without its NUL.
    pub fn password_text(body: &Bytes) -> Result<Bytes, DecodeError> {
        let mut r = Reader::new(body.clone(), "PasswordMessage");
        let pw = r.cstr()?;
        r.end()?;
        Ok(pw)
    }

    /// Encodes the body of a SASLInitialResponse.
    pub fn sasl_initial_body(s: &SaslInitial) -> Bytes {
        let mut out = BytesMut::new();
        put_cstr(&mut out, &s.mechanism);
        put_nullable(&mut out, s.data.as_ref());
        out.freeze()
    }
}

fn parse(tag: u8, body: Bytes) -> Result<FrontendMessage, DecodeError> {
    use FrontendMessage as M;
    let what = "frontend message";
    let mut r = Reader::new(body, what);
    let m = match tag {
        b'Q' => M::Query { sql: r.cstr()? },
        b'P' => {
            let name = r.cstr()?;
            let sql = r.cstr()?;
            let n = r.count16()?;
            let mut param_types = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                param_types.push(r.i32()?);
            }
            M::Parse { name, sql, param_types }
        }
        b'B' => {
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let n = r.count16()?;
            let mut param_formats = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                param_formats.push(r.i16()?);
            }
            let n = r.count16()?;
            let mut params = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                params.push(r.nullable()?);
            }
            let n = r.count16()?;
            let mut result_formats = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                result_formats.push(r.i16()?);
            }
            M::Bind { portal, statement, param_formats, params, result_formats }
        }
        b'D' => {
            let target = Target::from_byte(r.u8()?, what)?;
            M::Describe { target, name: r.cstr()? }
        }
        b'E' => M::Execute { portal: r.cstr()?, max_rows: r.i32()? },
        b'S' => M::Sync,
        b'H' => M::Flush,
        b'C' => {
            let target = Target::from_byte(r.u8()?, what)?;
            M::Close { target, name: r.cstr()? }
        }
        b'd' => M::CopyData(r.rest()),
        b'c' => M::CopyDone,
        b'f' => M::CopyFail { message: r.cstr()? },
        b'p' => M::Password(r.rest()),
        b'X' => M::Terminate,
        b'F' => M::FunctionCall(r.rest()),
        _ => return Err(DecodeError::Malformed { what, reason: "unknown message type" }),
    };
    r.end()?;
    Ok(m)
}

/// Encodes a client message.
pub fn encode(m: &FrontendMessage) -> Bytes {
    use FrontendMessage as M;
    let mut b = BytesMut::new();
    let tag = match m {
        M::Query { sql } => {
            put_cstr(&mut b, sql);
            b'Q'
        }
        M::Parse { name, sql, param_types } => {
            put_cstr(&mut b, name);
            put_cstr(&mut b, sql);
            put_count16(&mut b, param_types.len());
            for t in param_types {
                b.put_i32(*t);
            }
            b'P'
        }
        M::Bind { portal, statement, param_formats, params, result_formats } => {
            put_cstr(&mut b, portal);
            put_cstr(&mut b, statement);
            put_count16(&mut b, param_formats.len());
            for f in param_formats {
                b.put_i16(*f);
            }
            put_count16(&mut b, params.len());
            for p in params {
                put_nullable(&mut b, p.as_ref());
            }
            put_count16(&mut b, result_formats.len());
            for f in result_formats {
                b.put_i16(*f);
            }
            b'B'
        }
        M::Describe { target, name } => {
            b.put_u8(target.byte());
            put_cstr(&mut b, name);
            b'D'
        }
        M::Execute { portal, max_rows } => {
            put_cstr(&mut b, portal);
            b.put_i32(*max_rows);
            b'E'
        }
        M::Sync => b'S',
        M::Flush => b'H',
        M::Close { target, name } => {
            b.put_u8(target.byte());
            put_cstr(&mut b, name);
            b'C'
        }
        M::CopyData(d) => {
            b.extend_from_slice(d);
            b'd'
        }
        M::CopyDone => b'c',
        M::CopyFail { message } => {
            put_cstr(&mut b, message);
            b'f'
        }
        M::Password(p) => {
            b.extend_from_slice(p);
            b'p'
        }
        M::Terminate => b'X',
        M::FunctionCall(f) => {
            b.extend_from_slice(f);
            b'F'
        }
    };
    let mut out = BytesMut::new();
    put_typed(&mut out, tag, &b);
    out.freeze()
}

typed_decoder!(
    /// Incremental decoder of client messages after the startup phase.
    FrontendDecoder,
    FrontendMessage,
    "frontend message"
);

/// Fuzz entry point: arbitrary bytes as a client stream; every message decoded re-encodes to
/// the exact bytes it came from.
pub fn fuzz_stream(data: &[u8]) {
    let mut dec = FrontendDecoder::new(64 * 1024);
    super::fuzz_round_trip(data, |buf| dec.decode_raw(buf), encode);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testutil::every_prefix;
    use super::*;
    use crate::Decoder;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn samples() -> Vec<FrontendMessage> {
        use FrontendMessage as M;
        vec![
            M::Query { sql: b("SELECT 1; SELECT 2") },
            M::Parse { name: b("s1"), sql: b("SELECT * FROM patients WHERE id = $1"), param_types: vec![23] },
            M::Bind {
                portal: b(""),
                statement: b("s1"),
                param_formats: vec![0],
                params: vec![Some(b("42")), None],
                result_formats: vec![1, 0],
            },
            M::Describe { target: Target::Portal, name: b("") },
            M::Execute { portal: b(""), max_rows: 0 },
            M::Sync,
            M::Flush,
            M::Close { target: Target::Statement, name: b("s1") },
            M::CopyData(b("1\tJane\n")),
            M::CopyDone,
            M::CopyFail { message: b("cancelled by user") },
            M::Password(b("secret\0")),
            M::Terminate,
        ]
    }

    #[test]
    fn every_message_round_trips_with_every_prefix() {
        for m in samples() {
            let bytes = encode(&m);
            every_prefix(&bytes, &m, |buf| FrontendDecoder::default().decode(buf));
        }
    }

    #[test]
    fn a_pipelined_extended_query_decodes_in_order() {
        let stream: Vec<u8> = samples().iter().flat_map(|m| encode(m).to_vec()).collect();
        let mut dec = FrontendDecoder::default();
        let mut buf = BytesMut::from(&stream[..]);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut buf).unwrap() {
            out.push(m);
        }
        assert_eq!(out, samples());
    }

    #[test]
    fn sasl_and_password_views() {
        let s = SaslInitial { mechanism: b("SCRAM-SHA-256"), data: Some(b("n,,n=,r=abc")) };
        let body = FrontendMessage::sasl_initial_body(&s);
        assert_eq!(FrontendMessage::sasl_initial(&body).unwrap(), s);
        assert_eq!(FrontendMessage::password_text(&b("eyJ.token\0")).unwrap(), b("eyJ.token"));
        assert!(FrontendMessage::password_text(&b("no terminator")).is_err());
    }

    #[test]
    fn limits_and_garbage() {
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(FrontendDecoder::default().decode(&mut buf), Err(DecodeError::TooLong { .. })));
        let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x02"[..]);
        assert!(matches!(FrontendDecoder::default().decode(&mut buf), Err(DecodeError::Malformed { .. })));
        let mut buf = BytesMut::from(&b"?\x00\x00\x00\x04"[..]);
        assert!(FrontendDecoder::default().decode(&mut buf).is_err());
        // A Bind that claims more parameters than it carries.
        let mut buf = BytesMut::from(&b"B\x00\x00\x00\x0a\x00\x00\x00\x00\x7f\xff"[..]);
        assert!(FrontendDecoder::default().decode(&mut buf).is_err());
        // Trailing bytes after a Sync.
        let mut buf = BytesMut::from(&b"S\x00\x00\x00\x05\x00"[..]);
        assert!(FrontendDecoder::default().decode(&mut buf).is_err());
    }

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("postgres_frontend", 2, fuzz_stream);
    }

    proptest! {
        #[test]
        fn queries_and_binds_round_trip(sql in "[ -~]{0,200}", params in proptest::collection::vec(proptest::option::of("[ -~]{0,20}"), 0..8)) {
            let q = FrontendMessage::Query { sql: Bytes::from(sql.replace('\0', "")) };
            let mut buf = BytesMut::from(&encode(&q)[..]);
            prop_assert_eq!(FrontendDecoder::default().decode(&mut buf).unwrap(), Some(q));
            let bind = FrontendMessage::Bind {
                portal: Bytes::new(),
                statement: Bytes::from_static(b"s"),
                param_formats: vec![],
                params: params.into_iter().map(|p| p.map(Bytes::from)).collect(),
                result_formats: vec![],
            };
            let mut buf = BytesMut::from(&encode(&bind)[..]);
            prop_assert_eq!(FrontendDecoder::default().decode(&mut buf).unwrap(), Some(bind));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_stream(&data);
        }
    }
}
