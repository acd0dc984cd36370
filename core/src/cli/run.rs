//! `airlock run --config FILE`.

use std::path::Path;
use std::process::ExitCode;

use tracing::info;

use crate::config::{Config, Settings};
use crate::gateway::Gateway;

pub(super) fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Config::load(config)?.build()?;
    super::runtime()?.block_on(serve_until_signal(settings, None))?;
    Ok(ExitCode::SUCCESS)
}

/// Called once the gateway is listening (the demo prints its banner).
pub(super) type OnStart = Box<dyn FnOnce(&Gateway) + Send>;

/// Starts the gateway, calls `started` with it, then serves until SIGTERM or SIGINT and shuts
/// down gracefully.
pub(super) async fn serve_until_signal(settings: Settings, started: Option<OnStart>) -> anyhow::Result<()> {
    let gateway = Gateway::start(settings).await?;
    if let Some(f) = started {
        f(&gateway);
    }
    wait_for_signal().await?;
    info!("Shutdown requested.");
    gateway.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
