//! `airlock run --config FILE`.

use std::path::Path;
use std::process::ExitCode;

use tracing::{error, info};

use crate::config::{Config, Settings};
use crate::gateway::Gateway;

pub(super) fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Config::load(config)?.build()?;
    super::runtime()?.block_on(serve_until_signal(settings, None, Some(config)))?;
    Ok(ExitCode::SUCCESS)
}

/// Called once the gateway is listening (the demo prints its banner).
pub(super) type OnStart = Box<dyn FnOnce(&Gateway) + Send>;

/// Starts the gateway, calls `started` with it, then serves until SIGTERM or SIGINT and shuts
/// down gracefully. With a config path, SIGHUP reloads identity and policy from it.
pub(super) async fn serve_until_signal(
    settings: Settings,
    started: Option<OnStart>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let gateway = Gateway::start(settings).await?;
    if let Some(f) = started {
        f(&gateway);
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match config {
                Some(path) => reload(&gateway, path).await,
                None => info!("SIGHUP ignored: no configuration file to reload."),
            },
        }
    }
    info!("Shutdown requested.");
    gateway.shutdown().await?;
    Ok(())
}

/// Re-reads the file and puts its identity and policy in force; a file that does not build is
/// refused whole and the running policy stays. Reading and building (file I/O, key files) run on
/// the blocking pool, not on a runtime thread that serves sessions.
async fn reload(gateway: &Gateway, path: &Path) {
    let owned = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || Config::load(&owned).and_then(|c| c.build_access()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = result.and_then(|access| gateway.reload_access(access)) {
        gateway.metrics().error("config_reload");
        error!(error = %e, policy = %gateway.policy_version(), "Reload refused; the running policy stays.");
    }
}
