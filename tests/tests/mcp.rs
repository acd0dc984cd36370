//! A real MCP session (the official `mcp` Python SDK, client and server, streamable HTTP)
//! through an HTTP route with `mcp = true`: initialize, tools/list and tools/call go through;
//! a tools/call that a rule denies never reaches the server; every call is journaled with the
//! tool it named.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_tests::*;

const CALLER_KEY: &str = "ak_mcp_agent";

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
         [[rule]]\nid = \"agents-never-delete\"\neffect = \"deny\"\nroles = [\"agent\"]\nreason = \"agents may not delete records\"\n\
         mcp = {{ tools = [\"delete_*\"] }}\n\
         [[rule]]\nid = \"no-internal\"\neffect = \"deny\"\nreason = \"internal endpoints are closed\"\n\
         http = {{ methods = [\"POST\"], path = \"/internal/**\" }}\n",
        airlock::identity::apikey::format_hash(CALLER_KEY)
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
