//! The openai Python SDK (a real client) through an HTTP route to the OpenAI-compatible demo
//! upstream: plain and streaming chat completions and the model list, with the upstream key held
//! only by the gateway; a wrong caller key gets the 401 the SDK turns into `AuthenticationError`.

use std::path::Path;
use std::process::Command;

use airlock_tests::*;

const CALLER_KEY: &str = "ak_sdk_caller_42";
const UPSTREAM_KEY: &str = "sk-upstream-held-by-the-gateway";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_through_the_gateway() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(airlock::cli::demo_llm::serve(listener, UPSTREAM_KEY.into()));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("upstream.key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    let config = format!(
        "[[route]]\nname = \"llm\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{upstream}\"\n\
         [[route.credential]]\nheader = \"authorization\"\nprefix = \"Bearer \"\nfile = \"{}\"\n\n\
         [[identity.api_key]]\nname = \"sdk-agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
        key_file.display(),
        airlock::identity::apikey::format_hash(CALLER_KEY)
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let base = format!("http://{}/v1", gw.addr("llm"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py");
    let out = tokio::task::block_in_place(|| {
        Command::new("python3").arg(&script).args([&base, CALLER_KEY, airlock::cli::demo_llm::MODEL]).output()
    })
    .expect("run python3 (pip install openai)");
    assert!(out.status.success(), "openai client failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plain = v["plain"].as_str().unwrap();
    assert!(plain.contains("Jane Demo") && plain.contains("summarize the chart"), "{v}");
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["streamed"].as_str().unwrap(), plain, "the stream carries the same text");
    assert!(v["chunks"].as_u64().unwrap() > 5, "{v}");
    assert_eq!(v["models"], serde_json::json!([airlock::cli::demo_llm::MODEL]));
    assert_eq!(v["refused"]["status"], 401, "{v}");
    assert_eq!(v["refused"]["type"], "AuthenticationError");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    assert_eq!(list.len(), 4, "plain, streaming, models, refused");
    let mut all = String::new();
    for s in &list {
        let out = airlock(&["replay", s["id"].as_str().unwrap(), "--data-dir", &gw.data_dir().display().to_string()]);
        all.push_str(&stdout(&out));
    }
    assert!(all.contains("POST /v1/chat/completions"), "{all}");
    assert!(all.contains("data: [DONE]"), "the streamed events are in the journal");
    assert!(!all.contains(UPSTREAM_KEY) && !all.contains(CALLER_KEY), "no credential in the journal");

    // Each SSE event of the stream is its own journal frame.
    let streamed = list.iter().map(|s| replay_json(gw.data_dir(), s["id"].as_str().unwrap())).find(|frames| {
        frames.iter().any(|f| {
            f["head"] == true && f["direction"] == "upstream_to_client" && payload(f).contains("text/event-stream")
        })
    });
    let frames = streamed.expect("a streamed session");
    let events: Vec<String> = frames
        .iter()
        .filter(|f| {
            // Body frames; an end that came as its own record is an empty frame.
            f["kind"] == "data"
                && f["direction"] == "upstream_to_client"
                && f["head"] != true
                && f["payload_base64"] != ""
        })
        .map(payload)
        .collect();
    assert!(events.len() > 5);
    for e in &events {
        assert!(
            e.starts_with("data: ") && e.ends_with("\n\n") && e.matches("\n\n").count() == 1,
            "not one event: {e:?}"
        );
    }
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
}

fn payload(f: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.decode(f["payload_base64"].as_str().unwrap_or("")).unwrap();
    String::from_utf8_lossy(&b).into_owned()
}
