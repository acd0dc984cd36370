//! What every driver does around a session, whatever its protocol: client-facing TLS, the
//! session-open record, the admission decision journaled write-ahead, break-glass notices, and
//! refusals of callers that never got a session.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{info, warn};

use super::SessionCtx;
use crate::admin::metrics::DecisionLabels;
use crate::config::Access;
use crate::deny::Denial;
use crate::identity::{AuthError, Principal};
use crate::journal::record::{CloseMeta, DecisionMeta, OpenMeta, TlsMeta, UpstreamMeta};
use crate::journal::{JournalError, SessionJournal};
use crate::policy::{Effect, Request};
use crate::tls;

/// Anything a session can read and write.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// Stages the upstream-connected record: every session writes a next record (its first data,
/// an end, or the close) whose receipt covers it, and nothing goes upstream before that record
/// is on record in strict mode.
pub(crate) fn journal_upstream(sj: &SessionJournal, meta: UpstreamMeta) -> Result<(), String> {
    sj.stage_upstream_connected(meta).map_err(|e| e.to_string())
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
            // The caller sees the message without the operator-only detail (JWKS addresses and
            // transport errors); the journal and the log get the detail.
            Some(Denial {
                message: format!("authentication failed: {e}"),
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
    // Without `wait`, the decision is staged: it goes to the writer with the session's next
    // record, whose receipt covers it (the writer commits in order and refuses everything after
    // a failure).
    if wait {
        sj.decision(meta).await?.await.map_err(|e| JournalError::Index(e.to_string()))?;
    } else {
        sj.stage_decision(meta)?;
    }
    Ok(refusal)
}

/// Fires the break-glass notification without holding up the session; its outcome is logged
/// and counted. The task is tracked, so shutdown waits for a notification still on its way.
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
    ctx.tracker.spawn(async move {
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

/// Stages the session-open record. It goes to the writer with the session's next record: every
/// caller writes one (the admission decision, or the close of a refusal) and awaits it, which
/// covers both — one hand-off and one group commit per admission instead of two.
pub(crate) fn open_session(
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
    SessionJournal::open(ctx.journal.clone(), meta)
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
        let sj = open_session(ctx, peer, None, None, Some(&access), false, None)?;
        if let Some(e) = authn {
            journal_admission(ctx, &sj, &access, None, &Err(e.clone()), &Request::Bytes, true).await?;
        }
        let meta = CloseMeta {
            masked: Default::default(),
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
