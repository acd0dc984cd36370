//! The HTTP driver end to end with curl (HTTP/1.1 and `--http2-prior-knowledge`) against a real
//! hyper upstream: bearer authentication (API key and JWT), 401/403 as RFC 6750 and JSON, the
//! caller's credential stripped and the gateway-held one injected, never journaled, every request
//! its own journaled session, and streaming that stays streaming.

use std::time::Duration;

use airlock_tests::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RSA_A: &[u8] = include_bytes!("../fixtures/jwt/rsa-a.der");
const UPSTREAM_SECRET: &str = "sk-upstream-0123456789";
const CALLER_KEY: &str = "ak_caller_abcdef";

struct Setup {
    gw: TestGateway,
    upstream: HttpUpstream,
    _dir: tempfile::TempDir,
    issuer: String,
    /// The configuration the gateway runs (for a reload).
    config: String,
}

async fn setup(extra: &str) -> Setup {
    setup_with("", extra).await
}

async fn setup_with(route_extra: &str, extra: &str) -> Setup {
    let upstream = HttpUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("upstream.key");
    std::fs::write(&secret, format!("{UPSTREAM_SECRET}\n")).unwrap();
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(RSA_A), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("a".into());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap()).unwrap();
    let issuer = "https://idp.example".to_string();
    let config = format!(
        "[[route]]\nname = \"llm\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\n{route_extra}\n\
         [[route.credential]]\nheader = \"authorization\"\nprefix = \"Bearer \"\nfile = \"{}\"\n\n\
         [[identity.oidc]]\nname = \"corp\"\nissuer = \"{issuer}\"\naudiences = [\"airlock\"]\njwks_file = \"{}\"\nleeway = \"1s\"\n\n\
         [[identity.api_key]]\nname = \"agent-7\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n\n{extra}",
        upstream.addr,
        secret.display(),
        jwks.display(),
        airlock::identity::apikey::format_hash(CALLER_KEY),
    );
    let gw = TestGateway::start(&config).await.unwrap();
    Setup { gw, upstream, _dir: dir, issuer, config }
}

fn url(s: &Setup, path: &str) -> String {
    format!("http://{}{path}", s.gw.addr("llm"))
}

/// `method path`, sent as written (`--path-as-is`) with the caller's key: status and body.
fn call(s: &Setup, method: &str, path: &str) -> (u16, String) {
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let (code, _, body) =
        tokio::task::block_in_place(|| curl(&["--path-as-is", "-X", method, "-H", &auth, &url(s, path)]));
    (code, body)
}

fn jwt(s: &Setup, exp_offset: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = serde_json::json!({"iss": s.issuer, "aud": "airlock", "sub": "alice", "exp": now + exp_offset, "groups": ["clinician"]});
    jsonwebtoken::encode(
        &Header { kid: Some("a".into()), ..Header::new(Algorithm::RS256) },
        &claims,
        &EncodingKey::from_rsa_der(RSA_A),
    )
    .unwrap()
}

/// Every replayed frame of every session, as text, to search for secrets.
fn whole_journal(data: &std::path::Path) -> String {
    let mut all = String::new();
    for s in sessions(data) {
        let out = airlock(&["replay", s["id"].as_str().unwrap(), "--data-dir", &data.display().to_string()]);
        all.push_str(&stdout(&out));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_request_is_forwarded_with_the_gateway_credential_over_http1_and_h2c() {
    let mut s = setup("").await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let (code, headers, body) = tokio::task::block_in_place(|| {
        curl(&[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"q\":\"hi\"}",
            &url(&s, "/v1/chat/completions"),
        ])
    });
    assert_eq!(code, 200, "{headers}{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["echo"], "{\"q\":\"hi\"}");
    let request_id = header(&headers, "x-request-id").expect("x-request-id on the response").to_string();
    let (code, _, _) =
        tokio::task::block_in_place(|| curl(&["--http2-prior-knowledge", "-H", &auth, &url(&s, "/v1/models")]));
    assert_eq!(code, 200);

    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let auths: Vec<&str> =
            r.headers.iter().filter(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).collect();
        assert_eq!(auths, [format!("Bearer {UPSTREAM_SECRET}")], "the upstream sees only the gateway's credential");
        assert!(r.headers.iter().all(|(_, v)| !v.contains(CALLER_KEY)), "the caller's key never reaches the upstream");
        // A caller's own X-Forwarded-For is not trusted: it is replaced by the real peer.
        assert!(r.headers.iter().any(|(k, v)| k == "x-forwarded-for" && v == "127.0.0.1"), "{:?}", r.headers);
    }
    assert_eq!(seen[0].headers.iter().find(|(k, _)| k == "x-request-id").unwrap().1, request_id);
    s.gw.stop().await;

    let list = sessions(s.gw.data_dir());
    assert_eq!(list.len(), 2, "one session per request");
    assert_eq!(list[0]["id"].as_str().unwrap(), request_id, "the request id is the session id");
    assert_eq!(list[0]["principal"], "api-key:agent-7");
    let frames = replay_json(s.gw.data_dir(), &request_id);
    let d = frames.iter().find(|f| f["kind"] == "decision").unwrap();
    assert_eq!((d["meta"]["phase"].as_str(), d["meta"]["effect"].as_str()), (Some("request"), Some("allow")));
    assert_eq!(d["meta"]["request"], "POST /v1/chat/completions");
    let heads: Vec<String> = frames
        .iter()
        .filter(|f| f["head"] == true)
        .map(|f| {
            use base64::Engine as _;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD.decode(f["payload_base64"].as_str().unwrap()).unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert!(heads[0].starts_with("POST /v1/chat/completions HTTP/1.1\r\n"), "{heads:?}");
    assert!(heads[0].contains("authorization: [redacted]"), "{heads:?}");
    assert!(heads[1].starts_with("HTTP/1.1 200 OK"), "{heads:?}");
    assert_eq!(
        direction_bytes(
            &frames.iter().filter(|f| f["head"] != true).cloned().collect::<Vec<_>>(),
            "client_to_upstream"
        ),
        b"{\"q\":\"hi\"}"
    );
    let h2 = replay_json(s.gw.data_dir(), list[1]["id"].as_str().unwrap());
    let h2_head = h2.iter().find(|f| f["head"] == true && f["direction"] == "client_to_upstream").unwrap();
    let h2_head = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(h2_head["payload_base64"].as_str().unwrap()).unwrap()
    };
    assert!(h2_head.starts_with(b"GET /v1/models HTTP/2\r\n"), "{}", String::from_utf8_lossy(&h2_head));
    assert_eq!(list[0]["close_reason"], "complete");

    // The same exchange as HAR 1.2, for browser developer tools.
    let out =
        airlock(&["replay", &request_id, "--format", "har", "--data-dir", &s.gw.data_dir().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let har: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    let entry = &har["log"]["entries"][0];
    assert_eq!(entry["request"]["method"], "POST");
    assert!(entry["request"]["url"].as_str().unwrap().ends_with("/v1/chat/completions"));
    assert_eq!(entry["request"]["postData"]["text"], "{\"q\":\"hi\"}");
    assert!(
        entry["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "authorization" && h["value"] == "[redacted]")
    );
    assert_eq!(entry["response"]["status"], 200);
    assert_eq!(entry["response"]["content"]["mimeType"], "application/json");
    assert!(entry["response"]["content"]["text"].as_str().unwrap().contains("echo"));
    for t in ["send", "wait", "receive"] {
        assert!(entry["timings"][t].as_f64().unwrap() >= 0.0);
    }
    assert!(entry["startedDateTime"].as_str().unwrap().ends_with('Z'));

    let journal = whole_journal(s.gw.data_dir());
    assert!(!journal.contains(UPSTREAM_SECRET), "the upstream secret is never journaled");
    assert!(!journal.contains(CALLER_KEY), "the caller's key is never journaled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bad_and_expired_credentials_get_401_and_rules_get_403() {
    let extra = "[[rule]]\nid = \"no-admin\"\neffect = \"deny\"\nreason = \"admin endpoints are closed\"\n\
                 http = { methods = [\"DELETE\"], path = \"/v1/admin/**\" }\n\
                 [[rule]]\nid = \"no-infer\"\neffect = \"deny\"\nroles = [\"agent\"]\n\
                 grpc = { service = \"inference.*\", method = \"ModelInfer\" }\n";
    let mut s = setup(extra).await;
    let (code, headers, body) = tokio::task::block_in_place(|| curl(&[&url(&s, "/v1/models")]));
    assert_eq!(code, 401);
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer realm=\"airlock\""));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "unauthenticated");
    assert!(v["request_id"].is_string());

    let (code, headers, _) =
        tokio::task::block_in_place(|| curl(&["-H", "Authorization: Bearer ak_wrong", &url(&s, "/v1/models")]));
    assert_eq!(code, 401);
    assert!(header(&headers, "www-authenticate").unwrap().contains("error=\"invalid_token\""));

    // Automatic logoff: a token that expired is refused on the next request.
    let live = jwt(&s, 300);
    let (code, _, _) =
        tokio::task::block_in_place(|| curl(&["-H", &format!("Authorization: Bearer {live}"), &url(&s, "/v1/models")]));
    assert_eq!(code, 200);
    let expired = jwt(&s, -30);
    let (code, headers, body) = tokio::task::block_in_place(|| {
        curl(&["-H", &format!("Authorization: Bearer {expired}"), &url(&s, "/v1/models")])
    });
    assert_eq!(code, 401);
    assert!(header(&headers, "www-authenticate").unwrap().contains("token expired"), "{headers}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "authn:expired");

    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&["-X", "DELETE", "-H", &format!("Authorization: Bearer {CALLER_KEY}"), &url(&s, "/v1/admin/users/7")])
    });
    assert_eq!(code, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["error"].as_str(), v["rule"].as_str()), (Some("forbidden"), Some("no-admin")));
    assert!(v["message"].as_str().unwrap().contains("admin endpoints are closed"));

    // An unsigned token is refused before any key lookup.
    let none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = serde_json::json!({"iss": s.issuer, "aud": "airlock", "sub": "mallory", "exp": 4_000_000_000u64});
        format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), b64.encode(claims.to_string()))
    };
    let (code, headers, _) =
        tokio::task::block_in_place(|| curl(&["-H", &format!("Authorization: Bearer {none}"), &url(&s, "/v1/models")]));
    assert_eq!(code, 401);
    assert!(
        header(&headers, "www-authenticate").unwrap().contains("alg `none`")
            || header(&headers, "www-authenticate").unwrap().contains("alg none"),
        "{headers}"
    );

    // gRPC callers get gRPC statuses: UNAUTHENTICATED without a credential, PERMISSION_DENIED by
    // a grpc rule.
    let grpc = |auth: Option<&str>, path: &str| {
        let mut args = vec![
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            "@/dev/null",
        ];
        let header;
        if let Some(a) = auth {
            header = format!("Authorization: Bearer {a}");
            args.extend(["-H", header.as_str()]);
        }
        let u = url(&s, path);
        args.push(u.as_str());
        tokio::task::block_in_place(|| curl(&args))
    };
    let (code, headers, _) = grpc(None, "/inference.GRPCInferenceService/ModelInfer");
    assert_eq!((code, header(&headers, "grpc-status")), (200, Some("16")), "{headers}");
    let (_, headers, _) = grpc(Some(CALLER_KEY), "/inference.GRPCInferenceService/ModelInfer");
    assert_eq!(header(&headers, "grpc-status"), Some("7"), "{headers}");
    assert!(header(&headers, "grpc-message").unwrap().contains("no-infer"), "{headers}");

    assert_eq!(s.upstream.seen().len(), 1, "only the allowed request reached the upstream");
    s.gw.stop().await;
    let list = sessions(s.gw.data_dir());
    assert_eq!(list.len(), 8);
    let mut rules = Vec::new();
    for l in &list {
        for f in replay_json(s.gw.data_dir(), l["id"].as_str().unwrap()) {
            if f["kind"] == "decision" {
                rules.push((
                    f["meta"]["effect"].as_str().unwrap().to_string(),
                    f["meta"]["rule"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let expected: Vec<(String, String)> = [
        ("deny", "authn:missing_credential"),
        ("deny", "authn:unknown_api_key"),
        ("allow", "route:llm:default"),
        ("deny", "authn:expired"),
        ("deny", "no-admin"),
        ("deny", "authn:alg_none"),
        ("deny", "authn:missing_credential"),
        ("deny", "no-infer"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rules, expected);
}

/// Opens `GET /stream` with the caller's key and reads until its first event.
async fn first_event_of_stream(s: &Setup) -> (tokio::net::TcpStream, Vec<u8>) {
    let mut c = tokio::net::TcpStream::connect(s.gw.addr("llm")).await.unwrap();
    let req = format!("GET /stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER_KEY}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.expect("first event never arrived").unwrap();
        assert!(n > 0, "closed before the first event");
        got.extend_from_slice(&buf[..n]);
    }
    (c, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_arrives_before_the_stream_ends() {
    let mut s = setup("").await;
    let (mut c, mut got) = first_event_of_stream(&s).await;
    let mut buf = [0u8; 4096];
    assert!(!String::from_utf8_lossy(&got).contains("second"), "the upstream has not sent the second event yet");
    s.upstream.release.notify_one();
    while !String::from_utf8_lossy(&got).contains("data: second") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.gw.stop().await;
    let list = sessions(s.gw.data_dir());
    let frames = replay_json(s.gw.data_dir(), list[0]["id"].as_str().unwrap());
    let body: Vec<serde_json::Value> = frames.iter().filter(|f| f["head"] != true).cloned().collect();
    assert_eq!(direction_bytes(&body, "upstream_to_client"), b"data: first\n\ndata: second\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tool_calls_are_decided_by_tool_name() {
    let extra = "[[rule]]\nid = \"no-deletes\"\neffect = \"deny\"\nreason = \"agents may not delete records\"\n\
                 mcp = { tools = [\"delete_*\"] }\n\
                 [[rule]]\nid = \"exports-held\"\neffect = \"require_approval\"\nmcp = { tools = [\"export_*\"] }\n";
    let mut s = setup_with("mcp = true\nmax_inspect_body = 4096", extra).await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let post = |body: &str| {
        let u = url(&s, "/mcp");
        let args = ["-H", auth.as_str(), "-H", "Content-Type: application/json", "--data-binary", body, u.as_str()];
        tokio::task::block_in_place(|| curl(&args))
    };
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    assert_eq!(post(init).0, 200);
    assert_eq!(post(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).0, 200);
    let read =
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_record","arguments":{"mrn":"12345"}}}"#;
    let (code, _, body) = post(read);
    assert_eq!(code, 200, "{body}");
    let delete = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_record","arguments":{"mrn":"12345"}}}"#;
    let (code, _, body) = post(delete);
    assert_eq!(code, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "no-deletes");
    // One denied call refuses the whole batch.
    let batch = format!("[{read},{delete}]");
    assert_eq!(post(&batch).0, 403);
    // A call held for approval does not hide a denied one behind it.
    let export = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"export_records","arguments":{}}}"#;
    let (code, _, body) = post(export);
    assert_eq!(code, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "exports-held");
    let (code, _, body) = post(&format!("[{export},{delete}]"));
    assert_eq!(code, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "no-deletes", "{body}");
    // A body this route cannot inspect is refused, never forwarded unread.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"read_record","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(5000)
    );
    let (code, _, body) = post(&big);
    assert_eq!(code, 403);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "inspect:body");

    // Bodies an MCP route cannot inspect are refused: not JSON-RPC, or compressed.
    let u = url(&s, "/mcp");
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&[
            "-H",
            auth.as_str(),
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "tools/call delete_record",
            u.as_str(),
        ])
    });
    assert_eq!(code, 403, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "inspect:body");
    // A compressed body, and two encodings in two headers (still an encoding).
    for encodings in [&["gzip"][..], &["identity", "gzip"]] {
        let mut args = vec!["-H", auth.as_str(), "-H", "Content-Type: application/json"];
        let headers: Vec<String> = encodings.iter().map(|e| format!("Content-Encoding: {e}")).collect();
        headers.iter().for_each(|h| args.extend(["-H", h.as_str()]));
        args.extend(["--data-binary", read, u.as_str()]);
        let (code, _, _) = tokio::task::block_in_place(|| curl(&args));
        assert_eq!(code, 403, "{encodings:?}");
    }
    // A tool call sent with PUT is decided as one.
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&[
            "-X",
            "PUT",
            "-H",
            auth.as_str(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            delete,
            u.as_str(),
        ])
    });
    assert_eq!(code, 403, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "no-deletes");
    // A key twice, which servers that keep the first would read as `delete_record`.
    let twice =
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"delete_record","name":"read_record"}}"#;
    let (code, _, body) = post(twice);
    assert_eq!(code, 403, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "inspect:body");

    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 3, "initialize, tools/list and the allowed call reached the upstream");
    assert_eq!(seen[2].body, read.as_bytes(), "the inspected body is forwarded unchanged");
    s.gw.stop().await;
    let requests: Vec<String> = sessions(s.gw.data_dir())
        .iter()
        .flat_map(|l| replay_json(s.gw.data_dir(), l["id"].as_str().unwrap()))
        .filter(|f| f["kind"] == "decision")
        .map(|f| f["meta"]["request"].as_str().unwrap().to_string())
        .collect();
    assert!(requests.contains(&"mcp tools/call read_record".to_string()), "{requests:?}");
    assert!(requests.contains(&"mcp tools/call delete_record".to_string()), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_failures_end_cleanly_and_are_journaled() {
    let mut s = setup("").await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    // The upstream resets after the first event: the caller sees a broken transfer, not a
    // complete-looking short body.
    let (_, _, body) = tokio::task::block_in_place(|| curl(&["-N", "-H", &auth, &url(&s, "/reset")]));
    assert!(body.contains("data: first"), "{body}");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "15", "-H", &auth, &url(&s, "/reset")])
            .output()
            .unwrap()
    });
    assert!(!out.status.success(), "curl must report the broken transfer");

    // The caller goes away mid-stream.
    let mut c = tokio::net::TcpStream::connect(s.gw.addr("llm")).await.unwrap();
    c.write_all(format!("GET /endless HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER_KEY}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    s.upstream.release.notify_one();

    // A large body crosses whole, and whole into the journal.
    let big: String = (0..2_000_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let file = s._dir.path().join("big.txt");
    std::fs::write(&file, &big).unwrap();
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&[
            "-H",
            &auth,
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &format!("@{}", file.display()),
            &url(&s, "/upload"),
        ])
    });
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["echo"].as_str().unwrap().len(), big.len());

    let data = s.gw.data_dir().to_path_buf();
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons = sessions(&data).iter().filter_map(|l| l["close_reason"].as_str().map(str::to_owned)).collect();
        if reasons.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reasons.iter().filter(|r| r.starts_with("upstream broke off the body")).count(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "client went away mid-body"), "{reasons:?}");
    s.gw.stop().await;
    let list = sessions(&data);
    let upload = list.iter().find(|l| l["close_reason"] == "complete").unwrap();
    assert_eq!(upload["bytes_from_client"].as_u64(), Some(big.len() as u64));
    let frames = replay_json(&data, upload["id"].as_str().unwrap());
    let sent: Vec<serde_json::Value> = frames.iter().filter(|f| f["head"] != true).cloned().collect();
    assert_eq!(direction_bytes(&sent, "client_to_upstream"), big.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_responses_are_read_whole_and_short_ones_refused_cleanly() {
    let mut s = setup("").await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url(&s, "/v1/models")]));
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"echo":""}"#);
    let (code, _, body) =
        tokio::task::block_in_place(|| curl(&["-H", &auth, "-d", r#"{"q":1}"#, &url(&s, "/v1/chat/completions")]));
    assert_eq!(code, 200);
    assert_eq!(body, r#"{"echo":"{\"q\":1}"}"#);
    assert_eq!(s.upstream.seen().last().unwrap().body, br#"{"q":1}"#);
    // HEAD: the upstream's length of the body it would send passes, and no body does.
    let (code, headers, body) = tokio::task::block_in_place(|| curl(&["-I", "-H", &auth, &url(&s, "/v1/models")]));
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-length"), Some(r#"{"echo":""}"#.len().to_string().as_str()), "{headers}");
    assert!(!body.contains("echo"), "{body}");
    // The upstream promises 100 bytes and sends 20: the caller gets a clean 502, none of the 20.
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url(&s, "/short")]));
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("upstream_unavailable") && !body.contains("partial"), "{body}");

    let data = s.gw.data_dir().to_path_buf();
    s.gw.stop().await;
    let list = sessions(&data);
    let shape = |frames: &[serde_json::Value]| -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let kind = f["kind"].as_str().unwrap().to_owned();
                match (kind.as_str(), f["head"] == true, f["fin"] == true) {
                    ("data", head, fin) => format!(
                        "{} {}{}",
                        f["direction"].as_str().unwrap(),
                        if head { "head" } else { "body" },
                        if fin { " end" } else { "" }
                    ),
                    _ => kind,
                }
            })
            .collect()
    };
    let complete: Vec<Vec<serde_json::Value>> = list
        .iter()
        .filter(|l| l["close_reason"] == "complete")
        .map(|l| replay_json(&data, l["id"].as_str().unwrap()))
        .collect();
    assert_eq!(complete.len(), 3);
    // HEAD: the response ends with its head.
    assert_eq!(
        shape(&complete[2]),
        ["session_open", "decision", "client_to_upstream head end", "upstream_to_client head end", "session_close"]
    );
    // Open, decision, the request head that ends a bodiless request, the response head, the body
    // that ends the response, close: each end rides on its last frame.
    let get = &complete[0];
    assert_eq!(
        shape(get),
        [
            "session_open",
            "decision",
            "client_to_upstream head end",
            "upstream_to_client head",
            "upstream_to_client body end",
            "session_close"
        ],
        "{get:?}"
    );
    assert_eq!(direction_bytes(&get[4..5], "upstream_to_client"), br#"{"echo":""}"#);
    // A small request body is read whole too: its last frame ends the request.
    let post = &complete[1];
    assert_eq!(
        shape(post),
        [
            "session_open",
            "decision",
            "client_to_upstream head",
            "client_to_upstream body end",
            "upstream_to_client head",
            "upstream_to_client body end",
            "session_close"
        ],
        "{post:?}"
    );
    assert_eq!(direction_bytes(&post[3..4], "client_to_upstream"), br#"{"q":1}"#);
    let short = list.iter().find(|l| l["close_reason"] != "complete").unwrap();
    assert!(short["close_reason"].as_str().unwrap().starts_with("upstream broke off the body"), "{short}");
    let frames = replay_json(&data, short["id"].as_str().unwrap());
    assert!(
        frames.iter().all(|f| f["direction"] != "upstream_to_client"),
        "nothing of the short body was delivered, so nothing of it is journaled as delivered: {frames:?}"
    );
}

/// Sends raw bytes on a fresh connection and returns what comes back until the server closes.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, c.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_header_abuse_get_400_and_slow_senders_are_cut_off() {
    let mut s = setup_with("header_timeout = \"1s\"", "").await;
    let addr = s.gw.addr("llm");
    let auth = format!("Authorization: Bearer {CALLER_KEY}\r\n");
    // Content-Length with Transfer-Encoding: hyper resolves it as RFC 9112 §6.3 says (chunked
    // wins, Content-Length is dropped) and closes the connection after the answer; the gateway
    // re-frames what it forwards, so the upstream never sees the conflicting framing.
    let resp = raw_exchange(
        addr,
        format!("POST /x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(resp.contains("connection: close"), "{resp:?}");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"abcd");
    assert!(!seen[0].headers.iter().any(|(k, v)| k == "content-length" && v == "40"), "{:?}", seen[0].headers);
    let cases = [
        (
            "duplicate CL",
            format!("POST /x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ),
        ("obs-fold", format!("GET /x HTTP/1.1\r\nHost: x\r\n{auth}X-Folded: a\r\n b\r\n\r\n")),
        (
            "bad chunk size",
            format!("POST /x HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ),
        ("bare CR in a value", format!("GET /x HTTP/1.1\r\nHost: x\r\n{auth}X-Evil: a\rb\r\n\r\n")),
    ];
    for (what, req) in &cases {
        let resp = raw_exchange(addr, req.as_bytes()).await;
        if std::env::var_os("DBG").is_some() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            eprintln!(
                "{what}: {resp:?}\n{:#?}",
                sessions(s.gw.data_dir()).iter().map(|l| l["close_reason"].clone()).collect::<Vec<_>>()
            );
        }
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp:?}");
    }
    // A slow sender: half a head, then nothing.
    let started = std::time::Instant::now();
    let resp = raw_exchange(addr, b"GET /x HTTP/1.1\r\nHost: x\r\n").await;
    assert!(started.elapsed() < Duration::from_secs(10), "cut off by the header timeout");
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    // The bad-chunk request's head had already been forwarded when its body broke: the upstream
    // saw an aborted request with nothing of the body.
    let seen = s.upstream.seen();
    assert!(seen.len() <= 2, "{seen:?}");
    assert!(seen.iter().skip(1).all(|r| r.body.is_empty()), "{seen:?}");
    s.gw.stop().await;
    let reasons: Vec<String> =
        sessions(s.gw.data_dir()).iter().map(|l| l["close_reason"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(
        reasons.iter().filter(|r| r.contains("answered 400") || r.contains("malformed request body")).count(),
        cases.len(),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.starts_with("the caller did not send a request head")), "{reasons:?}");
}

/// An upstream that sends back the credential the gateway gave it (a debug or echo endpoint)
/// has its response withheld — in a header, a whole body, or split across stream events — and
/// neither the caller nor the journal gets the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_echoes_the_credential_is_withheld() {
    let mut s = setup("").await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    for path in ["/echo-auth-header", "/echo-auth-body"] {
        // (`--compressed`: the caller asks for gzip; the upstream is not asked, so the echo
        // comes back readable.)
        let (code, headers, body) =
            tokio::task::block_in_place(|| curl(&["--compressed", "-H", &auth, &url(&s, path)]));
        assert_eq!(code, 502, "{path}: {body}");
        assert!(!headers.contains(UPSTREAM_SECRET) && !body.contains(UPSTREAM_SECRET), "{path}: {headers}{body}");
    }
    assert!(
        s.upstream.seen().iter().all(|r| !r.headers.iter().any(|(n, _)| n == "accept-encoding")),
        "the upstream was asked for a compressed answer"
    );
    // An upstream that compresses anyway: what cannot be searched is not delivered.
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url(&s, "/always-gzip")]));
    assert_eq!(code, 502, "{body}");
    // A stream is cut off where the secret would complete: what came before it was delivered.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "15", "-H", &auth, &url(&s, "/echo-auth-stream")])
            .output()
            .unwrap()
    });
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("data: hello") && !body.contains(UPSTREAM_SECRET), "{body}");
    assert!(!out.status.success(), "curl must see the stream broken off: {body}");
    s.gw.stop().await;
    let journal = whole_journal(s.gw.data_dir());
    assert!(!journal.contains(UPSTREAM_SECRET), "the secret reached the journal");
    let mut rules = Vec::new();
    for l in sessions(s.gw.data_dir()) {
        for f in replay_json(s.gw.data_dir(), l["id"].as_str().unwrap()) {
            if f["kind"] == "decision" && f["meta"]["phase"] == "response" {
                rules.push(f["meta"]["rule"].as_str().unwrap().to_owned());
            }
        }
    }
    rules.sort();
    assert_eq!(
        rules,
        ["credential:echoed", "credential:echoed", "credential:echoed", "credential:unsearchable"],
        "{rules:?}"
    );
}

/// `request_timeout` bounds the wait for the upstream's response head too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_bounds_the_wait_for_the_head() {
    let mut s = setup_with("request_timeout = \"1s\"\nfirst_byte_timeout = \"60s\"", "").await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let started = std::time::Instant::now();
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url(&s, "/slow-head")]));
    assert_eq!(code, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    s.gw.stop().await;
}

/// Connections that send nothing — no byte at all, an HTTP/2 preface and then silence, or a
/// keep-alive connection left idle — give their slot of the connection cap back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    let mut s = setup_with("header_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 2", "").await;
    let addr = s.gw.addr("llm");
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let closed_within = |mut c: tokio::net::TcpStream, limit: Duration| async move {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(limit, c.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("still open after {limit:?}"),
            }
        }
    };
    // Two silent sockets fill the cap; one of them has sent the HTTP/2 preface.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let (a, b) = tokio::join!(closed_within(silent, WAIT), closed_within(preface, WAIT));
    assert!(a < Duration::from_secs(4) && b < Duration::from_secs(4), "{a:?} {b:?}");
    // The cap has room again once their sessions have ended: each holds its slot until its
    // close record is written, a moment after its socket closes.
    let mut answer = (0, String::new());
    for _ in 0..50 {
        let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url(&s, "/v1/models")]));
        answer = (code, body);
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    // A keep-alive connection: served, then closed once idle for the idle timeout.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET /v1/models HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("echo") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    // (HTTP/1.1: hyper's head timeout runs while it waits for the next request, so the head
    // timeout closes it first; an HTTP/2 connection with no stream open is closed by the idle
    // timeout.)
    let idle = closed_within(c, WAIT).await;
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(5), "{idle:?}");
    s.gw.stop().await;
    let reasons: Vec<String> =
        sessions(s.gw.data_dir()).iter().map(|l| l["close_reason"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(reasons.iter().filter(|r| r.starts_with("the caller sent no request within")).count(), 2, "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified() {
    let pki = TestPki::new();
    let upstream = HttpUpstream::start_tls(pki.acceptor()).await;
    let stranger = TestPki::new();
    let config = format!(
        "[[route]]\nname = \"good\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{0}\"\nanonymous = true\n\
         upstream_tls = {{ ca = \"{1}\", server_name = \"localhost\" }}\n\n\
         [[route]]\nname = \"bad\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{0}\"\nanonymous = true\n\
         upstream_tls = {{ ca = \"{2}\", server_name = \"localhost\" }}\n",
        upstream.addr,
        pki.ca_pem.display(),
        stranger.ca_pem.display()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let good = format!("http://{}/v1/models", gw.addr("good"));
    let bad = format!("http://{}/v1/models", gw.addr("bad"));
    let (code, _, body) = tokio::task::block_in_place(|| curl(&[&good]));
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = tokio::task::block_in_place(|| curl(&[&bad]));
    assert_eq!(code, 502, "{body}");
    assert!(!body.contains("certificate"), "no internals in the caller's error: {body}");
    assert_eq!(upstream.seen().len(), 1, "the unverified upstream got nothing");
    gw.stop().await;
    let reasons: Vec<String> =
        sessions(gw.data_dir()).iter().map(|l| l["close_reason"].as_str().unwrap_or("").to_owned()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("upstream request to") && r.contains("failed")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_ended_by_the_idle_timeout() {
    let mut s = setup_with("idle_timeout = \"1s\"", "").await;
    let started = std::time::Instant::now();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-N",
                "--max-time",
                "15",
                "-H",
                &format!("Authorization: Bearer {CALLER_KEY}"),
                &url(&s, "/endless"),
            ])
            .output()
            .unwrap()
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out.stdout).contains("data: first"));
    assert!(!out.status.success(), "curl must see the stream broken off");
    s.gw.stop().await;
    let reasons: Vec<String> =
        sessions(s.gw.data_dir()).iter().map(|l| l["close_reason"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(reasons, ["upstream sent nothing for 1s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_callers_negotiate_http2_by_alpn() {
    let pki = TestPki::new();
    let upstream = HttpUpstream::start().await;
    let config = format!(
        "[[route]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\nanonymous = true\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        upstream.addr,
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let port = gw.addr("tls").port();
    let version = |flag: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "15", flag, "--cacert"])
            .arg(&pki.ca_pem)
            .args([
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg(format!("https://localhost:{port}/v1/models"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(tokio::task::block_in_place(|| version("--http2")), "2 200");
    assert_eq!(tokio::task::block_in_place(|| version("--http1.1")), "1.1 200");
    gw.stop().await;
    let list = sessions(gw.data_dir());
    assert_eq!(list.len(), 2);
    let frames = replay_json(gw.data_dir(), list[0]["id"].as_str().unwrap());
    assert_eq!(frames[0]["meta"]["tls"]["alpn"], "h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_get_grpc_statuses_for_gateway_errors_too() {
    let dead = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[[route]]\nname = \"g\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{dead}\"\nanonymous = true\nupstream_http2 = true\n"
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let u = format!("http://{}/inference.Svc/Infer", gw.addr("g"));
    let (code, headers, _) = tokio::task::block_in_place(|| {
        curl(&["--http2-prior-knowledge", "-H", "content-type: application/grpc", "--data-binary", "@/dev/null", &u])
    });
    assert_eq!((code, header(&headers, "grpc-status")), (200, Some("14")), "{headers}");
    // A plain HTTP caller of the same route gets the JSON 502.
    let (code, _, body) = tokio::task::block_in_place(|| curl(&[&u]));
    assert_eq!(code, 502, "{body}");
    gw.stop().await;
}

/// An upstream that answers at once and keeps reading the request body: the request pump still
/// runs when the response has ended. Once it is stopped, nothing of it is journaled after the
/// session's close, so what the journal holds from the caller is what its close counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_still_streaming_when_the_response_ends_is_journaled_before_the_close() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        while matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await, Ok(Ok(n)) if n > 0) {}
    });
    let config = format!(
        "[[route]]\nname = \"up\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\nanonymous = true\n"
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(gw.addr("up")).await.unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
    // 7 s of chunks, one every 250 ms: past the 5 s the response side waits for the request side.
    for i in 0..28u8 {
        if c.write_all(format!("3\r\nab{}\r\n", char::from(b'a' + i % 26)).as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = c.write_all(b"0\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(c);
    gw.stop().await;
    let s = sessions(gw.data_dir()).into_iter().next().expect("one session");
    let id = s["id"].as_str().unwrap();
    let frames: Vec<serde_json::Value> =
        replay_json(gw.data_dir(), id).into_iter().filter(|f| f["head"] != true).collect();
    let sent = direction_bytes(&frames, "client_to_upstream");
    let counted = s["bytes_from_client"].as_u64().unwrap();
    assert!(counted > 0, "{s}");
    assert_eq!(sent.len() as u64, counted, "records after the close: {s}");
    let data_dir = gw.data_dir().display().to_string();
    let report = airlock(&["journal", "verify", "--data-dir", &data_dir]);
    assert!(report.status.success(), "{}", stdout(&report));
}

/// A stream still open when the drain deadline passes is closed by the gateway, and its session
/// gets its close record before the journal's final checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_at_shutdown_is_closed_and_journaled() {
    let mut s = setup("[gateway]\ndrain_timeout = \"200ms\"\n").await;
    let (_c, _) = first_event_of_stream(&s).await;
    // The upstream stays quiet (it is never released); the gateway shuts down meanwhile.
    let stopped = tokio::time::Instant::now();
    s.gw.stop().await;
    assert!(stopped.elapsed() < Duration::from_secs(10), "shutdown waited for the upstream");
    let list = sessions(s.gw.data_dir());
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["close_reason"], "gateway shutdown: drain deadline passed", "{list:?}");
    let data_dir = s.gw.data_dir().display().to_string();
    let report = airlock(&["journal", "verify", "--data-dir", &data_dir]);
    assert!(report.status.success(), "{}", stdout(&report));
}

/// On a route that denies by default, every reading of a request must be allowed as the
/// request is: an allow rule on `/v1/public/**` does not admit a path that another server reads
/// as `/v1/admin/…`, nor a `_method` the allow rule does not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_allow_list_route_every_reading_must_be_allowed() {
    let extra = "[[rule]]\nid = \"public\"\neffect = \"allow\"\nreason = \"public endpoints\"\n\
                 http = { methods = [\"GET\", \"PUT\"], path = \"/v1/public/**\" }\n\
                 [[rule]]\nid = \"fhir\"\neffect = \"allow\"\nhttp = { methods = [\"GET\"], path = \"/fhir/Patient/**\" }\n\
                 [[rule]]\nid = \"models\"\neffect = \"allow\"\nhttp = { methods = [\"GET\"], path = \"/v1/models/*\" }\n";
    let mut s = setup_with("default_effect = \"deny\"", extra).await;
    for (method, path) in [
        ("GET", "/v1/public/..;/admin/users"),
        ("GET", "/v1/public/..%2Fadmin"),
        ("PUT", "/v1/public/x?_method=DELETE"),
    ] {
        let (code, body) = call(&s, method, path);
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(body.contains("another server may read it"), "{method} {path}: {body}");
    }
    // What the allow rule names, read every way, goes through.
    // So does a path whose other readings only fold its case or decode an encoded slash.
    for (method, path) in [
        ("GET", "/v1/public/notes"),
        ("PUT", "/v1/public/notes?_method=GET"),
        ("GET", "/fhir/Patient/1"),
        ("GET", "/v1/models/org%2Fmodel"),
    ] {
        let (code, body) = call(&s, method, path);
        assert_eq!(code, 200, "{method} {path}: {body}");
    }
    assert_eq!(s.upstream.seen().len(), 4);
    s.gw.stop().await;
}

/// The path and method the policy decides are the ones the upstream acts on: percent-encoded
/// letters, dot segments, doubled slashes and a lower-case method meet the same rule; an encoded
/// slash is refused; a `content-type: application/grpc` does not step around an HTTP rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_method_and_kind_tricks_meet_the_same_rules() {
    let extra = "[[rule]]\nid = \"no-admin\"\neffect = \"deny\"\nreason = \"admin endpoints are closed\"\n\
                 http = { methods = [\"DELETE\", \"POST\"], path = \"/v1/admin/**\" }\n\
                 [[rule]]\nid = \"no-ops\"\neffect = \"deny\"\nreason = \"ops endpoints are closed\"\n\
                 http = { methods = [\"POST\"], path = \"/admin.Ops/**\" }\n\
                 [[rule]]\nid = \"no-unload\"\neffect = \"deny\"\nreason = \"models stay loaded\"\n\
                 grpc = { service = \"inference.Models\", method = \"Unload\" }\n\
                 [[rule]]\nid = \"no-record-deletes\"\neffect = \"deny\"\nreason = \"records stay\"\n\
                 http = { methods = [\"DELETE\"], path = \"/v1/records/**\" }\n";
    let mut s = setup(extra).await;
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    for (method, path) in [
        ("DELETE", "/v1/%61dmin/users/7"),
        ("DELETE", "/v1/./admin/users/7"),
        ("DELETE", "/v1//admin/users/7"),
        ("DELETE", "/v1/x/../admin/users/7"),
        ("DELETE", "/v1/%2e%2e/v1/admin/users/7"),
        ("delete", "/v1/admin/users/7"),
        // What Tomcat, Jetty, Express or Laravel would run in these.
        ("DELETE", "/v1/public/..;/admin/users/7"),
        ("DELETE", "/v1/admin;jsessionid=1/users/7"),
        ("DELETE", "/V1/ADMIN/users/7"),
        ("DELETE", "/v1/public%2F..%2Fadmin/users/7"),
        ("PUT", "/v1/admin/users/7?_method=DELETE"),
        ("PUT", "/v1/admin/users/7?%5Fmethod=%44ELETE"),
    ] {
        let (code, body) = call(&s, method, path);
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(body.contains("no-admin"), "{method} {path}: {body}");
    }
    // An encoded slash is forwarded as it is, and decided as a server that decodes it reads it.
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&["--path-as-is", "-X", "DELETE", "-H", &auth, &url(&s, "/v1/admin%2Fusers/7")])
    });
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no-admin"), "{body}");
    // Declared a gRPC call (`/admin.Ops/Reset`), it is still a POST under /admin.Ops.
    let (code, headers, _) = tokio::task::block_in_place(|| {
        curl(&[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc",
            "-H",
            &auth,
            "--data-binary",
            "@/dev/null",
            &url(&s, "/admin.Ops/Reset"),
        ])
    });
    assert_eq!((code, header(&headers, "grpc-status")), (200, Some("7")), "{headers}");
    assert!(header(&headers, "grpc-message").unwrap().contains("no-ops"), "{headers}");
    // Not declared a gRPC call, a POST to `/inference.Models/Unload` still meets the gRPC rule.
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&[
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/octet-stream",
            "-H",
            &auth,
            "--data-binary",
            "@/dev/null",
            &url(&s, "/inference.Models/Unload"),
        ])
    });
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no-unload"), "{body}");
    // TRACE would have the upstream echo the injected credential.
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-X", "TRACE", "-H", &auth, &url(&s, "/v1/models")]));
    assert_eq!(code, 405, "{body}");
    // A canonical path that is allowed goes through as the upstream should see it, without
    // the caller's URL override or forwarding claims.
    let (code, _, _) = tokio::task::block_in_place(|| {
        curl(&[
            "--path-as-is",
            "-H",
            &auth,
            "-H",
            "X-Original-URL: /v1/admin/users",
            "-H",
            "Proxy: http://127.0.0.1:3128",
            "-H",
            "X-Forwarded-Host: evil.example",
            &url(&s, "/v1/./m%6fdels"),
        ])
    });
    assert_eq!(code, 200);
    let seen = s.upstream.seen();
    assert!(
        !seen[0].headers.iter().any(|(n, _)| n == "x-original-url" || n == "x-forwarded-host" || n == "proxy"),
        "{:?}",
        seen[0].headers
    );
    // (The same request again, to check below that they were the only ones to arrive.)
    let (code, _, _) = tokio::task::block_in_place(|| curl(&["--path-as-is", "-H", &auth, &url(&s, "/v1/./m%6fdels")]));
    assert_eq!(code, 200);
    let seen = s.upstream.seen();
    assert_eq!(
        seen.len(),
        2,
        "only the allowed requests reached the upstream: {:?}",
        seen.iter().map(|r| (&r.method, &r.uri)).collect::<Vec<_>>()
    );
    assert_eq!(seen[1].uri, "/v1/models");
    // A `_method` in a form body, as Rails, Laravel and Symfony read it.
    let form = |body: &str| {
        let auth = format!("Authorization: Bearer {CALLER_KEY}");
        let u = url(&s, "/v1/records/7");
        let body = body.to_owned();
        tokio::task::block_in_place(move || curl(&["-H", &auth, "--data-raw", &body, &u]))
    };
    for body in ["_method=DELETE", "note=x&%5Fmethod=%44elete", "_method=delete+"] {
        let (code, _, resp) = form(body);
        assert_eq!(code, 403, "{body}: {resp}");
        assert!(resp.contains("no-record-deletes"), "{body}: {resp}");
    }
    let (code, _, resp) = form("note=kept&method=DELETE");
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("note=kept&method=DELETE"), "the body went on whole: {resp}");
    s.gw.stop().await;
}

/// A reload that removes the API key a stream was opened with ends the stream at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_a_reload_revokes_its_key() {
    let mut s = setup("").await;
    let mut c = tokio::net::TcpStream::connect(s.gw.addr("llm")).await.unwrap();
    let req = format!("GET /endless HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER_KEY}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: first") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // A reload that changes nothing for this key leaves the stream alone.
    let same = airlock::config::Config::parse(&format!("{}\n# reloaded\n", s.config)).unwrap().build_access().unwrap();
    s.gw.gw().reload_access(same).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await.is_err(), "the stream ended");
    // One that gives the key's name another secret ends it. The upstream is never released:
    // only the reload can.
    let hash = airlock::identity::apikey::format_hash(CALLER_KEY);
    let without = s.config.replace(&hash, &airlock::identity::apikey::format_hash("ak_someone_else"));
    assert_ne!(without, s.config);
    let access = airlock::config::Config::parse(&without).unwrap().build_access().unwrap();
    s.gw.gw().reload_access(access).unwrap();
    loop {
        match tokio::time::timeout(WAIT, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the stream outlived its revoked key"),
        }
    }
    s.gw.stop().await;
    let list = sessions(s.gw.data_dir());
    assert!(
        list.iter().any(|l| l["close_reason"]
            .as_str()
            .is_some_and(|r| r == "credential revoked: the API key `agent-7` was replaced")),
        "{list:?}"
    );
}

/// Automatic logoff: a stream ends when the credential that opened it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_credential_expires() {
    let mut s = setup("").await;
    let token = jwt(&s, 2);
    let mut c = tokio::net::TcpStream::connect(s.gw.addr("llm")).await.unwrap();
    let req = format!("GET /endless HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = tokio::time::Instant::now();
    // The upstream sends one event and is never released: only the expiry can end the stream.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the stream outlived its credential: {}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(String::from_utf8_lossy(&got).contains("data: first"), "{}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() < Duration::from_secs(8), "ended after {:?}", started.elapsed());
    s.gw.stop().await;
    let list = sessions(s.gw.data_dir());
    assert!(
        list.iter().any(|l| l["close_reason"].as_str().is_some_and(|r| r.starts_with("automatic logoff"))),
        "{list:?}"
    );
}

/// A `_method` field in a multipart form (curl `-F`), as Rails, Laravel and Symfony read it: judged
/// in the first bytes the route inspects; past them, the body is broken off before the field and
/// the upstream never gets a whole request that carries it. Uploads larger than the inspection
/// limit still go through whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_field_in_a_multipart_form_meets_the_rules() {
    let extra = "[[rule]]\nid = \"no-record-deletes\"\neffect = \"deny\"\nreason = \"records stay\"\n\
                 http = { methods = [\"DELETE\"], path = \"/v1/records/**\" }\n";
    let mut s = setup_with("max_inspect_body = 4096", extra).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("scan.txt");
    std::fs::write(&big, "x".repeat(20_000)).unwrap();
    let upload = format!("file=@{}", big.display());
    let form = |fields: &[&str]| {
        let mut args = vec!["-H".to_owned(), format!("Authorization: Bearer {CALLER_KEY}")];
        for f in fields {
            args.extend(["-F".to_owned(), (*f).to_owned()]);
        }
        args.push(url(&s, "/v1/records/7"));
        tokio::task::block_in_place(move || curl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    // In the first bytes: judged as the request's method.
    let (code, _, resp) = form(&["note=x", "_method=DELETE"]);
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("no-record-deletes"), "{resp}");
    let (code, _, resp) = form(&["_method=delete", &upload]);
    assert_eq!(code, 403, "{resp}");
    // Any multipart type: Rack reads form fields from each.
    let auth = format!("Authorization: Bearer {CALLER_KEY}");
    let u = url(&s, "/v1/records/7");
    let (code, _, resp) = tokio::task::block_in_place(|| {
        curl(&["-H", &auth, "-H", "Content-Type: multipart/mixed", "-F", "_method=DELETE", &u])
    });
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("no-record-deletes"), "{resp}");
    // A method in lower case, a boundary parsers read differently.
    let (code, _, resp) =
        tokio::task::block_in_place(|| curl(&["-H", &auth, "-X", "post", "-F", "_method=DELETE", &u]));
    assert_eq!(code, 403, "{resp}");
    let odd = "Content-Type: multipart/form-data; boundary=a,b";
    let (code, _, resp) = tokio::task::block_in_place(|| {
        curl(&["-H", &auth, "-H", odd, "--data-binary", "--a,b\r\n\r\nx\r\n--a,b--", &u])
    });
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("inspect"), "{resp}");
    // An allowed override, and an upload with none, go on whole.
    let (code, _, resp) = form(&["_method=PATCH", &upload]);
    assert_eq!(code, 200, "{}", &resp[..resp.len().min(300)]);
    let (code, _, resp) = form(&[&upload, "note=kept"]);
    assert_eq!(code, 200, "{}", &resp[..resp.len().min(300)]);
    // Past the first bytes: broken off before the field, answered 400.
    let (code, _, resp) = form(&[&upload, "_method=DELETE"]);
    assert_eq!(code, 400, "{}", &resp[..resp.len().min(300)]);
    let seen = s.upstream.seen();
    let whole: Vec<_> = seen.iter().filter(|r| r.body.len() > 20_000).collect();
    assert_eq!(whole.len(), 2, "the two allowed uploads arrived whole");
    assert!(String::from_utf8_lossy(&whole[0].body).contains("PATCH"));
    assert!(String::from_utf8_lossy(&whole[1].body).contains("kept"));
    assert!(
        !seen.iter().any(|r| String::from_utf8_lossy(&r.body).contains("DELETE")),
        "no body with the refused override reached the upstream"
    );
    s.gw.stop().await;
    let list = sessions(s.gw.data_dir());
    assert!(
        list.iter().any(|l| l["close_reason"].as_str().is_some_and(|r| r.contains("`_method` field past the bytes"))),
        "the cut is journaled: {list:?}"
    );
}
