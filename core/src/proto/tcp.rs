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
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::SessionCtx;
use crate::admin::metrics::{BytesLabels, DecisionLabels, RouteLabels};
use crate::config::Access;
use crate::deny::Denial;
use crate::identity::{AuthError, Principal};
use crate::journal::record::{CloseMeta, DecisionMeta, OpenMeta, TlsMeta, UpstreamMeta};
use crate::journal::{Direction, Durability, JournalError, Receipt, SessionJournal};
use crate::policy::{Effect, Request};
use crate::tls;

/// Bytes read per chunk (and so at most per data record).
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction between reader and writer.
const PIPELINE_DEPTH: usize = 8;

/// Anything a session can read and write.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a session ended, in words for the journal.
#[derive(Debug)]
enum End {
    /// Both sides closed their sending half.
    Done,
    /// Neither side sent anything for the idle timeout.
    Idle,
    /// The principal's credential (its client certificate) expired: automatic logoff.
    CredentialExpired,
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

    // Who is calling, and may they use this route? Decided before anything is opened upstream.
    let access = ctx.access.current();
    let identified = match route.client_principal {
        None => Ok(Principal::anonymous()),
        Some(from) => match &leaf {
            Some(der) => access.identity.certificates.principal(der, from),
            None => Err(AuthError::Certificate("no client certificate was presented".into())),
        },
    };
    let admission = match &identified {
        Ok(p) => Ok(access.decide(&route.name, p, &Request::Bytes)),
        Err(e) => Err(e.clone()),
    };
    let principal = identified.as_ref().ok();
    let break_glass = principal.is_some_and(|p| access.policy.is_break_glass(p));

    let sj = match open_session(&ctx, peer, tls_meta, principal, Some(&access), break_glass, None).await {
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
            match connect_upstream(&ctx).await {
                Err(reason) => {
                    warn!(%session, route = %route.name, upstream = %route.upstream, %reason, "Upstream unreachable.");
                    ctx.metrics.error("upstream_connect");
                    reason
                }
                Ok((upstream, meta)) => match journal_upstream(&sj, meta).await {
                    Err(e) => End::journal(e).reason(),
                    Ok(()) => relay(&ctx, &sj, client, upstream, &counters, expires).await.reason(),
                },
            }
        }
    };

    let meta = CloseMeta {
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

/// Client-facing TLS (when the route has it), so the session-open record can say what was
/// negotiated and, with mutual TLS, who the caller is. A failed or slow handshake is refused and
/// journaled here; `None` means the caller is gone.
pub(crate) async fn accept_client(
    ctx: &SessionCtx,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(Box<dyn Io>, Option<TlsMeta>, Option<Vec<u8>>)> {
    let route = &ctx.route;
    let _ = stream.set_nodelay(true);
    match &route.tls {
        None => Some((Box::new(stream), None, None)),
        Some(acceptor) => match timeout(route.tls_handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let conn = tls.get_ref().1;
                let meta = tls::describe(conn, conn.server_name());
                let leaf = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                Some((Box::new(tls), Some(meta), leaf))
            }
            Ok(Err(e)) => {
                ctx.metrics.error("client_tls");
                let authn = route.client_principal.is_some().then(|| AuthError::Certificate(e.to_string()));
                refuse_with(ctx, peer, &format!("client TLS handshake failed: {e}"), authn.as_ref()).await;
                None
            }
            Err(_) => {
                ctx.metrics.error("client_tls");
                refuse(ctx, peer, "client TLS handshake timed out").await;
                None
            }
        },
    }
}

/// Counts a session in `connections_active` for as long as it lives, whichever way it ends.
pub(crate) struct ActiveSession(prometheus_client::metrics::gauge::Gauge);

impl ActiveSession {
    pub(crate) fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) async fn journal_upstream(sj: &SessionJournal, meta: UpstreamMeta) -> Result<(), String> {
    let receipt = sj.upstream_connected(meta).await.map_err(|e| e.to_string())?;
    receipt.await.map(|_| ()).map_err(|e| e.to_string())
}

/// The tokio instant at which a credential that expires at `unix_secs` stops being valid.
fn deadline_at(unix_secs: i64) -> Instant {
    let left_us = unix_secs.saturating_mul(1_000_000).saturating_sub(crate::time::now_us());
    Instant::now() + std::time::Duration::from_micros(u64::try_from(left_us).unwrap_or(0))
}

/// Journals the admission decision and, with `wait`, waits until it (and the session-open record
/// before it) is durable — write-ahead: nothing is opened upstream before both are on record.
/// Returns the denial if the caller may not proceed (its request id is the session id).
pub(crate) async fn journal_admission(
    ctx: &SessionCtx,
    sj: &SessionJournal,
    access: &Access,
    principal: Option<&Principal>,
    admission: &Result<crate::policy::Decision, AuthError>,
    request: &Request,
    wait: bool,
) -> Result<Option<Denial>, JournalError> {
    let route = &ctx.route.name;
    let label = principal.map_or_else(|| "unauthenticated".to_owned(), Principal::label);
    let (meta, refusal) = match admission {
        Err(e) => (
            DecisionMeta {
                phase: "authenticate".into(),
                effect: Effect::Deny.as_str().into(),
                rule: format!("authn:{}", e.code()),
                reason: e.detail(),
                principal: label,
                request: request.summary(),
                policy_version: Some(access.policy.version.clone()),
                break_glass: false,
            },
            Some(Denial {
                message: format!("authentication failed: {}", e.detail()),
                ..Denial::unauthenticated(e, sj.id().to_string())
            }),
        ),
        Ok(d) => {
            let refusal = Denial::from_decision(d, sj.id().to_string());
            (
                DecisionMeta {
                    phase: if matches!(request, Request::Bytes) { "session" } else { "request" }.into(),
                    effect: d.effect.as_str().into(),
                    rule: d.rule.clone(),
                    reason: d.reason.clone(),
                    principal: label,
                    request: request.summary(),
                    policy_version: Some(d.policy_version.clone()),
                    break_glass: false,
                },
                refusal,
            )
        }
    };
    let (phase, effect) = match admission {
        Err(_) => ("authenticate", Effect::Deny),
        Ok(d) if matches!(request, Request::Bytes) => ("session", d.effect),
        Ok(d) => ("request", d.effect),
    };
    ctx.metrics.decisions.get_or_create(&DecisionLabels { route: route.clone(), phase, effect: effect.as_str() }).inc();
    let receipt = sj.decision(meta).await?;
    // Without `wait`, the caller's next awaited record covers this one (the writer commits in
    // order and refuses everything after a failure).
    if wait {
        receipt.await.map_err(|e| JournalError::Index(e.to_string()))?;
    }
    Ok(refusal)
}

/// Fires the break-glass notification without holding up the session; its outcome is logged
/// and counted.
pub(crate) fn notify_break_glass(
    ctx: &SessionCtx,
    access: &Access,
    sj: &SessionJournal,
    p: &Principal,
    peer: SocketAddr,
) {
    ctx.metrics.break_glass_sessions.inc();
    let session = sj.id();
    warn!(%session, route = %ctx.route.name, principal = %p.label(), "Break-glass session started.");
    let Some(url) = access.break_glass_webhook.clone() else { return };
    let body = serde_json::json!({
        "event": "break_glass_session_started",
        "session": session.to_string(),
        "route": ctx.route.name,
        "principal": p.label(),
        "subject": p.subject,
        "roles": p.roles,
        "client_addr": peer.to_string(),
        "time": crate::time::format_us(crate::time::now_us()),
    });
    let http = access.http.clone();
    let metrics = ctx.metrics.clone();
    tokio::spawn(async move {
        let json = serde_json::to_vec(&body).unwrap_or_default();
        match http.post_json(&url, json, 64 * 1024).await {
            Ok(_) => info!(%session, "Break-glass notification delivered."),
            Err(e) => {
                metrics.error("break_glass_webhook");
                warn!(%session, error = %e, "Break-glass notification failed.");
            }
        }
    });
}

/// Queues the session-open record. Its receipt is not awaited here: every caller writes a next
/// record (the admission decision, or the close of a refusal) and awaits that one, which covers
/// both — the writer commits in order and refuses everything after a failure. One group commit
/// per admission instead of two.
pub(crate) async fn open_session(
    ctx: &SessionCtx,
    peer: SocketAddr,
    tls: Option<TlsMeta>,
    principal: Option<&Principal>,
    access: Option<&Access>,
    break_glass: bool,
    connection: Option<String>,
) -> Result<SessionJournal, JournalError> {
    let route = &ctx.route;
    let meta = OpenMeta {
        route: route.name.clone(),
        protocol: route.protocol.as_str().into(),
        client_addr: peer.to_string(),
        listen_addr: route.listen.to_string(),
        upstream: route.upstream.clone(),
        principal: principal.map_or_else(|| "unauthenticated".to_owned(), Principal::label),
        identity: principal.map(|p| Box::new(p.to_meta())),
        policy_version: access.map(|a| a.policy.version.clone()),
        tls,
        sealed: false,
        connection,
        break_glass,
    };
    let (sj, _covered_by_the_next_receipt) = SessionJournal::open(ctx.journal.clone(), meta).await?;
    Ok(sj)
}

/// Journals a caller that was refused before a session could start (connection cap, failed TLS).
pub(crate) async fn refuse(ctx: &SessionCtx, peer: SocketAddr, reason: &str) {
    refuse_with(ctx, peer, reason, None).await;
}

/// [`refuse`], with the authentication failure journaled as a decision when there is one (a
/// client certificate rustls rejected on a mutual-TLS route).
async fn refuse_with(ctx: &SessionCtx, peer: SocketAddr, reason: &str, authn: Option<&AuthError>) {
    warn!(route = %ctx.route.name, client = %peer, %reason, "Connection refused.");
    let result = async {
        let access = ctx.access.current();
        let sj = open_session(ctx, peer, None, None, Some(&access), false, None).await?;
        if let Some(e) = authn {
            journal_admission(ctx, &sj, &access, None, &Err(e.clone()), &Request::Bytes, true).await?;
        }
        let meta = CloseMeta {
            reason: reason.into(),
            bytes_from_client: 0,
            bytes_from_upstream: 0,
            duration_us: 0,
            break_glass: false,
        };
        sj.close(meta).await?.await.map_err(|e| JournalError::Index(e.to_string()))?;
        Ok::<_, JournalError>(())
    }
    .await;
    if let Err(e) = result {
        warn!(route = %ctx.route.name, client = %peer, error = %e, "Refusal not journaled.");
    }
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
/// credential expires, or the gateway's drain deadline passes.
async fn relay(
    ctx: &SessionCtx,
    sj: &SessionJournal,
    client: Box<dyn Io>,
    upstream: Box<dyn Io>,
    counters: &[AtomicU64; 2],
    expires: Option<Instant>,
) -> End {
    let (client_r, client_w) = tokio::io::split(client);
    let (up_r, up_w) = tokio::io::split(upstream);
    let activity = Activity::new();
    let route = &ctx.route.name;
    let up = Pump {
        ctx,
        sj,
        direction: Direction::ClientToUpstream,
        sides: ("client", "upstream"),
        bytes: &counters[0],
        activity: &activity,
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
    metric: prometheus_client::metrics::counter::Counter,
}

impl Pump<'_> {
    async fn run<R, W>(&self, mut from: ReadHalf<R>, mut to: WriteHalf<W>) -> Result<(), End>
    where
        R: AsyncRead,
        W: AsyncWrite,
    {
        let (tx, mut rx) = mpsc::channel::<(Bytes, bool, Receipt)>(PIPELINE_DEPTH);
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
                let receipt = self.sj.data(self.direction, fin, &chunk).await.map_err(End::journal)?;
                if !fin {
                    self.activity.touch();
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                if tx.send((chunk, fin, receipt)).await.is_err() || fin {
                    return Ok::<(), End>(());
                }
            }
        };
        let writing = async {
            while let Some((chunk, fin, receipt)) = rx.recv().await {
                // Strict: the record is durable before the bytes move. Batched: after.
                let pending = if strict {
                    receipt.await.map_err(End::journal)?;
                    None
                } else {
                    Some(receipt)
                };
                let io_err = |source| End::Io { side: self.sides.1, op: "write", source };
                if fin {
                    to.shutdown().await.map_err(io_err)?;
                } else {
                    to.write_all(&chunk).await.map_err(io_err)?;
                    self.metric.inc_by(chunk.len() as u64);
                }
                if let Some(receipt) = pending {
                    receipt.await.map_err(End::journal)?;
                }
                if fin {
                    break;
                }
            }
            Ok::<(), End>(())
        };
        tokio::try_join!(reading, writing).map(|_| ())
    }
}
