//! The running gateway: opens the journal, binds every listener, serves the admin API, and shuts
//! down in order — stop accepting, drain open sessions up to a deadline, close the rest, write the
//! final checkpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminState};
use crate::config::Access;
use crate::config::Settings;
use crate::journal::{Checkpoint, Journal};
use crate::listener;
use crate::proto::{SessionCtx, SharedAccess};
use crate::shards::Shards;

/// A started gateway.
#[derive(Debug)]
pub struct Gateway {
    routes: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    access: Arc<SharedAccess>,
    admin_state: Arc<AdminState>,
    stop_accepting: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    shards: Arc<Shards>,
    accept_tasks: Vec<JoinHandle<()>>,
    admin_task: Option<JoinHandle<std::io::Result<()>>>,
    drain_timeout: Duration,
}

/// A gateway dropped without [`Gateway::shutdown`] stops accepting, and its session runtimes
/// stop (whatever still runs on them is dropped).
impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.abort.cancel();
    }
}

impl Gateway {
    /// Opens the journal and binds every listener; sessions are served once this returns.
    /// Fails before accepting anything if any address is taken.
    pub async fn start(settings: Settings) -> Result<Self, crate::Error> {
        let metrics = Arc::new(Metrics::new());
        let journal = {
            let settings = settings.journal.clone();
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || Journal::open(&settings, metrics))
                .await
                .map_err(|_| crate::journal::JournalError::Closed)??
        };
        let journal = Arc::new(journal);
        let mut listeners = Vec::with_capacity(settings.routes.len());
        for route in &settings.routes {
            match listener::bind(route).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let _ = journal.shutdown().await;
                    return Err(e);
                }
            }
        }
        let admin_listener = match settings.admin {
            Some(addr) => match admin::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    let _ = journal.shutdown().await;
                    return Err(e);
                }
            },
            None => None,
        };

        let access = Arc::new(SharedAccess::new(settings.access.clone()));
        let stop_accepting = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Each runtime's thread is started and waited for: off this one.
        let started =
            tokio::task::spawn_blocking(|| Shards::start(std::thread::available_parallelism().map_or(1, |n| n.get())))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let shards = match started {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let _ = journal.shutdown().await;
                return Err(crate::Error::Runtime(e));
            }
        };
        // Every route's context first: a route that fails to build (its upstream TLS) leaves
        // nothing accepting behind it.
        let mut routes = Vec::new();
        let mut contexts = Vec::new();
        for (route, l) in settings.routes.iter().zip(listeners) {
            routes.push((route.name.clone(), l.local_addr().unwrap_or(route.listen)));
            let http_upstream = match route.protocol {
                crate::config::Protocol::Http => match crate::proto::http::Upstream::new(route, shards.len()) {
                    Ok(u) => Some(u),
                    Err(source) => {
                        let _ = journal.shutdown().await;
                        return Err(crate::config::ConfigError::Tls {
                            field: format!("route[{}].upstream_tls", route.name),
                            source,
                        }
                        .into());
                    }
                },
                crate::config::Protocol::Tcp | crate::config::Protocol::Postgres => None,
            };
            let ctx = Arc::new(SessionCtx {
                route: route.clone(),
                journal: journal.clone(),
                metrics: metrics.clone(),
                access: access.clone(),
                http_upstream,
                cancel_keys: Default::default(),
                abort: abort.clone(),
                tracker: tracker.clone(),
            });
            contexts.push((l, ctx));
        }
        let accept_tasks = contexts
            .into_iter()
            .map(|(l, ctx)| {
                tokio::spawn(listener::accept_loop(l, ctx, tracker.clone(), shards.clone(), stop_accepting.clone()))
            })
            .collect();
        let admin_state =
            Arc::new(AdminState { metrics: metrics.clone(), ready: false.into(), journal: journal.clone() });
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        // The admin API outlives the drain so /readyz can report it.
        let admin_task = admin_listener.map(|l| tokio::spawn(admin::serve(l, admin_state.clone(), abort.clone())));
        admin_state.ready.store(true, Ordering::Release);
        info!(
            routes = routes.len(),
            admin = ?admin_addr,
            policy = %settings.access.policy.version,
            "Gateway started."
        );
        Ok(Self {
            routes,
            admin_addr,
            journal,
            metrics,
            access,
            admin_state,
            stop_accepting,
            abort,
            tracker,
            shards,
            accept_tasks,
            admin_task,
            drain_timeout: settings.drain_timeout,
        })
    }

    /// The bound address of each route, by name (useful when the config says port 0).
    pub fn route_addr(&self, name: &str) -> Option<SocketAddr> {
        self.routes.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Puts new identity and policy settings in force (SIGHUP). Open sessions keep running; every
    /// decision from now on uses the new policy, and its version is journaled with each one.
    /// Listeners, upstreams and TLS are not reloaded, so a file whose routes differ from the
    /// running ones is refused whole (it needs a restart).
    pub fn reload_access(&self, access: Arc<Access>) -> Result<(), String> {
        let running: std::collections::BTreeSet<&str> = self.routes.iter().map(|(n, _)| n.as_str()).collect();
        let reloaded: std::collections::BTreeSet<&str> = access.policy.routes.keys().map(String::as_str).collect();
        if running != reloaded {
            return Err(format!(
                "the file's routes ({}) differ from the running ones ({}); route changes need a restart",
                reloaded.into_iter().collect::<Vec<_>>().join(", "),
                running.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let old = self.access.current().policy.version.clone();
        let new = access.policy.version.clone();
        self.access.replace(access);
        self.metrics.policy_reloads.inc();
        info!(from = %old, to = %new, "Policy reloaded.");
        Ok(())
    }

    /// The policy version in force.
    pub fn policy_version(&self) -> String {
        self.access.current().policy.version.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Graceful shutdown: stop accepting, let sessions finish for up to the drain timeout, close
    /// the rest (journaled as "gateway shutdown"), then sign the final checkpoint.
    pub async fn shutdown(mut self) -> Result<Option<Checkpoint>, crate::Error> {
        self.admin_state.ready.store(false, Ordering::Release);
        self.stop_accepting.cancel();
        for t in self.accept_tasks.drain(..) {
            let _ = t.await;
        }
        self.tracker.close();
        info!(open = self.tracker.len(), deadline = ?self.drain_timeout, "Draining sessions.");
        if tokio::time::timeout(self.drain_timeout, self.tracker.wait()).await.is_err() {
            warn!(open = self.tracker.len(), "Drain deadline passed; closing the remaining sessions.");
        }
        self.abort.cancel();
        // Closing is quick (one journal record each); bound it anyway.
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await.is_err() {
            warn!(open = self.tracker.len(), "Sessions did not close in time.");
        }
        if let Some(mut t) = self.admin_task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err()
        {
            t.abort();
        }
        // The session runtimes stop after the journal, so a record a session queued on its way
        // out (see `SessionJournal`'s `Drop`) can still reach the writer while it drains. Sessions
        // still open here (past the drain and the closing bound above) are dropped with their
        // runtimes: their staged records are counted in a warning and not written.
        let cp = self.journal.shutdown().await;
        let shards = self.shards.clone();
        let _ = tokio::task::spawn_blocking(move || shards.stop()).await;
        let cp = cp?;
        if let Some(cp) = &cp {
            info!(seq = cp.seq, "Final checkpoint signed.");
        }
        Ok(cp)
    }
}
