//! `airlock run --config FILE`.

use std::path::Path;
use std::process::ExitCode;

use tracing::{error, info};

use crate::config::{Config, Settings};
use crate::gateway::Gateway;

pub(super) fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let running = Config::load(config)?;
    let settings = running.build()?;
    super::runtime()?.block_on(serve_until_signal(settings, None, Some((config, running))))?;
    Ok(ExitCode::SUCCESS)
}

/// Called once the gateway is listening (the demo prints its banner).
pub(super) type OnStart = Box<dyn FnOnce(&Gateway) + Send>;

/// Starts the gateway, calls `started` with it, then serves until SIGTERM or SIGINT and shuts
/// down gracefully. With a config path (and the configuration it started with), SIGHUP reloads
/// identity and policy from it.
pub(super) async fn serve_until_signal(
    settings: Settings,
    started: Option<OnStart>,
    config: Option<(&Path, Config)>,
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
            _ = hup.recv() => match &config {
                Some((path, running)) => reload(&gateway, path, running).await,
                None => info!("SIGHUP ignored: no configuration file to reload."),
            },
        }
    }
    info!("Shutdown requested.");
    gateway.shutdown().await?;
    Ok(())
}

/// Re-reads the file and puts its identity and policy in force; a file that does not build, or
/// that changes a setting only a restart applies, is refused whole and the running policy stays.
/// Reading and building (file I/O, key files) run on the blocking pool, not on a runtime thread
/// that serves sessions.
async fn reload(gateway: &Gateway, path: &Path, running: &Config) {
    let owned = path.to_path_buf();
    let running = running.clone();
    let result = tokio::task::spawn_blocking(move || {
        let new = Config::load(&owned).map_err(|e| e.to_string())?;
        if let Some(field) = running.fixed_changes(&new) {
            return Err(format!(
                "the file changes `{field}`, which is built at start and needs a restart; \
                 a reload applies identity, rules, break_glass, and each route's allow_roles and default_effect"
            ));
        }
        new.build_access().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    if let Err(e) = result.and_then(|access| gateway.reload_access(access)) {
        gateway.metrics().error("config_reload");
        error!(error = %e, policy = %gateway.policy_version(), "Reload refused; the running policy stays.");
    }
}
