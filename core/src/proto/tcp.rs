//! The raw TCP driver: streams bytes both ways, journaling every chunk.
//!
//! Each direction is a pipeline of two halves joined by a bounded queue: the reader reads a chunk,
//! queues its journal record and hands `(chunk, receipt)` on; the writer forwards the chunk —
//! after the receipt in strict mode, before it in batched mode — so several chunks can be in flight
//! towards one group commit while the queue bound keeps backpressure end to end. A half-close is
//! journaled as a FIN record and propagated with `shutdown()` on the other side.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::SessionCtx;
use super::session::{
    ActiveSession, Io, accept_client, journal_admission, journal_upstream, notify_break_glass, open_session,
};
use crate::admin::metrics::{BytesLabels, RouteLabels};
use crate::config::Access;
use crate::identity::{AuthError, Principal};
use crate::journal::record::{CloseMeta, UpstreamMeta};
use crate::journal::{Direction, Durability, Receipt, SessionJournal};
use crate::policy::Request;
use crate::tls;

/// Bytes read per chunk (and so at most per data record).
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction between reader and writer.
const PIPELINE_DEPTH: usize = 8;

/// Why a session ended, in words for the journal.
#[derive(Debug)]
enum End {
    /// Both sides closed their sending half.
    Done,
    /// Neither side sent anything for the idle timeout.
    Idle,
    /// The principal's credential (its client certificate) expired: automatic logoff.
    CredentialExpired,
    /// A reload withdrew the caller's access (or identity): the session was judged again and
    /// refused.
    Withdrawn(String),
    /// The gateway is shutting down and the drain deadline passed.
    Shutdown,
    /// A socket failed.
    Io { side: &'static str, op: &'static str, source: io::Error },
    /// The journal could not record: the session is closed rather than continue unrecorded.
    Journal(String),
}

impl End {
    fn reason(&self) -> String {
        match self {
            Self::Done => "both sides closed".into(),
            Self::Idle => "idle timeout".into(),
            Self::CredentialExpired => "automatic logoff: the principal's credential expired during the session".into(),
            Self::Withdrawn(why) => format!("access withdrawn by a reload: {why}"),
            Self::Shutdown => "gateway shutdown: drain deadline passed".into(),
            Self::Io { side, op, source } => format!("{side} {op} error: {source}"),
            Self::Journal(e) => format!("journal write failed: {e}"),
        }
    }

    fn journal(e: impl std::fmt::Display) -> Self {
        Self::Journal(e.to_string())
    }
}

/// Tracks the last moment bytes moved, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    async fn idle_for(&self, idle: std::time::Duration) {
        loop {
            let last = self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    }
}

/// Serves one accepted connection to its end. Never returns an error: every outcome is journaled
/// as the session's close reason (or logged, if the journal itself is what failed).
pub(crate) async fn serve(ctx: Arc<SessionCtx>, stream: TcpStream, peer: SocketAddr, _permit: OwnedSemaphorePermit) {
    let route = &ctx.route;
    let labels = RouteLabels { route: route.name.clone() };
    ctx.metrics.connections.get_or_create(&labels).inc();
    let _active = ActiveSession::new(ctx.metrics.connections_active.get_or_create(&labels).clone());
    let started = Instant::now();

    let Some((mut client, tls_meta, leaf)) = accept_client(&ctx, stream, peer).await else { return };

    // Who is calling, and may they use this route? Decided before anything is opened upstream,
    // and again after every reload for as long as the session lasts.
    let mut reloads = ctx.access.watch();
    let access = reloads.borrow_and_update().clone();
    let identified = identify(&ctx, &access, leaf.as_deref());
    let admission = match &identified {
        Ok(p) => Ok(access.decide(&route.name, p, &Request::Bytes)),
        Err(e) => Err(e.clone()),
    };
    let principal = identified.as_ref().ok();
    let break_glass = principal.is_some_and(|p| access.policy.is_break_glass(p));

    let sj = match open_session(&ctx, peer, tls_meta, principal, Some(&access), break_glass, None) {
        Ok(sj) => sj,
        Err(e) => {
            warn!(route = %route.name, client = %peer, error = %e, "Journal refused the session; closing.");
            ctx.metrics.error("journal_write");
            return;
        }
    };
    let session = sj.id();
    debug!(%session, route = %route.name, client = %peer, "Session opened.");

    let counters = [AtomicU64::new(0), AtomicU64::new(0)];
    let end = match journal_admission(&ctx, &sj, &access, principal, &admission, &Request::Bytes, true).await {
        Err(e) => End::journal(e).reason(),
        Ok(Some(denial)) => {
            let refusal = denial.message;
            // Raw TCP has no way to carry our message: a TLS close_notify (on TLS routes) and a
            // close. The reason is in the journal and the log.
            let _ = timeout(std::time::Duration::from_secs(1), client.shutdown()).await;
            warn!(%session, route = %route.name, client = %peer, reason = %refusal, "Session refused.");
            refusal
        }
        Ok(None) => {
            let principal = principal.cloned().unwrap_or_else(Principal::anonymous);
            if break_glass {
                notify_break_glass(&ctx, &access, &sj, &principal, peer);
            }
            let expires = principal.expires_at.map(deadline_at);
            // The drain deadline of a shutdown ends the wait too, so the session's close is written.
            let connected = tokio::select! {
                r = connect_upstream(&ctx) => r,
                () = ctx.abort.cancelled() => Err("gateway shutdown: drain deadline passed".to_owned()),
            };
            match connected {
                Err(reason) => {
                    warn!(%session, route = %route.name, upstream = %route.upstream, %reason, "Upstream unreachable.");
                    ctx.metrics.error("upstream_connect");
                    reason
                }
                Ok((upstream, meta)) => match journal_upstream(&sj, meta) {
                    Err(e) => End::journal(e).reason(),
                    Ok(()) => {
                        let judged = Judged { leaf: leaf.as_deref(), reloads };
                        relay(&ctx, &sj, client, upstream, &counters, expires, judged).await.reason()
                    }
                },
            }
        }
    };

    let meta = CloseMeta {
        masked: Default::default(),
        reason: end.clone(),
        bytes_from_client: counters[0].load(Ordering::Relaxed),
        bytes_from_upstream: counters[1].load(Ordering::Relaxed),
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        break_glass: false,
    };
    match sj.close(meta).await {
        Ok(receipt) => {
            if let Err(e) = receipt.await {
                warn!(%session, error = %e, "Session-close record not written.");
            }
        }
        Err(e) => warn!(%session, error = %e, "Session-close record not written."),
    }
    info!(
        %session,
        route = %route.name,
        client = %peer,
        bytes_in = counters[0].load(Ordering::Relaxed),
        bytes_out = counters[1].load(Ordering::Relaxed),
        reason = %end,
        "Session closed."
    );
}

/// The caller's principal under `access`: anonymous, or read from its verified client
/// certificate.
fn identify(ctx: &SessionCtx, access: &Access, leaf: Option<&[u8]>) -> Result<Principal, AuthError> {
    match ctx.route.client_principal {
        None => Ok(Principal::anonymous()),
        Some(from) => match leaf {
            Some(der) => access.identity.certificates.principal(der, from),
            None => Err(AuthError::Certificate("no client certificate was presented".into())),
        },
    }
}

/// What a session needs to be judged again after a reload.
struct Judged<'a> {
    /// The caller's verified certificate (DER), on routes that read the principal from it.
    leaf: Option<&'a [u8]>,
    reloads: watch::Receiver<Arc<Access>>,
}

impl Judged<'_> {
    /// Waits for a reload that refuses the session: the caller is identified again by the same
    /// certificate, and the route's policy decides again. Every such decision is journaled
    /// (`phase = session`, the new policy version), allow or deny.
    async fn withdrawn(mut self, ctx: &SessionCtx, sj: &SessionJournal) -> End {
        while self.reloads.changed().await.is_ok() {
            let access = self.reloads.borrow_and_update().clone();
            let identified = identify(ctx, &access, self.leaf);
            let admission = match &identified {
                Ok(p) => Ok(access.decide(&ctx.route.name, p, &Request::Bytes)),
                Err(e) => Err(e.clone()),
            };
            match journal_admission(ctx, sj, &access, identified.as_ref().ok(), &admission, &Request::Bytes, true).await
            {
                Err(e) => return End::journal(e),
                Ok(Some(denial)) => return End::Withdrawn(denial.message),
                Ok(None) => {}
            }
        }
        // The gateway dropped its access: it is shutting down, which ends the session anyway.
        std::future::pending().await
    }
}

/// The tokio instant at which a credential that expires at `unix_secs` stops being valid.
fn deadline_at(unix_secs: i64) -> Instant {
    let left_us = unix_secs.saturating_mul(1_000_000).saturating_sub(crate::time::now_us());
    Instant::now() + std::time::Duration::from_micros(u64::try_from(left_us).unwrap_or(0))
}

async fn connect_upstream(ctx: &SessionCtx) -> Result<(Box<dyn Io>, UpstreamMeta), String> {
    let route = &ctx.route;
    let attempt = async {
        let tcp = TcpStream::connect(&route.upstream)
            .await
            .map_err(|e| format!("upstream connect to {} failed: {e}", route.upstream))?;
        let _ = tcp.set_nodelay(true);
        let addr = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| route.upstream.clone());
        match &route.upstream_tls {
            None => {
                Ok::<_, String>((Box::new(tcp) as Box<dyn Io>, UpstreamMeta { addr, tls: None, break_glass: false }))
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("upstream TLS handshake with {} failed: {e}", route.upstream))?;
                let verified_name = name.to_str();
                let meta = tls::describe(tls.get_ref().1, Some(verified_name.as_ref()));
                Ok((Box::new(tls) as Box<dyn Io>, UpstreamMeta { addr, tls: Some(meta), break_glass: false }))
            }
        }
    };
    match timeout(route.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("upstream connect to {} timed out after {:?}", route.upstream, route.connect_timeout)),
    }
}

/// Streams both ways until both sides close, one fails, the session idles out, the principal's
/// credential expires, a reload withdraws the caller's access, or the gateway's drain deadline
/// passes.
async fn relay(
    ctx: &SessionCtx,
    sj: &SessionJournal,
    client: Box<dyn Io>,
    upstream: Box<dyn Io>,
    counters: &[AtomicU64; 2],
    expires: Option<Instant>,
    judged: Judged<'_>,
) -> End {
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, up_w) = tokio::io::split(upstream);
    let activity = Activity::new();
    let fins = AtomicUsize::new(0);
    let route = &ctx.route.name;
    let up = Pump {
        ctx,
        sj,
        direction: Direction::ClientToUpstream,
        sides: ("client", "upstream"),
        bytes: &counters[0],
        activity: &activity,
        fins: &fins,
        metric: ctx
            .metrics
            .bytes
            .get_or_create(&BytesLabels { route: route.clone(), direction: "client_to_upstream" })
            .clone(),
    };
    let down = Pump {
        ctx,
        sj,
        direction: Direction::UpstreamToClient,
        sides: ("upstream", "client"),
        bytes: &counters[1],
        activity: &activity,
        fins: &fins,
        metric: ctx
            .metrics
            .bytes
            .get_or_create(&BytesLabels { route: route.clone(), direction: "upstream_to_client" })
            .clone(),
    };
    tokio::select! {
        r = async { tokio::try_join!(up.run(client_r, up_w), down.run(up_r, client_w)) } => match r {
            Ok(_) => End::Done,
            Err(end) => end,
        },
        () = activity.idle_for(ctx.route.idle_timeout) => End::Idle,
        () = async { match expires { Some(t) => sleep_until(t).await, None => std::future::pending().await } } => {
            End::CredentialExpired
        }
        end = judged.withdrawn(ctx, sj) => end,
        () = ctx.abort.cancelled() => End::Shutdown,
    }
}

struct Pump<'a> {
    ctx: &'a SessionCtx,
    sj: &'a SessionJournal,
    direction: Direction,
    /// (reading side, writing side), for error messages.
    sides: (&'static str, &'static str),
    bytes: &'a AtomicU64,
    activity: &'a Activity,
    /// Directions whose FIN has been passed on.
    fins: &'a AtomicUsize,
    metric: prometheus_client::metrics::counter::Counter,
}

impl Pump<'_> {
    async fn run<R, W>(&self, mut from: ReadHalf<R>, mut to: WriteHalf<W>) -> Result<(), End>
    where
        R: AsyncRead,
        W: AsyncWrite,
    {
        let (tx, mut rx) = mpsc::channel::<(Bytes, bool, Option<Receipt>)>(PIPELINE_DEPTH);
        let strict = self.ctx.journal.durability() == Durability::Strict;
        let reading = async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            loop {
                buf.reserve(CHUNK);
                let n = from.read_buf(&mut buf).await.map_err(|source| End::Io {
                    side: self.sides.0,
                    op: "read",
                    source,
                })?;
                let fin = n == 0;
                let chunk = buf.split().freeze();
                // Batched: a FIN is staged; the writing side hands it to the writer once it has
                // passed it on (below).
                let receipt = if fin && !strict {
                    self.sj.stage_data(self.direction, fin, &chunk).map_err(End::journal)?;
                    None
                } else {
                    Some(self.sj.data(self.direction, fin, &chunk).await.map_err(End::journal)?)
                };
                if !fin {
                    self.activity.touch();
                }
                if tx.send((chunk, fin, receipt)).await.is_err() || fin {
                    return Ok::<(), End>(());
                }
            }
        };
        let writing = async {
            while let Some((chunk, fin, receipt)) = rx.recv().await {
                // Strict: the record is durable before the bytes move. Batched: after.
                let pending = match receipt {
                    Some(r) if strict => {
                        r.await.map_err(End::journal)?;
                        None
                    }
                    r => r.map(crate::journal::Receipt::awaited_next),
                };
                let io_err = |source| End::Io { side: self.sides.1, op: "write", source };
                if fin {
                    to.shutdown().await.map_err(io_err)?;
                } else {
                    to.write_all(&chunk).await.map_err(io_err)?;
                    // Counted once passed on: the close record's counts are bytes delivered.
                    self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    self.metric.inc_by(chunk.len() as u64);
                }
                if let Some(receipt) = pending {
                    receipt.await.map_err(End::journal)?;
                }
                if fin {
                    // Batched: the direction that finishes first journals its FIN now; the last
                    // one ends the relay, and the session's close record, written right after,
                    // carries it (one hand-off to the writer fewer per connection).
                    if !strict && self.fins.fetch_add(1, Ordering::AcqRel) == 0 {
                        self.sj.flush().await.map_err(End::journal)?.await.map_err(End::journal)?;
                    }
                    break;
                }
            }
            Ok::<(), End>(())
        };
        tokio::try_join!(reading, writing).map(|_| ())
    }
}
