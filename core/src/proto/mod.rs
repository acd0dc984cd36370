//! Protocol drivers: each turns an accepted socket into a journaled session with its upstream.

pub(crate) mod echo;
pub mod http;
pub(crate) mod liveness;
pub(crate) mod multipart;
pub mod postgres;
pub(crate) mod session;
pub mod tcp;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::metrics::Metrics;
use crate::config::{Access, Route};
use crate::journal::Journal;

/// The identity and policy in force, replaced as a whole by a reload. Sessions take a snapshot
/// for each decision, so a reload never changes a decision halfway; sessions judged once (raw
/// TCP) watch for a reload and are judged again.
#[derive(Debug)]
pub struct SharedAccess(watch::Sender<Arc<Access>>);

impl SharedAccess {
    /// Starts with `access`.
    pub fn new(access: Arc<Access>) -> Self {
        Self(watch::Sender::new(access))
    }

    /// The access in force now.
    pub fn current(&self) -> Arc<Access> {
        self.0.borrow().clone()
    }

    /// Puts `access` in force for every decision from now on, and tells the watchers.
    pub fn replace(&self, access: Arc<Access>) {
        self.0.send_replace(access);
    }

    /// A receiver that sees each reload from now on.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<Access>> {
        self.0.subscribe()
    }
}

/// The next reload: the receiver (to watch for the one after) and the access it put in force.
/// Kept across a session's loop turns and polled by reference, so that a loop waiting on many
/// things registers with the reload notice once, not at every turn.
pub(crate) type Reload =
    std::pin::Pin<Box<dyn std::future::Future<Output = (watch::Receiver<Arc<Access>>, Arc<Access>)> + Send>>;

/// Waits, through `rx`, for the next reload (forever, once the gateway is gone).
pub(crate) fn next_reload(mut rx: watch::Receiver<Arc<Access>>) -> Reload {
    Box::pin(async move {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let access = rx.borrow_and_update().clone();
        (rx, access)
    })
}

/// What every session of a route shares.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    pub(crate) route: Arc<Route>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access: Arc<SharedAccess>,
    /// HTTP routes: the pooled client towards the upstream.
    pub(crate) http_upstream: Option<http::Upstream>,
    /// PostgreSQL routes: minted cancel keys of live sessions.
    pub(crate) cancel_keys: postgres::CancelKeys,
    /// Fires when the drain deadline passes: sessions still open close at once.
    pub(crate) abort: CancellationToken,
    /// Every session's tasks: a shutdown waits for them (HTTP body pumps outlive the connection
    /// task that started them, and write their session's close).
    pub(crate) tracker: tokio_util::task::TaskTracker,
}
