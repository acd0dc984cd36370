//! The raw TCP driver end to end on loopback: exact bytes per direction (plain and TLS on both
//! sides), half-close, connection cap, unreachable upstream, idle timeout, admin endpoints.

use std::time::Duration;

use airlock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn session_ids(data: &std::path::Path) -> Vec<String> {
    sessions(data).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// Sends `chunks` one by one, reading each echo back; returns what was received.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut received = Vec::new();
    for c in chunks {
        s.write_all(c).await.unwrap();
        let mut got = vec![0u8; c.len()];
        timeout(WAIT, s.read_exact(&mut got)).await.unwrap().unwrap();
        received.extend_from_slice(&got);
    }
    received
}

fn test_chunks() -> Vec<Vec<u8>> {
    // Binary, text, and a chunk bigger than one read.
    vec![
        b"hello airlock\r\n".to_vec(),
        (0u8..=255).collect(),
        (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect(),
        b"bye\n".to_vec(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_exactly_the_bytes_that_crossed() {
    // Batched mode journals the second FIN with the close record: the replay is the same.
    for durability in ["strict", "batched"] {
        replay_is_exact(&format!("durability = \"{durability}\"\n")).await;
    }
}

async fn replay_is_exact(journal: &str) {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start_with_journal(journal, &route("echo", upstream, "")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("echo")).await.unwrap();
    let chunks = test_chunks();
    let received = exchange(&mut client, &chunks).await;
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, client.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "echo closes after our half-close");
    drop(client);
    gw.stop().await;

    let sent: Vec<u8> = chunks.concat();
    let ids = session_ids(gw.data_dir());
    assert_eq!(ids.len(), 1);
    let frames = replay_json(gw.data_dir(), &ids[0]);
    assert_eq!(direction_bytes(&frames, "client_to_upstream"), sent);
    assert_eq!(direction_bytes(&frames, "upstream_to_client"), received);
    assert_eq!(received, sent);
    // Order: open, admission decision, upstream connected, data..., close; both half-closes
    // recorded.
    assert_eq!(frames.first().unwrap()["kind"], "session_open");
    assert_eq!(frames.first().unwrap()["meta"]["principal"], "anonymous");
    assert_eq!(frames[1]["kind"], "decision");
    assert_eq!(frames[1]["meta"]["effect"], "allow");
    assert_eq!(frames[2]["kind"], "upstream_connected");
    let close = frames.last().unwrap();
    assert_eq!(close["kind"], "session_close");
    assert_eq!(close["meta"]["reason"], "both sides closed");
    assert_eq!(close["meta"]["bytes_from_client"], sent.len());
    let fins: Vec<_> = frames.iter().filter(|f| f["fin"] == true).map(|f| f["direction"].as_str().unwrap()).collect();
    assert_eq!(fins, ["client_to_upstream", "upstream_to_client"]);
    // Timestamps never go backwards.
    let times: Vec<i64> = frames.iter().map(|f| f["time_us"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let out = airlock(&["journal", "verify", "--data-dir", &gw.data_dir().display().to_string()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_with_the_plaintext_journaled() {
    let pki = TestPki::new();
    let upstream = tls_echo_server(&pki).await;
    let extra = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\nupstream_tls = {{ ca = \"{}\", server_name = \"localhost\" }}",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_pem.display()
    );
    let mut gw = TestGateway::start(&route("tls", upstream, &extra)).await.unwrap();
    let tcp = TcpStream::connect(gw.addr("tls")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = pki.connector().connect(name, tcp).await.unwrap();
    let chunks = test_chunks();
    let received = exchange(&mut client, &chunks).await;
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(WAIT, client.read_to_end(&mut rest)).await.unwrap();
    drop(client);
    gw.stop().await;

    let ids = session_ids(gw.data_dir());
    let frames = replay_json(gw.data_dir(), &ids[0]);
    assert_eq!(direction_bytes(&frames, "client_to_upstream"), chunks.concat());
    assert_eq!(direction_bytes(&frames, "upstream_to_client"), received);
    let open = &frames[0]["meta"];
    assert_eq!(open["tls"]["server_name"], "localhost");
    assert!(open["tls"]["version"].as_str().unwrap().starts_with("TLSv1_"), "{open}");
    assert_eq!(frames[2]["meta"]["tls"]["server_name"], "localhost");

    // The journal holds ciphertext: the plaintext is nowhere in the database files.
    let needle = b"hello airlock";
    for entry in walk(gw.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext found in {}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_closes_the_session_with_the_reason() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let upstream = tls_echo_server(&pki).await;
    let extra = format!("upstream_tls = {{ ca = \"{}\", server_name = \"localhost\" }}", other.ca_pem.display());
    let mut gw = TestGateway::start(&route("bad", upstream, &extra)).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("bad")).await.unwrap();
    let mut buf = Vec::new();
    let n = timeout(WAIT, client.read_to_end(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "nothing reaches the caller");
    gw.stop().await;
    let s = &sessions(gw.data_dir())[0];
    let reason = s["close_reason"].as_str().unwrap();
    assert!(reason.contains("upstream TLS handshake") && reason.contains("certificate"), "{reason}");
}

/// A session still waiting for its upstream's TLS handshake when a shutdown's drain deadline
/// passes is closed, and its close is journaled before the final checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_a_session_still_connecting_upstream() {
    let pki = TestPki::new();
    // Accepts, and never says a word of TLS.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let extra = format!(
        "connect_timeout = \"60s\"\nupstream_tls = {{ ca = \"{}\", server_name = \"localhost\" }}",
        pki.ca_pem.display()
    );
    let config = format!("[gateway]\ndrain_timeout = \"300ms\"\n\n{}", route("slow", upstream, &extra));
    let mut gw = TestGateway::start(&config).await.unwrap();
    let _client = TcpStream::connect(gw.addr("slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    gw.stop().await;
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let s = &sessions(gw.data_dir())[0];
    assert_eq!(s["close_reason"], "gateway shutdown: drain deadline passed", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_and_the_reply_still_arrives() {
    // Upstream reads to EOF, then answers with the byte count: it only answers after our FIN.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("got {}", all.len()).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let mut gw = TestGateway::start(&route("half", upstream, "")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("half")).await.unwrap();
    client.write_all(&[7u8; 1000]).await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = String::new();
    timeout(WAIT, client.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply, "got 1000");
    gw.stop().await;
    assert_eq!(sessions(gw.data_dir())[0]["close_reason"], "both sides closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_journaled() {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&route("cap", upstream, "max_connections = 1")).await.unwrap();
    let mut first = TcpStream::connect(gw.addr("cap")).await.unwrap();
    assert_eq!(exchange(&mut first, &[b"one".to_vec()]).await, b"one");
    let mut second = TcpStream::connect(gw.addr("cap")).await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, second.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the excess connection is closed");
    // The first is unaffected.
    assert_eq!(exchange(&mut first, &[b"two".to_vec()]).await, b"two");
    drop(first);
    gw.stop().await;
    let reasons: Vec<String> =
        sessions(gw.data_dir()).iter().map(|s| s["close_reason"].as_str().unwrap_or("").to_string()).collect();
    assert!(reasons.iter().any(|r| r == "route connection limit of 1 reached"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_closes_the_caller_with_the_reason_journaled() {
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut gw = TestGateway::start(&route("dead", dead, "connect_timeout = \"2s\"")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("dead")).await.unwrap();
    let mut buf = Vec::new();
    let n = timeout(WAIT, client.read_to_end(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    gw.stop().await;
    let s = &sessions(gw.data_dir())[0];
    let reason = s["close_reason"].as_str().unwrap();
    assert!(reason.starts_with("upstream connect to 127.0.0.1:") && reason.contains("refused"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&route("idle", upstream, "idle_timeout = \"300ms\"")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("idle")).await.unwrap();
    assert_eq!(exchange(&mut client, &[b"ping".to_vec()]).await, b"ping");
    let mut buf = [0u8; 8];
    let n =
        timeout(Duration::from_secs(10), client.read(&mut buf)).await.expect("closed by the idle timeout").unwrap_or(0);
    assert_eq!(n, 0);
    gw.stop().await;
    assert_eq!(sessions(gw.data_dir())[0]["close_reason"], "idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_health_readiness_and_metrics() {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&route("m", upstream, "")).await.unwrap();
    let admin = gw.gw().admin_addr().unwrap();
    let mut client = TcpStream::connect(gw.addr("m")).await.unwrap();
    exchange(&mut client, &[b"12345".to_vec()]).await;
    drop(client);
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(admin).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        timeout(WAIT, s.read_to_string(&mut out)).await.unwrap().unwrap();
        out
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics").await;
    assert!(metrics.contains("airlock_connections_total{route=\"m\"} 1"), "{metrics}");
    assert!(metrics.contains("airlock_bytes_total{route=\"m\",direction=\"client_to_upstream\"} 5"), "{metrics}");
    assert!(metrics.contains("airlock_journal_commit_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("airlock_journal_records_total"), "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_stops_writing_closes_the_session_and_nothing_more_is_forwarded() {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&route("fc", upstream, "")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("fc")).await.unwrap();
    assert_eq!(exchange(&mut client, &[b"recorded".to_vec()]).await, b"recorded");
    // The writer stops (as after a disk failure): every later record is refused.
    gw.gw().journal().shutdown().await.unwrap();
    assert!(gw.gw().journal().checkpoint().await.is_err(), "the writer has stopped");
    let _ = client.write_all(b"unrecorded").await;
    let mut buf = Vec::new();
    let n = timeout(WAIT, client.read_to_end(&mut buf)).await.expect("session closed").unwrap_or(0);
    assert_eq!(n, 0, "nothing unrecorded came back: {:?}", String::from_utf8_lossy(&buf));
    // Shutdown reports that the journal was already closed rather than pretending to checkpoint.
    assert!(gw.gateway.take().unwrap().shutdown().await.is_err());
    let list = sessions(gw.data_dir());
    assert_eq!(list[0]["bytes_from_client"], 0, "no close record could be written: {list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_commands_work_while_the_gateway_runs() {
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&route("live", upstream, "")).await.unwrap();
    let mut client = TcpStream::connect(gw.addr("live")).await.unwrap();
    exchange(&mut client, &[b"live traffic".to_vec()]).await;
    let data = gw.data_dir().to_path_buf();
    let list = tokio::task::spawn_blocking(move || sessions(&data)).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].get("closed_us").is_none(), "still open");
    let data = gw.data_dir().to_path_buf();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let frames = tokio::task::spawn_blocking(move || replay_json(&data, &id)).await.unwrap();
    assert_eq!(direction_bytes(&frames, "client_to_upstream"), b"live traffic");
    let dir = gw.data_dir().display().to_string();
    let out = tokio::task::spawn_blocking(move || airlock(&["journal", "verify", "--data-dir", &dir])).await.unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    drop(client);
    gw.stop().await;
}
