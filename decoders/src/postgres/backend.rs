//! Typed messages from the server (§53.7): authentication, session parameters, results, errors,
//! COPY, notifications.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Reader, put_count16, put_cstr, put_nullable, put_typed};
use crate::DecodeError;

/// An `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// 0: authenticated.
    Ok,
    /// 2: Kerberos V5 (obsolete).
    KerberosV5,
    /// 3: send the password in clear text.
    CleartextPassword,
    /// 5: send `md5(md5(password ‖ user) ‖ salt)`.
    Md5Password {
        /// The salt.
        salt: [u8; 4],
    },
    /// 7: GSSAPI.
    Gss,
    /// 8: GSSAPI continuation.
    GssContinue(Bytes),
    /// 9: SSPI.
    Sspi,
    /// 10: SASL, with the mechanisms offered.
    Sasl(Vec<Bytes>),
    /// 11: SASL challenge.
    SaslContinue(Bytes),
    /// 12: SASL outcome.
    SaslFinal(Bytes),
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: Bytes,
    /// OID of the table it comes from (0 if none).
    pub table_oid: i32,
    /// Column number in that table (0 if none).
    pub column: i16,
    /// Type OID.
    pub type_oid: i32,
    /// Type size (negative: variable).
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// `R`.
    Authentication(Authentication),
    /// `S`: a run-time parameter's value.
    ParameterStatus {
        /// Name.
        name: Bytes,
        /// Value.
        value: Bytes,
    },
    /// `K`: the key a CancelRequest must carry.
    BackendKeyData {
        /// Process id.
        process_id: i32,
        /// Secret key (4 bytes in 3.0, up to 256 in 3.2).
        secret_key: Bytes,
    },
    /// `Z`: ready for a new query; `I` idle, `T` in a transaction, `E` in a failed transaction.
    ReadyForQuery {
        /// Transaction status.
        status: u8,
    },
    /// `T`: the columns of the rows that follow.
    RowDescription(Vec<FieldDescription>),
    /// `D`: one row (`None` is NULL).
    DataRow(Vec<Option<Bytes>>),
    /// `C`: a command finished, with its tag (`SELECT 3`, `INSERT 0 1`).
    CommandComplete {
        /// The tag.
        tag: Bytes,
    },
    /// `I`: the query string was empty.
    EmptyQueryResponse,
    /// `E`: an error, as (field code, value) pairs: `S` severity, `C` SQLSTATE, `M` message…
    ErrorResponse(Vec<(u8, Bytes)>),
    /// `N`: a notice, same fields.
    NoticeResponse(Vec<(u8, Bytes)>),
    /// `1`.
    ParseComplete,
    /// `2`.
    BindComplete,
    /// `3`.
    CloseComplete,
    /// `n`: the statement returns no rows.
    NoData,
    /// `s`: Execute's row limit was reached.
    PortalSuspended,
    /// `t`: parameter type OIDs of a prepared statement.
    ParameterDescription(Vec<i32>),
    /// `G`: ready for COPY FROM STDIN.
    CopyInResponse {
        /// 0 text, 1 binary.
        format: u8,
        /// Per-column formats.
        column_formats: Vec<i16>,
    },
    /// `H`: COPY TO STDOUT follows.
    CopyOutResponse {
        /// 0 text, 1 binary.
        format: u8,
        /// Per-column formats.
        column_formats: Vec<i16>,
    },
    /// `W`: COPY BOTH (replication).
    CopyBothResponse {
        /// 0 text, 1 binary.
        format: u8,
        /// Per-column formats.
        column_formats: Vec<i16>,
    },
    /// `d`: COPY data.
    CopyData(Bytes),
    /// `c`: COPY done.
    CopyDone,
    /// `A`: LISTEN/NOTIFY.
    NotificationResponse {
        /// Notifying process.
        process_id: i32,
        /// Channel.
        channel: Bytes,
        /// Payload.
        payload: Bytes,
    },
    /// `v`: the server supports an older minor version and not these options.
    NegotiateProtocolVersion {
        /// Newest minor version supported.
        newest_minor: i32,
        /// Options it did not recognize.
        unrecognized: Vec<Bytes>,
    },
    /// `V`: result of a legacy function call.
    FunctionCallResponse(Option<Bytes>),
}

impl BackendMessage {
    /// An ErrorResponse or NoticeResponse field by code (`b'C'` for the SQLSTATE).
    pub fn field(&self, code: u8) -> Option<&Bytes> {
        match self {
            Self::ErrorResponse(f) | Self::NoticeResponse(f) => f.iter().find(|(c, _)| *c == code).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn fields(r: &mut Reader) -> Result<Vec<(u8, Bytes)>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            return Ok(out);
        }
        out.push((code, r.cstr()?));
    }
}

fn copy_response(r: &mut Reader) -> Result<(u8, Vec<i16>), DecodeError> {
    let format = r.u8()?;
    let n = r.count16()?;
    let mut cols = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        cols.push(r.i16()?);
    }
    Ok((format, cols))
}

fn parse(tag: u8, body: Bytes) -> Result<BackendMessage, DecodeError> {
    use BackendMessage as M;
    let what = "backend message";
    let mut r = Reader::new(body, what);
    let m = match tag {
        b'R' => M::Authentication(match r.i32()? {
            0 => Authentication::Ok,
            2 => Authentication::KerberosV5,
            3 => Authentication::CleartextPassword,
            5 => {
                let s = r.bytes(4)?;
                Authentication::Md5Password { salt: [s[0], s[1], s[2], s[3]] }
            }
            7 => Authentication::Gss,
            8 => Authentication::GssContinue(r.rest()),
            9 => Authentication::Sspi,
            10 => {
                let mut mechs = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(m);
                }
                Authentication::Sasl(mechs)
            }
            11 => Authentication::SaslContinue(r.rest()),
            12 => Authentication::SaslFinal(r.rest()),
            _ => return Err(DecodeError::Malformed { what, reason: "unknown authentication request" }),
        }),
        b'S' => M::ParameterStatus { name: r.cstr()?, value: r.cstr()? },
        b'K' => {
            let process_id = r.i32()?;
            let secret_key = r.rest();
            if !(4..=256).contains(&secret_key.len()) {
                return Err(DecodeError::Malformed { what, reason: "cancel key must be 4 to 256 bytes" });
            }
            M::BackendKeyData { process_id, secret_key }
        }
        b'Z' => {
            let status = r.u8()?;
            if !matches!(status, b'I' | b'T' | b'E') {
                return Err(DecodeError::Malformed { what, reason: "transaction status is not I, T or E" });
            }
            M::ReadyForQuery { status }
        }
        b'T' => {
            let n = r.count16()?;
            let mut cols = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                cols.push(FieldDescription {
                    name: r.cstr()?,
                    table_oid: r.i32()?,
                    column: r.i16()?,
                    type_oid: r.i32()?,
                    type_size: r.i16()?,
                    type_modifier: r.i32()?,
                    format: r.i16()?,
                });
            }
            M::RowDescription(cols)
        }
        b'D' => {
            let n = r.count16()?;
            let mut values = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                values.push(r.nullable()?);
            }
            M::DataRow(values)
        }
        b'C' => M::CommandComplete { tag: r.cstr()? },
        b'I' => M::EmptyQueryResponse,
        b'E' => M::ErrorResponse(fields(&mut r)?),
        b'N' => M::NoticeResponse(fields(&mut r)?),
        b'1' => M::ParseComplete,
        b'2' => M::BindComplete,
        b'3' => M::CloseComplete,
        b'n' => M::NoData,
        b's' => M::PortalSuspended,
        b't' => {
            let n = r.count16()?;
            let mut types = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                types.push(r.i32()?);
            }
            M::ParameterDescription(types)
        }
        b'G' => {
            let (format, column_formats) = copy_response(&mut r)?;
            M::CopyInResponse { format, column_formats }
        }
        b'H' => {
            let (format, column_formats) = copy_response(&mut r)?;
            M::CopyOutResponse { format, column_formats }
        }
        b'W' => {
            let (format, column_formats) = copy_response(&mut r)?;
            M::CopyBothResponse { format, column_formats }
        }
        b'd' => M::CopyData(r.rest()),
        b'c' => M::CopyDone,
        b'A' => M::NotificationResponse { process_id: r.i32()?, channel: r.cstr()?, payload: r.cstr()? },
        b'v' => {
            let newest_minor = r.i32()?;
            let n = r.i32()?;
            let n = usize::try_from(n).map_err(|_| DecodeError::Malformed { what, reason: "negative count" })?;
            let mut unrecognized = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                unrecognized.push(r.cstr()?);
            }
            M::NegotiateProtocolVersion { newest_minor, unrecognized }
        }
        b'V' => M::FunctionCallResponse(r.nullable()?),
        _ => return Err(DecodeError::Malformed { what, reason: "unknown message type" }),
    };
    r.end()?;
    Ok(m)
}

fn put_fields(b: &mut BytesMut, f: &[(u8, Bytes)]) {
    for (code, value) in f {
        b.put_u8(*code);
        put_cstr(b, value);
    }
    b.put_u8(0);
}

fn put_copy(b: &mut BytesMut, format: u8, cols: &[i16]) {
    b.put_u8(format);
    put_count16(b, cols.len());
    for c in cols {
        b.put_i16(*c);
    }
}

/// Encodes a server message.
pub fn encode(m: &BackendMessage) -> Bytes {
    use BackendMessage as M;
    let mut b = BytesMut::new();
    let tag = match m {
        M::Authentication(a) => {
            match a {
                Authentication::Ok => b.put_i32(0),
                Authentication::KerberosV5 => b.put_i32(2),
                Authentication::CleartextPassword => b.put_i32(3),
                Authentication::Md5Password { salt } => {
                    b.put_i32(5);
                    b.extend_from_slice(salt);
                }
                Authentication::Gss => b.put_i32(7),
                Authentication::GssContinue(d) => {
                    b.put_i32(8);
                    b.extend_from_slice(d);
                }
                Authentication::Sspi => b.put_i32(9),
                Authentication::Sasl(mechs) => {
                    b.put_i32(10);
                    for m in mechs {
                        put_cstr(&mut b, m);
                    }
                    b.put_u8(0);
                }
                Authentication::SaslContinue(d) => {
                    b.put_i32(11);
                    b.extend_from_slice(d);
                }
                Authentication::SaslFinal(d) => {
                    b.put_i32(12);
                    b.extend_from_slice(d);
                }
            }
            b'R'
        }
        M::ParameterStatus { name, value } => {
            put_cstr(&mut b, name);
            put_cstr(&mut b, value);
            b'S'
        }
        M::BackendKeyData { process_id, secret_key } => {
            b.put_i32(*process_id);
            b.extend_from_slice(secret_key);
            b'K'
        }
        M::ReadyForQuery { status } => {
            b.put_u8(*status);
            b'Z'
        }
        M::RowDescription(cols) => {
            put_count16(&mut b, cols.len());
            for c in cols {
                put_cstr(&mut b, &c.name);
                b.put_i32(c.table_oid);
                b.put_i16(c.column);
                b.put_i32(c.type_oid);
                b.put_i16(c.type_size);
                b.put_i32(c.type_modifier);
                b.put_i16(c.format);
            }
            b'T'
        }
        M::DataRow(values) => {
            put_count16(&mut b, values.len());
            for v in values {
                put_nullable(&mut b, v.as_ref());
            }
            b'D'
        }
        M::CommandComplete { tag } => {
            put_cstr(&mut b, tag);
            b'C'
        }
        M::EmptyQueryResponse => b'I',
        M::ErrorResponse(f) => {
            put_fields(&mut b, f);
            b'E'
        }
        M::NoticeResponse(f) => {
            put_fields(&mut b, f);
            b'N'
        }
        M::ParseComplete => b'1',
        M::BindComplete => b'2',
        M::CloseComplete => b'3',
        M::NoData => b'n',
        M::PortalSuspended => b's',
        M::ParameterDescription(types) => {
            put_count16(&mut b, types.len());
            for t in types {
                b.put_i32(*t);
            }
            b't'
        }
        M::CopyInResponse { format, column_formats } => {
            put_copy(&mut b, *format, column_formats);
            b'G'
        }
        M::CopyOutResponse { format, column_formats } => {
            put_copy(&mut b, *format, column_formats);
            b'H'
        }
        M::CopyBothResponse { format, column_formats } => {
            put_copy(&mut b, *format, column_formats);
            b'W'
        }
        M::CopyData(d) => {
            b.extend_from_slice(d);
            b'd'
        }
        M::CopyDone => b'c',
        M::NotificationResponse { process_id, channel, payload } => {
            b.put_i32(*process_id);
            put_cstr(&mut b, channel);
            put_cstr(&mut b, payload);
            b'A'
        }
        M::NegotiateProtocolVersion { newest_minor, unrecognized } => {
            b.put_i32(*newest_minor);
            b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
            for u in unrecognized {
                put_cstr(&mut b, u);
            }
            b'v'
        }
        M::FunctionCallResponse(v) => {
            put_nullable(&mut b, v.as_ref());
            b'V'
        }
    };
    let mut out = BytesMut::new();
    put_typed(&mut out, tag, &b);
    out.freeze()
}

/// The one-byte answer to an SSLRequest (`S`: go ahead with TLS, `N`: no) or a GSSENCRequest
/// (`G`/`N`): `Some(true)` to proceed, `Some(false)` declined, `None` when no byte is buffered.
pub fn take_encryption_answer(buf: &mut BytesMut) -> Result<Option<bool>, DecodeError> {
    let Some(&b) = buf.first() else { return Ok(None) };
    let answer = match b {
        b'S' | b'G' => true,
        b'N' => false,
        // An old server may answer with an ErrorResponse instead.
        _ => return Err(DecodeError::Malformed { what: "encryption answer", reason: "not 'S', 'G' or 'N'" }),
    };
    buf.advance(1);
    Ok(Some(answer))
}

typed_decoder!(
    /// Incremental decoder of server messages.
    BackendDecoder,
    BackendMessage,
    "backend message"
);

/// Fuzz entry point: arbitrary bytes as a server stream; every message decoded re-encodes to
/// the exact bytes it came from.
pub fn fuzz_stream(data: &[u8]) {
    let mut dec = BackendDecoder::new(64 * 1024);
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

    fn samples() -> Vec<BackendMessage> {
        use BackendMessage as M;
        vec![
            M::Authentication(Authentication::Sasl(vec![b("SCRAM-SHA-256"), b("SCRAM-SHA-256-PLUS")])),
            M::Authentication(Authentication::SaslContinue(b("r=abc,s=c2FsdA==,i=4096"))),
            M::Authentication(Authentication::SaslFinal(b("v=c2ln"))),
            M::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
            M::Authentication(Authentication::CleartextPassword),
            M::Authentication(Authentication::Ok),
            M::ParameterStatus { name: b("server_version"), value: b("15.18") },
            M::BackendKeyData { process_id: 4242, secret_key: Bytes::from_static(&[9, 8, 7, 6]) },
            M::ReadyForQuery { status: b'I' },
            M::RowDescription(vec![FieldDescription {
                name: b("ssn"),
                table_oid: 16384,
                column: 2,
                type_oid: 25,
                type_size: -1,
                type_modifier: -1,
                format: 0,
            }]),
            M::DataRow(vec![Some(b("123-45-6789")), None]),
            M::CommandComplete { tag: b("SELECT 1") },
            M::EmptyQueryResponse,
            M::ErrorResponse(vec![(b'S', b("ERROR")), (b'C', b("42501")), (b'M', b("permission denied"))]),
            M::NoticeResponse(vec![(b'S', b("NOTICE")), (b'M', b("hello"))]),
            M::ParseComplete,
            M::BindComplete,
            M::CloseComplete,
            M::NoData,
            M::PortalSuspended,
            M::ParameterDescription(vec![23, 25]),
            M::CopyInResponse { format: 0, column_formats: vec![0, 0] },
            M::CopyOutResponse { format: 0, column_formats: vec![0] },
            M::CopyBothResponse { format: 1, column_formats: vec![] },
            M::CopyData(b("1\tJane\n")),
            M::CopyDone,
            M::NotificationResponse { process_id: 1, channel: b("ch"), payload: b("x") },
            M::NegotiateProtocolVersion { newest_minor: 0, unrecognized: vec![b("_pq_.foo")] },
            M::FunctionCallResponse(None),
        ]
    }

    #[test]
    fn every_message_round_trips_with_every_prefix() {
        for m in samples() {
            let bytes = encode(&m);
            every_prefix(&bytes, &m, |buf| BackendDecoder::default().decode(buf));
        }
    }

    #[test]
    fn error_fields_and_encryption_answers() {
        let e = &samples()[13];
        assert_eq!(e.field(b'C').map(|v| &v[..]), Some(&b"42501"[..]));
        let mut buf = BytesMut::from(&b"S"[..]);
        assert_eq!(take_encryption_answer(&mut buf), Ok(Some(true)));
        assert!(buf.is_empty());
        assert_eq!(take_encryption_answer(&mut BytesMut::from(&b"N"[..])), Ok(Some(false)));
        assert_eq!(take_encryption_answer(&mut BytesMut::new()), Ok(None));
        assert!(take_encryption_answer(&mut BytesMut::from(&b"E"[..])).is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            &b"Z\x00\x00\x00\x05X"[..],
            b"R\x00\x00\x00\x08\x00\x00\x00\x63",
            b"K\x00\x00\x00\x09\x00\x00\x00\x01\x02",
            b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09",
            b"E\x00\x00\x00\x06SA",
            b"T\x00\x00\x00\x06\xff\xff",
        ] {
            assert!(BackendDecoder::default().decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("postgres_backend", 2, fuzz_stream);
    }

    proptest! {
        #[test]
        fn rows_round_trip(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..20)) {
            let m = BackendMessage::DataRow(values.into_iter().map(|v| v.map(Bytes::from)).collect());
            let mut buf = BytesMut::from(&encode(&m)[..]);
            prop_assert_eq!(BackendDecoder::default().decode(&mut buf).unwrap(), Some(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_stream(&data);
        }
    }
}
