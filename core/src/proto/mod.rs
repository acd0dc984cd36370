//! Protocol drivers: each turns an accepted socket into a journaled session with its upstream.

pub mod tcp;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::metrics::Metrics;
use crate::config::Route;
use crate::journal::Journal;

/// What every session of a route shares.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    pub(crate) route: Arc<Route>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) metrics: Arc<Metrics>,
    /// Fires when the drain deadline passes: sessions still open close at once.
    pub(crate) abort: CancellationToken,
}
