//! The admin listener: `/healthz` (the process is up), `/readyz` (listeners bound, journal open,
//! not draining) and Prometheus `/metrics`.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::metrics::Metrics;

/// State the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// True once every listener is bound and the journal is open; false again while draining.
    pub ready: AtomicBool,
    /// The journal: not ready once a write has failed.
    pub journal: Arc<crate::journal::Journal>,
}

/// Serves the admin API on an already-bound listener until `stop` fires.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

async fn readyz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if !s.journal.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the journal has failed\n")
    } else if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or draining\n")
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

/// Binds the admin address, with a clear message when it is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    if !addr.ip().is_loopback() {
        // Metrics name routes and count decisions, errors and break-glass sessions.
        tracing::warn!(%addr, "The admin listener has no authentication and is bound beyond loopback; \
                               keep it on a management network or behind an authenticating proxy.");
    }
    TcpListener::bind(addr).await.map_err(|source| crate::Error::Bind { what: "admin listener".into(), addr, source })
}
