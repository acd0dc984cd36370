//! The PostgreSQL driver end to end against a real server that demands SCRAM-SHA-256: psql and
//! pgbench authenticate with API keys as passwords; the gateway logs in with the credential it
//! holds; guardrails and rules refuse statements with SQLSTATE 42501 while the session stays
//! usable; every statement is a journaled decision.

use std::process::{Command, Output};

use airlock_tests::*;

const AGENT_KEY: &str = "ak_pg_agent_1";
const DBA_KEY: &str = "ak_pg_dba_2";
const UPSTREAM_PASSWORD: &str = "up-secret-held-by-the-gateway";

fn psql_as(addr: std::net::SocketAddr, key: &str, commands: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["20", "psql", "-X", "-A", "-t", "-h"]).arg(addr.ip().to_string()).args([
        "-p",
        &addr.port().to_string(),
        "-U",
        "someone",
        "-d",
        "postgres",
    ]);
    for cmd in commands {
        c.args(["-c", cmd]);
    }
    c.env("PGPASSWORD", key).env("PGSSLMODE", "disable").env("PGCONNECT_TIMEOUT", "10").output().unwrap()
}

fn pgbench(addr: std::net::SocketAddr, key: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["120", "pgbench", "-h"])
        .arg(addr.ip().to_string())
        .args(["-p", &addr.port().to_string(), "-U", "someone"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", key)
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap()
}

/// An `[[identity.api_key]]` block.
fn api_key(name: &str, key: &str, role: &str) -> String {
    format!(
        "[[identity.api_key]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\n\n",
        airlock::identity::apikey::format_hash(key)
    )
}

/// A real PostgreSQL that demands SCRAM, and a gateway whose `pg` route logs in to it with the
/// password it holds, accepting caller passwords in plaintext on loopback. `route_extra` adds
/// lines to that route; `extra` adds configuration after it (identities, rules, more routes),
/// with `{PG}` standing for the server's address.
struct Rig {
    gw: TestGateway,
    pg: Postgres,
    dir: tempfile::TempDir,
    /// The routes, identities and rules the gateway runs (for a reload).
    config: String,
}

async fn rig(route_extra: &str, extra: &str) -> Rig {
    let pg = tokio::task::spawn_blocking(|| Postgres::start_with_password(UPSTREAM_PASSWORD)).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.pw");
    std::fs::write(&pw, UPSTREAM_PASSWORD).unwrap();
    let config = format!(
        "[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"{}\"\n\
         upstream_password = {{ file = \"{}\" }}\nplaintext_password_on_loopback = true\n{route_extra}\n\n{}",
        pg.addr(),
        pw.display(),
        extra.replace("{PG}", &pg.addr().to_string()),
    );
    let gw = TestGateway::start(&config).await.unwrap();
    Rig { gw, pg, dir, config }
}

/// A session spoken in raw protocol messages, logged in with `password`.
struct Raw {
    s: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    dec: airlock_decoders::postgres::backend::BackendDecoder,
}

impl Raw {
    async fn login(addr: std::net::SocketAddr, password: &str) -> Self {
        let (raw, seen) = Self::start(addr, password, &[]).await;
        assert!(
            matches!(seen.last(), Some(airlock_decoders::postgres::backend::BackendMessage::ReadyForQuery { .. })),
            "{seen:?}"
        );
        raw
    }

    /// Connects with `extra` startup parameters and the password; returns the session and what
    /// the server said after the password, up to ReadyForQuery or the end of the connection.
    async fn start(
        addr: std::net::SocketAddr,
        password: &str,
        extra: &[(&str, &str)],
    ) -> (Self, Vec<airlock_decoders::postgres::backend::BackendMessage>) {
        use airlock_decoders::postgres::backend::{Authentication, BackendMessage};
        use airlock_decoders::postgres::frontend::FrontendMessage;
        use airlock_decoders::postgres::startup::{self, StartupPacket};
        use bytes::Bytes;
        use tokio::io::AsyncWriteExt;
        let b = |t: &str| Bytes::copy_from_slice(t.as_bytes());
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut params = vec![(b("user"), b("x"))];
        if !extra.iter().any(|(k, _)| *k == "database") {
            params.push((b("database"), b("postgres")));
        }
        params.extend(extra.iter().map(|(k, v)| (b(k), b(v))));
        let hello = StartupPacket::Startup { major: 3, minor: 0, params };
        s.write_all(&startup::encode(&hello)).await.unwrap();
        let mut raw = Self { s, buf: bytes::BytesMut::new(), dec: Default::default() };
        assert_eq!(raw.next().await, Some(BackendMessage::Authentication(Authentication::CleartextPassword)));
        raw.send(&[FrontendMessage::Password(b(&format!("{password}\0")))]).await;
        let mut seen = Vec::new();
        while let Some(m) = raw.next().await {
            let done = matches!(m, BackendMessage::ReadyForQuery { .. });
            seen.push(m);
            if done {
                break;
            }
        }
        (raw, seen)
    }

    /// Messages up to the next ReadyForQuery, or to the end of the connection.
    async fn until_ready(&mut self) -> Vec<airlock_decoders::postgres::backend::BackendMessage> {
        let mut seen = Vec::new();
        while let Some(m) = self.next().await {
            let done = matches!(m, airlock_decoders::postgres::backend::BackendMessage::ReadyForQuery { .. });
            seen.push(m);
            if done {
                break;
            }
        }
        seen
    }

    async fn send(&mut self, messages: &[airlock_decoders::postgres::frontend::FrontendMessage]) {
        use tokio::io::AsyncWriteExt;
        let bytes: Vec<u8> =
            messages.iter().flat_map(|m| airlock_decoders::postgres::frontend::encode(m).to_vec()).collect();
        self.s.write_all(&bytes).await.unwrap();
    }

    /// The next server message, or `None` once the connection closes.
    async fn next(&mut self) -> Option<airlock_decoders::postgres::backend::BackendMessage> {
        use airlock_decoders::Decoder as _;
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = self.dec.decode(&mut self.buf).unwrap() {
                return Some(m);
            }
            if tokio::time::timeout(WAIT, self.s.read_buf(&mut self.buf)).await.unwrap().unwrap() == 0 {
                return None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_through_the_postgres_driver() {
    let extra = format!(
        "{}{}[[route]]\nname = \"tls-only\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"{{PG}}\"\n\n\
         [[rule]]\nid = \"no-secrets\"\neffect = \"deny\"\nroles = [\"agent\"]\nreason = \"the secrets table is off limits\"\n\
         sql = {{ tables = [\"secrets\"] }}\n\n\
         [[rule]]\nid = \"no-ssn\"\neffect = \"deny\"\nroles = [\"agent\"]\nreason = \"agents never read SSNs\"\n\
         sql = {{ columns = [\"ssn\"] }}\n",
        api_key("agent", AGENT_KEY, "agent"),
        api_key("dba", DBA_KEY, "dba"),
    );
    let Rig { mut gw, pg: _pg, dir: _dir, .. } =
        rig("upstream_user = \"postgres\"\nsql_trusted_roles = [\"dba\"]", &extra).await;
    let addr = gw.addr("pg");
    let tls_only = gw.addr("tls-only");
    let outs = tokio::task::spawn_blocking(move || {
        vec![
            psql_as(
                addr,
                DBA_KEY,
                &["create table secrets(x int)", "create table t(x int)", "insert into t values (1),(2)"],
            ),
            psql_as(
                addr,
                AGENT_KEY,
                &[
                    "select sum(x) from t",
                    "delete from t",
                    "select count(*) from t",
                    "select * from secrets",
                    "select x from public.secrets",
                    "select x from \"secrets\"",
                    "copy secrets to stdout",
                    "copy t to '/tmp/airlock-never-written'",
                    "create function f() returns int language sql as $$ delete from t returning 1 $$",
                    "select 42",
                ],
            ),
            psql_as(
                addr,
                AGENT_KEY,
                &["\\copy t from program 'printf \"7\\n8\\n\"'", "\\copy (select x from t order by x) to stdout"],
            ),
            psql_as(addr, "ak_wrong", &["select 1"]),
            psql_as(tls_only, AGENT_KEY, &["select 1"]),
            pgbench(addr, DBA_KEY, &["-i", "-s", "1", "-q"]),
            pgbench(addr, AGENT_KEY, &["-M", "extended", "-t", "5", "-c", "1", "-S"]),
            pgbench(addr, AGENT_KEY, &["-M", "prepared", "-t", "5", "-c", "1", "-S"]),
            psql_as(addr, AGENT_KEY, &["select ssn from t", "select * from t", "select x from t where x = 1"]),
        ]
    })
    .await
    .unwrap();
    let text = |o: &Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(outs[0].status.success(), "{}", text(&outs[0]));
    // The agent: allowed statements run; refused ones name their rule, and the session goes on.
    let agent = text(&outs[1]);
    assert!(agent.contains("3\n"), "{agent}");
    assert!(agent.contains("guard:no_where") && agent.contains("UPDATE and DELETE need a WHERE clause"), "{agent}");
    assert!(agent.contains("2\n"), "the delete did not run: {agent}");
    assert!(agent.contains("guard:server_code"), "no code for the server to run later: {agent}");
    assert_eq!(agent.matches("rule `no-secrets`").count(), 4, "qualified and quoted names, and COPY: {agent}");
    assert!(agent.contains("guard:copy_file"), "no server files: {agent}");
    assert!(agent.contains("42\n"), "the session is still usable after refusals: {agent}");
    // psql's \copy in and out run COPY FROM STDIN / TO STDOUT through the gateway.
    let copy = text(&outs[2]);
    assert!(outs[2].status.success(), "{copy}");
    assert_eq!(
        String::from_utf8_lossy(&outs[2].stdout).lines().filter(|l| !l.starts_with("COPY")).collect::<Vec<_>>(),
        ["1", "2", "7", "8"],
        "{copy}"
    );
    assert!(!outs[3].status.success());
    assert!(text(&outs[3]).contains("unknown API key"), "{}", text(&outs[3]));
    assert!(text(&outs[4]).contains("requires TLS"), "{}", text(&outs[4]));
    for o in &outs[5..8] {
        assert!(o.status.success(), "pgbench: {}", text(o));
    }
    // Column rules: a named column is refused; `*` cannot show it is absent, so it is refused too;
    // a query that names other columns runs.
    let cols = text(&outs[8]);
    assert_eq!(cols.matches("denied by rule `no-ssn`").count(), 2, "{cols}");
    assert!(cols.contains("1\n"), "{cols}");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    let agent_session = list.iter().find(|s| s["principal"] == "api-key:agent").unwrap();
    let frames = replay_json(gw.data_dir(), agent_session["id"].as_str().unwrap());
    let decisions: Vec<(String, String)> = frames
        .iter()
        .filter(|f| f["kind"] == "decision" && f["meta"]["phase"] == "request")
        .map(|f| (f["meta"]["request"].as_str().unwrap().to_string(), f["meta"]["rule"].as_str().unwrap().to_string()))
        .collect();
    assert!(decisions.contains(&("sql delete from t".into(), "guard:no_where".into())), "{decisions:?}");
    assert!(decisions.contains(&("sql select * from secrets".into(), "no-secrets".into())), "{decisions:?}");
    // What the upstream session was opened with is on the record.
    let startup = decisions.iter().find(|(_, rule)| rule == "startup").expect("the startup parameters");
    assert!(startup.0.contains("database=postgres"), "{startup:?}");
    // A record holds what one write delivered, in whole messages: each decodes on its own.
    let mut most = 0;
    for f in frames.iter().filter(|f| f["kind"] == "data" && f["direction"] == "upstream_to_client") {
        use airlock_decoders::Decoder as _;
        let bytes = direction_bytes(std::slice::from_ref(f), "upstream_to_client");
        if bytes.len() <= 1 {
            continue; // the one-byte answer to SSLRequest
        }
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let mut dec = airlock_decoders::postgres::backend::BackendDecoder::default();
        let mut n = 0;
        while dec.decode(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert!(n > 0 && buf.is_empty(), "record {} holds a partial message: {f}", f["seq"]);
        most = most.max(n);
    }
    assert!(most > 1, "the messages of one write share a record");
    // The text replay reads like a psql session: statements, result tables, tags, errors.
    let transcript = stdout(&airlock(&[
        "replay",
        agent_session["id"].as_str().unwrap(),
        "--data-dir",
        &gw.data_dir().display().to_string(),
    ]));
    assert!(transcript.contains("=> select sum(x) from t"), "{transcript}");
    assert!(transcript.contains(" sum ") && transcript.contains(" 3 "), "{transcript}");
    assert!(transcript.contains("<= (SELECT 1)"), "{transcript}");
    assert!(transcript.contains("ERROR 42501: denied by rule `guard:no_where`"), "{transcript}");
    // The upstream password is never in the journal.
    let all = stdout(&airlock(&[
        "replay",
        agent_session["id"].as_str().unwrap(),
        "--data-dir",
        &gw.data_dir().display().to_string(),
    ]));
    assert!(!all.contains(UPSTREAM_PASSWORD) && !all.contains(AGENT_KEY), "no credential in the journal");
}

/// The extended protocol, pipelined in one write: a refused Parse gets its ErrorResponse after
/// the answers to what came before it, everything up to its Sync is skipped, and the session
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_in_a_pipeline_answers_in_order() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::{FrontendMessage, Target};
    use bytes::Bytes;

    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("", &api_key("agent", AGENT_KEY, "agent")).await;
    let mut s = Raw::login(gw.addr("pg"), AGENT_KEY).await;
    let b = |t: &str| Bytes::copy_from_slice(t.as_bytes());
    let unnamed = || Bytes::new();
    let ext = |sql: &str| {
        vec![
            FrontendMessage::Parse { name: unnamed(), sql: b(sql), param_types: vec![] },
            FrontendMessage::Bind {
                portal: unnamed(),
                statement: unnamed(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Describe { target: Target::Portal, name: unnamed() },
            FrontendMessage::Execute { portal: unnamed(), max_rows: 0 },
            FrontendMessage::Sync,
        ]
    };
    let mut pipeline: Vec<FrontendMessage> = ext("select 1");
    pipeline.extend(ext("delete from pg_class"));
    pipeline.push(FrontendMessage::Query { sql: b("select 2") });
    s.send(&pipeline).await;
    let name = |m: &BackendMessage| match m {
        BackendMessage::ErrorResponse(_) => format!("Error({})", String::from_utf8_lossy(m.field(b'C').unwrap())),
        BackendMessage::DataRow(v) => format!("Row({})", String::from_utf8_lossy(v[0].as_ref().unwrap())),
        other => format!("{other:?}").split([' ', '(', '{']).next().unwrap().to_string(),
    };
    let mut seen = Vec::new();
    let mut rfqs = 0;
    while rfqs < 3 {
        let m = s.next().await.expect("the session stays open");
        if matches!(m, BackendMessage::ReadyForQuery { .. }) {
            rfqs += 1;
        }
        seen.push(name(&m));
    }
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "Row(1)",
            "CommandComplete",
            "ReadyForQuery",
            "Error(42501)",
            "ReadyForQuery",
            "RowDescription",
            "Row(2)",
            "CommandComplete",
            "ReadyForQuery",
        ]
    );

    // No Sync between the statements (psycopg's pipeline mode): the refusal comes after the
    // answers to what came before it, the rest is skipped to the Sync, and the session goes on.
    let mut pipeline: Vec<FrontendMessage> = ext("select 3");
    pipeline.pop();
    pipeline.extend(ext("delete from pg_class"));
    s.send(&pipeline).await;
    let seen: Vec<String> = s.until_ready().await.iter().map(name).collect();
    assert_eq!(
        seen,
        [
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "Row(3)",
            "CommandComplete",
            "Error(42501)",
            "ReadyForQuery"
        ]
    );

    // A refusal inside a transaction aborts it, as an error would: the status says so, and
    // COMMIT rolls back.
    s.send(&[FrontendMessage::Query { sql: b("begin") }, FrontendMessage::Query { sql: b("delete from pg_class") }])
        .await;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        if let BackendMessage::ReadyForQuery { status } = s.next().await.expect("the session stays open") {
            statuses.push(status);
        }
    }
    assert_eq!(statuses, [b'T', b'E']);
    s.send(&[FrontendMessage::Query { sql: b("commit") }]).await;
    let seen = s.until_ready().await;
    assert!(
        seen.iter().any(|m| matches!(m, BackendMessage::CommandComplete { tag } if tag.starts_with(b"ROLLBACK"))),
        "{seen:?}"
    );

    // More refusals in one write than the gateway keeps track of: each is still a refusal, and
    // the name of the stand-in never reaches the caller.
    let many: Vec<FrontendMessage> =
        (0..300).map(|_| FrontendMessage::Query { sql: b("delete from pg_class") }).collect();
    s.send(&many).await;
    let mut codes = Vec::new();
    while codes.len() < 300 {
        let m = s.next().await.expect("the session stays open");
        assert!(!format!("{m:?}").contains("airlock_refused"), "{m:?}");
        if let Some(c) = m.field(b'C') {
            codes.push(String::from_utf8_lossy(c).into_owned());
        }
    }
    assert!(codes.iter().all(|c| c == "42501"), "{codes:?}");
    s.until_ready().await;

    // A statement larger than one journal record (1 MiB) still reads as one in the transcript.
    let big = format!("select length('{}') as big_one", "x".repeat(1_500_000));
    s.send(&[FrontendMessage::Query { sql: b(&big) }]).await;
    let seen = s.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::DataRow(v) if v[0].as_deref() == Some(&b"1500000"[..]))));
    drop(s);
    gw.stop().await;
    let data_dir = gw.data_dir().display().to_string();
    let id = sessions(gw.data_dir())[0]["id"].as_str().unwrap().to_owned();
    let text = stdout(&airlock(&["replay", &id, "--data-dir", &data_dir]));
    let line = text.lines().find(|l| l.contains("=> select length(")).unwrap_or_else(|| panic!("no big statement"));
    assert!(line.ends_with("') as big_one"), "{}", &line[line.len() - 40..]);
    assert!(text.contains("1500000"), "its result is in the transcript");
}

/// The upstream over TLS with verify-full: the gateway's CA and the server name must match, or
/// the session is refused; the caller never talks to an unverified database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_connection_is_tls_verified() {
    let pki = TestPki::new();
    let stranger = TestPki::new();
    let pg = tokio::task::block_in_place(|| Postgres::start_with_tls(UPSTREAM_PASSWORD, &pki)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.pw");
    std::fs::write(&pw, UPSTREAM_PASSWORD).unwrap();
    let route = |name: &str, ca: &std::path::Path| {
        format!(
            "[[route]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"{}\"\n\
             upstream_password = {{ file = \"{}\" }}\nplaintext_password_on_loopback = true\n\
             upstream_tls = {{ ca = \"{}\", server_name = \"localhost\" }}\n\n",
            pg.addr(),
            pw.display(),
            ca.display()
        )
    };
    let config = format!(
        "{}{}[[identity.api_key]]\nname = \"agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
        route("good", &pki.ca_pem),
        route("bad", &stranger.ca_pem),
        airlock::identity::apikey::format_hash(AGENT_KEY),
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let (good, bad) = (gw.addr("good"), gw.addr("bad"));
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        (psql_as(good, AGENT_KEY, &["select 'over tls'"]), psql_as(bad, AGENT_KEY, &["select 1"]))
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&ok.stdout).contains("over tls"), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!refused.status.success());
    gw.stop().await;
    let list = sessions(gw.data_dir());
    let good_session = list.iter().find(|s| s["route"] == "good").unwrap();
    let frames = replay_json(gw.data_dir(), good_session["id"].as_str().unwrap());
    let up = frames.iter().find(|f| f["kind"] == "upstream_connected").unwrap();
    assert_eq!(up["meta"]["tls"]["server_name"], "localhost", "{up}");
    let bad_session = list.iter().find(|s| s["route"] == "bad").unwrap();
    assert!(bad_session["close_reason"].as_str().unwrap().contains("TLS handshake"), "{bad_session}");
}

/// psycopg 3 (a real driver) through the route: COPY both ways, binary results, a server-side
/// cursor, prepared statements, pipeline mode, LISTEN/NOTIFY, and `cancel()` — which reaches the
/// right backend through the gateway's minted cancel key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_features_and_cancel() {
    let Rig { mut gw, pg: _pg, dir: _dir, .. } =
        rig("sql_trusted_roles = [\"app\"]", &api_key("app", DBA_KEY, "app")).await;
    let addr = gw.addr("pg");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/psycopg_session.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["60", "python3"])
            .arg(&script)
            .args([&addr.ip().to_string(), &addr.port().to_string(), DBA_KEY])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "psycopg: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"], "note 99");
    assert_eq!(v["binary"], 4950);
    assert_eq!(v["server_side_rows"], 100);
    assert_eq!(v["copy_out"], serde_json::json!(["0", "1", "2"]));
    assert_eq!(v["prepared"], serde_json::json!(["note 1", "note 2", "note 3"]));
    assert_eq!(v["pipeline"], serde_json::json!([1, 2]));
    assert_eq!(v["notify"], serde_json::json!(["hello"]));
    assert_eq!(v["cancel"], "cancelled", "{v}");
    assert!(v["cancel_seconds"].as_f64().unwrap() < 10.0, "{v}");
    gw.stop().await;
}

/// Hostile frontend bytes get an ErrorResponse (08P01) or a close, never a panic; the gateway
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frontend_input_is_refused_cleanly() {
    use airlock_decoders::postgres::frontend::{self, FrontendMessage};
    use airlock_decoders::postgres::startup::{self, StartupPacket};
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("", &api_key("agent", AGENT_KEY, "agent")).await;
    let addr = gw.addr("pg");
    let exchange = |bytes: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let _ = s.shutdown().await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await.expect("the gateway never closed");
        got
    };
    // A 2 GiB length field in the startup packet.
    let got = exchange(b"\x7f\xff\xff\xff\x00\x03\x00\x00".to_vec()).await;
    assert!(got.windows(6).any(|w| w == b"C08P01"), "{got:?}");
    // A truncated startup packet, then the caller goes away.
    assert!(exchange(b"\x00\x00\x00\x40\x00\x03".to_vec()).await.is_empty());
    // SSLRequest twice (the route has no TLS: each is answered `N`), and GSSENCRequest twice.
    for request in [startup::encode(&StartupPacket::SslRequest), startup::encode(&StartupPacket::GssEncRequest)] {
        let got = exchange([request.clone(), request].concat()).await;
        assert!(got.starts_with(b"N") && got.windows(6).any(|w| w == b"C08P01"), "{got:?}");
    }
    // A startup parameter named twice: the server would take the second, a check the first.
    let twice = startup::encode(&StartupPacket::Startup {
        major: 3,
        minor: 0,
        params: vec![
            (Bytes::from_static(b"user"), Bytes::from_static(b"x")),
            (Bytes::from_static(b"database"), Bytes::from_static(b"postgres")),
            (Bytes::from_static(b"database"), Bytes::from_static(b"template1")),
        ],
    });
    let got = exchange(twice.to_vec()).await;
    assert!(got.windows(6).any(|w| w == b"C08P01") && got.windows(8).any(|w| w == b"database"), "{got:?}");
    // Logged in, then an unknown message type and a length below 4.
    let b = |t: &str| Bytes::copy_from_slice(t.as_bytes());
    let login = || {
        let mut v =
            startup::encode(&StartupPacket::Startup { major: 3, minor: 0, params: vec![(b("user"), b("x"))] }).to_vec();
        v.extend_from_slice(&frontend::encode(&FrontendMessage::Password(b(&format!("{AGENT_KEY}\0")))));
        v
    };
    for garbage in [&b"?\x00\x00\x00\x04"[..], b"Q\x00\x00\x00\x02"] {
        let mut bytes = login();
        bytes.extend_from_slice(garbage);
        let got = exchange(bytes).await;
        assert!(got.windows(6).any(|w| w == b"C08P01"), "{garbage:?}: {got:?}");
    }
    // Still serving.
    let ok = tokio::task::spawn_blocking(move || psql_as(addr, AGENT_KEY, &["select 'still here'"])).await.unwrap();
    assert!(String::from_utf8_lossy(&ok.stdout).contains("still here"));
    gw.stop().await;
    // What the callers of the garbage received is in the journal too.
    let refused: Vec<Vec<u8>> = sessions(gw.data_dir())
        .iter()
        .filter(|s| s["close_reason"].as_str().is_some_and(|r| r.contains("malformed message")))
        .map(|s| direction_bytes(&replay_json(gw.data_dir(), s["id"].as_str().unwrap()), "upstream_to_client"))
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|got| got.windows(6).any(|w| w == b"C08P01")), "{refused:?}");
}

/// Automatic logoff: a session authenticated with a short-lived JWT is ended, with a FATAL
/// ErrorResponse, when the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_session_ends_when_its_token_expires() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const RSA_A: &[u8] = include_bytes!("../fixtures/jwt/rsa-a.der");
    let keys = tempfile::tempdir().unwrap();
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(RSA_A), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("a".into());
    let jwks = keys.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap()).unwrap();
    let oidc = format!(
        "[[identity.oidc]]\nname = \"corp\"\nissuer = \"https://idp.example\"\naudiences = [\"airlock\"]\n\
         jwks_file = \"{}\"\nleeway = \"0s\"\n",
        jwks.display()
    );
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("", &oidc).await;
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = serde_json::json!({"iss": "https://idp.example", "aud": "airlock", "sub": "nurse", "exp": now + 3});
    let token = jsonwebtoken::encode(
        &Header { kid: Some("a".into()), ..Header::new(Algorithm::RS256) },
        &claims,
        &EncodingKey::from_rsa_der(RSA_A),
    )
    .unwrap();

    let mut s = Raw::login(gw.addr("pg"), &token).await;
    let started = std::time::Instant::now();
    let ended = s.next().await.expect("an ErrorResponse before the close");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(ended.field(b'S').map(|v| &v[..]), Some(&b"FATAL"[..]), "{ended:?}");
    assert_eq!(ended.field(b'M').map(|v| &v[..]), Some(&b"token expired"[..]), "{ended:?}");
    assert_eq!(s.next().await, None, "then the connection closes");
    gw.stop().await;
    let list = sessions(gw.data_dir());
    assert!(list[0]["close_reason"].as_str().unwrap().starts_with("automatic logoff"), "{list:?}");
    assert_eq!(list[0]["principal"], "oidc:corp/nurse");
}

/// The caller killed mid-result and the upstream backend killed mid-query: clean ends, the
/// reasons journaled, and the journal still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peers_end_sessions_cleanly() {
    let keys = format!("{}{}", api_key("agent", AGENT_KEY, "agent"), api_key("dba", DBA_KEY, "dba"));
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("sql_trusted_roles = [\"dba\"]", &keys).await;
    let addr = gw.addr("pg");
    let (killed_upstream, _) = tokio::task::spawn_blocking(move || {
        // The caller dies while a large result streams.
        let mut big = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "x", "-d", "postgres"])
            .args(["-c", "select g, repeat('x', 100) from generate_series(1, 3000000) g"])
            .env("PGPASSWORD", AGENT_KEY)
            .env("PGSSLMODE", "disable")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let _ = big.kill();
        let _ = big.wait();
        // The upstream backend is terminated mid-query.
        let sleeper = std::thread::spawn(move || psql_as(addr, AGENT_KEY, &["select pg_sleep(20)"]));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let kill = psql_as(
            addr,
            DBA_KEY,
            &["select pg_terminate_backend(pid) from pg_stat_activity where query = 'select pg_sleep(20)'"],
        );
        (sleeper.join().unwrap(), kill)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&killed_upstream.stderr).into_owned();
    assert!(!killed_upstream.status.success());
    assert!(text.contains("terminating connection due to administrator command"), "{text}");
    gw.stop().await;
    let reasons: Vec<String> =
        sessions(gw.data_dir()).iter().map(|s| s["close_reason"].as_str().unwrap_or("").to_string()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("caller") && (r.contains("closed") || r.contains("error"))),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "the upstream closed the connection"), "{reasons:?}");
    let verify = airlock(&["journal", "verify", "--data-dir", &gw.data_dir().display().to_string()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

fn patients(addr: std::net::SocketAddr, key: &str, mode: &str) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/psycopg_patients.py");
    let out = Command::new("timeout")
        .args(["60", "python3"])
        .arg(&script)
        .args([&addr.ip().to_string(), &addr.port().to_string(), key, mode])
        .output()
        .unwrap();
    assert!(out.status.success(), "psycopg ({mode}): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// psycopg reads a `patients` table through a masked route: column rules follow the columns
/// (aliases, prepared statements, text and binary results), the detectors mask free text and
/// JSON, per role; COPY TO, which column rules cannot follow, is refused and the session goes
/// on; the journal holds the masked rows and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_patients_masked_per_role() {
    const CLINICIAN_KEY: &str = "ak_pg_clinician_3";
    let profiles = "[[masking.profile]]\nname = \"agent\"\n\
        [[masking.profile.field]]\ncolumn = \"ssn\"\ntable = \"patients\"\naction = \"partial:4\"\n\
        [[masking.profile.field]]\ncolumn = \"name\"\ntable = \"public.patients\"\n\
        [[masking.profile.field]]\ncolumn = \"dob\"\ntable = \"patients\"\naction = \"null\"\n\n\
        [[masking.profile]]\nname = \"clinical\"\ndefault_action = \"keep\"\n\
        [[masking.profile.field]]\ncolumn = \"ssn\"\naction = \"partial:4\"\n";
    let extra = format!(
        "{}{}{}{profiles}",
        api_key("dba", DBA_KEY, "dba"),
        api_key("agent", AGENT_KEY, "agent"),
        api_key("clinician", CLINICIAN_KEY, "clinician")
    );
    let route = "sql_trusted_roles = [\"dba\"]\nmask = \"agent\"\n\
        mask_roles = [{ role = \"dba\", profile = \"none\" }, { role = \"clinician\", profile = \"clinical\" }]";
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig(route, &extra).await;
    let addr = gw.addr("pg");
    let (agent, clinician) = tokio::task::spawn_blocking(move || {
        patients(addr, DBA_KEY, "setup");
        (patients(addr, AGENT_KEY, "read"), patients(addr, CLINICIAN_KEY, "read"))
    })
    .await
    .unwrap();

    let want_agent = serde_json::json!([
        [1, "[PHI:name]", "***-**-9999", null, "reach at [PHI:EMAIL]", {"phone": "[PHI:PHONE]", "ward": 4}],
        [2, "[PHI:name]", "***-**-1120", null, "no contact on file", {"ward": 2}]
    ]);
    assert_eq!(agent["text"], want_agent, "{agent}");
    assert_eq!(agent["binary"], want_agent, "binary results are masked alike: {agent}");
    assert_eq!(agent["alias"], serde_json::json!(["***-**-9999", "***-**-1120"]), "an alias does not evade a rule");
    assert_eq!(
        agent["prepared"],
        serde_json::json!([
            [["[PHI:name]", "***-**-9999"]],
            [["[PHI:name]", "***-**-1120"]],
            [["[PHI:name]", "***-**-9999"]]
        ])
    );
    assert_eq!(agent["copy_error"]["sqlstate"], "42501", "{agent}");
    assert_eq!(agent["after_copy"], 1, "the session goes on after the refused COPY");
    assert_eq!(agent["duplicate"]["sqlstate"], "23505", "{agent}");
    let detail = agent["duplicate"]["detail"].as_str().unwrap();
    assert_eq!(detail, "Key (ssn)=(***-**-9999) already exists.", "errors are masked by the column's rule too");

    assert_eq!(clinician["text"][0][1], "Quentin Zed");
    assert_eq!(clinician["text"][0][2], "***-**-9999");
    assert_eq!(clinician["text"][0][3], "1971-03-04");
    assert_eq!(clinician["text"][0][4], "reach at q.zed@example.org");
    assert_eq!(clinician["binary"][0][3], "1971-03-04", "a profile that keeps dates keeps binary dates");
    assert_eq!(clinician["binary"][0][0], 1, "binary integers with nothing in them pass");

    // asyncpg binds and executes a statement it described once, with binary results and no
    // Describe of the portal.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncpg_patients.py");
    let out = tokio::task::block_in_place(|| {
        Command::new("timeout")
            .args(["60", "python3"])
            .arg(&script)
            .args([&addr.ip().to_string(), &addr.port().to_string(), AGENT_KEY])
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "asyncpg: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::json!([
        [1, "[PHI:name]", "***-**-9999", null, "reach at [PHI:EMAIL]"],
        [2, "[PHI:name]", "***-**-1120", null, "no contact on file"]
    ]);
    assert_eq!(got["rows"], want, "{got}");
    assert_eq!(got["again"], want, "the second execution of the prepared statement: {got}");
    assert_eq!(got["one"], "***-**-9999", "{got}");
    gw.stop().await;

    let data_dir = gw.data_dir().display().to_string();
    // The psycopg session's counts (the asyncpg session reads less).
    let mut agent_counts = serde_json::Value::Null;
    for s in sessions(gw.data_dir()) {
        let id = s["id"].as_str().unwrap();
        if !s["principal"].as_str().unwrap_or("").contains("agent") {
            continue;
        }
        let text = stdout(&airlock(&["replay", id, "--data-dir", &data_dir]));
        for value in ["Quentin", "219-09-9999", "q.zed@example.org", "617-555-0101", "1971-03-04"] {
            assert!(!text.contains(value), "{value} in the agent's journal: {text}");
        }
        let show: serde_json::Value =
            serde_json::from_str(&stdout(&airlock(&["sessions", "show", id, "--json", "--data-dir", &data_dir])))
                .unwrap();
        let masked = show["close"]["masked"].clone();
        if masked["ssn"].as_u64() > agent_counts["ssn"].as_u64() {
            agent_counts = masked;
        }
    }
    assert!(
        agent_counts["ssn"].as_u64().unwrap() >= 6 && agent_counts["EMAIL"].as_u64().unwrap() >= 2,
        "{agent_counts}"
    );
}

/// Side doors around the masker and the classifier, on a masked route: rows of one portal read
/// through the description of another, a fast-path function call, a value reported back as a
/// ParameterStatus, startup parameters that change how the server reads SQL text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_side_doors_on_a_masked_route_stay_shut() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::{FrontendMessage, Target};
    use bytes::Bytes;

    let profiles = "[[masking.profile]]\nname = \"agent\"\n\
        [[masking.profile.field]]\ncolumn = \"ssn\"\naction = \"partial:4\"\n";
    let extra = format!("{}{}{profiles}", api_key("dba", DBA_KEY, "dba"), api_key("agent", AGENT_KEY, "agent"));
    let route =
        "sql_trusted_roles = [\"dba\"]\nmask = \"agent\"\nmask_roles = [{ role = \"dba\", profile = \"none\" }]";
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig(route, &extra).await;
    let addr = gw.addr("pg");
    tokio::task::spawn_blocking(move || patients(addr, DBA_KEY, "setup")).await.unwrap();
    let b = |t: &str| Bytes::copy_from_slice(t.as_bytes());
    let leaks = |seen: &[BackendMessage]| seen.iter().any(|m| format!("{m:?}").contains("219-09"));
    let sqlstate = |seen: &[BackendMessage]| {
        seen.iter().find_map(|m| m.field(b'C').map(|c| String::from_utf8_lossy(c).into_owned())).unwrap_or_default()
    };

    // Portal "a" is described as one binary bool column; the unnamed portal that follows is not
    // described at all. Its rows must not be read through "a"'s description.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    let bind = |portal: &str, formats: Vec<i16>| FrontendMessage::Bind {
        portal: b(portal),
        statement: Bytes::new(),
        param_formats: vec![],
        params: vec![],
        result_formats: formats,
    };
    s.send(&[
        FrontendMessage::Parse { name: Bytes::new(), sql: b("select true"), param_types: vec![] },
        bind("a", vec![1]),
        FrontendMessage::Describe { target: Target::Portal, name: b("a") },
        FrontendMessage::Parse { name: Bytes::new(), sql: b("select ssn from patients"), param_types: vec![] },
        bind("", vec![]),
        FrontendMessage::Execute { portal: Bytes::new(), max_rows: 0 },
        FrontendMessage::Sync,
    ])
    .await;
    let seen = s.until_ready().await;
    assert!(!leaks(&seen), "{seen:?}");
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::ErrorResponse(_))), "it fails closed: {seen:?}");

    // Statements described once, then bound and executed with no Describe (as asyncpg and JDBC
    // do), twice over the unnamed portal in one write: each portal's rows are read through its
    // own statement's columns.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    let parse = |name: &str, sql: &str| FrontendMessage::Parse { name: b(name), sql: b(sql), param_types: vec![] };
    let describe = |name: &str| FrontendMessage::Describe { target: Target::Statement, name: b(name) };
    let bind_stmt = |statement: &str| FrontendMessage::Bind {
        portal: Bytes::new(),
        statement: b(statement),
        param_formats: vec![],
        params: vec![],
        result_formats: vec![1],
    };
    let execute = || FrontendMessage::Execute { portal: Bytes::new(), max_rows: 0 };
    s.send(&[
        parse("a", "select ssn from patients order by id"),
        describe("a"),
        parse("b", "select true as ok"),
        describe("b"),
        FrontendMessage::Sync,
    ])
    .await;
    s.until_ready().await;
    s.send(&[bind_stmt("a"), execute(), bind_stmt("b"), execute(), FrontendMessage::Sync]).await;
    let seen = s.until_ready().await;
    assert!(!leaks(&seen), "{seen:?}");
    let rows: Vec<String> = seen
        .iter()
        .filter_map(|m| match m {
            BackendMessage::DataRow(v) => {
                Some(String::from_utf8_lossy(v[0].as_deref().unwrap_or(b"NULL")).into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["***-**-9999", "***-**-1120", "\u{1}"], "{seen:?}");

    // A statement closed and parsed again under its name before the first description came
    // back: the description is not the new statement's, so its rows end the session.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    s.send(&[
        parse("s", "select true as ok"),
        describe("s"),
        FrontendMessage::Close { target: Target::Statement, name: b("s") },
        parse("s", "select ssn from patients"),
        FrontendMessage::Sync,
        bind_stmt("s"),
        execute(),
        FrontendMessage::Sync,
    ])
    .await;
    let mut seen = s.until_ready().await;
    seen.extend(s.until_ready().await);
    assert!(!leaks(&seen), "{seen:?}");

    // A portal bound from the unnamed statement outlives it: once the statement is parsed
    // again, a Describe of the old portal does not describe the new statement.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    s.send(&[
        parse("", "select true"),
        FrontendMessage::Bind {
            portal: b("p1"),
            statement: Bytes::new(),
            param_formats: vec![],
            params: vec![],
            result_formats: vec![1],
        },
        parse("", "select ssn from patients"),
        FrontendMessage::Describe { target: Target::Portal, name: b("p1") },
        bind_stmt(""),
        execute(),
        FrontendMessage::Sync,
    ])
    .await;
    let seen = s.until_ready().await;
    assert!(!leaks(&seen), "{seen:?}");

    // An xml value is read as its reader reads it: character references decoded.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    s.send(&[FrontendMessage::Query {
        sql: b("select '<n>SSN 219&#45;09&#45;9999 ok</n>'::xml as x, '<m a=\"1\">jane&#64;example.org</m>'::xml as y"),
    }])
    .await;
    let seen = s.until_ready().await;
    let row = seen.iter().find_map(|m| match m {
        BackendMessage::DataRow(v) => Some(
            v.iter().map(|c| String::from_utf8_lossy(c.as_deref().unwrap_or(b"NULL")).into_owned()).collect::<Vec<_>>(),
        ),
        _ => None,
    });
    assert_eq!(
        row,
        Some(vec!["<n>SSN [PHI:SSN] ok</n>".to_owned(), "<m a=\"1\">[PHI:EMAIL]</m>".to_owned()]),
        "{seen:?}"
    );

    // A date is judged by its type, whatever DateStyle writes it as; bytea by the bytes it holds.
    s.send(&[FrontendMessage::Query { sql: b("set datestyle = 'German'") }]).await;
    s.until_ready().await;
    s.send(&[FrontendMessage::Query {
        sql: b("select date '1971-03-04' as d, convert_to('SSN 219-09-9999', 'UTF8') as b, '\\x00ff'::bytea as ok"),
    }])
    .await;
    let seen = s.until_ready().await;
    let row = seen.iter().find_map(|m| match m {
        BackendMessage::DataRow(v) => Some(v.clone()),
        _ => None,
    });
    assert_eq!(row, Some(vec![None, None, Some(b("\\x00ff"))]), "{seen:?}");

    // A column rule cannot follow its column through an expression, a set operation or a
    // whole row: such statements are refused, and the session goes on.
    for sql in [
        "select replace(ssn, '-', '') as s from patients",
        "select ssn from patients union all select 'x'",
        "select p from patients p",
    ] {
        s.send(&[FrontendMessage::Query { sql: b(sql) }]).await;
        let seen = s.until_ready().await;
        assert_eq!(sqlstate(&seen), "42501", "{sql}: {seen:?}");
        assert!(!leaks(&seen) && !format!("{seen:?}").contains("219099999"), "{seen:?}");
    }

    // A fast-path call of pg_backend_pid (OID 2026): no SQL text to judge, so it is refused.
    let mut s = Raw::login(addr, AGENT_KEY).await;
    s.send(&[FrontendMessage::FunctionCall(Bytes::from_static(&[0, 0, 0x07, 0xEA, 0, 0, 0, 0, 0, 0]))]).await;
    let seen = s.until_ready().await;
    assert_eq!(sqlstate(&seen), "42501", "{seen:?}");
    assert!(matches!(seen.last(), Some(BackendMessage::ReadyForQuery { .. })), "the session goes on: {seen:?}");

    // A value copied into application_name comes back as a ParameterStatus, masked. (A ruled
    // column cannot get there: `'SSN ' || ssn` is an expression its rule cannot follow.)
    s.send(&[FrontendMessage::Query {
        sql: b("select set_config('application_name', 'SSN ' || ssn, false) from patients where id = 1"),
    }])
    .await;
    assert_eq!(sqlstate(&s.until_ready().await), "42501");
    s.send(&[FrontendMessage::Query {
        sql: b("select set_config('application_name', 'SSN 219-' || '09-9999', false) from patients where id = 1"),
    }])
    .await;
    let seen = s.until_ready().await;
    assert!(
        seen.iter().any(|m| matches!(m, BackendMessage::ParameterStatus { name, .. } if name == "application_name")),
        "{seen:?}"
    );
    assert!(!leaks(&seen), "{seen:?}");
    // But not into the role.
    s.send(&[FrontendMessage::Query { sql: b("select set_config('role', 'postgres', false)") }]).await;
    let seen = s.until_ready().await;
    assert_eq!(sqlstate(&seen), "42501", "{seen:?}");

    // Startup parameters under which PostgreSQL would read a string differently from the gateway.
    for param in [
        ("options", "-c standard_conforming_strings=off"),
        ("options", "-c standard-conforming-strings=off"),
        ("options", "--role=postgres"),
        ("client_encoding", "SJIS"),
    ] {
        let (_s, seen) = Raw::start(addr, AGENT_KEY, &[param]).await;
        assert_eq!(sqlstate(&seen), "42501", "{param:?}: {seen:?}");
        assert!(!seen.iter().any(|m| matches!(m, BackendMessage::ReadyForQuery { .. })), "{seen:?}");
    }
    // A trusted role may set them.
    let (_s, seen) = Raw::start(addr, DBA_KEY, &[("options", "-c standard_conforming_strings=off")]).await;
    assert!(matches!(seen.last(), Some(BackendMessage::ReadyForQuery { .. })), "{seen:?}");
    gw.stop().await;
}

/// In a string of several statements (a trusted role may send one), a statement held for
/// approval does not hide a denied one: the deny is what the caller gets and what is journaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_statement_does_not_hide_a_denied_one() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::FrontendMessage;
    use bytes::Bytes;

    let extra = format!(
        "{}[[rule]]\nid = \"hold-reads\"\neffect = \"require_approval\"\nsql = {{ kinds = [\"select\"] }}\n\
         [[rule]]\nid = \"no-deletes\"\neffect = \"deny\"\nreason = \"no deletes here\"\n\
         sql = {{ kinds = [\"delete\"] }}\n",
        api_key("dba", DBA_KEY, "dba"),
    );
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("sql_trusted_roles = [\"dba\"]", &extra).await;
    let mut s = Raw::login(gw.addr("pg"), DBA_KEY).await;
    for (sql, rule) in [
        ("select 41 + 1", "hold-reads"),
        ("select 41 + 1; delete from pg_class where false", "no-deletes"),
        ("delete from pg_class where false; select 1", "no-deletes"),
    ] {
        s.send(&[FrontendMessage::Query { sql: Bytes::from(sql) }]).await;
        let seen = s.until_ready().await;
        let message = seen
            .iter()
            .find_map(|m| match m {
                BackendMessage::ErrorResponse(_) => m.field(b'M').map(|c| String::from_utf8_lossy(c).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        assert!(message.contains(rule), "{sql}: {seen:?}");
        assert!(!seen.iter().any(|m| matches!(m, BackendMessage::DataRow(_))), "{sql}: {seen:?}");
    }
    drop(s);
    gw.stop().await;
    let rules: Vec<String> = sessions(gw.data_dir())
        .iter()
        .flat_map(|l| replay_json(gw.data_dir(), l["id"].as_str().unwrap()))
        .filter(|f| f["kind"] == "decision" && f["meta"]["effect"] != "allow")
        .map(|f| f["meta"]["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rules, ["hold-reads", "no-deletes", "no-deletes"]);
}

/// A route that names its databases serves those only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_serves_only_the_databases_it_names() {
    use airlock_decoders::postgres::backend::BackendMessage;
    let Rig { mut gw, pg: _pg, dir: _dir, .. } =
        rig("databases = [\"postgres\"]", &api_key("agent", AGENT_KEY, "agent")).await;
    let (_ok, seen) = Raw::start(gw.addr("pg"), AGENT_KEY, &[]).await;
    assert!(matches!(seen.last(), Some(BackendMessage::ReadyForQuery { .. })), "{seen:?}");
    let (_refused, seen) = Raw::start(gw.addr("pg"), AGENT_KEY, &[("database", "template1")]).await;
    let code = seen.iter().find_map(|m| m.field(b'C')).map(|c| String::from_utf8_lossy(c).into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{seen:?}");
    let message = seen.iter().find_map(|m| m.field(b'M')).map(|c| String::from_utf8_lossy(c).into_owned());
    assert!(message.unwrap_or_default().contains("`template1` is not served"), "{seen:?}");
    gw.stop().await;
}

/// The guardrails refuse every statement known to change how the server reads SQL text; a
/// change that comes about some other way (here, a function a trusted role defined) ends the
/// untrusted session as soon as the server reports it, before anything else is judged under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_server_reads_text_differently_ends() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::FrontendMessage;
    use bytes::Bytes;

    let keys = format!("{}{}", api_key("agent", AGENT_KEY, "agent"), api_key("dba", DBA_KEY, "dba"));
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("sql_trusted_roles = [\"dba\"]", &keys).await;
    let q = |sql: &'static str| FrontendMessage::Query { sql: Bytes::from_static(sql.as_bytes()) };
    let mut dba = Raw::login(gw.addr("pg"), DBA_KEY).await;
    dba.send(&[q("create function flip() returns text language sql as \
                   $$ select set_config('standard_conforming_strings', 'off', false) $$")])
        .await;
    let seen = dba.until_ready().await;
    assert!(!seen.iter().any(|m| matches!(m, BackendMessage::ErrorResponse(_))), "{seen:?}");
    let mut agent = Raw::login(gw.addr("pg"), AGENT_KEY).await;
    // Asked for outright, it is refused and the session goes on.
    agent.send(&[q("set standard_conforming_strings = off")]).await;
    let seen = agent.until_ready().await;
    let code = seen.iter().find_map(|m| m.field(b'C')).map(|c| String::from_utf8_lossy(c).into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{seen:?}");
    // Through the function, the server turns it off; the session ends there.
    agent.send(&[q("select flip()")]).await;
    let mut seen = Vec::new();
    while let Some(m) = agent.next().await {
        seen.push(m);
    }
    let fatal = seen.iter().find_map(|m| m.field(b'S')).map(|c| String::from_utf8_lossy(c).into_owned());
    assert_eq!(fatal.as_deref(), Some("FATAL"), "{seen:?}");
    assert!(!seen.iter().any(|m| matches!(m, BackendMessage::ParameterStatus { .. })), "{seen:?}");
    // The trusted role may do it and goes on.
    dba.send(&[q("select flip()"), q("select 1")]).await;
    dba.until_ready().await;
    let seen = dba.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::DataRow(_))), "{seen:?}");
    gw.stop().await;
    let reasons: Vec<String> =
        sessions(gw.data_dir()).iter().map(|s| s["close_reason"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("the server's reading of SQL text changed: standard_conforming_strings")),
        "{reasons:?}"
    );
}

/// A reload puts the new policy in force for statements of sessions already open, and ends
/// the sessions of an identity it removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_to_open_sessions() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::FrontendMessage;
    use bytes::Bytes;

    let Rig { mut gw, pg: _pg, dir: _dir, config } = rig("", &api_key("agent", AGENT_KEY, "agent")).await;
    let mut s = Raw::login(gw.addr("pg"), AGENT_KEY).await;
    // A second session, which sends nothing after it logs in.
    let mut idle = Raw::login(gw.addr("pg"), AGENT_KEY).await;
    let query = || FrontendMessage::Query { sql: Bytes::from_static(b"select count(*) from pg_class") };
    s.send(&[query()]).await;
    let seen = s.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::DataRow(_))), "{seen:?}");
    // Statements prepared now, in the protocol and in SQL, to be run after the reload.
    let parse = |name: &'static str, sql: &'static str| FrontendMessage::Parse {
        name: Bytes::from_static(name.as_bytes()),
        sql: Bytes::from_static(sql.as_bytes()),
        param_types: vec![],
    };
    s.send(&[parse("cat", "select count(*) from pg_class"), parse("one", "select 1"), FrontendMessage::Sync]).await;
    s.until_ready().await;
    s.send(&[FrontendMessage::Query { sql: Bytes::from_static(b"prepare q as select count(*) from pg_class") }]).await;
    s.until_ready().await;
    // A PREPARE sent through the extended protocol, as psycopg and JDBC send all SQL.
    let mut prepare_q2 = vec![parse("", "prepare q2 as select count(*) from pg_class")];
    prepare_q2.extend(run(""));
    s.send(&prepare_q2).await;
    s.until_ready().await;
    fn run(name: &'static str) -> [FrontendMessage; 3] {
        [
            FrontendMessage::Bind {
                portal: Bytes::new(),
                statement: Bytes::from_static(name.as_bytes()),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute { portal: Bytes::new(), max_rows: 0 },
            FrontendMessage::Sync,
        ]
    }
    let rule = "[[rule]]\nid = \"no-catalog\"\neffect = \"deny\"\nreason = \"not the catalog\"\n\
                sql = { tables = [\"pg_class\"] }\n";
    let access = airlock::config::Config::parse(&format!("{config}\n{rule}")).unwrap().build_access().unwrap();
    gw.gw().reload_access(access).unwrap();
    s.send(&[query()]).await;
    let seen = s.until_ready().await;
    let code = seen.iter().find_map(|m| m.field(b'C')).map(|c| String::from_utf8_lossy(c).into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{seen:?}");
    // What was prepared before is judged again when it runs: by its text, under the new rule.
    let q = |sql: &'static str| FrontendMessage::Query { sql: Bytes::from_static(sql.as_bytes()) };
    let mut execute_q2 = vec![parse("", "execute q2")];
    execute_q2.extend(run(""));
    for refused in [
        &run("cat")[..],
        &[q("execute q")],
        &[q("explain analyze execute q")],
        &execute_q2[..],
        // A statement prepared in SQL, bound over the protocol: one namespace.
        &run("q"),
        // Preparing a taken name again: PostgreSQL would refuse it and go on running the old
        // statement, which the record must go on describing.
        &[q("prepare q as select 1")],
        // A name the gateway never saw prepared: what it reads is unknown, and the rule on
        // tables refuses what it cannot rule out.
        &[q("execute never_prepared")],
    ] {
        s.send(refused).await;
        let seen = s.until_ready().await;
        let code = seen.iter().find_map(|m| m.field(b'C')).map(|c| String::from_utf8_lossy(c).into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{seen:?}");
        assert!(!seen.iter().any(|m| matches!(m, BackendMessage::DataRow(_))), "{seen:?}");
        let message = seen.iter().find_map(|m| m.field(b'M')).map(|c| String::from_utf8_lossy(c).into_owned());
        let message = message.unwrap_or_default();
        assert!(message.contains("not the catalog") || message.contains("already exists"), "{seen:?}");
    }
    // A statement the new rule does not touch runs as before.
    s.send(&run("one")).await;
    let seen = s.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::DataRow(_))), "{seen:?}");
    // The key removed: the sessions it opened end at once, busy or idle, with FATAL 28000.
    let without = config.replace(&api_key("agent", AGENT_KEY, "agent"), &api_key("other", "ak_other_1", "agent"));
    let access = airlock::config::Config::parse(&without).unwrap().build_access().unwrap();
    gw.gw().reload_access(access).unwrap();
    for s in [&mut s, &mut idle] {
        let mut seen = Vec::new();
        while let Some(m) = s.next().await {
            seen.push(m);
        }
        let code = seen.iter().find_map(|m| m.field(b'C')).map(|c| String::from_utf8_lossy(c).into_owned());
        assert_eq!(code.as_deref(), Some("28000"), "{seen:?}");
    }
    // (The first reload, which only added a rule, ended neither.)
    gw.stop().await;
    let closes: Vec<String> =
        sessions(gw.data_dir()).iter().map(|s| s["close_reason"].as_str().unwrap().to_owned()).collect();
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert!(closes.iter().all(|r| r.starts_with("credential revoked: the API key `agent`")), "{closes:?}");
}

/// Break-glass on a PostgreSQL route: the emergency role's statements skip the approval hold,
/// every record of its session carries the mark, and the webhook is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_on_postgres_is_marked_and_notified() {
    use airlock_decoders::postgres::backend::BackendMessage;
    use airlock_decoders::postgres::frontend::FrontendMessage;
    use bytes::Bytes;

    const ER_KEY: &str = "ak_pg_emergency_9";
    let (hook, mut hooks) = webhook_server().await;
    let extra = format!(
        "{}{}[break_glass]\nrole = \"emergency\"\nwebhook = \"http://{hook}/airlock\"\n\n\
         [[rule]]\nid = \"hold-reads\"\neffect = \"require_approval\"\nreason = \"reads need a second person\"\n\
         sql = {{ kinds = [\"select\"] }}\n",
        api_key("agent", AGENT_KEY, "agent"),
        api_key("er", ER_KEY, "emergency"),
    );
    let Rig { mut gw, pg: _pg, dir: _dir, .. } = rig("", &extra).await;
    let query = || FrontendMessage::Query { sql: Bytes::from_static(b"select 41 + 1") };
    // An ordinary caller is held (refused until approvals exist).
    let mut s = Raw::login(gw.addr("pg"), AGENT_KEY).await;
    s.send(&[query()]).await;
    let seen = s.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::ErrorResponse(_))), "{seen:?}");
    drop(s);
    // The emergency role goes through, marked and announced.
    let mut s = Raw::login(gw.addr("pg"), ER_KEY).await;
    s.send(&[query()]).await;
    let seen = s.until_ready().await;
    assert!(seen.iter().any(|m| matches!(m, BackendMessage::DataRow(v) if v[0].as_deref() == Some(&b"42"[..]))));
    drop(s);
    let note = tokio::time::timeout(WAIT, hooks.recv()).await.expect("webhook not called").unwrap();
    assert_eq!(note["event"], "break_glass_session_started");
    assert_eq!(note["route"], "pg");
    gw.stop().await;
    let er =
        sessions(gw.data_dir()).into_iter().find(|s| s["principal"].as_str().unwrap_or("").contains("er")).unwrap();
    assert_eq!(er["id"], note["session"]);
    let frames = replay_json(gw.data_dir(), er["id"].as_str().unwrap());
    assert!(frames.iter().any(|f| f["kind"] == "data"));
    for f in &frames {
        let marked = if f["kind"] == "data" { f["break_glass"] == true } else { f["meta"]["break_glass"] == true };
        assert!(marked, "record not marked break-glass: {f}");
    }
}
