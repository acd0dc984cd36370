//! The gateway's SCRAM-SHA-256 client against a real PostgreSQL server that demands it: the
//! right password is accepted (and the server's signature checked), a wrong one is refused with
//! SQLSTATE 28P01. This is how the PostgreSQL driver will hold the upstream credential.

use airlock::proto::postgres::scram::ScramClient;
use airlock_decoders::Decoder as _;
use airlock_decoders::postgres::backend::{Authentication, BackendDecoder, BackendMessage};
use airlock_decoders::postgres::frontend::{self, FrontendMessage, SaslInitial};
use airlock_decoders::postgres::startup::{self, StartupPacket};
use airlock_tests::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn next(s: &mut tokio::net::TcpStream, buf: &mut BytesMut) -> BackendMessage {
    let mut dec = BackendDecoder::default();
    loop {
        if let Some(m) = dec.decode(buf).unwrap() {
            return m;
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(buf)).await.unwrap().unwrap();
        assert!(n > 0, "server closed");
    }
}

/// Logs in as `postgres` with `password`; returns the server's final answer after the exchange.
async fn login(addr: std::net::SocketAddr, password: &str) -> BackendMessage {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = StartupPacket::Startup {
        major: 3,
        minor: 0,
        params: vec![
            (Bytes::from_static(b"user"), Bytes::from_static(b"postgres")),
            (Bytes::from_static(b"database"), Bytes::from_static(b"postgres")),
        ],
    };
    s.write_all(&startup::encode(&hello)).await.unwrap();
    let mut buf = BytesMut::new();
    let BackendMessage::Authentication(Authentication::Sasl(mechs)) = next(&mut s, &mut buf).await else {
        panic!("the server did not ask for SASL")
    };
    assert!(mechs.iter().any(|m| &m[..] == b"SCRAM-SHA-256"));
    let (mut scram, first) = ScramClient::new("", password.as_bytes());
    let initial = SaslInitial { mechanism: Bytes::from_static(b"SCRAM-SHA-256"), data: Some(Bytes::from(first)) };
    s.write_all(&frontend::encode(&FrontendMessage::Password(FrontendMessage::sasl_initial_body(&initial))))
        .await
        .unwrap();
    let BackendMessage::Authentication(Authentication::SaslContinue(server_first)) = next(&mut s, &mut buf).await
    else {
        panic!("no server-first message")
    };
    let final_msg = scram.server_first(std::str::from_utf8(&server_first).unwrap()).unwrap();
    s.write_all(&frontend::encode(&FrontendMessage::Password(Bytes::from(final_msg)))).await.unwrap();
    match next(&mut s, &mut buf).await {
        BackendMessage::Authentication(Authentication::SaslFinal(v)) => {
            scram.server_final(std::str::from_utf8(&v).unwrap()).expect("the server's signature verifies");
            next(&mut s, &mut buf).await
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_against_a_real_server() {
    let pg = tokio::task::spawn_blocking(|| Postgres::start_with_password("s3cret-upstream")).await.unwrap().unwrap();
    assert_eq!(login(pg.addr(), "s3cret-upstream").await, BackendMessage::Authentication(Authentication::Ok));
    let refused = login(pg.addr(), "wrong").await;
    assert_eq!(refused.field(b'C').map(|c| &c[..]), Some(&b"28P01"[..]), "{refused:?}");
}
