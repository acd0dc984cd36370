//! A real MCP session (the official `mcp` Python SDK, client and server, streamable HTTP)
//! through an HTTP route with `mcp = true`: initialize, tools/list and tools/call go through;
//! a tools/call that a rule denies never reaches the server; every call is journaled with the
//! tool it named.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_tests::*;

const CALLER_KEY: &str = "ak_mcp_agent";
const OTHER_KEY: &str = "ak_mcp_other";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_goes_through_and_a_denied_tool_never_runs() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_session.py");
    let port = free_port();
    let _server = Server(
        Command::new("python3")
            .arg(&script)
            .args(["server", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with mcp (pip install -r tests/python/requirements.txt)"),
    );
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "MCP server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = format!(
        "[[route]]\nname = \"mcp\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"127.0.0.1:{port}\"\nmcp = true\n\n\
         [[identity.api_key]]\nname = \"mcp-agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n\n\
         [[identity.api_key]]\nname = \"other-agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n\n\
         [[rule]]\nid = \"agents-never-delete\"\neffect = \"deny\"\nroles = [\"agent\"]\nreason = \"agents may not delete records\"\n\
         mcp = {{ tools = [\"delete_*\"] }}\n\
         [[rule]]\nid = \"no-internal\"\neffect = \"deny\"\nreason = \"internal endpoints are closed\"\n\
         http = {{ methods = [\"POST\"], path = \"/internal/**\" }}\n",
        airlock::identity::apikey::format_hash(CALLER_KEY),
        airlock::identity::apikey::format_hash(OTHER_KEY),
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let url = format!("http://{}/mcp", gw.addr("mcp"));
    let out = tokio::task::block_in_place(|| {
        Command::new("timeout").args(["60", "python3"]).arg(&script).args(["client", &url, CALLER_KEY]).output()
    })
    .unwrap();
    let stdout_text = String::from_utf8_lossy(&out.stdout);
    let line = stdout_text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result from the MCP client: {}", String::from_utf8_lossy(&out.stderr)));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["server"], "records");
    assert_eq!(v["tools"], serde_json::json!(["delete_record", "read_record"]));
    assert_eq!(v["read"], "record 12345: synthetic patient, stable");
    let delete = v["delete"].as_str().unwrap();
    assert!(!delete.starts_with("deleted"), "the denied tool ran: {v}");
    assert!(delete.contains("403"), "the client saw the gateway's 403: {v}");
    // A tool call does not make a POST somewhere else any less a POST there.
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_record","arguments":{}}}"#;
    let internal = format!("http://{}/internal/reset", gw.addr("mcp"));
    let (code, _, answer) = tokio::task::block_in_place(|| {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {CALLER_KEY}"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            &internal,
        ])
    });
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("no-internal"), "{answer}");

    // A session belongs to the caller it was opened for: another caller naming its id, like a
    // caller naming an id the gateway never saw opened, gets a 404 (MCP clients then open a
    // new session), and the upstream never hears of it.
    let mcp_post = |key: &str, session: Option<&str>, body: &str| {
        let mut args = vec![
            "-H".to_owned(),
            format!("Authorization: Bearer {key}"),
            "-H".into(),
            "content-type: application/json".into(),
            "-H".into(),
            "accept: application/json, text/event-stream".into(),
            "--data-binary".into(),
            body.to_owned(),
            url.clone(),
        ];
        if let Some(id) = session {
            args.extend(["-H".into(), format!("mcp-session-id: {id}")]);
        }
        tokio::task::block_in_place(|| curl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (code, headers, body) = mcp_post(CALLER_KEY, None, init);
    assert_eq!(code, 200, "{body}");
    let id = header(&headers, "mcp-session-id").expect("the server opened a session").to_owned();
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (code, _, body) = mcp_post(OTHER_KEY, Some(&id), list);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("session_not_found") && body.contains("another caller"), "{body}");
    let (code, _, body) = mcp_post(CALLER_KEY, Some("0123456789abcdef"), list);
    assert_eq!(code, 404, "{body}");
    let notified = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(mcp_post(CALLER_KEY, Some(&id), notified).0, 202);
    let (code, _, body) = mcp_post(CALLER_KEY, Some(&id), list);
    assert_eq!(code, 200, "its own caller goes on: {body}");
    assert!(body.contains("read_record"), "{body}");
    // Its own session and another beside it: servers differ on which one they read.
    let (code, _, body) = tokio::task::block_in_place(|| {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {CALLER_KEY}"),
            "-H",
            "content-type: application/json",
            "-H",
            &format!("mcp-session-id: {id}"),
            "-H",
            "mcp-session-id: 0123456789abcdef",
            "--data-binary",
            list,
            &url,
        ])
    });
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("more than one MCP session"), "{body}");
    gw.stop().await;

    let mut decisions = Vec::new();
    for s in sessions(gw.data_dir()) {
        for f in replay_json(gw.data_dir(), s["id"].as_str().unwrap()) {
            if f["kind"] == "decision" {
                decisions.push(format!(
                    "{} {} {}",
                    f["meta"]["request"].as_str().unwrap(),
                    f["meta"]["effect"].as_str().unwrap(),
                    f["meta"]["rule"].as_str().unwrap()
                ));
            }
        }
    }
    assert!(decisions.contains(&"mcp tools/call read_record allow route:mcp:default".to_string()), "{decisions:#?}");
    assert!(decisions.contains(&"mcp tools/call delete_record deny agents-never-delete".to_string()), "{decisions:#?}");
    assert!(
        decisions.iter().any(|d| d.starts_with("POST /mcp allow")),
        "initialize and tools/list are plain requests: {decisions:#?}"
    );
}
