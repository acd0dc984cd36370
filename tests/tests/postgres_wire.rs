//! The PostgreSQL decoders against real traffic: psql (simple query) and pgbench (its `-i` COPY
//! load, then the extended and prepared protocols) talk to a real server through a raw TCP
//! route; every byte the journal recorded, in both directions, must decode into whole messages
//! that re-encode to exactly those bytes.

use std::process::Command;

use airlock_decoders::Decoder as _;
use airlock_decoders::postgres::backend::{self, BackendDecoder, BackendMessage};
use airlock_decoders::postgres::frontend::{self, FrontendDecoder, FrontendMessage};
use airlock_decoders::postgres::startup::{self, StartupPacket};
use airlock_tests::*;
use bytes::BytesMut;

fn pgbench(addr: std::net::SocketAddr, args: &[&str]) {
    let out = Command::new("timeout")
        .args(["120", "pgbench", "-h"])
        .arg(addr.ip().to_string())
        .args(["-p", &addr.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGSSLMODE", "prefer")
        .output()
        .expect("run pgbench");
    assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Decodes one session's client stream; returns the message kinds seen.
fn decode_client(bytes: &[u8]) -> (bool, Vec<String>) {
    let mut buf = BytesMut::from(bytes);
    let mut asked_ssl = false;
    loop {
        let p = startup::decode(&mut buf).unwrap().expect("a whole startup packet");
        assert_eq!(
            startup::encode(&p)[..],
            bytes[bytes.len() - buf.len() - startup::encode(&p).len()..bytes.len() - buf.len()]
        );
        match p {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => asked_ssl = true,
            StartupPacket::Startup { .. } => break,
            StartupPacket::Cancel { .. } => return (asked_ssl, vec!["Cancel".into()]),
        }
    }
    let mut kinds = Vec::new();
    let mut dec = FrontendDecoder::default();
    while let Some(m) = dec.decode(&mut buf).unwrap() {
        let name = format!("{m:?}");
        kinds.push(name.split([' ', '(', '{']).next().unwrap_or("").to_string());
        let at = bytes.len() - buf.len();
        let enc = frontend::encode(&m);
        assert_eq!(&enc[..], &bytes[at - enc.len()..at], "client message did not round-trip: {m:?}");
        if matches!(m, FrontendMessage::Terminate) {
            break;
        }
    }
    assert!(buf.is_empty(), "{} client bytes left undecoded", buf.len());
    (asked_ssl, kinds)
}

fn decode_server(bytes: &[u8], answered_ssl: bool) -> Vec<String> {
    let mut buf = BytesMut::from(bytes);
    if answered_ssl {
        assert_eq!(backend::take_encryption_answer(&mut buf).unwrap(), Some(false), "the test server has no TLS");
    }
    let mut kinds = Vec::new();
    let mut dec = BackendDecoder::default();
    while let Some(m) = dec.decode(&mut buf).unwrap() {
        let at = bytes.len() - buf.len();
        let enc = backend::encode(&m);
        assert_eq!(&enc[..], &bytes[at - enc.len()..at], "server message did not round-trip: {m:?}");
        if let BackendMessage::ErrorResponse(_) = &m {
            panic!("unexpected server error: {m:?}");
        }
        let name = format!("{m:?}");
        kinds.push(name.split([' ', '(', '{']).next().unwrap_or("").to_string());
    }
    assert!(buf.is_empty(), "{} server bytes left undecoded", buf.len());
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_psql_and_pgbench_traffic_decodes_byte_for_byte() {
    let pg = Postgres::start().unwrap();
    let mut gw = TestGateway::start(&route("pg", pg.addr(), "")).await.unwrap();
    let addr = gw.addr("pg");
    tokio::task::spawn_blocking(move || {
        psql(addr, "select 'hello', 42, null::text").unwrap();
        pgbench(addr, &["-i", "-s", "1", "-q"]);
        pgbench(addr, &["-M", "extended", "-t", "5", "-c", "1"]);
        pgbench(addr, &["-M", "prepared", "-t", "5", "-c", "1"]);
    })
    .await
    .unwrap();
    gw.stop().await;

    let mut client_kinds = std::collections::BTreeSet::new();
    let mut server_kinds = std::collections::BTreeSet::new();
    let list = sessions(gw.data_dir());
    assert!(list.len() >= 4, "{list:?}");
    for s in &list {
        let frames = replay_json(gw.data_dir(), s["id"].as_str().unwrap());
        let up = direction_bytes(&frames, "client_to_upstream");
        let down = direction_bytes(&frames, "upstream_to_client");
        let (asked_ssl, kinds) = decode_client(&up);
        client_kinds.extend(kinds);
        server_kinds.extend(decode_server(&down, asked_ssl));
    }
    for k in ["Query", "Parse", "Bind", "Describe", "Execute", "Sync", "CopyData", "CopyDone", "Terminate"] {
        assert!(client_kinds.contains(k), "no {k} from the clients: {client_kinds:?}");
    }
    for k in [
        "Authentication",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
        "RowDescription",
        "DataRow",
        "CommandComplete",
        "ParseComplete",
        "BindComplete",
        "CopyInResponse",
        "NoData",
    ] {
        assert!(server_kinds.contains(k), "no {k} from the server: {server_kinds:?}");
    }
}
