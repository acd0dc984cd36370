//! PHI masking on HTTP routes, with real clients: the openai Python SDK streams a completion
//! whose SSN, e-mail address and phone number arrive split across SSE events (the demo upstream
//! cuts its text every five characters, as a tokenizer does), and a Markdown table whose cells
//! are named only by its header, and receives them masked — per role — while the journal holds
//! exactly what the caller received; a JSON document gets its field
//! rules; and what cannot be inspected (too large, compressed, binary) is not delivered.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use airlock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AGENT_KEY: &str = "ak_mask_agent_1";
const CLINICIAN_KEY: &str = "ak_mask_clinician_1";
const UPSTREAM_KEY: &str = "sk-upstream-mask-test";
const SSN: &str = "219-09-9999";
const EMAIL: &str = "jane.demo@example.org";
const PHONE: &str = "(617) 555-0142";

fn keys() -> String {
    format!(
        "[[identity.api_key]]\nname = \"agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n\n\
         [[identity.api_key]]\nname = \"clinician\"\nsha256 = \"{}\"\nroles = [\"clinician\"]\n\n",
        airlock::identity::apikey::format_hash(AGENT_KEY),
        airlock::identity::apikey::format_hash(CLINICIAN_KEY),
    )
}

/// What the caller asks; the demo upstream's answer ends with it, so its table comes back
/// split into five-character events: a Markdown table whose cells say what they are only in its
/// header.
const PROMPT: &str = "list them\n| mrn | zip |\n|---|---|\n| 028939 | 52201 |\n";

fn run_sdk(base: &str, key: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([base, key, airlock::cli::demo_llm::MODEL, PROMPT])
        .output()
        .expect("run python3 (pip install openai)");
    assert!(out.status.success(), "openai client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_split_identifiers_masked_per_role() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(airlock::cli::demo_llm::serve(listener, UPSTREAM_KEY.into()));

    // The upstream really does split the identifiers: no single event carries one whole.
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let auth = format!("authorization: Bearer {UPSTREAM_KEY}");
    let url = format!("http://{upstream}/v1/chat/completions");
    let (code, _, raw) = tokio::task::block_in_place(|| {
        curl(&["-N", "-H", &auth, "-H", "content-type: application/json", "-d", body, &url])
    });
    assert_eq!(code, 200);
    let contents: Vec<String> = raw
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    let whole: String = contents.concat();
    for value in [SSN, EMAIL, PHONE] {
        assert!(whole.contains(value), "the answer mentions {value}");
        assert!(!contents.iter().any(|c| c.contains(value)), "{value} must arrive split: {contents:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("upstream.key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    let config = format!(
        "[[route]]\nname = \"llm\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\n\
         mask = \"agent\"\nmask_roles = [{{ role = \"clinician\", profile = \"clinical\" }}]\n\
         [[route.credential]]\nheader = \"authorization\"\nprefix = \"Bearer \"\nfile = \"{}\"\n\n{}\
         [[masking.profile]]\nname = \"agent\"\ndefault_action = \"redact\"\n\n\
         [[masking.profile]]\nname = \"clinical\"\ndefault_action = \"keep\"\nactions = {{ SSN = \"partial:4\" }}\n",
        key_file.display(),
        keys(),
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let base = format!("http://{}/v1", gw.addr("llm"));

    let agent = tokio::task::block_in_place(|| run_sdk(&base, AGENT_KEY));
    let plain = agent["plain"].as_str().unwrap();
    let streamed = agent["streamed"].as_str().unwrap();
    assert_eq!(streamed, plain, "the stream, masked piece by piece, equals the masked whole answer");
    for (value, tag) in [(SSN, "[PHI:SSN]"), (EMAIL, "[PHI:EMAIL]"), (PHONE, "[PHI:PHONE]")] {
        assert!(streamed.contains(tag), "{tag} missing: {streamed}");
        assert!(!streamed.contains(value), "{value} leaked: {streamed}");
    }
    assert!(!streamed.contains("9999") && !streamed.contains("example.org"), "no fragment leaks: {streamed}");
    assert!(streamed.contains("follow up in two weeks"), "clean text passes: {streamed}");
    assert!(streamed.ends_with("| mrn | zip |\n|---|---|\n| [PHI:MRN] | [PHI:ZIP] |\n"), "the table: {streamed}");

    let clinician = tokio::task::block_in_place(|| run_sdk(&base, CLINICIAN_KEY));
    let seen = clinician["streamed"].as_str().unwrap();
    assert_eq!(seen, clinician["plain"].as_str().unwrap());
    assert!(seen.contains("***-**-9999") && seen.contains(EMAIL) && seen.contains(PHONE), "{seen}");
    assert!(seen.ends_with(&PROMPT[PROMPT.find('|').unwrap()..]), "the clinician sees the table: {seen}");
    gw.stop().await;

    // The journal holds what each caller received: nothing unmasked in the agent's sessions,
    // and the per-entity counts in its streaming session's close record.
    let data_dir = gw.data_dir().display().to_string();
    let list = sessions(gw.data_dir());
    let agent_sessions: Vec<&serde_json::Value> =
        list.iter().filter(|s| s["principal"].as_str().unwrap_or("").contains("agent")).collect();
    assert!(agent_sessions.len() >= 3, "{list:?}");
    let mut counted = false;
    for s in &agent_sessions {
        let id = s["id"].as_str().unwrap();
        let text = stdout(&airlock(&["replay", id, "--data-dir", &data_dir]));
        // What crossed is on the indented lines; the record lines' microsecond timestamps
        // (`32.999972Z`) may hold any digits, and so may the request id the gateway adds (the
        // session's id: `01a21e52-ec83-777e-9999-…` happened).
        let crossed: Vec<String> =
            text.lines().filter(|l| l.starts_with("    ")).map(|l| l.replace(id, "(session id)")).collect();
        assert!(!crossed.is_empty(), "{text}");
        for value in [SSN, EMAIL, PHONE, "9999", "example.org"] {
            assert!(!crossed.iter().any(|l| l.contains(value)), "{value} in the journal of {id}: {text}");
        }
        let show: serde_json::Value =
            serde_json::from_str(&stdout(&airlock(&["sessions", "show", id, "--json", "--data-dir", &data_dir])))
                .unwrap();
        let masked = &show["close"]["masked"];
        if text.contains("text/event-stream") {
            assert!(masked["SSN"].as_u64() == Some(1) && masked["EMAIL"].as_u64() == Some(1), "{show}");
            assert!(masked["PHONE"].as_u64() == Some(1), "{show}");
            counted = true;
        }
    }
    assert!(counted, "a streaming session of the agent was journaled");
}

/// An upstream that answers every request on `path` with the raw response `routes` gives for it.
async fn raw_upstream(routes: Vec<(&'static str, Vec<u8>)>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let routes = std::sync::Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let resp = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone()).unwrap_or_default();
                let _ = s.write_all(&resp).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn response(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_fields_are_masked_and_uninspectable_responses_are_withheld() {
    let record =
        br#"{"patient_name":"Quentin Zed","dob":"1971-03-04","notes":"reach at 617-555-0199","mrn":{"v":123}}"#;
    let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(5000));
    let utf16: Vec<u8> = "\u{feff}<p>SSN 219-09-9999</p>".encode_utf16().flat_map(u16::to_le_bytes).collect();
    let upstream = raw_upstream(vec![
        ("/record", response("application/json", "", record)),
        ("/big", response("application/json", "", big.as_bytes())),
        ("/gz", response("application/json", "content-encoding: gzip\r\n", b"\x1f\x8b\x08\x00")),
        ("/img", response("image/png", "", b"\x89PNG\r\n\x1a\n")),
        ("/text", response("text/plain", "", b"SSN 219-09-9999 ok")),
        // JSON sent as text, or with no type at all, is still JSON: field rules and escapes apply.
        (
            "/plain-json",
            response("text/plain", "", br#" {"patient_name":"Quentin Zed","notes":"SSN 219\u002d09\u002d9999"}"#),
        ),
        (
            "/untyped",
            b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\nconnection: close\r\n\r\n{\"patient_name\":\"Quentin Zed\"}"
                .to_vec(),
        ),
        ("/plain-lines", response("text/plain", "", b"{\"patient_name\":\"Quentin Zed\"}\n{\"mrn\":7}\n")),
        ("/log", response("text/plain", "", b"[INFO] patient_name Quentin Zed, SSN 219-09-9999")),
        // HTML is read as the browser shows it: character references decoded, a highlight's tags
        // not splitting what it highlights.
        (
            "/html",
            response(
                "text/html; charset=utf-8",
                "",
                b"<p>Mail <a href=\"mailto:jane&#64;example.org\">jane&#x40;example&period;org</a>, \
                  SSN 219&#45;09&#45;9999 &amp; co, <mark>219</mark>-09-9999</p>",
            ),
        ),
        // JSON labeled HTML (PHP's default) is JSON too.
        ("/html-json", response("text/html", "", br#"{"patient_name":"Quentin Zed","note":"jane\u0040example.org"}"#)),
        // HTML that only starts like JSON is still HTML.
        ("/html-not-json", response("text/html", "", b"[{}]\n<p>jane&#64;example.org</p>")),
        ("/big-plain", response("text/plain", "", big.as_bytes())),
        // JSON its reader may take but the masker cannot: Python's `json` reads `NaN`.
        ("/nan", response("application/json", "", br#"{"score": NaN, "patient_name": "Quentin Zed"}"#)),
        // A lone surrogate escape passes a grammar check but not this reader; a lenient client
        // would still decode the `\u0040` beside it.
        ("/surrogate", response("application/json", "", br#"{"n":"\ud800 jane\u0040example.org"}"#)),
        // JSON Lines sent as one JSON document: masked line by line.
        (
            "/json-lines",
            response(
                "application/json",
                "",
                b"{\"note\":\"SSN 219-09-9999\"}\n{\"note\":\"jane\\u0040example.org\"}\n",
            ),
        ),
        // A byte-order mark a browser obeys over the charset the header declares.
        ("/utf16", response("text/html; charset=utf-8", "", &utf16)),
        // An upstream's header value is not echoed into the error the caller reads.
        ("/coding", response("text/plain", "content-encoding: SSN 219-09-9999\r\n", b"x")),
        (
            "/ctype",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; x=\xe9\r\ncontent-length: 15\r\nconnection: close\r\n\r\n\
              SSN 219-09-9999"
                .to_vec(),
        ),
        // Codings that would lose their header on the way: a transfer coding hyper does not
        // undo, and a content coding that `Connection` names as hop-by-hop.
        (
            "/te",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip, chunked\r\n\
              connection: close\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "/conn",
            response("text/plain", "connection: content-encoding\r\ncontent-encoding: gzip\r\n", b"\x1f\x8b\x08\x00"),
        ),
    ])
    .await;
    let config = format!(
        "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\n\
         mask = \"agent\"\nmax_inspect_body = 1024\n\n{}\
         [[masking.profile]]\nname = \"agent\"\n\
         [[masking.profile.field]]\nkey = \"patient_name\"\n\
         [[masking.profile.field]]\npath = \"$.dob\"\naction = \"drop\"\n\
         [[masking.profile.field]]\nkey = \"mrn\"\naction = \"null\"\n",
        keys()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let base = format!("http://{}", gw.addr("api"));
    let auth = format!("authorization: Bearer {AGENT_KEY}");
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let auth = auth.clone();
        tokio::task::block_in_place(move || curl(&["-H", &auth, &url]))
    };

    let (code, headers, body) = get("/record");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"patient_name": "[PHI:patient_name]", "notes": "reach at [PHI:PHONE]", "mrn": null})
    );
    assert!(headers.to_ascii_lowercase().contains(&format!("content-length: {}", body.len())), "{headers}");

    let (code, _, body) = get("/text");
    assert_eq!((code, body.as_str()), (200, "SSN [PHI:SSN] ok"));
    let (code, _, body) = get("/plain-json");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"patient_name": "[PHI:patient_name]", "notes": "SSN [PHI:SSN]"}));
    let (code, _, body) = get("/untyped");
    assert_eq!((code, body.as_str()), (200, r#"{"patient_name":"[PHI:patient_name]"}"#));
    let (code, _, body) = get("/plain-lines");
    assert_eq!((code, body.as_str()), (200, "{\"patient_name\":\"[PHI:patient_name]\"}\n{\"mrn\":null}\n"));
    // Text that only starts with a bracket is text: detectors apply, field rules cannot.
    let (code, _, body) = get("/log");
    assert_eq!((code, body.as_str()), (200, "[INFO] patient_name [PHI:PERSON], SSN [PHI:SSN]"));
    let (code, _, body) = get("/html-json");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, serde_json::json!({"patient_name": "[PHI:patient_name]", "note": "[PHI:EMAIL]"}));
    let (code, _, body) = get("/html-not-json");
    assert_eq!((code, body.as_str()), (200, "[{}]\n<p>[PHI:EMAIL]</p>"));
    let (code, _, body) = get("/json-lines");
    assert_eq!((code, body.as_str()), (200, "{\"note\":\"SSN [PHI:SSN]\"}\n{\"note\":\"[PHI:EMAIL]\"}\n"));
    let (code, _, body) = get("/html");
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "<p>Mail <a href=\"mailto:[PHI:EMAIL]\">[PHI:EMAIL]</a>, SSN [PHI:SSN] &amp; co, <mark>[PHI:SSN]</mark></p>"
        )
    );

    for (path, why) in [
        ("/big", "inspection limit"),
        ("/big-plain", "inspection limit"),
        ("/gz", "encoded (gzip)"),
        ("/img", "binary content"),
        ("/te", "encoded (gzip, chunked)"),
        ("/conn", "encoded (gzip)"),
        ("/nan", "not valid UTF-8 JSON"),
        ("/surrogate", "not valid UTF-8 JSON"),
        ("/utf16", "UTF-16"),
        ("/coding", "encoded (an unregistered coding)"),
        ("/ctype", "binary content"),
    ] {
        let (code, _, body) = get(path);
        assert_eq!(code, 502, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "response_not_inspectable", "{path}: {body}");
        assert!(v["message"].as_str().unwrap().contains(why), "{path}: {body}");
        assert!(
            !body.contains("xxxx") && !body.contains("PNG") && !body.contains("219-09") && !body.contains("Quentin"),
            "nothing of the body or its headers leaks: {body}"
        );
    }
    gw.stop().await;

    // Each withheld response is a journaled decision, and its body is not in the journal.
    let data_dir = gw.data_dir().display().to_string();
    let mut withheld = 0;
    for s in sessions(gw.data_dir()) {
        let id = s["id"].as_str().unwrap();
        let show: serde_json::Value =
            serde_json::from_str(&stdout(&airlock(&["sessions", "show", id, "--json", "--data-dir", &data_dir])))
                .unwrap();
        if show["decisions"].as_array().unwrap().iter().any(|d| d["rule"] == "mask:fail-closed") {
            withheld += 1;
            let text = stdout(&airlock(&["replay", id, "--data-dir", &data_dir]));
            assert!(!text.contains("xxxxxxxx") && text.contains("502"), "{text}");
        }
        let text = stdout(&airlock(&["replay", id, "--data-dir", &data_dir]));
        assert!(!text.contains("Quentin") && !text.contains("617-555-0199") && !text.contains("219-09-9999"), "{text}");
        assert!(!text.contains("jane&#") && !text.contains("219&#45;"), "{text}");
    }
    assert_eq!(withheld, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_json_body_is_masked_whole() {
    // Over 64 KiB: the body is masked on the blocking pool, with its room in the inspection
    // budget. This checks that path masks all of it; that it ran off the session's runtime is
    // not something the caller can see.
    let records: Vec<String> =
        (0..1500).map(|i| format!(r#"{{"id":{i},"patient_name":"Quentin Zed","note":"SSN {SSN}"}}"#)).collect();
    let body = format!("[{}]", records.join(","));
    assert!(body.len() > 64 * 1024);
    let upstream = raw_upstream(vec![("/large", response("application/json", "", body.as_bytes()))]).await;
    let config = format!(
        "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\n\
         mask = \"agent\"\n\n{}\
         [[masking.profile]]\nname = \"agent\"\n\
         [[masking.profile.field]]\nkey = \"patient_name\"\n",
        keys()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let url = format!("http://{}/large", gw.addr("api"));
    let auth = format!("authorization: Bearer {AGENT_KEY}");
    let (code, _, got) = tokio::task::block_in_place(move || curl(&["-H", &auth, &url]));
    assert_eq!(code, 200, "{}", &got[..got.len().min(300)]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 1500);
    assert!(items.iter().all(|r| r["patient_name"] == "[PHI:patient_name]" && r["note"] == "SSN [PHI:SSN]"));
    assert!(!got.contains(SSN) && !got.contains("Quentin"));
    gw.stop().await;
}

/// A JSON body read whole for masking is read within the route's `request_timeout`, not only its
/// idle timeout: an upstream that drips one byte at a time is cut off at the deadline, and the
/// caller gets a clean refusal instead of waiting for as long as the upstream keeps dripping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_body_on_a_masked_route_is_cut_off_at_the_request_timeout() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // 1 + 30 bytes over about 9 s, never idle for long.
                let _ = s.write_all(b"1\r\n[\r\n").await;
                for _ in 0..30 {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    if s.write_all(b"1\r\n1\r\n").await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"1\r\n]\r\n0\r\n\r\n").await;
            });
        }
    });
    let config = format!(
        "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\n\
         mask = \"agent\"\nrequest_timeout = \"1s\"\nidle_timeout = \"5s\"\n\n{}\
         [[masking.profile]]\nname = \"agent\"\n",
        keys()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let url = format!("http://{}/slow", gw.addr("api"));
    let auth = format!("authorization: Bearer {AGENT_KEY}");
    let started = std::time::Instant::now();
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &auth, &url]));
    let took = started.elapsed();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("request timeout"), "{body}");
    assert!(took < std::time::Duration::from_secs(4), "cut off at the 1 s deadline, not after the drip: {took:?}");
    gw.stop().await;
    let list = sessions(gw.data_dir());
    let data_dir = gw.data_dir().display().to_string();
    let show: serde_json::Value = serde_json::from_str(&stdout(&airlock(&[
        "sessions",
        "show",
        list[0]["id"].as_str().unwrap(),
        "--json",
        "--data-dir",
        &data_dir,
    ])))
    .unwrap();
    assert!(show["decisions"].as_array().unwrap().iter().any(|d| d["rule"] == "mask:fail-closed"), "{show}");
}
