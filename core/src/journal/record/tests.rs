use bytes::Bytes;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

fn sid() -> Uuid {
    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001)
}

fn samples() -> Vec<Record> {
    let open = OpenMeta {
        route: "pg".into(),
        protocol: "tcp".into(),
        client_addr: "127.0.0.1:50000".into(),
        listen_addr: "127.0.0.1:6543".into(),
        upstream: "127.0.0.1:5432".into(),
        principal: "anonymous".into(),
        identity: None,
        policy_version: None,
        connection: None,
        tls: Some(TlsMeta {
            version: "TLSv1_3".into(),
            cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
            server_name: Some("db".into()),
            alpn: None,
        }),
        sealed: true,
        break_glass: false,
    };
    vec![
        Record { session: sid(), time_us: 1_700_000_000_000_001, kind: RecordKind::SessionOpen(open) },
        Record {
            session: sid(),
            time_us: 2,
            kind: RecordKind::Data(DataFrame {
                direction: Direction::ClientToUpstream,
                fin: false,
                break_glass: false,
                head: false,
                payload: Payload::Plain(Bytes::from_static(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")),
            }),
        },
        Record {
            session: sid(),
            time_us: 3,
            kind: RecordKind::Data(DataFrame {
                direction: Direction::UpstreamToClient,
                fin: true,
                break_glass: false,
                head: false,
                payload: Payload::Sealed { nonce: [9; NONCE_LEN], ciphertext: Bytes::from_static(&[1; 20]) },
            }),
        },
        Record {
            session: sid(),
            time_us: 4,
            kind: RecordKind::UpstreamConnected(UpstreamMeta {
                addr: "127.0.0.1:5432".into(),
                tls: None,
                break_glass: false,
            }),
        },
        Record {
            session: sid(),
            time_us: -5,
            kind: RecordKind::SessionClose(CloseMeta {
                masked: Default::default(),
                reason: "both sides closed".into(),
                bytes_from_client: 8,
                bytes_from_upstream: 4,
                duration_us: 99,
                break_glass: false,
            }),
        },
        Record {
            session: sid(),
            time_us: 6,
            kind: RecordKind::Decision(DecisionMeta {
                phase: "session".into(),
                effect: "deny".into(),
                rule: "route:pg:allow_roles".into(),
                reason: "route `pg` requires one of the roles `clinician`".into(),
                principal: "mtls:svc.internal".into(),
                request: "tcp session".into(),
                policy_version: Some("0123456789ab".into()),
                break_glass: true,
            }),
        },
        Record {
            session: sid(),
            time_us: 7,
            kind: RecordKind::Data(DataFrame {
                direction: Direction::UpstreamToClient,
                fin: false,
                break_glass: true,
                head: true,
                payload: Payload::Plain(Bytes::from_static(b"row")),
            }),
        },
        Record {
            session: sid(),
            time_us: 8,
            kind: RecordKind::SessionOpen(OpenMeta {
                route: "pg".into(),
                protocol: "tcp".into(),
                client_addr: "[::1]:50000".into(),
                listen_addr: "[::1]:6543".into(),
                upstream: "db:5432".into(),
                principal: "oidc:corp/alice".into(),
                identity: Some(Box::new(PrincipalMeta {
                    subject: "alice".into(),
                    issuer: Some("https://idp.example".into()),
                    name: Some("Alice".into()),
                    email: None,
                    roles: vec!["clinician".into(), "emergency".into()],
                    groups: vec!["ehr".into()],
                    method: "oidc".into(),
                    method_detail: Some("corp".into()),
                    expires_at: Some(1_800_000_000),
                })),
                policy_version: Some("0123456789ab".into()),
                tls: None,
                sealed: false,
                connection: Some("0193a000-0000-7000-8000-000000000009".into()),
                break_glass: true,
            }),
        },
    ]
}

#[test]
fn every_kind_round_trips_through_the_envelope() {
    for record in samples() {
        let body = encode_body(&record).unwrap();
        let value = Bytes::from(encode_envelope(&[7; HASH_LEN], &body));
        let env = decode_envelope(&value).unwrap();
        assert_eq!(env.hash, [7; HASH_LEN]);
        assert_eq!(env.body, body);
        assert_eq!(decode_body(&env.body).unwrap(), record);
    }
}

#[test]
fn every_strict_prefix_is_rejected_without_panic() {
    for record in samples() {
        let value = Bytes::from(encode_envelope(&[1; HASH_LEN], &encode_body(&record).unwrap()));
        for i in 0..value.len() {
            let prefix = value.slice(..i);
            let decoded = decode_envelope(&prefix).and_then(|e| decode_body(&e.body));
            assert!(decoded.is_err(), "prefix of {i} bytes decoded");
        }
    }
}

#[test]
fn lengths_are_bounded_before_use() {
    let mut body = BytesMut::new();
    body.put_u8(BODY_VERSION);
    body.put_u8(2);
    body.put_slice(sid().as_bytes());
    body.put_i64(0);
    body.put_u8(0);
    body.put_u8(0);
    body.put_u32(u32::MAX);
    assert!(matches!(decode_body(&body.freeze()), Err(RecordError::TooLong { field: "payload", .. })));
    let too_big = Record {
        session: sid(),
        time_us: 0,
        kind: RecordKind::Data(DataFrame {
            direction: Direction::ClientToUpstream,
            fin: false,
            break_glass: false,
            head: false,
            payload: Payload::Plain(Bytes::from(vec![0; MAX_PAYLOAD_LEN + 1])),
        }),
    };
    assert!(encode_body(&too_big).is_err());
}

#[test]
fn unknown_versions_kinds_and_flags_are_named() {
    let body = encode_body(&samples()[1]).unwrap();
    let mut v = body.to_vec();
    v[0] = 9;
    assert_eq!(decode_body(&Bytes::from(v)), Err(RecordError::UnknownVersion { what: "body", version: 9 }));
    let mut v = body.to_vec();
    v[1] = 77;
    assert_eq!(decode_body(&Bytes::from(v)), Err(RecordError::UnknownKind(77)));
    let mut v = body.to_vec();
    v[BODY_HEADER_LEN + 1] = 0x10;
    assert!(matches!(decode_body(&Bytes::from(v)), Err(RecordError::InvalidField { field: "flags", .. })));
    let mut v = body.to_vec();
    v.push(0);
    assert_eq!(decode_body(&Bytes::from(v)), Err(RecordError::Trailing(1)));
}

#[test]
fn fuzz_seed_corpus_decodes_without_panic() {
    let dir = crate::fuzz_corpus("journal_record");
    let entries = std::fs::read_dir(&dir).unwrap();
    let mut n = 0;
    for e in entries {
        fuzz_decode(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 5, "seed corpus missing from {}", dir.display());
}

/// The committed seed corpus holds the current encoding of every sample record. Set
/// `AIRLOCK_WRITE_CORPUS=1` to rewrite it after a deliberate format change.
#[test]
fn seed_corpus_is_current() {
    let dir = crate::fuzz_corpus("journal_record");
    for (i, r) in samples().iter().enumerate() {
        let value = encode_envelope(&[i as u8; HASH_LEN], &encode_body(r).unwrap());
        let path = dir.join(format!("seed-{i}"));
        if std::env::var_os("AIRLOCK_WRITE_CORPUS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &value).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), value, "{} is stale", path.display());
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_decode(&data);
        let mut v = vec![ENVELOPE_VERSION];
        v.extend_from_slice(&[0; HASH_LEN]);
        v.extend_from_slice(&data);
        fuzz_decode(&v);
    }

    #[test]
    fn data_records_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..4096), fin: bool, up: bool, t: i64, id: u128) {
        let direction = if up { Direction::ClientToUpstream } else { Direction::UpstreamToClient };
        let r = Record { session: Uuid::from_u128(id), time_us: t, kind: RecordKind::Data(DataFrame { direction, fin, break_glass: fin, head: up, payload: Payload::Plain(Bytes::from(payload)) }) };
        let body = encode_body(&r).unwrap();
        prop_assert_eq!(decode_body(&body).unwrap(), r);
    }
}

#[test]
fn a_body_encoded_in_its_envelope_is_the_envelope_of_the_body() {
    for (i, r) in samples().iter().enumerate() {
        let hash = [i as u8 + 1; HASH_LEN];
        let mut enveloped = encode_body_in_envelope(r).unwrap();
        assert_eq!(enveloped.body(), &encode_body(r).unwrap()[..]);
        assert_eq!(enveloped.with_header(&hash), &encode_envelope(&hash, &encode_body(r).unwrap())[..]);
    }
}
