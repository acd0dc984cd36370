//! Identity and access on a raw TCP route, end to end: mutual TLS names the principal, the route's
//! `allow_roles` and the `[[rule]]`s decide, every decision is journaled, an expiring certificate
//! ends its session (automatic logoff), break-glass marks its records and fires the webhook, and
//! SIGHUP puts a new policy in force without dropping open sessions.

use std::path::Path;
use std::time::Duration;

use airlock_tests::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const HOUR: Duration = Duration::from_secs(3600);

/// An mTLS route to `upstream` with client principals from the DNS SAN, plus `extra` TOML.
fn mtls_config(pki: &TestPki, upstream: std::net::SocketAddr, route_extra: &str, extra: &str) -> String {
    format!(
        "{}tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\", client_principal = \"san_dns\" }}\n{route_extra}\n\n\
         [[identity.certificate]]\nsubject = \"*.svc.internal\"\nroles = [\"service\"]\n\n\
         [[identity.certificate]]\nsubject = \"*.er.internal\"\nroles = [\"emergency\"]\n\n{extra}",
        route("echo", upstream, ""),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_pem.display(),
    )
}

async fn connect(
    pki: &TestPki,
    cert: &Path,
    key: &Path,
    addr: std::net::SocketAddr,
) -> std::io::Result<impl AsyncReadExt + AsyncWriteExt + Unpin> {
    let tcp = TcpStream::connect(addr).await?;
    pki.connector_with_cert(cert, key).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// Writes `msg` and expects it echoed back.
async fn echoes<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    matches!(timeout(WAIT, s.read_exact(&mut got)).await, Ok(Ok(_))) && got == msg
}

/// Whether the gateway closed (EOF or error) within the bound, without echoing.
async fn closed<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S) -> bool {
    let _ = s.write_all(b"anyone?").await;
    let mut buf = [0u8; 16];
    matches!(timeout(WAIT, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

fn frames_of_only_session(data: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let list = sessions(data);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    (list[0].clone(), replay_json(data, &id))
}

fn decisions(frames: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    frames.iter().filter(|f| f["kind"] == "decision").map(|f| &f["meta"]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_certificate_names_the_principal_and_the_decision_is_journaled() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&mtls_config(&pki, upstream, "allow_roles = [\"service\"]", "")).await.unwrap();
    let (cert, key) = pki.client_cert("billing", &["billing.svc.internal"], HOUR, false);
    let mut s = connect(&pki, &cert, &key, gw.addr("echo")).await.unwrap();
    assert!(echoes(&mut s, b"hello through mTLS").await);
    drop(s);
    gw.stop().await;

    let (summary, frames) = frames_of_only_session(gw.data_dir());
    assert_eq!(summary["principal"], "mtls:billing.svc.internal");
    let open = &frames[0]["meta"];
    assert_eq!(open["identity"]["subject"], "billing.svc.internal");
    assert_eq!(open["identity"]["method"], "mtls");
    assert_eq!(open["identity"]["roles"], serde_json::json!(["service"]));
    assert!(open["identity"]["expires_at"].as_i64().unwrap() > 0);
    assert!(open["identity"]["issuer"].as_str().unwrap().contains("Airlock Test CA"));
    // The decision is on record before the upstream connection (write-ahead).
    assert_eq!(frames[1]["kind"], "decision");
    assert_eq!(frames[2]["kind"], "upstream_connected");
    let d = &frames[1]["meta"];
    assert_eq!((d["phase"].as_str(), d["effect"].as_str()), (Some("session"), Some("allow")));
    assert_eq!(d["rule"], "route:echo:default");
    assert_eq!(d["policy_version"], open["policy_version"]);
    assert_eq!(d["policy_version"].as_str().unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_and_expired_certificates_are_refused_and_journaled() {
    let pki = TestPki::new();
    let stranger_ca = TestPki::new();
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&mtls_config(&pki, upstream, "", "")).await.unwrap();
    let addr = gw.addr("echo");

    // Signed by a CA the route does not trust.
    let (cert, key) = stranger_ca.client_cert("mallory", &["mallory.svc.internal"], HOUR, false);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = airlock::tls::connector(Some(&pki.ca_pem), Some((cert, key))).unwrap();
    match connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await {
        Err(_) => {}
        // TLS 1.3: the client finishes first; the server's alert arrives on the first read.
        Ok(mut s) => assert!(closed(&mut s).await, "an untrusted certificate got through"),
    }
    // Trusted CA, but expired.
    let (cert, key) = pki.client_cert("old", &["old.svc.internal"], HOUR, true);
    if let Ok(mut s) = connect(&pki, &cert, &key, addr).await {
        assert!(closed(&mut s).await, "an expired certificate got through");
    }
    // No certificate at all.
    let tcp = TcpStream::connect(addr).await.unwrap();
    if let Ok(mut s) = pki.connector().connect(ServerName::try_from("localhost").unwrap(), tcp).await {
        assert!(closed(&mut s).await, "a caller without a certificate got through");
    }

    let mut ok = false;
    for _ in 0..100 {
        if sessions(gw.data_dir()).iter().filter(|s| s["closed_us"].is_number()).count() == 3 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "three refusals journaled");
    gw.stop().await;
    let list = sessions(gw.data_dir());
    let reasons: Vec<String> = list.iter().map(|s| s["close_reason"].as_str().unwrap().to_string()).collect();
    assert!(reasons.iter().all(|r| r.starts_with("client TLS handshake failed")), "{reasons:?}");
    // The stranger CA has the same name as ours, so rustls finds an issuer whose signature fails.
    assert!(reasons.iter().any(|r| r.contains("BadSignature") || r.contains("UnknownIssuer")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("certificate expired")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("no certificates")), "{reasons:?}");
    for s in &list {
        let frames = replay_json(gw.data_dir(), s["id"].as_str().unwrap());
        let d = decisions(&frames);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0]["phase"].as_str(), d[0]["effect"].as_str()), (Some("authenticate"), Some("deny")));
        assert_eq!(d[0]["rule"], "authn:certificate");
        assert!(!frames.iter().any(|f| f["kind"] == "upstream_connected"), "nothing opened upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_an_allowed_role_is_closed_before_the_upstream() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&mtls_config(&pki, upstream, "allow_roles = [\"service\"]", "")).await.unwrap();
    let (cert, key) = pki.client_cert("intruder", &["intruder.other.internal"], HOUR, false);
    let mut s = connect(&pki, &cert, &key, gw.addr("echo")).await.unwrap();
    assert!(closed(&mut s).await);
    drop(s);
    gw.stop().await;

    let (summary, frames) = frames_of_only_session(gw.data_dir());
    assert_eq!(summary["principal"], "mtls:intruder.other.internal");
    let reason = summary["close_reason"].as_str().unwrap();
    assert!(reason.contains("route:echo:allow_roles") && reason.contains("`service`"), "{reason}");
    let d = decisions(&frames);
    assert_eq!((d[0]["effect"].as_str(), d[0]["rule"].as_str()), (Some("deny"), Some("route:echo:allow_roles")));
    assert!(!frames.iter().any(|f| f["kind"] == "upstream_connected" || f["kind"] == "data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_certificate_expires() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let mut gw = TestGateway::start(&mtls_config(&pki, upstream, "", "")).await.unwrap();
    // Valid for three more seconds (certificate times have one-second resolution).
    let (cert, key) = pki.client_cert("short", &["short.svc.internal"], Duration::from_secs(3), false);
    let mut s = connect(&pki, &cert, &key, gw.addr("echo")).await.unwrap();
    assert!(echoes(&mut s, b"still valid").await);
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let r = timeout(Duration::from_secs(15), s.read(&mut buf)).await.expect("the session outlived its certificate");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(s);
    gw.stop().await;
    let (summary, _) = frames_of_only_session(gw.data_dir());
    assert!(summary["close_reason"].as_str().unwrap().starts_with("automatic logoff"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_skips_the_hold_marks_every_record_and_notifies() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let (hook, mut hooks) = webhook_server().await;
    let extra = format!(
        "[break_glass]\nrole = \"emergency\"\nwebhook = \"http://{hook}/airlock\"\n\n\
         [[rule]]\nid = \"hold-everything\"\neffect = \"require_approval\"\nreason = \"PHI export needs a second person\"\n"
    );
    let mut gw = TestGateway::start(&mtls_config(&pki, upstream, "", &extra)).await.unwrap();
    let addr = gw.addr("echo");

    // An ordinary service is held, and holds are refused until approvals exist.
    let (cert, key) = pki.client_cert("svc", &["svc.svc.internal"], HOUR, false);
    let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(closed(&mut s).await);
    drop(s);
    // The emergency role goes through.
    let (cert, key) = pki.client_cert("dr-who", &["dr-who.er.internal"], HOUR, false);
    let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(echoes(&mut s, b"code blue").await);
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(WAIT, s.read_to_end(&mut rest)).await;
    drop(s);

    let note = timeout(WAIT, hooks.recv()).await.expect("webhook not called").unwrap();
    assert_eq!(note["event"], "break_glass_session_started");
    assert_eq!(note["principal"], "mtls:dr-who.er.internal");
    assert_eq!(note["route"], "echo");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    assert_eq!(list.len(), 2);
    let held = list.iter().find(|s| s["principal"] == "mtls:svc.svc.internal").unwrap();
    let reason = held["close_reason"].as_str().unwrap();
    assert!(reason.contains("requires human approval") && reason.contains("hold-everything"), "{reason}");
    let bg = list.iter().find(|s| s["principal"] == "mtls:dr-who.er.internal").unwrap();
    assert_eq!(bg["id"].as_str().unwrap(), note["session"].as_str().unwrap());
    let frames = replay_json(gw.data_dir(), bg["id"].as_str().unwrap());
    let d = decisions(&frames);
    assert_eq!((d[0]["effect"].as_str(), d[0]["rule"].as_str()), (Some("allow"), Some("hold-everything")));
    assert!(d[0]["reason"].as_str().unwrap().starts_with("break-glass"));
    assert!(frames.iter().any(|f| f["kind"] == "data"));
    for f in &frames {
        let marked = if f["kind"] == "data" { f["break_glass"] == true } else { f["meta"]["break_glass"] == true };
        assert!(marked, "record not marked break-glass: {f}");
    }
    // The held session's records carry no mark.
    let frames = replay_json(gw.data_dir(), held["id"].as_str().unwrap());
    assert!(frames.iter().all(|f| f["meta"]["break_glass"].is_null()));
}

/// A reload puts the new policy in force for new connections, and judges the open ones again:
/// a session the new policy still admits runs on, one it refuses ends, and each decision is
/// journaled under its policy version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_judges_open_sessions_again() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = |allow: &str| {
        let cfg = mtls_config(&pki, upstream, &format!("allow_roles = [{allow}]"), "")
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
        format!("[journal]\ndata_dir = \"{}\"\n\n[admin]\nenabled = false\n\n{cfg}", dir.path().join("data").display())
    };
    let mut gw = GatewayProcess::start(dir.path(), &base("\"service\""), addr).unwrap();
    let pid = gw.child.id().to_string();
    let hup = || assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let (cert, key) = pki.client_cert("etl", &["etl.svc.internal"], HOUR, false);
    let mut kept = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(echoes(&mut kept, b"before reload").await);

    // A file that does not build is refused whole: the running policy stays. (Were it applied,
    // its allow_roles would shut `etl` out.)
    std::fs::write(&gw.config, format!("{}\n[gateway]\nnot_a_field = 1\n", base("\"auditor\""))).unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(echoes(&mut s, b"bad file ignored").await);
    drop(s);
    // So is a file whose routes differ from the running ones (they need a restart).
    std::fs::write(&gw.config, base("\"auditor\"").replace("name = \"echo\"", "name = \"renamed\"")).unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(echoes(&mut s, b"renamed routes ignored").await);
    drop(s);
    // And one that changes a route setting only a restart applies.
    std::fs::write(&gw.config, base("\"auditor\"").replace("name = \"echo\"", "name = \"echo\"\nmax_connections = 7"))
        .unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
    assert!(echoes(&mut s, b"fixed setting ignored").await);
    drop(s);
    assert!(echoes(&mut kept, b"after refused reloads").await);

    // A new policy that still admits `etl`: the open session is judged again and runs on.
    std::fs::write(&gw.config, base("\"service\", \"auditor\"")).unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(echoes(&mut kept, b"still admitted").await);

    // One that shuts `etl` out: new connections are refused, and the open session ends.
    std::fs::write(&gw.config, base("\"auditor\"")).unwrap();
    hup();
    let mut refused = false;
    for _ in 0..50 {
        let mut s = connect(&pki, &cert, &key, addr).await.unwrap();
        if !echoes(&mut s, b"after reload").await {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the new policy never took effect");
    assert!(closed(&mut kept).await, "the session opened under the old policy was not ended");
    drop(kept);
    let status = gw.signal_and_wait("-TERM");
    assert!(status.success(), "{status:?}");

    let data = dir.path().join("data");
    let list = sessions(&data);
    let withdrawn: Vec<_> = list
        .iter()
        .filter(|s| s["close_reason"].as_str().unwrap().starts_with("access withdrawn by a reload"))
        .collect();
    // (A probe of the loop above may have been open when the reload landed, and been ended too.)
    let kept = withdrawn.iter().min_by_key(|s| s["opened_us"].as_u64().unwrap()).expect("no session was withdrawn");
    assert_eq!(kept["bytes_from_client"], 48, "{kept}");
    let reason = kept["close_reason"].as_str().unwrap();
    assert!(reason.contains("route:echo:allow_roles"), "{reason}");
    // Its decisions: admitted, admitted again under the second policy, refused under the third.
    let judged: Vec<(String, String)> = decisions(&replay_json(&data, kept["id"].as_str().unwrap()))
        .into_iter()
        .map(|d| {
            assert_eq!(d["phase"], "session");
            (d["effect"].as_str().unwrap().to_string(), d["policy_version"].as_str().unwrap().to_string())
        })
        .collect();
    let effects: Vec<&str> = judged.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(effects, ["allow", "allow", "deny"], "{judged:?}");
    let versions: std::collections::BTreeSet<&str> = judged.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(versions.len(), 3, "each decision names the policy it was made under: {judged:?}");
    // A connection refused after the reload was judged under the last version.
    let refused_under: std::collections::BTreeSet<String> = list
        .iter()
        .filter(|s| s["id"] != kept["id"])
        .flat_map(|s| {
            decisions(&replay_json(&data, s["id"].as_str().unwrap())).into_iter().cloned().collect::<Vec<_>>()
        })
        .filter(|d| d["phase"] == "session" && d["effect"] == "deny")
        .map(|d| d["policy_version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refused_under.len(), 1, "{refused_under:?}");
    assert!(refused_under.contains(&judged[2].1), "{refused_under:?} {judged:?}");
}

/// Client certificates name the caller on HTTP and PostgreSQL routes too: an anonymous HTTP
/// route that verifies them journals the certificate's principal and applies its roles, and a
/// PostgreSQL route that verifies them takes no caller who skips TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_callers_on_http_and_postgres_routes() {
    let pki = TestPki::new();
    let upstream = HttpUpstream::start().await;
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\", client_principal = \"san_dns\" }}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_pem.display()
    );
    let config = format!(
        "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\nanonymous = true\n\
         allow_roles = [\"service\"]\n{tls}\n\
         [[route]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"postgres\"\nupstream = \"127.0.0.1:9\"\n\
         anonymous = true\nupstream_user = \"x\"\n{tls}\n\
         [[route]]\nname = \"guarded\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\n{}\n\
         [[identity.certificate]]\nsubject = \"*.svc.internal\"\nroles = [\"service\"]\n",
        upstream.addr,
        upstream.addr,
        tls.replace(", client_principal = \"san_dns\"", ""),
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    // Certificates that only guard the connection: each request still needs a bearer credential.
    let guarded = format!("https://localhost:{}/v1/models", gw.addr("guarded").port());
    let guarded_resolve = format!("localhost:{}:127.0.0.1", gw.addr("guarded").port());
    let url = format!("https://localhost:{}/v1/models", gw.addr("web").port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr("web").port());
    let ca = pki.ca_pem.display().to_string();
    let (cert, key) = pki.client_cert("etl", &["etl.svc.internal"], HOUR, false);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&["--resolve", &resolve, "--cacert", &ca, "--cert", &cert, "--key", &key, &url])
    });
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&["--resolve", &guarded_resolve, "--cacert", &ca, "--cert", &cert, "--key", &key, &guarded])
    });
    assert_eq!(code, 401, "{body}");
    // A certificate whose name maps to no role with access is refused by the route.
    let (other, other_key) = pki.client_cert("web", &["web.example.org"], HOUR, false);
    let (other, other_key) = (other.display().to_string(), other_key.display().to_string());
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&["--resolve", &resolve, "--cacert", &ca, "--cert", &other, "--key", &other_key, &url])
    });
    assert_eq!(code, 403, "{body}");

    // PostgreSQL: a startup without SSLRequest is refused before anything else.
    let mut c = TcpStream::connect(gw.addr("db")).await.unwrap();
    let mut startup = Vec::new();
    let body = b"\0\x03\0\0user\0x\0database\0x\0\0";
    startup.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    startup.extend_from_slice(body);
    c.write_all(&startup).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(got.first() == Some(&b'E') && text.contains("28000") && text.contains("client certificate"), "{text}");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    let web: Vec<_> = list.iter().filter(|s| s["route"] == "web").collect();
    assert!(web.iter().any(|s| s["principal"] == "mtls:etl.svc.internal"), "{web:?}");
    assert!(web.iter().any(|s| s["principal"] == "mtls:web.example.org"), "{web:?}");
    assert!(list.iter().any(|s| s["route"] == "db"
        && s["close_reason"].as_str().is_some_and(|r| r.contains("requires TLS with a client certificate"))));
}

/// A client certificate that the route's CRL lists is refused at the handshake; another from
/// the same CA goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused() {
    let pki = TestPki::new();
    let upstream = echo_server().await;
    let (leaked, leaked_key) = pki.client_cert("leaked", &["leaked.svc.internal"], HOUR, false);
    let (kept, kept_key) = pki.client_cert("kept", &["kept.svc.internal"], HOUR, false);
    let crl = pki.revocation_list(&[&leaked]);
    let config = mtls_config(&pki, upstream, "", "").replace(
        "client_principal = \"san_dns\"",
        &format!("client_principal = \"san_dns\", client_crl = \"{}\"", crl.display()),
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let addr = gw.addr("echo");
    let mut s = connect(&pki, &kept, &kept_key, addr).await.unwrap();
    assert!(echoes(&mut s, b"still trusted").await);
    drop(s);
    // TLS 1.3: the client finishes its side first; the refusal arrives as an alert after.
    let refused = match connect(&pki, &leaked, &leaked_key, addr).await {
        Err(_) => true,
        Ok(mut s) => closed(&mut s).await,
    };
    assert!(refused, "a revoked certificate was let in");
    gw.stop().await;
    let list = sessions(gw.data_dir());
    let reasons: Vec<&str> = list.iter().filter_map(|s| s["close_reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("client TLS handshake failed") && r.contains("Revoked")), "{reasons:?}");
}

/// An HTTP stream whose caller a client certificate named ends when a reload changes what that
/// certificate's name maps to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_named_by_a_certificate_ends_when_a_reload_changes_its_roles() {
    let pki = TestPki::new();
    let upstream = HttpUpstream::start().await;
    let config = |roles: &str| {
        format!(
            "[[route]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\nanonymous = true\n\
             tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\", client_principal = \"san_dns\" }}\n\n\
             [[identity.certificate]]\nsubject = \"*.svc.internal\"\nroles = [{roles}]\n",
            upstream.addr,
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_pem.display()
        )
    };
    let mut gw = TestGateway::start(&config("\"service\"")).await.unwrap();
    let (cert, key) = pki.client_cert("etl", &["etl.svc.internal"], HOUR, false);
    let mut s = connect(&pki, &cert, &key, gw.addr("web")).await.unwrap();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let access = airlock::config::Config::parse(&config("\"service\", \"admin\"")).unwrap().build_access().unwrap();
    gw.gw().reload_access(access).unwrap();
    // The upstream is never released: only the reload can end the stream.
    loop {
        match timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the stream outlived the change"),
        }
    }
    gw.stop().await;
    let list = sessions(gw.data_dir());
    assert!(
        list.iter().any(|l| l["close_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("credential revoked: the roles of `etl.svc.internal` changed"))),
        "{list:?}"
    );
}
