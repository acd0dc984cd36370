//! `airlock demo`: the gateway with an embedded config, a demo upstream on loopback, and the
//! commands to try printed on start.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::Config;

/// Address of the demo upstream.
const UPSTREAM: &str = "127.0.0.1:7001";
/// Address of the demo route.
const LISTEN: &str = "127.0.0.1:7000";
/// Address of the demo LLM route (HTTP).
const LLM_LISTEN: &str = "127.0.0.1:7002";
/// Address of the OpenAI-compatible demo upstream.
const LLM_UPSTREAM: &str = "127.0.0.1:7003";

fn random_key(prefix: &str) -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("{prefix}{}", crate::journal::crypto::hex(&b))
}

fn demo_config(data_dir: &Path, caller_key: &str, upstream_key_file: &Path) -> String {
    format!(
        r#"
[journal]
data_dir = "{data_dir}"
durability = "strict"

[admin]
listen = "127.0.0.1:9090"

[gateway]
drain_timeout = "5s"

[[route]]
name = "demo"
listen = "{LISTEN}"
protocol = "tcp"
upstream = "{UPSTREAM}"
idle_timeout = "5m"

[[route]]
name = "llm"
listen = "{LLM_LISTEN}"
protocol = "http"
upstream = "{LLM_UPSTREAM}"
# Responses are masked in flight: identifiers in the model's answer reach the caller redacted,
# even when they arrive split across streamed events.
mask = "agent"

[[route.credential]]
header = "authorization"
prefix = "Bearer "
file = "{key_file}"

[[identity.api_key]]
name = "demo-agent"
sha256 = "{hash}"
roles = ["agent"]

[[masking.profile]]
name = "agent"
default_action = "redact"
"#,
        data_dir = escape(data_dir),
        key_file = escape(upstream_key_file),
        hash = crate::identity::apikey::format_hash(caller_key),
    )
}

fn escape(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
}

pub(super) fn demo(data_dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Fresh keys each run: the caller's (printed) and the upstream's (held by the gateway only).
    let caller_key = random_key("ak_demo_");
    let upstream_key = random_key("sk-demo-upstream-");
    let key_file = data_dir.join("demo-upstream.key");
    {
        // Readable by its owner only, like every secret file.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&key_file);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| f.write_all(upstream_key.as_bytes()))
            .with_context(|| format!("cannot write {}", key_file.display()))?;
    }
    let settings = Config::parse(&demo_config(data_dir, &caller_key, &key_file))?.build()?;
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "airlock".into());
    let dir = data_dir.display().to_string();
    super::runtime()?.block_on(async move {
        let upstream = TcpListener::bind(UPSTREAM).await.with_context(|| format!("demo upstream: cannot listen on {UPSTREAM}"))?;
        tokio::spawn(demo_upstream(upstream));
        let llm = TcpListener::bind(LLM_UPSTREAM)
            .await
            .with_context(|| format!("demo LLM upstream: cannot listen on {LLM_UPSTREAM}"))?;
        tokio::spawn(super::demo_llm::serve(llm, upstream_key));
        let model = super::demo_llm::MODEL;
        let banner = move |g: &crate::Gateway| {
            let listen = g.route_addr("demo").map(|a| a.to_string()).unwrap_or_else(|| LISTEN.into());
            println!(
                "\nAirlock demo is running.\n\
                 \n  route `demo`  {listen}  ->  demo upstream {UPSTREAM} (a tiny HTTP service with synthetic patient records)\
                 \n  route `llm`   http://{LLM_LISTEN}  ->  OpenAI-compatible demo model on {LLM_UPSTREAM} (the gateway holds its key)\
                 \n  journal       {dir}  (strict: every byte is fsynced before it is forwarded; payloads encrypted; signed checkpoints)\
                 \n  admin         http://127.0.0.1:9090/metrics\
                 \n\nTry:\
                 \n  curl -s http://{listen}/patients/1\
                 \n  curl -s http://{LLM_LISTEN}/v1/chat/completions -H 'Authorization: Bearer {caller_key}' \\\
                 \n       -H 'Content-Type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\
                 \n  python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"http://{LLM_LISTEN}/v1\", api_key=\"{caller_key}\"); \\\
                 \n    [print(e.choices[0].delta.content or \"\", end=\"\") for e in c.chat.completions.create(model=\"{model}\", \\\
                 \n    messages=[{{\"role\": \"user\", \"content\": \"hi\"}}], stream=True)]'\
                 \n  {exe} sessions list --data-dir {dir}\
                 \n  {exe} replay <SESSION-ID> --data-dir {dir}\
                 \n  {exe} replay <SESSION-ID> --format json --data-dir {dir}\
                 \n  {exe} journal verify --data-dir {dir}\
                 \n\nPress Ctrl-C to stop: open sessions drain and a final checkpoint is signed.\n"
            );
        };
        super::run::serve_until_signal(settings, Some(Box::new(banner)), None).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A minimal HTTP/1.0-style responder: one synthetic (entirely made-up) patient record per
/// request, then close. Enough to see a request and a response in the journal.
async fn demo_upstream(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() {
                match sock.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let path = std::str::from_utf8(&buf[..len])
                .ok()
                .and_then(|r| r.split_whitespace().nth(1))
                .unwrap_or("/")
                .to_string();
            let id: u32 = path.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(1);
            let body = format!(
                "{{\"id\":{id},\"name\":\"Jane Demo-{id}\",\"mrn\":\"MRN-{:06}\",\"dob\":\"1980-01-{:02}\",\"note\":\"synthetic record\"}}\n",
                100_000 + id,
                1 + id % 28
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
