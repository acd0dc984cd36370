//! grpcio (Python) client and server through an HTTP route with `upstream_http2`: unary,
//! server-streaming and bidirectional calls; the server sees the gateway's credential, not the
//! caller's; a call without a credential ends UNAUTHENTICATED; each call is a journaled session
//! whose trailers (`grpc-status`) are on record.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

use airlock_tests::*;

const CALLER_KEY: &str = "ak_grpc_caller";
const UPSTREAM_KEY: &str = "grpc-upstream-secret";

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpc_echo.py")
}

fn start_server(port: u16) -> Server {
    let mut child = Command::new("python3")
        .arg(script())
        .args(["server", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with grpcio (pip install -r tests/python/requirements.txt)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "READY" {
                let _ = tx.send(());
            }
        }
    });
    let server = Server(child);
    rx.recv_timeout(WAIT).expect("gRPC server did not start");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_unary_streaming_and_bidi_calls_go_through() {
    let port = free_port();
    let _server = tokio::task::block_in_place(|| start_server(port));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("upstream.key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    let config = format!(
        "[[route]]\nname = \"grpc\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"127.0.0.1:{port}\"\nupstream_http2 = true\n\
         [[route.credential]]\nheader = \"authorization\"\nprefix = \"Bearer \"\nfile = \"{}\"\n\n\
         [[identity.api_key]]\nname = \"grpc-agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n",
        key_file.display(),
        airlock::identity::apikey::format_hash(CALLER_KEY)
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let target = gw.addr("grpc").to_string();
    let out = tokio::task::block_in_place(|| {
        Command::new("python3").arg(script()).args(["client", &target, CALLER_KEY]).output()
    })
    .unwrap();
    assert!(out.status.success(), "grpc client failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("Bearer {UPSTREAM_KEY}").as_bytes());
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(
        v["unary"],
        serde_json::json!({"text": format!("hello|{digest}"), "n": 42}),
        "the server got the gateway's credential: {v}"
    );
    assert_eq!(v["server_stream"], serde_json::json!(["s-0", "s-1", "s-2", "s-3", "s-4"]));
    assert_eq!(v["bidi"], serde_json::json!([["A", 0], ["B", 2], ["C", 4]]));
    assert_eq!(v["no_credential"], "UNAUTHENTICATED", "{v}");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    assert_eq!(list.len(), 4);
    let mut all = String::new();
    for s in &list {
        let out = airlock(&["replay", s["id"].as_str().unwrap(), "--data-dir", &gw.data_dir().display().to_string()]);
        all.push_str(&stdout(&out));
    }
    assert!(all.contains("POST /airlock.test.Echo/Bidi HTTP/2"), "{all}");
    assert!(all.contains("grpc-status: 0"), "trailers are journaled: {all}");
    assert!(all.contains("== request /airlock.test.Echo/Unary: allow"), "{all}");
    assert!(!all.contains(UPSTREAM_KEY) && !all.contains(CALLER_KEY));

    // Each gRPC message is its own journal frame: a 5-byte prefix and exactly its length.
    let bidi = list
        .iter()
        .map(|s| replay_json(gw.data_dir(), s["id"].as_str().unwrap()))
        .find(|frames| {
            frames.iter().any(|f| f["kind"] == "decision" && f["meta"]["request"] == "/airlock.test.Echo/Bidi")
        })
        .unwrap();
    for direction in ["client_to_upstream", "upstream_to_client"] {
        let messages: Vec<Vec<u8>> = bidi
            .iter()
            .filter(|f| {
                f["kind"] == "data" && f["direction"] == direction && f["head"] != true && f["payload_base64"] != ""
            })
            .map(|f| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(f["payload_base64"].as_str().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(messages.len(), 3, "{direction}: three notes each way");
        for m in &messages {
            let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
            assert_eq!((m[0], m.len()), (0, 5 + len), "{direction}: one whole message per frame");
        }
    }
}

/// A masked gRPC route: responses are decoded with the service's descriptor set (made here by
/// grpcio-tools' protoc), string fields masked and re-encoded; `Note.text` is declared a delta
/// field, so identifiers the server streams a few characters per message are still masked; the
/// journal holds the masked messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_responses_are_masked_field_by_field_and_across_streamed_messages() {
    let port = free_port();
    let _server = tokio::task::block_in_place(|| start_server(port));
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("echo.pb");
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "--include_imports"])
        .arg(format!("--descriptor_set_out={}", descriptors.display()))
        .arg(format!("-I{}", proto_dir.display()))
        .arg(proto_dir.join("echo.proto"))
        .output()
        .unwrap();
    assert!(protoc.status.success(), "{}", String::from_utf8_lossy(&protoc.stderr));
    let config = format!(
        "[[route]]\nname = \"grpc\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"127.0.0.1:{port}\"\n\
         upstream_http2 = true\nmask = \"agent\"\n\n\
         [[identity.api_key]]\nname = \"grpc-agent\"\nsha256 = \"{}\"\nroles = [\"agent\"]\n\n\
         [masking]\ndescriptor_set = \"{}\"\ngrpc_delta_fields = [\"airlock.test.Note.text\"]\n\n\
         [[masking.profile]]\nname = \"agent\"\n",
        airlock::identity::apikey::format_hash(CALLER_KEY),
        descriptors.display()
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let target = gw.addr("grpc").to_string();
    let out = tokio::task::block_in_place(|| {
        Command::new("python3").arg(script()).args(["masked", &target, CALLER_KEY]).output()
    })
    .unwrap();
    assert!(out.status.success(), "grpc client failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unary"], "SSN [PHI:SSN] on file", "{v}");
    let note = v["note"].as_str().unwrap();
    let pieces: Vec<&str> = v["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(pieces.len() > 10 && !pieces.iter().any(|p| p.contains("219-09-9999")), "{v}");
    assert_eq!(
        v["tokens"], "Patient SSN [PHI:SSN], phone [PHI:PHONE], mail [PHI:EMAIL]; stable.",
        "the server sent {note:?}"
    );
    // A message that cannot be inspected mid-stream ends the call with a gRPC status (not a
    // reset stream), after the message before it. (The text that message's delta field held
    // back for the next one goes with the stream: withheld, not delivered unmasked.)
    assert_eq!(v["big"]["got"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["big"]["code"], "UNAVAILABLE", "{v}");
    assert!(v["big"]["details"].as_str().unwrap().contains("ended early"), "{v}");
    gw.stop().await;
    let data_dir = gw.data_dir().display().to_string();
    for s in sessions(gw.data_dir()) {
        let text = stdout(&airlock(&["replay", s["id"].as_str().unwrap(), "--data-dir", &data_dir]));
        assert!(!text.contains("9999,") && !text.contains("example.org") && !text.contains("555-0142"), "{text}");
    }
}
