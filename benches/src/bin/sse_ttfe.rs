//! Time to first SSE event, for `benches/sse_compare.sh`.
//!
//! `sse_ttfe upstream --listen ADDR --key KEY` serves the OpenAI-compatible demo model (the same
//! code `airlock demo` runs). `sse_ttfe measure --target ADDR --key KEY --n N` sends N streaming
//! chat completions one after another, each on a fresh connection, and prints the median and p90
//! time from the last request byte written to the first complete `data:` event read.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the demo model.
    Upstream {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        key: String,
    },
    /// Measure.
    Measure {
        #[arg(long)]
        target: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 200)]
        n: usize,
    },
}

async fn one(target: &str, key: &str) -> anyhow::Result<Duration> {
    let body = r#"{"model":"airlock-demo-llm","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(req.as_bytes()).await?;
    let sent = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let first = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
        if n == 0 {
            bail!("closed before the first event: {}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(6).position(|w| w == b"data: ")
            && got[i..].windows(2).any(|w| w == b"\n\n")
        {
            break sent.elapsed();
        }
    };
    // Drain the rest so the exchange completes on both sides.
    while tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await?? > 0 {}
    Ok(first)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Upstream { listen, key } => {
            let l = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listen on {listen}"))?;
            airlock::cli::demo_llm::serve(l, key).await;
        }
        Cmd::Measure { target, key, n } => {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                times.push(one(&target, &key).await?);
            }
            times.sort();
            let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
            println!("{:.3} {:.3}", at(0.5), at(0.9));
        }
    }
    Ok(())
}
