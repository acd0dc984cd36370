//! Loopback TCP load generator for `tcp_compare.sh`.
//!
//! - `tcp_load serve --listen ADDR`: an echo server.
//! - `tcp_load throughput --addr ADDR --conns N --secs S`: N connections stream 64 KiB writes
//!   full duplex through ADDR and count bytes echoed back; prints `MB/s`.
//! - `tcp_load connrate --addr ADDR --conns N --secs S`: N workers connect, exchange one small
//!   message, close, repeat; prints connections per second.
//!
//! Every loop is bounded by `--secs`. Only loopback addresses are accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    Throughput {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    Connrate {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve { listen } => serve(loopback(listen)?).await,
            Cmd::Throughput { addr, conns, secs } => throughput(loopback(addr)?, conns, secs).await,
            Cmd::Connrate { addr, conns, secs } => connrate(loopback(addr)?, conns, secs).await,
        }
    })
}

fn loopback(a: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !a.ip().is_loopback() {
        bail!("{a} is not a loopback address");
    }
    Ok(a)
}

async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
    loop {
        let (mut s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn throughput(addr: SocketAddr, conns: usize, secs: u64) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                let buf = vec![0xa5u8; 64 * 1024];
                while Instant::now() < deadline {
                    if w.write_all(&buf).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
                match tokio::time::timeout(left, r.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => {
                        if Instant::now() <= deadline {
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            }
            writer.abort();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mbps = received.load(Ordering::Relaxed) as f64 / secs as f64 / 1e6;
    println!("{mbps:.1}");
    Ok(())
}

async fn connrate(addr: SocketAddr, conns: usize, secs: u64) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            while Instant::now() < deadline {
                let mut s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                s.write_all(b"ping 0123456789\n").await?;
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await??;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!("{:.0}", done.load(Ordering::Relaxed) as f64 / secs as f64);
    Ok(())
}
