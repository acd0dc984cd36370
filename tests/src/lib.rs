//! Test harness for Airlock's end-to-end tests: a real PostgreSQL server in a temp dir, TLS
//! material minted per test, loopback echo servers, the gateway in-process or as the real binary.
//! Everything listens on 127.0.0.1 and every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Default bound for any wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `airlock` binary built alongside the test binaries.
pub fn airlock_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/airlock
    let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    profile_dir.join("airlock")
}

/// Runs the `airlock` binary to completion with a timeout. Output is collected on a separate
/// thread so a large output cannot block the child on a full pipe.
pub fn airlock(args: &[&str]) -> Output {
    let bin = airlock_bin();
    assert!(bin.exists(), "{} not built: run `cargo build -p airlock` first", bin.display());
    let child = Command::new(&bin)
        .args(args)
        .arg("--log=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("airlock {args:?}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("airlock {args:?} did not finish within {WAIT:?}");
        }
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Replays a session as JSON frames through the CLI.
pub fn replay_json(data_dir: &Path, session: &str) -> Vec<serde_json::Value> {
    let out = airlock(&["replay", session, "--format", "json", "--data-dir", &data_dir.display().to_string()]);
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Concatenated payload bytes of one direction from `replay --format json` frames.
pub fn direction_bytes(frames: &[serde_json::Value], direction: &str) -> Vec<u8> {
    use base64::Engine as _;
    frames
        .iter()
        .filter(|f| f["kind"] == "data" && f["direction"] == direction)
        .flat_map(|f| {
            let b64 = f["payload_base64"].as_str().unwrap_or_else(|| panic!("frame without payload: {f}"));
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
        })
        .collect()
}

/// `sessions list --json` through the CLI.
pub fn sessions(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = airlock(&["sessions", "list", "--json", "--data-dir", &data_dir.display().to_string()]);
    assert!(out.status.success(), "sessions list failed: {}", stderr(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// Waits until `f` returns true or the bound passes.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === servers ===

/// A TCP echo server on loopback; echoes until the peer half-closes, then half-closes too.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(echo(s));
        }
    });
    addr
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

/// A TLS echo server using `tls.server_cert`.
pub async fn tls_echo_server(tls: &TestPki) -> SocketAddr {
    let acceptor = tls.acceptor();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(s) = acceptor.accept(s).await {
                    echo(s).await;
                }
            });
        }
    });
    addr
}

// === TLS material ===

/// A throwaway CA and a server certificate for `localhost` / 127.0.0.1, written to a temp dir.
#[derive(Debug)]
pub struct TestPki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// CA certificate (PEM).
    pub ca_pem: PathBuf,
    /// Server certificate chain (PEM).
    pub server_cert: PathBuf,
    /// Server key (PEM).
    pub server_key: PathBuf,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl TestPki {
    /// Mints the CA and the server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Airlock Test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&server_key, &issuer).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        let server_cert = dir.path().join("server.pem");
        let server_key_path = dir.path().join("server.key");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(&server_cert, cert.pem()).unwrap();
        std::fs::write(&server_key_path, server_key.serialize_pem()).unwrap();
        Self { dir, ca_pem, server_cert, server_key: server_key_path, ca_params, ca_key }
    }

    /// A client certificate signed by this CA, with common name `cn`, DNS SANs `sans`, valid from
    /// an hour ago for `valid_for` (negative: already expired). Returns (cert PEM, key PEM) paths.
    pub fn client_cert(&self, cn: &str, sans: &[&str], valid_for: Duration, expired: bool) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        let now = time::OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - time::Duration::days(2);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::try_from(valid_for).unwrap();
        }
        // A serial of its own, kept beside it for `revocation_list`.
        let serial = u64::from(free_port()) << 32 | u64::from(std::process::id());
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let stem = format!("client-{}-{}", cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), free_port());
        let cert_path = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(cert_path.with_extension("serial"), serial.to_string()).unwrap();
        (cert_path, key_path)
    }

    /// A CRL (PEM file) from this CA that revokes the client certificates `revoked` (paths
    /// `client_cert` returned).
    pub fn revocation_list(&self, revoked: &[&Path]) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|cert| {
                let serial: u64 = std::fs::read_to_string(cert.with_extension("serial")).unwrap().parse().unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let crl = params.signed_by(&issuer).unwrap();
        let path = self.dir.path().join(format!("crl-{}.pem", free_port()));
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// A client connector that trusts the CA and presents `cert`/`key`.
    pub fn connector_with_cert(&self, cert: &Path, key: &Path) -> tokio_rustls::TlsConnector {
        airlock::tls::connector(Some(&self.ca_pem), Some((cert.to_path_buf(), key.to_path_buf()))).unwrap()
    }

    /// A TLS acceptor serving the server certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        airlock::tls::acceptor(&self.server_cert, &self.server_key, None).unwrap()
    }

    /// A client connector that trusts the CA.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        airlock::tls::connector(Some(&self.ca_pem), None).unwrap()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

// === the gateway in-process ===

/// A gateway running in this process on a temp data dir.
#[derive(Debug)]
pub struct TestGateway {
    /// The running gateway (taken by `stop`).
    pub gateway: Option<airlock::Gateway>,
    /// The data dir.
    pub data: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway from TOML `routes` (one or more `[[route]]` tables) plus extra sections;
    /// `journal.data_dir` and `admin.listen` are filled in.
    pub async fn start(extra: &str) -> anyhow::Result<Self> {
        Self::start_with_journal("", extra).await
    }

    /// [`TestGateway::start`] with `journal` (lines such as `durability = "batched"`) added to
    /// the `[journal]` table.
    pub async fn start_with_journal(journal: &str, extra: &str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let text = format!(
            "[journal]\ndata_dir = \"{}\"\ncheckpoint_every_records = 50\n{journal}\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{extra}",
            data.path().display()
        );
        let settings = airlock::config::Config::parse(&text)?.build()?;
        let gateway = airlock::Gateway::start(settings).await?;
        Ok(Self { gateway: Some(gateway), data })
    }

    /// Address of route `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.gw().route_addr(name).unwrap_or_else(|| panic!("no route {name}"))
    }

    /// The gateway.
    pub fn gw(&self) -> &airlock::Gateway {
        self.gateway.as_ref().unwrap_or_else(|| panic!("gateway already stopped"))
    }

    /// Data dir path.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Graceful shutdown (final checkpoint).
    pub async fn stop(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await.unwrap();
        }
    }
}

/// A route table for `TestGateway::start`.
pub fn route(name: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

// === the gateway as a process ===

/// `airlock run` as a child process.
#[derive(Debug)]
pub struct GatewayProcess {
    /// The child.
    pub child: std::process::Child,
    /// Its config file.
    pub config: PathBuf,
}

impl GatewayProcess {
    /// Writes `config_text` to `dir/airlock.toml` and starts `airlock run`, then waits until
    /// `wait_for` accepts connections.
    pub fn start(dir: &Path, config_text: &str, wait_for: SocketAddr) -> anyhow::Result<Self> {
        let config = dir.join("airlock.toml");
        std::fs::write(&config, config_text)?;
        let child = Command::new(airlock_bin())
            .args(["run", "--config"])
            .arg(&config)
            .arg("--log=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start airlock run")?;
        let mut p = Self { child, config };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(wait_for).is_err() {
            if let Some(status) = p.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = p.child.stderr.take() {
                    use std::io::Read as _;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("airlock run exited with {status}: {err}");
            }
            if Instant::now() > deadline {
                bail!("airlock run did not listen on {wait_for} within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }

    /// Sends a signal (`"-TERM"`, `"-KILL"`) and waits for the exit.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([sig, &pid]).status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("airlock did not exit after kill {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === PostgreSQL ===

/// A throwaway PostgreSQL cluster listening on 127.0.0.1 with trust authentication.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
}

fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().context("no initdb under /usr/lib/postgresql/*/bin")
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (the server refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Postgres {
    /// initdb + pg_ctl start in a temp dir, trusting every loopback connection.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_auth(None, None)
    }

    /// Like [`Postgres::start`], but user `postgres` must authenticate with SCRAM-SHA-256 and
    /// `password`.
    pub fn start_with_password(password: &str) -> anyhow::Result<Self> {
        Self::start_with_auth(Some(password), None)
    }

    /// SCRAM with `password`, and TLS with `pki`'s server certificate (`ssl = on`).
    pub fn start_with_tls(password: &str, pki: &TestPki) -> anyhow::Result<Self> {
        Self::start_with_auth(Some(password), Some(pki))
    }

    fn start_with_auth(password: Option<&str>, tls: Option<&TestPki>) -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("airlock-pg-").tempdir()?;
        if running_as_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?;
            anyhow::ensure!(ok.success(), "chown of the PostgreSQL temp dir failed");
        }
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin, "initdb");
        match password {
            None => {
                initdb.args(["-A", "trust"]);
            }
            Some(pw) => {
                let pwfile = dir.path().join("pwfile");
                std::fs::write(&pwfile, pw)?;
                if running_as_root() {
                    Command::new("chown").args(["postgres:postgres"]).arg(&pwfile).status()?;
                }
                initdb.args(["-A", "scram-sha-256", "--pwfile"]).arg(&pwfile);
            }
        }
        let out = initdb.args(["-U", "postgres", "--no-sync", "-E", "UTF8", "-D"]).arg(&data).output()?;
        anyhow::ensure!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        if let Some(pki) = tls {
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::copy(&pki.server_cert, &cert)?;
            std::fs::copy(&pki.server_key, &key)?;
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            }
            if running_as_root() {
                Command::new("chown").args(["postgres:postgres"]).arg(&cert).arg(&key).status()?;
            }
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display()));
        }
        let out = pg_command(&bin, "pg_ctl")
            .args(["-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "30", "start"])
            .output()?;
        anyhow::ensure!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Self { dir, bin, port })
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Runs `psql` against `addr` with a timeout; returns stdout.
pub fn psql(addr: SocketAddr, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("timeout")
        .args(["20", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(addr.ip().to_string())
        .args(["-p", &addr.port().to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable")
        .output()?;
    anyhow::ensure!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// === a webhook receiver ===

/// An HTTP/1.1 server on loopback that answers every request `200 OK` and hands each request
/// body (parsed as JSON) to the returned channel. Bounded: bodies over 64 KiB are dropped.
pub async fn webhook_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    if buf.len() > 64 * 1024 {
                        return;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                if len > 64 * 1024 {
                    return;
                }
                while buf.len() < body_start + len {
                    match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                if let Ok(v) = serde_json::from_slice(&buf[body_start..body_start + len]) {
                    let _ = tx.send(v).await;
                }
            });
        }
    });
    (addr, rx)
}

// === a minimal HTTP responder ===

/// Serves HTTP/1.1 on loopback: each request's method and path go to `handler`, whose
/// `(status, body)` is sent back as JSON with `connection: close`. Enough for a JWKS endpoint
/// whose answers a test changes while it runs.
pub async fn http_responder<F>(handler: F) -> SocketAddr
where
    F: Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                let (status, body) = handler(method, path);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

// === a real OpenID provider ===

/// `oidc-provider` (npm) running `tests/oidc/provider.mjs` on a loopback port.
#[derive(Debug)]
pub struct OidcServer {
    child: std::process::Child,
    /// The issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl OidcServer {
    /// Starts the provider and waits for its `READY` line.
    pub fn start() -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!("oidc-provider is not installed: run `npm ci --prefix {}`", dir.display());
        }
        let port = free_port();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start node (apt-get install nodejs)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let server = |issuer| Self { child, issuer };
        match rx.recv_timeout(WAIT) {
            Ok(issuer) => Ok(server(issuer)),
            Err(_) => {
                let mut s = server(String::new());
                let _ = s.child.kill();
                bail!("oidc-provider did not start within {WAIT:?}")
            }
        }
    }

    /// An access token from the client-credentials grant, fetched with curl.
    pub fn client_credentials_token(&self, client: &str, secret: &str) -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-u", &format!("{client}:{secret}")])
            .args(["-d", "grant_type=client_credentials", "-d", "scope=read"])
            .arg(format!("{}/token", self.issuer))
            .output()
            .context("run curl")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("token endpoint answered {}", String::from_utf8_lossy(&out.stdout)))?;
        v["access_token"].as_str().map(str::to_owned).with_context(|| format!("no access_token in {v}"))
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === an HTTP upstream ===

/// What the HTTP upstream saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A real HTTP/1.1 + HTTP/2 (h2c) server on loopback, built on hyper:
/// - `/stream`: `text/event-stream`; sends one event, waits for `release` (bounded), sends a
///   second and ends;
/// - `/reset`: `text/event-stream`; sends one event, then breaks the body off (a reset);
/// - `/endless`: `text/event-stream`; sends one event, waits for `release`, then an event every
///   10 ms for up to 5 s (a stream the caller leaves);
/// - `/short`: `application/json` with `Content-Length: 100`; sends 20 bytes, then breaks off;
/// - anything else: `200` with a JSON body `{"echo": <request body as text>}`.
///
/// Every request is recorded in `seen`.
#[derive(Debug)]
pub struct HttpUpstream {
    /// Address.
    pub addr: SocketAddr,
    /// Requests seen, in order.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    /// Lets `/stream` send its second event.
    pub release: std::sync::Arc<tokio::sync::Notify>,
}

impl HttpUpstream {
    /// Starts the server.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts the server behind TLS (HTTPS) with `acceptor`.
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        use http_body_util::BodyExt as _;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let (s2, r2) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let (seen, release) = (s2.clone(), r2.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, release) = (seen.clone(), release.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            seen.lock().unwrap().push(SeenRequest {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                version: format!("{:?}", parts.version),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                    .collect(),
                                body: body.clone(),
                            });
                            type E = Box<dyn std::error::Error + Send + Sync>;
                            type B = http_body_util::combinators::BoxBody<bytes::Bytes, E>;
                            // A body that sends `first` and then breaks off.
                            // A whole body.
                            let whole = |bytes: bytes::Bytes| -> B {
                                http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed()
                            };
                            let cut_off = |first: &'static [u8]| -> B {
                                let (mut tx, rx) = http_body_util::channel::Channel::<bytes::Bytes, E>::new(4);
                                tokio::spawn(async move {
                                    let _ = tx.send_data(bytes::Bytes::from_static(first)).await;
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    tx.abort("upstream gave up".into());
                                });
                                rx.boxed()
                            };
                            if parts.uri.path() == "/slow-head" {
                                // The head comes late (bounded).
                                tokio::time::sleep(Duration::from_secs(8)).await;
                            }
                            // What a debug endpoint does: the request's `authorization` sent back,
                            // in a header, in a whole body, or split across two stream events.
                            let auth = parts
                                .headers
                                .get("authorization")
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .unwrap_or_default();
                            let resp: hyper::Response<B> = if parts.uri.path() == "/always-gzip" {
                                // Compressed whatever the request asked for (a gzip of `{}`).
                                let gz: &'static [u8] = &[
                                    0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xab, 0xae, 5, 0, 0x43, 0xbf, 0xa6, 0xa3, 2, 0,
                                    0, 0,
                                ];
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .header("content-encoding", "gzip")
                                    .body(whole(bytes::Bytes::from_static(gz)))
                                    .unwrap()
                            } else if parts.uri.path() == "/echo-auth-header" {
                                hyper::Response::builder()
                                    .header("x-debug-auth", auth.as_str())
                                    .body(whole(bytes::Bytes::from_static(b"{}")))
                                    .unwrap()
                            } else if parts.uri.path() == "/echo-auth-body" {
                                let json = serde_json::json!({ "you_sent": auth }).to_string();
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(whole(bytes::Bytes::from(json)))
                                    .unwrap()
                            } else if parts.uri.path() == "/echo-auth-stream" {
                                let (mut tx, rx) = http_body_util::channel::Channel::<bytes::Bytes, E>::new(4);
                                tokio::spawn(async move {
                                    let half = auth.len() / 2;
                                    let _ = tx.send_data(bytes::Bytes::from_static(b"data: hello\n\n")).await;
                                    // Time for the first event to reach the caller before the
                                    // stream is cut (20 ms was too little on a loaded machine).
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                    let _ = tx.send_data(bytes::Bytes::from(format!("data: {}", &auth[..half]))).await;
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    let _ = tx.send_data(bytes::Bytes::from(format!("{}\n\n", &auth[half..]))).await;
                                });
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(rx.boxed())
                                    .unwrap()
                            } else if parts.uri.path() == "/reset" {
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(cut_off(b"data: first\n\n"))
                                    .unwrap()
                            } else if parts.uri.path() == "/short" {
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .header("content-length", "100")
                                    .body(cut_off(b"{\"partial\": \"secret"))
                                    .unwrap()
                            } else if parts.uri.path() == "/endless" {
                                let (mut tx, rx) = http_body_util::channel::Channel::<bytes::Bytes, E>::new(4);
                                tokio::spawn(async move {
                                    let _ = tx.send_data(bytes::Bytes::from_static(b"data: first\n\n")).await;
                                    let _ = tokio::time::timeout(WAIT, release.notified()).await;
                                    for _ in 0..500 {
                                        if tx.send_data(bytes::Bytes::from_static(b"data: more\n\n")).await.is_err() {
                                            break;
                                        }
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                });
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(rx.boxed())
                                    .unwrap()
                            } else if parts.uri.path() == "/stream" {
                                let (mut tx, rx) = http_body_util::channel::Channel::<bytes::Bytes, E>::new(4);
                                tokio::spawn(async move {
                                    let _ = tx.send_data(bytes::Bytes::from_static(b"data: first\n\n")).await;
                                    let _ = tokio::time::timeout(WAIT, release.notified()).await;
                                    let _ = tx.send_data(bytes::Bytes::from_static(b"data: second\n\n")).await;
                                });
                                hyper::Response::builder()
                                    .header("content-type", "text/event-stream")
                                    .body(rx.boxed())
                                    .unwrap()
                            } else {
                                let json = serde_json::json!({ "echo": String::from_utf8_lossy(&body) }).to_string();
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(whole(bytes::Bytes::from(json)))
                                    .unwrap()
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls_stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls_stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, seen, release }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// The value of header `name` in a block of response headers (as `curl` returns them).
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Runs curl with `args` (bounded), returning (status code, response headers, body).
pub fn curl(args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), std::fs::read_to_string(&headers).unwrap_or_default(), body.to_string())
}
