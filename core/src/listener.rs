//! Accept loops: one per route, with the per-route connection cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::metrics::RejectLabels;
use crate::config::Protocol;
use crate::proto::{SessionCtx, http, session, tcp};
use crate::shards::Shards;

/// Most refusals being journaled at once per route.
const MAX_JOURNALED_REFUSALS: usize = 64;

/// Binds a route's address, with a message that names the route when the port is taken.
pub async fn bind(route: &crate::config::Route) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(route.listen).await.map_err(|source| crate::Error::Bind {
        what: format!("route `{}`", route.name),
        addr: route.listen,
        source,
    })
}

/// Accepts until `stop` fires. Each session runs on `tracker` so shutdown can wait for it.
/// Sessions run on the session runtimes (`shards`), refusals here.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<SessionCtx>,
    tracker: TaskTracker,
    shards: Arc<Shards>,
    stop: CancellationToken,
) {
    let route = &ctx.route;
    let permits = Arc::new(Semaphore::new(route.max_connections));
    // Refusals are journaled too, but a flood must not turn into unbounded tasks: past this many
    // in flight, a refusal is only logged and counted.
    let refusals = Arc::new(Semaphore::new(MAX_JOURNALED_REFUSALS));
    info!(route = %route.name, listen = %route.listen, upstream = %route.upstream, "Listening.");
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off briefly instead of spinning.
                warn!(route = %route.name, error = %e, "Accept failed.");
                ctx.metrics.error("accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                // The socket leaves this runtime's reactor and joins the shard's.
                let std = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        unusable(&ctx, peer, &e);
                        continue;
                    }
                };
                let ctx = ctx.clone();
                shards.next().spawn(tracker.track_future(async move {
                    let stream = match TcpStream::from_std(std) {
                        Ok(s) => s,
                        Err(e) => return unusable(&ctx, peer, &e),
                    };
                    match ctx.route.protocol {
                        Protocol::Tcp => tcp::serve(ctx, stream, peer, permit).await,
                        Protocol::Http => http::serve(ctx, stream, peer, permit).await,
                        Protocol::Postgres => crate::proto::postgres::serve(ctx, stream, peer, permit).await,
                    }
                }));
            }
            Err(_) => {
                ctx.metrics
                    .connections_rejected
                    .get_or_create(&RejectLabels { route: route.name.clone(), reason: "connection_limit" })
                    .inc();
                drop(stream);
                let reason = format!("route connection limit of {} reached", route.max_connections);
                match refusals.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let ctx = ctx.clone();
                        tracker.spawn(async move {
                            session::refuse(&ctx, peer, &reason).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        warn!(route = %route.name, client = %peer, %reason, "Connection refused (not journaled: refusal flood).")
                    }
                }
            }
        }
    }
    info!(route = %route.name, "Stopped accepting.");
}

/// An accepted socket that could not be moved to a session runtime: logged and counted (it is
/// closed as it drops; no session was opened for it).
fn unusable(ctx: &SessionCtx, peer: std::net::SocketAddr, e: &std::io::Error) {
    warn!(route = %ctx.route.name, client = %peer, error = %e, "Accepted connection unusable.");
    ctx.metrics.error("accept");
}
