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

/// Starts a session with the gateway and sends `key` as the password it asks for; returns the
/// connection and what is buffered from it.
async fn gateway_login(addr: std::net::SocketAddr, key: &str) -> (tokio::net::TcpStream, BytesMut) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = StartupPacket::Startup {
        major: 3,
        minor: 0,
        params: vec![(Bytes::from_static(b"user"), Bytes::from_static(b"x"))],
    };
    s.write_all(&startup::encode(&hello)).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(next(&mut s, &mut buf).await, BackendMessage::Authentication(Authentication::CleartextPassword));
    s.write_all(&frontend::encode(&FrontendMessage::Password(Bytes::from(format!("{key}\0"))))).await.unwrap();
    (s, buf)
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

/// An upstream that starts SCRAM and then answers AuthenticationOk without its SASLFinal never
/// proved it knows the password (an impostor in the path would do just that): the gateway does
/// not log in to it. A scripted server, since a real PostgreSQL cannot be made to skip its proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_skips_its_scram_proof_is_refused() {
    use airlock_decoders::postgres::backend;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await; // startup
        let mechs = vec![Bytes::from_static(b"SCRAM-SHA-256")];
        s.write_all(&backend::encode(&BackendMessage::Authentication(Authentication::Sasl(mechs)))).await.unwrap();
        let n = s.read(&mut buf).await.unwrap(); // SASLInitialResponse: "…n,,n=,r=<client nonce>"
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let nonce = text.split("r=").nth(1).unwrap_or("").trim_end_matches('\0').to_owned();
        let first = format!("r={nonce}srv,s=c2FsdHNhbHQ=,i=4096");
        let cont = BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from(first)));
        s.write_all(&backend::encode(&cont)).await.unwrap();
        let _ = s.read(&mut buf).await; // client-final
        s.write_all(&backend::encode(&BackendMessage::Authentication(Authentication::Ok))).await.unwrap();
        s.write_all(&backend::encode(&BackendMessage::ReadyForQuery { status: b'I' })).await.unwrap();
        let _ = s.read(&mut buf).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.pw");
    std::fs::write(&pw, "s3cret-upstream").unwrap();
    let key = "ak_scram_probe_1";
    let config = format!(
        "[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"{upstream}\"\n\
         upstream_password = {{ file = \"{}\" }}\nplaintext_password_on_loopback = true\n\n\
         [[identity.api_key]]\nname = \"a\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
        pw.display(),
        airlock::identity::apikey::format_hash(key)
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let (mut s, mut buf) = gateway_login(gw.addr("pg"), key).await;
    let answer = next(&mut s, &mut buf).await;
    assert!(matches!(answer, BackendMessage::ErrorResponse(_)), "the caller is not let in: {answer:?}");
    drop(s);
    gw.stop().await;
    let list = sessions(gw.data_dir());
    let reason = list[0]["close_reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("without proving"), "{list:?}");
}

/// An upstream (or whoever answers at its address) that asks for the password in clear text over
/// a connection without TLS does not get it, unless the route allows that outright. A scripted
/// server, since it is the impostor's side of the exchange that matters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_password_request_without_tls_is_refused() {
    use airlock_decoders::postgres::backend;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let got = got_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await; // startup
                let ask = BackendMessage::Authentication(Authentication::CleartextPassword);
                s.write_all(&backend::encode(&ask)).await.unwrap();
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = got.send(buf[..n].to_vec());
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.pw");
    std::fs::write(&pw, "s3cret-upstream").unwrap();
    let key = "ak_cleartext_probe_1";
    let config = |extra: &str| {
        format!(
            "[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"{upstream}\"\n\
             upstream_password = {{ file = \"{}\" }}\nplaintext_password_on_loopback = true\n{extra}\n\n\
             [[identity.api_key]]\nname = \"a\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
            pw.display(),
            airlock::identity::apikey::format_hash(key)
        )
    };
    for allowed in [false, true] {
        let mut gw =
            TestGateway::start(&config(if allowed { "upstream_cleartext_password = true" } else { "" })).await.unwrap();
        // The caller logs in to the gateway with its key as the password.
        let (mut s, mut buf) = gateway_login(gw.addr("pg"), key).await;
        let sent = tokio::time::timeout(WAIT, got_rx.recv()).await.unwrap().unwrap();
        // (The scripted upstream says nothing after the password: only a refusal has an answer.)
        let answer = if allowed { None } else { Some(next(&mut s, &mut buf).await) };
        let carried = String::from_utf8_lossy(&sent).contains("s3cret-upstream");
        gw.stop().await;
        if allowed {
            assert!(carried, "the route allows it: the password goes");
        } else {
            assert!(!carried, "the password went in clear text");
            assert!(matches!(answer, Some(BackendMessage::ErrorResponse(_))), "{answer:?}");
            let list = sessions(gw.data_dir());
            let reason = list[0]["close_reason"].as_str().unwrap_or_default().to_owned();
            assert!(reason.contains("clear text"), "{list:?}");
        }
    }
}
