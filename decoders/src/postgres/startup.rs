//! The startup phase (§53.2.1, §53.7): the untyped packets a client sends before its first typed
//! message, and the one-byte answers to SSLRequest and GSSENCRequest.

use bytes::{BufMut, Bytes, BytesMut};

use super::{MAX_STARTUP_PACKET, Reader, put_cstr};
use crate::{DecodeError, take_frame};

/// Protocol 3.0's version code.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest's code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest's code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest's code.
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// A startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage: protocol version and parameters (`user`, `database`, `application_name`…).
    Startup {
        /// Major version (3).
        major: u16,
        /// Minor version (0 for 3.0; 3.2 clients may ask for 2).
        minor: u16,
        /// Name/value pairs in order.
        params: Vec<(Bytes, Bytes)>,
    },
    /// SSLRequest: the client wants TLS.
    SslRequest,
    /// GSSENCRequest: the client wants GSSAPI encryption (a gateway declines it with `N`).
    GssEncRequest,
    /// CancelRequest: cancel the query running on another connection.
    Cancel {
        /// The backend's process id, as BackendKeyData gave it.
        process_id: i32,
        /// The secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
        secret_key: Bytes,
    },
}

impl StartupPacket {
    /// A parameter of a StartupMessage.
    pub fn param(&self, name: &[u8]) -> Option<&Bytes> {
        match self {
            Self::Startup { params, .. } => params.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Takes one startup-phase packet off `buf` once it is whole.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, DecodeError> {
    const WHAT: &str = "startup packet";
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(DecodeError::Malformed { what: WHAT, reason: "length below 8" });
    }
    let Some(frame) = take_frame(buf, len as usize, MAX_STARTUP_PACKET, WHAT)? else { return Ok(None) };
    let mut r = Reader::new(frame.slice(4..), WHAT);
    let code = r.i32()?;
    let packet = match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSSENC_REQUEST => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => {
            let process_id = r.i32()?;
            let secret_key = r.rest();
            if !(4..=256).contains(&secret_key.len()) {
                return Err(DecodeError::Malformed { what: WHAT, reason: "cancel key must be 4 to 256 bytes" });
            }
            return Ok(Some(StartupPacket::Cancel { process_id, secret_key }));
        }
        code if code >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((name, value));
            }
            StartupPacket::Startup { major: 3, minor: (code & 0xffff) as u16, params }
        }
        _ => return Err(DecodeError::Malformed { what: WHAT, reason: "unsupported protocol version or request code" }),
    };
    r.end()?;
    Ok(Some(packet))
}

/// Encodes a startup-phase packet.
pub fn encode(p: &StartupPacket) -> Bytes {
    let mut body = BytesMut::new();
    match p {
        StartupPacket::Startup { major, minor, params } => {
            body.put_i32((i32::from(*major) << 16) | i32::from(*minor));
            for (k, v) in params {
                put_cstr(&mut body, k);
                put_cstr(&mut body, v);
            }
            body.put_u8(0);
        }
        StartupPacket::SslRequest => body.put_i32(SSL_REQUEST),
        StartupPacket::GssEncRequest => body.put_i32(GSSENC_REQUEST),
        StartupPacket::Cancel { process_id, secret_key } => {
            body.put_i32(CANCEL_REQUEST);
            body.put_i32(*process_id);
            body.extend_from_slice(secret_key);
        }
    }
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.extend_from_slice(&body);
    out.freeze()
}

/// Fuzz entry point: arbitrary bytes as the start of a client connection, decoded packet by
/// packet; each packet must encode back to exactly the bytes it was read from.
pub fn fuzz_stream(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut at = 0;
    loop {
        let before = buf.len();
        let Ok(Some(packet)) = decode(&mut buf) else { break };
        let used = before - buf.len();
        assert_eq!(&encode(&packet)[..], &data[at..at + used], "packet did not round-trip: {packet:?}");
        at += used;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testutil::every_prefix;
    use super::*;

    #[test]
    fn fuzz_seed_corpus_never_panics() {
        crate::testutil::seed_corpus("postgres_startup", 3, fuzz_stream);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            fuzz_stream(&data);
        }

        #[test]
        fn a_startup_with_arbitrary_parameters_round_trips(
            params in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,20}"), 0..8),
        ) {
            let packet = StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: params.iter().map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone()))).collect(),
            };
            let bytes = encode(&packet);
            fuzz_stream(&bytes);
            prop_assert_eq!(decode(&mut BytesMut::from(&bytes[..])).unwrap(), Some(packet));
        }
    }

    /// The shape of what psql 15 sends first on a plain connection.
    const PSQL_STARTUP: &[u8] = b"\x00\x00\x00\x54\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\
application_name\x00psql\x00client_encoding\x00UTF8\x00\x00";

    #[test]
    fn psqls_startup_message() {
        let expected = StartupPacket::Startup {
            major: 3,
            minor: 0,
            params: vec![
                (Bytes::from_static(b"user"), Bytes::from_static(b"postgres")),
                (Bytes::from_static(b"database"), Bytes::from_static(b"postgres")),
                (Bytes::from_static(b"application_name"), Bytes::from_static(b"psql")),
                (Bytes::from_static(b"client_encoding"), Bytes::from_static(b"UTF8")),
            ],
        };
        every_prefix(PSQL_STARTUP, &expected, decode);
        assert_eq!(&encode(&expected)[..], PSQL_STARTUP);
        assert_eq!(expected.param(b"user").map(|v| &v[..]), Some(&b"postgres"[..]));
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        let ssl = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";
        every_prefix(ssl, &StartupPacket::SslRequest, decode);
        let gss = b"\x00\x00\x00\x08\x04\xd2\x16\x30";
        every_prefix(gss, &StartupPacket::GssEncRequest, decode);
        let cancel = StartupPacket::Cancel { process_id: 4242, secret_key: Bytes::from_static(b"\x01\x02\x03\x04") };
        every_prefix(&encode(&cancel), &cancel, decode);
    }

    #[test]
    fn bad_packets_are_refused_before_buffering() {
        let mut huge = BytesMut::from(&b"\x7f\xff\xff\xff"[..]);
        assert!(matches!(decode(&mut huge), Err(DecodeError::TooLong { .. })));
        let mut short = BytesMut::from(&b"\x00\x00\x00\x04"[..]);
        assert!(matches!(decode(&mut short), Err(DecodeError::Malformed { .. })));
        let v2 = encode(&StartupPacket::Startup { major: 2, minor: 0, params: vec![] });
        assert!(decode(&mut BytesMut::from(&v2[..])).is_err(), "protocol 2 is not spoken");
        let mut unterminated = BytesMut::from(&b"\x00\x00\x00\x0d\x00\x03\x00\x00user\x00"[..]);
        assert!(decode(&mut unterminated).is_err());
    }
}
