//! The real `airlock` binary: crash safety under `kill -9`, graceful shutdown on SIGTERM, and the
//! messages users get for bad input.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use airlock_tests::*;

/// A config whose admin listener is on `admin` (the readiness probe: probing the route itself
/// would journal sessions of its own).
fn config(data: &std::path::Path, listen: u16, upstream: std::net::SocketAddr, durability: &str) -> String {
    config_with_admin(data, listen, upstream, durability, 0)
}

fn config_with_admin(
    data: &std::path::Path,
    listen: u16,
    upstream: std::net::SocketAddr,
    durability: &str,
    admin: u16,
) -> String {
    let admin = if admin == 0 { "enabled = false".to_string() } else { format!("listen = \"127.0.0.1:{admin}\"") };
    format!(
        "[journal]\ndata_dir = \"{}\"\ndurability = \"{durability}\"\n\n[admin]\n{admin}\n\n[gateway]\ndrain_timeout = \"2s\"\n\n[[route]]\nname = \"echo\"\nlisten = \"127.0.0.1:{listen}\"\nprotocol = \"tcp\"\nupstream = \"{upstream}\"\n",
        data.display()
    )
}

/// A strict-mode gateway over an echo upstream, to be killed and restarted on its journal.
struct Crashable {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    addr: std::net::SocketAddr,
    probe: std::net::SocketAddr,
    text: String,
}

impl Crashable {
    /// `journal`: more `[journal]` settings.
    async fn start(journal: &str) -> (Self, GatewayProcess) {
        let upstream = echo_server().await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        let admin = free_port();
        let text = config_with_admin(&data, port, upstream, "strict", admin)
            .replace("durability = \"strict\"\n", &format!("durability = \"strict\"\n{journal}"));
        let c = Self {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            probe: std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
            dir,
            data,
            text,
        };
        let gw = GatewayProcess::start(c.dir.path(), &c.text, c.probe).unwrap();
        (c, gw)
    }

    /// After the kill: the journal verifies as the crash left it, holds one session without a
    /// close record, and every byte the client received is in it.
    fn check_crashed(&self, received: &[u8]) {
        let out = airlock(&["journal", "verify", "--data-dir", &self.data.display().to_string()]);
        assert!(out.status.success(), "after kill -9: {}{}", stdout(&out), stderr(&out));
        let list = sessions(&self.data);
        assert_eq!(list.len(), 1);
        assert!(list[0].get("close_reason").is_none(), "killed mid-session: no close record");
        let journaled =
            direction_bytes(&replay_json(&self.data, list[0]["id"].as_str().unwrap()), "upstream_to_client");
        assert!(journaled.len() >= received.len());
        assert_eq!(&journaled[..received.len()], received, "every byte the client received is journaled");
    }

    /// The gateway recovers on that journal: it replays the WAL, continues the chain, serves a
    /// new session and signs a final checkpoint at SIGTERM.
    fn restart_and_check(&self) {
        let mut gw = GatewayProcess::start(self.dir.path(), &self.text, self.probe).unwrap();
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"after restart\n").unwrap();
        let mut buf = [0u8; 14];
        s.read_exact(&mut buf).unwrap();
        drop(s);
        let status = gw.signal_and_wait("-TERM");
        assert!(status.success(), "{status}");
        let out = airlock(&["journal", "verify", "--json", "--data-dir", &self.data.display().to_string()]);
        assert!(out.status.success(), "{}", stdout(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["unsigned_tail"], 0, "SIGTERM signs a final checkpoint: {report}");
        let list = sessions(&self.data);
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["bytes_from_client"], 14);
        assert_eq!(list[1]["close_reason"], "both sides closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_strict_mode_loses_nothing_the_client_received() {
    let (c, mut gw) = Crashable::start("").await;
    let writer = stream_until_killed(c.addr, 50);
    std::thread::sleep(Duration::from_millis(700));
    gw.signal_and_wait("-KILL");
    let received = writer.join().unwrap();
    assert!(received.len() > 1000, "traffic flowed before the kill ({} bytes)", received.len());
    c.check_crashed(&received);
    c.restart_and_check();
}

/// Streams `len`-byte messages through `addr` in a blocking thread, each echoed back before the
/// next, until the connection dies; returns what the client received.
fn stream_until_killed(addr: std::net::SocketAddr, len: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        for i in 0..100_000u32 {
            let mut msg = format!("message {i:06} ").into_bytes();
            msg.extend((0..len.saturating_sub(msg.len() + 1)).map(|k| b'a' + ((k as u32 + i) % 26) as u8));
            msg.push(b'\n');
            if s.write_all(&msg).is_err() {
                break;
            }
            let mut buf = vec![0u8; msg.len()];
            match s.read_exact(&mut buf) {
                Ok(()) => received.extend_from_slice(&buf),
                Err(_) => break,
            }
        }
        received
    })
}

/// The journal bounds its WAL (`memtable_bytes`), so RocksDB flushes every column family and
/// deletes WAL files while sessions stream. Small memtables make that happen many times within a
/// second; the journal a crash leaves behind must still verify and hold exactly what the client
/// received, and the gateway must recover on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_wal_bound_flushes_loses_nothing_the_client_received() {
    let (c, mut gw) = Crashable::start("memtable_bytes = 65536\n").await;
    let writer = stream_until_killed(c.addr, 16 << 10);
    // Kill once the WAL bound has made RocksDB flush a few times (bounded: 10 s).
    let log = c.data.join("journal").join("LOG");
    let flushes =
        || std::fs::read_to_string(&log).unwrap_or_default().matches("\"flush_reason\": \"WAL Full\"").count();
    for _ in 0..200 {
        if flushes() >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.signal_and_wait("-KILL");
    let received = writer.join().unwrap();
    assert!(flushes() >= 6, "the WAL bound made RocksDB flush before the kill ({} bytes streamed)", received.len());
    c.check_crashed(&received);
    c.restart_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_closes_open_sessions_and_checkpoints() {
    let upstream = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let admin = free_port();
    let text = config_with_admin(&data, port, upstream, "batched", admin);
    let mut gw = GatewayProcess::start(dir.path(), &text, std::net::SocketAddr::from(([127, 0, 0, 1], admin))).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"still here\n").unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).unwrap();
    let started = std::time::Instant::now();
    let status = gw.signal_and_wait("-TERM");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() >= Duration::from_secs(2), "waited for the 2s drain deadline");
    // New connections are refused once stopped.
    assert!(TcpStream::connect(addr).is_err());
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "the open session was closed");
    let list = sessions(&data);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["close_reason"], "gateway shutdown: drain deadline passed");
    let out = airlock(&["journal", "verify", "--json", "--data-dir", &data.display().to_string()]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success() && report["unsigned_tail"] == 0, "{report}");
}

#[test]
fn malformed_config_names_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[journal]\ndurability = \"strict\"\n\n[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:6543\"\nupstrem = \"127.0.0.1:5432\"\n").unwrap();
    let out = airlock(&["config", "check", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 7") && err.contains("upstrem"), "{err}");

    std::fs::write(&path, "[journal]\ndurability = \"eventually\"\n").unwrap();
    let err = stderr(&airlock(&["config", "check", "--config", &path.display().to_string()]));
    assert!(err.contains("line 2") && err.contains("eventually") && err.contains("strict"), "{err}");
}

#[test]
fn unreadable_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(
        &path,
        "[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:6543\"\nupstream = \"127.0.0.1:5432\"\ntls = { cert = \"missing.pem\", key = \"missing.key\" }\n",
    )
    .unwrap();
    let out = airlock(&["config", "check", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("route[pg].tls") && err.contains("missing.pem") && err.contains("certificate"), "{err}");

    // A file that exists but holds no certificate.
    std::fs::write(dir.path().join("missing.pem"), "not a certificate\n").unwrap();
    let err = stderr(&airlock(&["config", "check", "--config", &path.display().to_string()]));
    assert!(err.contains("no PEM certificate found"), "{err}");
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    let text = config(&dir.path().join("data"), port, "127.0.0.1:1".parse().unwrap(), "strict");
    std::fs::write(&path, text).unwrap();
    let out = airlock(&["run", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("route `echo`: cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, config(&dir.path().join("data"), 6543, "127.0.0.1:5432".parse().unwrap(), "batched"))
        .unwrap();
    let out = airlock(&["config", "check", "--config", &path.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("route echo: 127.0.0.1:6543 -> 127.0.0.1:5432 (tcp)"), "{}", stdout(&out));
}
