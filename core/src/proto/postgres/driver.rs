//! The PostgreSQL driver (`protocol = "postgres"`).
//!
//! 1. Startup: an SSLRequest is answered `S` (and TLS accepted) when the route has TLS, else
//!    `N`; a GSSENCRequest is declined; a CancelRequest carrying a key this gateway minted is
//!    forwarded to the right upstream backend with the real key.
//! 2. The caller authenticates with its JWT or API key as the password (cleartext password
//!    authentication, accepted only over TLS unless the route allows plaintext on loopback).
//!    Refusals are ErrorResponses 28P01 / 28000 / 42501, journaled.
//! 3. The gateway logs in to the upstream as its own role with the credential it holds
//!    (SCRAM-SHA-256, cleartext or trust) and hands the caller a minted BackendKeyData.
//! 4. Every statement — each Query, each Parse — is classified (sqlparser), checked against the
//!    built-in guardrails (unless the role is trusted) and decided by the filter chain. A
//!    refusal is an ErrorResponse 42501 naming the rule; the session stays usable: a refused
//!    Query is followed by ReadyForQuery, a refused Parse by skipping to the next Sync.
//! 5. Every message that crosses, both ways, is journaled as its own frame (durable first in
//!    strict mode).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use airlock_decoders::Decoder as _;
use airlock_decoders::postgres::backend::{self, Authentication, BackendDecoder, BackendMessage};
use airlock_decoders::postgres::frontend::{self, FrontendDecoder, FrontendMessage, SaslInitial};
use airlock_decoders::postgres::startup::{self, StartupPacket};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout};
use tracing::warn;

use super::mask::PgMasker;
use super::scram::ScramClient;
use crate::admin::metrics::RouteLabels;
use crate::deny::{self, Denial};
use crate::identity::{AuthError, Principal};
use crate::journal::record::CloseMeta;
use crate::journal::{Direction, Durability, SessionJournal};
use crate::mask::Tally;
use crate::policy::sql::{SqlStatement, classify_cached, guardrail};
use crate::policy::{Decision, Effect, Request};
use crate::proto::SessionCtx;
use crate::proto::session::{ActiveSession, Io, journal_admission, open_session};

/// A backend's cancel identity: process id and secret key.
type CancelKey = (i32, Vec<u8>);

/// Minted cancel keys of live sessions: minted (pid, key) → the upstream's (pid, key).
#[derive(Debug, Default)]
pub(crate) struct CancelKeys(Mutex<HashMap<CancelKey, (i32, Bytes)>>);

impl CancelKeys {
    fn insert(&self, minted: (i32, Vec<u8>), real: (i32, Bytes)) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(minted, real);
        }
    }

    fn remove(&self, minted: &(i32, Vec<u8>)) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(minted);
        }
    }

    fn get(&self, minted: &(i32, Vec<u8>)) -> Option<(i32, Bytes)> {
        self.0.lock().ok()?.get(minted).cloned()
    }
}

/// Why a session could not go on.
pub(super) type Fail = String;

async fn read_more(io: &mut Box<dyn Io>, buf: &mut BytesMut, side: &str) -> Result<(), Fail> {
    buf.reserve(8 * 1024);
    let n = io.read_buf(buf).await.map_err(|e| format!("{side} read error: {e}"))?;
    if n == 0 {
        return Err(format!("{side} closed the connection"));
    }
    Ok(())
}

async fn next_backend(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<BackendMessage, Fail> {
    let mut dec = BackendDecoder::default();
    loop {
        if let Some(m) = dec.decode(buf).map_err(|e| format!("upstream sent a malformed message: {e}"))? {
            return Ok(m);
        }
        read_more(io, buf, "upstream").await?;
    }
}

/// The next whole upstream message and its bytes as received.
pub(super) async fn read_backend_raw(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
) -> Result<(BackendMessage, Bytes), Fail> {
    let mut dec = BackendDecoder::default();
    loop {
        if let Some(pair) = dec.decode_raw(buf).map_err(|e| format!("upstream sent a malformed message: {e}"))? {
            return Ok(pair);
        }
        read_more(io, buf, "upstream").await?;
    }
}

async fn next_frontend(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<FrontendMessage, Fail> {
    let mut dec = FrontendDecoder::default();
    loop {
        if let Some(m) = dec.decode(buf).map_err(|e| format!("caller sent a malformed message: {e}"))? {
            return Ok(m);
        }
        read_more(io, buf, "caller").await?;
    }
}

pub(super) fn error_fields(severity: &str, code: &str, message: &str) -> Bytes {
    backend::encode(&BackendMessage::ErrorResponse(vec![
        (b'S', Bytes::copy_from_slice(severity.as_bytes())),
        (b'V', Bytes::copy_from_slice(severity.as_bytes())),
        (b'C', Bytes::copy_from_slice(code.as_bytes())),
        (b'M', Bytes::copy_from_slice(message.as_bytes())),
    ]))
}

/// Serves one PostgreSQL connection.
pub(crate) async fn serve(ctx: Arc<SessionCtx>, stream: TcpStream, peer: SocketAddr, _permit: OwnedSemaphorePermit) {
    let route = ctx.route.clone();
    let labels = RouteLabels { route: route.name.clone() };
    ctx.metrics.connections.get_or_create(&labels).inc();
    let _active = ActiveSession::new(ctx.metrics.connections_active.get_or_create(&labels).clone());
    let _ = stream.set_nodelay(true);
    let Some(pg) = route.pg.clone() else { return };
    let started = Instant::now();
    let mut client: Box<dyn Io> = Box::new(stream);
    let mut cbuf = BytesMut::new();
    let mut tls_meta = None;

    // 1. Startup: within one handshake timeout in all, and at most one request for TLS or GSS
    // encryption (each answered, a peer could otherwise hold its slot with one every few
    // seconds).
    let startup_by = Instant::now() + route.tls_handshake_timeout;
    let (mut asked_tls, mut asked_gss) = (false, false);
    let mut leaf: Option<Vec<u8>> = None;
    let params = loop {
        let packet = loop {
            match startup::decode(&mut cbuf) {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(e) => {
                    let _ = client
                        .write_all(&error_fields("FATAL", "08P01", &format!("invalid startup packet: {e}")))
                        .await;
                    super::super::session::refuse(&ctx, peer, &format!("invalid startup packet: {e}")).await;
                    return;
                }
            }
            match tokio::time::timeout_at(startup_by, read_more(&mut client, &mut cbuf, "caller")).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        };
        let again = match packet {
            StartupPacket::SslRequest => std::mem::replace(&mut asked_tls, true),
            StartupPacket::GssEncRequest => std::mem::replace(&mut asked_gss, true),
            _ => false,
        };
        if again {
            let msg = "a second SSLRequest or GSSENCRequest in one startup";
            let _ = client.write_all(&error_fields("FATAL", "08P01", msg)).await;
            super::super::session::refuse(&ctx, peer, msg).await;
            return;
        }
        match packet {
            StartupPacket::SslRequest => match &route.tls {
                Some(acceptor) if tls_meta.is_none() => {
                    // Bytes sent after SSLRequest and before the handshake came in plaintext; read
                    // later as if they had come over TLS, they would let a man in the middle
                    // inject a message (CVE-2021-23214).
                    if !cbuf.is_empty() {
                        let msg = "unencrypted bytes followed SSLRequest before the TLS handshake";
                        super::super::session::refuse(&ctx, peer, msg).await;
                        return;
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                    match tokio::time::timeout_at(startup_by, acceptor.accept(client)).await {
                        Ok(Ok(tls)) => {
                            let conn = tls.get_ref().1;
                            tls_meta = Some(crate::tls::describe(conn, conn.server_name()));
                            leaf = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                            client = Box::new(tls);
                        }
                        Ok(Err(e)) => {
                            super::super::session::refuse(&ctx, peer, &format!("client TLS handshake failed: {e}"))
                                .await;
                            return;
                        }
                        Err(_) => return,
                    }
                }
                _ => {
                    if client.write_all(b"N").await.is_err() {
                        return;
                    }
                }
            },
            StartupPacket::GssEncRequest => {
                if client.write_all(b"N").await.is_err() {
                    return;
                }
            }
            StartupPacket::Cancel { process_id, secret_key } => {
                forward_cancel(&ctx, (process_id, secret_key.to_vec())).await;
                return;
            }
            StartupPacket::Startup { params, .. } => {
                // The server takes the last of two values, the gateway would judge the first.
                if let Some(dup) = params
                    .iter()
                    .enumerate()
                    .find_map(|(i, (k, _))| params[..i].iter().any(|(earlier, _)| earlier == k).then_some(k))
                {
                    let msg = format!("the startup packet names `{}` twice", String::from_utf8_lossy(dup));
                    let _ = client.write_all(&error_fields("FATAL", "08P01", &msg)).await;
                    super::super::session::refuse(&ctx, peer, &msg).await;
                    return;
                }
                break params;
            }
        }
    };
    let param = |name: &[u8]| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

    // 2. Who is calling. A route that verifies client certificates takes no caller without one
    // (a client that never asks for TLS would otherwise skip the certificate).
    let access = ctx.access.current();
    if route.client_principal.is_some() && leaf.is_none() {
        let msg = "this route requires TLS with a client certificate (sslmode=require, sslcert, sslkey)";
        let _ = client.write_all(&error_fields("FATAL", "28000", msg)).await;
        super::super::session::refuse(&ctx, peer, msg).await;
        return;
    }
    let identified: Result<Principal, AuthError> = if route.anonymous {
        // On an anonymous route, the certificate names the caller where there is one.
        match (leaf.as_deref(), route.client_principal) {
            (Some(der), Some(from)) => access.identity.certificates.principal(der, from),
            _ => Ok(Principal::anonymous()),
        }
    } else if tls_meta.is_none() && !(pg.plaintext_password_on_loopback && peer.ip().is_loopback()) {
        let msg = "password authentication requires TLS on this route (sslmode=require)";
        let _ = client.write_all(&error_fields("FATAL", "28000", msg)).await;
        super::super::session::refuse(&ctx, peer, msg).await;
        return;
    } else {
        let ask = backend::encode(&BackendMessage::Authentication(Authentication::CleartextPassword));
        if client.write_all(&ask).await.is_err() {
            return;
        }
        match timeout(route.tls_handshake_timeout, next_frontend(&mut client, &mut cbuf)).await {
            Ok(Ok(FrontendMessage::Password(body))) => match FrontendMessage::password_text(&body) {
                Ok(pw) => match std::str::from_utf8(&pw) {
                    Ok(pw) => access.identity.authenticate_bearer(pw).await,
                    Err(_) => Err(AuthError::Malformed("password is not UTF-8".into())),
                },
                Err(_) => Err(AuthError::Malformed("password message is malformed".into())),
            },
            _ => Err(AuthError::Missing),
        }
    };
    let principal = identified.as_ref().ok();
    let admission = match &identified {
        Ok(p) => Ok(access.decide(&route.name, p, &Request::Bytes)),
        Err(e) => Err(e.clone()),
    };
    // Break-glass: the session and every record of it carry the mark, and the webhook is told.
    let break_glass = principal.is_some_and(|p| access.policy.is_break_glass(p));
    let sj = match open_session(&ctx, peer, tls_meta, principal, Some(&access), break_glass, None) {
        Ok(sj) => Arc::new(sj),
        Err(e) => {
            let _ = client.write_all(&error_fields("FATAL", "57P03", "the audit journal is unavailable")).await;
            warn!(route = %route.name, error = %e, "Journal refused the session.");
            return;
        }
    };
    let counters = [AtomicU64::new(0), AtomicU64::new(0)];
    let strict = ctx.journal.durability() == Durability::Strict;
    let tally = Arc::new(Tally::default());
    let close = |reason: String| {
        let sj = sj.clone();
        let (a, b) = (counters[0].load(Ordering::Relaxed), counters[1].load(Ordering::Relaxed));
        let masked = tally.snapshot();
        async move {
            let meta = CloseMeta {
                masked,
                reason,
                bytes_from_client: a,
                bytes_from_upstream: b,
                duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                break_glass: false,
            };
            if let Ok(r) = sj.close(meta).await {
                let _ = r.await;
            }
        }
    };
    match journal_admission(&ctx, &sj, &access, principal, &admission, &Request::Bytes, true).await {
        Err(e) => {
            let _ = client.write_all(&error_fields("FATAL", "57P03", "the audit journal is unavailable")).await;
            close(format!("journal write failed: {e}")).await;
            return;
        }
        Ok(Some(denial)) => {
            let _ = client.write_all(&deny::postgres(&denial, true)).await;
            close(denial.message).await;
            return;
        }
        Ok(None) => {}
    }
    let Ok(principal) = identified else { return };
    if break_glass {
        super::super::session::notify_break_glass(&ctx, &access, &sj, &principal, peer);
    }
    if !pg.trusted_roles.iter().any(|r| principal.has_role(r))
        && let Some(why) = lexing_startup_parameter(&param)
    {
        let ending = Ending { sj: &sj, strict, count: &counters[1], principal: &principal, access: &access };
        ending.refuse_startup(&mut client, "guard:lexing", &why).await;
        close(why).await;
        return;
    }
    // A database the route does not serve (the upstream user may reach others).
    let database =
        param(b"database").map_or_else(|| pg.upstream_user.clone(), |d| String::from_utf8_lossy(&d).into_owned());
    if !pg.databases.is_empty() && !pg.databases.contains(&database) {
        let why = format!("database `{}` is not served by this route", crate::identity::truncate(&database, 64));
        let ending = Ending { sj: &sj, strict, count: &counters[1], principal: &principal, access: &access };
        ending.refuse_startup(&mut client, "route:databases", &why).await;
        close(why).await;
        return;
    }
    // What the upstream session is opened with besides the gateway's own user — which database,
    // and settings that change what statements do (`search_path` in `options`) — is on the
    // record: it goes with the session's first group.
    let forwarded: Vec<String> = [&b"database"[..], b"application_name", b"client_encoding", b"DateStyle", b"options"]
        .iter()
        .filter_map(|name| {
            param(name).map(|v| format!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(&v)))
        })
        .collect();
    if sj
        .stage_decision(crate::journal::record::DecisionMeta {
            phase: "request".into(),
            effect: "allow".into(),
            rule: "startup".into(),
            reason: "startup parameters forwarded to the upstream".into(),
            principal: principal.label(),
            request: format!("startup {}", forwarded.join(" ")),
            policy_version: Some(access.policy.version.clone()),
            break_glass: false,
        })
        .is_err()
    {
        let _ = client.write_all(&error_fields("FATAL", "57P03", "the audit journal is unavailable")).await;
        close("journal write failed while staging the startup parameters".into()).await;
        return;
    }

    // 3. The upstream login, with the gateway's credential.
    let mut ubuf = BytesMut::new();
    // The drain deadline of a shutdown ends the wait too, so the session's close is written.
    let connected = tokio::select! {
        r = timeout(route.connect_timeout, connect_upstream(&route)) => {
            r.unwrap_or_else(|_| Err(format!("upstream connect to {} timed out", route.upstream)))
        }
        () = ctx.abort.cancelled() => Err("gateway shutdown: drain deadline passed".to_owned()),
    };
    let (mut upstream, upstream_tls): (Box<dyn Io>, _) = match connected {
        Ok(pair) => pair,
        Err(reason) => {
            fatal(&sj, &mut client, strict, &counters[1], "08006", "the database behind the gateway is unreachable")
                .await;
            close(reason).await;
            return;
        }
    };
    let mut up_params = vec![(Bytes::from_static(b"user"), Bytes::from(pg.upstream_user.clone()))];
    for name in [&b"database"[..], b"application_name", b"client_encoding", b"DateStyle", b"options"] {
        if let Some(v) = param(name) {
            up_params.push((Bytes::copy_from_slice(name), v));
        }
    }
    let hello = startup::encode(&StartupPacket::Startup { major: 3, minor: 0, params: up_params });
    let login = async {
        upstream.write_all(&hello).await.map_err(|e| format!("upstream write error: {e}"))?;
        let mut scram: Option<ScramClient> = None;
        // Once SCRAM has begun, the server must prove it knows the password (its signature in
        // SASLFinal) before the gateway takes its AuthenticationOk.
        let mut server_proved = false;
        loop {
            let m = next_backend(&mut upstream, &mut ubuf).await?;
            let reply = match m {
                BackendMessage::Authentication(Authentication::Ok) if scram.is_some() && !server_proved => {
                    return Err("the upstream ended SCRAM without proving it knows the password".to_owned());
                }
                BackendMessage::Authentication(Authentication::Ok) => return Ok(()),
                BackendMessage::Authentication(Authentication::CleartextPassword) => {
                    if route.upstream_tls.is_none() && !pg.upstream_cleartext_password {
                        return Err(
                            "the upstream asked for the password in clear text over a connection without TLS; \
                                    use SCRAM-SHA-256, set upstream_tls, or allow it with upstream_cleartext_password"
                                .to_owned(),
                        );
                    }
                    let pw = pg
                        .upstream_password
                        .as_ref()
                        .ok_or("the upstream asks for a password the route does not hold")?;
                    let mut body = pw.0.clone().into_bytes();
                    body.push(0);
                    FrontendMessage::Password(Bytes::from(body))
                }
                BackendMessage::Authentication(Authentication::Sasl(mechs)) => {
                    if !mechs.iter().any(|m| &m[..] == b"SCRAM-SHA-256") {
                        return Err("the upstream offers no SASL mechanism the gateway speaks".to_owned());
                    }
                    let pw = pg
                        .upstream_password
                        .as_ref()
                        .ok_or("the upstream asks for a password the route does not hold")?;
                    let (client_scram, first) = ScramClient::new("", pw.0.as_bytes());
                    scram = Some(client_scram);
                    let initial =
                        SaslInitial { mechanism: Bytes::from_static(b"SCRAM-SHA-256"), data: Some(Bytes::from(first)) };
                    FrontendMessage::Password(FrontendMessage::sasl_initial_body(&initial))
                }
                BackendMessage::Authentication(Authentication::SaslContinue(data)) => {
                    let mut s = scram.take().ok_or("SASL continue before SASL start")?;
                    let text = std::str::from_utf8(&data).map_err(|_| "SCRAM message is not UTF-8")?.to_owned();
                    // PBKDF2 with the count the upstream asks for (up to a million rounds, a
                    // second of CPU) runs off the session runtime, whose other sessions it
                    // would stall.
                    let (s, reply) = tokio::task::spawn_blocking(move || {
                        let reply = s.server_first(&text);
                        (s, reply)
                    })
                    .await
                    .map_err(|_| "the SCRAM computation failed".to_owned())?;
                    scram = Some(s);
                    FrontendMessage::Password(Bytes::from(reply.map_err(|e| e.to_string())?))
                }
                BackendMessage::Authentication(Authentication::SaslFinal(data)) => {
                    let s = scram.as_ref().ok_or("SASL final before SASL start")?;
                    let text = std::str::from_utf8(&data).map_err(|_| "SCRAM message is not UTF-8")?;
                    s.server_final(text).map_err(|e| e.to_string())?;
                    server_proved = true;
                    continue;
                }
                BackendMessage::ErrorResponse(_) => {
                    let msg = m.field(b'M').map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
                    return Err(format!("the upstream refused the gateway's login: {msg}"));
                }
                other => return Err(format!("unsupported upstream authentication: {other:?}")),
            };
            upstream.write_all(&frontend::encode(&reply)).await.map_err(|e| format!("upstream write error: {e}"))?;
        }
    };
    if let Err(reason) =
        timeout(route.connect_timeout, login).await.unwrap_or_else(|_| Err("upstream login timed out".into()))
    {
        fatal(&sj, &mut client, strict, &counters[1], "08006", "the gateway could not log in to the database").await;
        close(reason).await;
        return;
    }
    let _ = super::super::session::journal_upstream(
        &sj,
        crate::journal::record::UpstreamMeta { addr: route.upstream.clone(), tls: upstream_tls, break_glass: false },
    );

    // Masking, when the route masks for this caller (column rules resolved against the catalog).
    let mut masker = None;
    if let Some(profile) = route.mask.as_ref().and_then(|m| m.for_principal(&principal)) {
        let started = timeout(route.connect_timeout, PgMasker::start(profile, tally.clone(), &mut upstream, &mut ubuf));
        let reason = match started.await {
            Ok(Ok(m)) => {
                masker = Some(m);
                None
            }
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some("the catalog lookup for column rules timed out".to_owned()),
        };
        if let Some(reason) = reason {
            fatal(
                &sj,
                &mut client,
                strict,
                &counters[1],
                "XX000",
                "the gateway could not prepare masking for this session",
            )
            .await;
            close(format!("masking could not be prepared, session refused: {reason}")).await;
            return;
        }
    }

    // The caller is in: AuthenticationOk, then the server's parameters with a minted cancel key.
    let mut minted_key = None;
    let ok = backend::encode(&BackendMessage::Authentication(Authentication::Ok));
    if deliver(&sj, &mut client, &ok, strict, &counters[1]).await.is_err() {
        close("caller went away during login".into()).await;
        return;
    }
    let mut tx_status = b'I';
    let outcome = relay(
        &ctx,
        &sj,
        &principal,
        leaf.as_deref(),
        &pg.trusted_roles,
        &mut client,
        &mut cbuf,
        &mut upstream,
        &mut ubuf,
        strict,
        &counters,
        &mut minted_key,
        &mut tx_status,
        &mut masker,
    )
    .await;
    if let Some(k) = &minted_key {
        ctx.cancel_keys.remove(k);
    }
    close(outcome).await;
}

/// The parts of a session a refusal that ends it needs.
struct Ending<'a> {
    sj: &'a SessionJournal,
    strict: bool,
    count: &'a AtomicU64,
    principal: &'a Principal,
    access: &'a crate::config::Access,
}

impl Ending<'_> {
    /// Journals the denial (`rule`, `why`, for `request`), then sends FATAL `code` with `message`.
    async fn deny(&self, client: &mut Box<dyn Io>, rule: &str, why: &str, request: &str, code: &str, message: &str) {
        let _ = self.sj.stage_decision(crate::journal::record::DecisionMeta {
            phase: "request".into(),
            effect: "deny".into(),
            rule: rule.to_owned(),
            reason: why.to_owned(),
            principal: self.principal.label(),
            request: request.to_owned(),
            policy_version: Some(self.access.policy.version.clone()),
            break_glass: false,
        });
        fatal(self.sj, client, self.strict, self.count, code, message).await;
    }

    /// Refuses what the caller's startup parameters ask for (FATAL 42501).
    async fn refuse_startup(&self, client: &mut Box<dyn Io>, rule: &str, why: &str) {
        self.deny(client, rule, why, "startup parameters", "42501", why).await;
    }

    /// Ends a session whose caller's identity a reload revoked (`identity:revoked`, FATAL
    /// 28000). Returns the close reason.
    async fn revoked(&self, client: &mut Box<dyn Io>, why: &str, request: &str) -> String {
        self.deny(client, "identity:revoked", why, request, "28000", &format!("{why}; the session ends")).await;
        format!("credential revoked: {why}")
    }
}

/// A FATAL ErrorResponse to the caller, journaled like everything it receives.
async fn fatal(
    sj: &SessionJournal,
    client: &mut Box<dyn Io>,
    strict: bool,
    count: &AtomicU64,
    code: &str,
    message: &str,
) {
    let _ = deliver(sj, client, &error_fields("FATAL", code, message), strict, count).await;
}

/// Journals `bytes` as what the caller received, then sends them.
async fn deliver(
    sj: &SessionJournal,
    client: &mut Box<dyn Io>,
    bytes: &[u8],
    strict: bool,
    count: &AtomicU64,
) -> Result<(), Fail> {
    let r = sj
        .data(Direction::UpstreamToClient, false, &Bytes::copy_from_slice(bytes))
        .await
        .map_err(|e| format!("journal write failed: {e}"))?;
    if strict {
        r.await.map_err(|e| format!("journal write failed: {e}"))?;
    }
    client.write_all(bytes).await.map_err(|e| format!("caller write error: {e}"))?;
    count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Most bytes of whole messages journaled together in one record; a single larger message
/// gets a record (or, past the record limit, records) of its own.
const RECORD_BYTES: usize = 64 * 1024;

/// Messages for one side, written at once when flushed. They are journaled as they are written:
/// whole messages, up to [`RECORD_BYTES`] per record, staged and handed to the writer as one
/// group — after which, in strict mode, the flush waits for the group to be durable before the
/// bytes move. Staged records of either side (and the statement decisions staged before the
/// statements they judge) go with whichever side flushes first; in strict mode every flush waits
/// for its group, so whatever an earlier flush carried is durable too.
struct Outbox {
    direction: Direction,
    bytes: Vec<u8>,
    /// Where the bytes not yet staged as a record begin.
    unstaged: usize,
}

impl Outbox {
    fn new(direction: Direction) -> Self {
        Self { direction, bytes: Vec::new(), unstaged: 0 }
    }

    /// Adds one whole message.
    fn push(&mut self, sj: &SessionJournal, message: Bytes) -> Result<(), Fail> {
        if self.bytes.len() > self.unstaged && self.bytes.len() - self.unstaged + message.len() > RECORD_BYTES {
            self.stage(sj)?;
        }
        self.bytes.extend_from_slice(&message);
        Ok(())
    }

    /// Stages the messages added since the last record as one record.
    fn stage(&mut self, sj: &SessionJournal) -> Result<(), Fail> {
        if self.bytes.len() > self.unstaged {
            let record = Bytes::copy_from_slice(&self.bytes[self.unstaged..]);
            sj.stage_data(self.direction, false, &record).map_err(|e| format!("journal write failed: {e}"))?;
            self.unstaged = self.bytes.len();
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        sj: &SessionJournal,
        io: &mut Box<dyn Io>,
        strict: bool,
        count: &AtomicU64,
    ) -> Result<(), Fail> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        self.stage(sj)?;
        let receipt = sj.flush().await.map_err(|e| format!("journal write failed: {e}"))?;
        if strict {
            receipt.await.map_err(|e| format!("journal write failed: {e}"))?;
        }
        let side = match self.direction {
            Direction::ClientToUpstream => "upstream",
            Direction::UpstreamToClient => "caller",
        };
        io.write_all(&self.bytes).await.map_err(|e| format!("{side} write error: {e}"))?;
        count.fetch_add(self.bytes.len() as u64, Ordering::Relaxed);
        self.bytes.clear();
        self.unstaged = 0;
        Ok(())
    }
}

/// Statements prepared in a session — by a Parse, or by SQL (`PREPARE name AS …`): one namespace,
/// as in PostgreSQL, where a Bind and an `EXECUTE` reach statements made either way — with the
/// text that made each and the policy version it was judged under. A Bind under a newer policy
/// (after a reload) is judged again by that text, and an `EXECUTE name` always is. The texts are
/// copies (not slices of a read buffer, which they would keep alive), bounded in number and in
/// bytes.
#[derive(Default)]
struct Prepared {
    statements: HashMap<Bytes, (Bytes, Arc<str>)>,
    bytes: usize,
}

/// Most statements tracked, and most bytes of their texts in all; preparing beyond either is
/// refused (JDBC keeps 256 statements, psycopg 100).
const MAX_PREPARED: usize = 10_000;
const MAX_PREPARED_BYTES: usize = 16 << 20;

/// What an `EXECUTE name` runs, as far as the session's record goes.
enum Executes {
    /// The text that prepared it.
    Known(Bytes),
    /// A name the gateway did not see prepared: what it reads is unknown.
    Unknown,
}

/// Why a message may not prepare what it names, if it may not.
enum NoRoom {
    /// The name is taken: PostgreSQL refuses it too, and would go on running the statement
    /// already prepared under it, which the record would no longer describe.
    Taken(String),
    /// The bounds are reached.
    Full,
}

impl Prepared {
    /// The text of the statement `name`, when it was judged under another policy.
    fn stale(&self, name: &Bytes, version: &str) -> Option<Bytes> {
        self.statements.get(name).filter(|(_, v)| &**v != version).map(|(sql, _)| sql.clone())
    }

    /// What each `EXECUTE name` in a text (also under EXPLAIN) runs.
    fn executes(&self, text: &Bytes) -> Vec<Executes> {
        if !text.windows(7).any(|w| w.eq_ignore_ascii_case(b"execute")) {
            return Vec::new();
        }
        let classified = classify_cached(&String::from_utf8_lossy(text));
        let Ok(statements) = classified.as_ref() else { return Vec::new() };
        statements
            .iter()
            .filter_map(|s| s.executes.as_ref())
            .map(|name| match self.statements.get(name.as_bytes()) {
                Some((t, _)) => Executes::Known(t.clone()),
                None => Executes::Unknown,
            })
            .collect()
    }

    /// Whether `m` (with its SQL `text`) may prepare what it names.
    fn room_for(&self, m: &FrontendMessage, text: &Bytes) -> Result<(), NoRoom> {
        let mut names: Vec<Bytes> = sql_effects(text).0.into_iter().map(Bytes::from).collect();
        if let FrontendMessage::Parse { name, .. } = m {
            names.push(name.clone());
        }
        let mut bytes = self.bytes;
        let mut count = self.statements.len();
        for name in names {
            match self.statements.get(&name) {
                // The unnamed statement is replaced by each Parse.
                Some((old, _)) if name.is_empty() => bytes = bytes - old.len() + text.len(),
                Some(_) => return Err(NoRoom::Taken(String::from_utf8_lossy(&name).into_owned())),
                None => {
                    bytes += text.len();
                    count += 1;
                }
            }
        }
        if count > MAX_PREPARED || bytes > MAX_PREPARED_BYTES { Err(NoRoom::Full) } else { Ok(()) }
    }

    fn insert(&mut self, name: Bytes, text: &Bytes, version: &Arc<str>) {
        self.bytes += text.len();
        if let Some((old, _)) = self.statements.insert(name, (Bytes::copy_from_slice(text), version.clone())) {
            self.bytes -= old.len();
        }
    }

    fn remove(&mut self, name: &[u8]) {
        if let Some((old, _)) = self.statements.remove(name) {
            self.bytes -= old.len();
        }
    }

    /// Remembers what an allowed message prepares or closes, or that a statement was judged
    /// again under `version`.
    fn judged(&mut self, m: &FrontendMessage, text: &Bytes, version: &Arc<str>) {
        match m {
            FrontendMessage::Parse { name, .. } => self.insert(Bytes::copy_from_slice(name), text, version),
            FrontendMessage::Bind { statement, .. } => {
                if let Some(entry) = self.statements.get_mut(statement) {
                    entry.1 = version.clone();
                }
            }
            FrontendMessage::Close { target: frontend::Target::Statement, name } => self.remove(name),
            _ => {}
        }
        if matches!(m, FrontendMessage::Parse { .. } | FrontendMessage::Query { .. }) {
            let (prepares, deallocates) = sql_effects(text);
            for gone in deallocates {
                match gone {
                    Some(name) => self.remove(name.as_bytes()),
                    None => {
                        self.statements.clear();
                        self.bytes = 0;
                    }
                }
            }
            for name in prepares {
                self.insert(Bytes::from(name), text, version);
            }
        }
    }
}

/// The names a text prepares with `PREPARE name AS …`, and those it deallocates (`None`: all).
fn sql_effects(text: &Bytes) -> (Vec<String>, Vec<Option<String>>) {
    let mentions = |word: &[u8]| text.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
    if !mentions(b"prepare") && !mentions(b"deallocate") && !mentions(b"discard") {
        return (Vec::new(), Vec::new());
    }
    match classify_cached(&String::from_utf8_lossy(text)).as_ref() {
        Ok(statements) => (
            statements.iter().filter_map(|s| s.prepares.clone()).collect(),
            statements.iter().filter_map(|s| s.deallocates.clone()).collect(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// Refusals waiting for the upstream's error for their stand-ins.
struct Refusals {
    /// Marks this session's stand-in function names, so that no real function or text matches.
    salt: u64,
    next: u64,
    /// `(marker, the refusal's ErrorResponse)`, oldest first.
    waiting: std::collections::VecDeque<(String, Bytes)>,
}

/// Most refusals remembered: a stand-in skipped by the server (an earlier error in the same
/// pipeline) never errors, and is forgotten once later ones answer or this many wait.
const MAX_REFUSALS: usize = 256;

impl Refusals {
    fn new() -> Self {
        let mut salt = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut salt);
        Self { salt: u64::from_be_bytes(salt), next: 0, waiting: Default::default() }
    }

    /// What goes to the upstream in place of the refused `m`: a statement that fails at once on a
    /// function that does not exist, as a Query for a Query or a fast-path call (one
    /// ReadyForQuery each), as a Parse under the same statement name for a Parse; for a Bind, a
    /// Bind of the same portal to a statement that does not exist.
    fn stand_in(&mut self, m: &FrontendMessage, error: Bytes) -> (FrontendMessage, Bytes) {
        self.next += 1;
        let marker = format!("airlock_refused_{:016x}_{}", self.salt, self.next);
        let sql = Bytes::from(format!("SELECT {marker}()"));
        let stand_in = match m {
            FrontendMessage::Parse { name, .. } => {
                FrontendMessage::Parse { name: name.clone(), sql, param_types: vec![] }
            }
            FrontendMessage::Bind { portal, .. } => FrontendMessage::Bind {
                portal: portal.clone(),
                statement: Bytes::from(marker.clone()),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            _ => FrontendMessage::Query { sql },
        };
        if self.waiting.len() == MAX_REFUSALS {
            self.waiting.pop_front();
        }
        self.waiting.push_back((marker, error));
        let bytes = frontend::encode(&stand_in);
        (stand_in, bytes)
    }

    /// The refusal an upstream error answers, if it is a stand-in's; refusals queued before it
    /// were skipped by the server and are dropped.
    fn answer(&mut self, error: &BackendMessage) -> Option<Bytes> {
        let message = error.field(b'M')?;
        let text = std::str::from_utf8(message).ok()?;
        // `…_1(` is not a prefix of `…_10(`, nor `"…_1"` of `"…_10"` (a Bind's stand-in names a
        // prepared statement that does not exist).
        let answers = |marker: &String| text.contains(&format!("{marker}(")) || text.contains(&format!("\"{marker}\""));
        match self.waiting.iter().position(|(marker, _)| answers(marker)) {
            Some(at) => {
                self.waiting.drain(..at);
                self.waiting.pop_front().map(|(_, error)| error)
            }
            // A stand-in of this session whose refusal was forgotten (more than MAX_REFUSALS
            // waited): still a refusal, and the marker does not reach the caller.
            None if text.contains(&format!("airlock_refused_{:016x}_", self.salt)) => {
                Some(error_fields("ERROR", "42501", "refused by the gateway's policy"))
            }
            None => None,
        }
    }
}

/// Client-only encodings, normalized as PostgreSQL matches names (lower case, letters and digits
/// only): in each of them the second byte of a character can be `'` or `\`.
const UNSAFE_ENCODINGS: [&str; 21] = [
    "big5",
    "gb18030",
    "gbk",
    "johab",
    "sjis",
    "shiftjis",
    "shiftjis2004",
    "mskanji",
    "uhc",
    "win932",
    "win936",
    "win949",
    "win950",
    "windows932",
    "windows936",
    "windows949",
    "windows950",
    "cp932",
    "cp936",
    "cp949",
    "cp950",
];

/// Why the server reading SQL text under this reported setting would differ from the gateway's
/// parser, if it would: `standard_conforming_strings` off, or a client-only multi-byte encoding.
fn lexing_unsafe(name: &[u8], value: &[u8]) -> Option<String> {
    let normalized: String =
        value.iter().filter(|b| b.is_ascii_alphanumeric()).map(|b| char::from(b.to_ascii_lowercase())).collect();
    match name {
        b"standard_conforming_strings" if normalized == "off" => {
            Some("standard_conforming_strings was turned off".to_owned())
        }
        b"client_encoding" if UNSAFE_ENCODINGS.contains(&normalized.as_str()) => {
            Some(format!("client_encoding became {}", String::from_utf8_lossy(value)))
        }
        _ => None,
    }
}

/// Why the caller's startup parameters would make the server read SQL text differently from the
/// gateway's parser (see `policy::sql`), if they would: a client-only multi-byte encoding, or
/// `options` that set `standard_conforming_strings` or `client_encoding`.
fn lexing_startup_parameter(param: &impl Fn(&[u8]) -> Option<Bytes>) -> Option<String> {
    if let Some(enc) = param(b"client_encoding")
        && lexing_unsafe(b"client_encoding", &enc).is_some()
    {
        return Some(format!(
            "client_encoding {} is refused for this role: in it a quote or backslash can hide inside a \
             character; use UTF8",
            String::from_utf8_lossy(&enc)
        ));
    }
    let options = param(b"options")?;
    let names = option_settings(&String::from_utf8_lossy(&options));
    if names.iter().any(|n| n == "role" || n == "session_authorization") {
        return Some(
            "startup options that set role or session_authorization are refused for this role: the gateway's \
             upstream user may be a member of roles that can do far more"
                .to_owned(),
        );
    }
    names.iter().any(|n| n == "standard_conforming_strings" || n == "client_encoding").then(|| {
        "startup options that set standard_conforming_strings or client_encoding are refused for this role: \
         they change how the server reads SQL text"
            .to_owned()
    })
}

/// The settings a startup `options` value sets, as the server reads them: arguments split at
/// white space (a backslash keeps the next character), `-c name=value`, `-cname=value` or
/// `--name=value`, the name lower-case with `-` read as `_` (as PostgreSQL reads it).
fn option_settings(options: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    // As the server's getopt reads them (`process_postgres_switches`): letters may be bundled
    // (`-ec role=x` is `-e -c role=x`), and a letter that takes an argument takes the rest of
    // its word, or the next word.
    const TAKES_ARGUMENT: &[u8] = b"BcCDdfhkNprStvW-";
    let mut names = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(letters) = arg.strip_prefix('-') else { continue };
        for (i, letter) in letters.bytes().enumerate() {
            if !TAKES_ARGUMENT.contains(&letter) {
                continue;
            }
            let rest = &letters[i + 1..];
            let value = if rest.is_empty() { args.next().map(String::as_str) } else { Some(rest) };
            if let (b'c' | b'-', Some(setting)) = (letter, value) {
                let name = setting.split('=').next().unwrap_or("");
                names.push(name.to_ascii_lowercase().replace('-', "_"));
            }
            break;
        }
    }
    names
}

/// The decision for a fast-path FunctionCall: it runs a function by its OID, which no SQL text
/// shows (`query_to_xml` by OID runs any query), so only trusted roles may send one, and then
/// the filter chain decides it as an `other` statement.
fn decide_function_call(
    access: &crate::config::Access,
    route: &str,
    principal: &Principal,
    trusted_roles: &[String],
) -> (Decision, String) {
    let summary = "fast-path function call".to_owned();
    if !trusted_roles.iter().any(|r| principal.has_role(r)) {
        let d = Decision {
            effect: Effect::Deny,
            rule: "guard:function_call".into(),
            reason: "a fast-path function call runs a function the gateway cannot read as SQL; only trusted \
                     roles may send one"
                .into(),
            policy_version: access.policy.version.clone(),
        };
        return (d, summary);
    }
    // What the function reads is unknown: rules on tables that refuse or hold apply.
    let request = Request::Sql { kind: crate::policy::SqlKind::Other, tables: None, columns: None };
    (access.decide(route, principal, &request), summary)
}

/// The decision for one statement: guardrails first (unless the role is trusted), then the
/// filter chain, for every statement of the string.
fn decide_sql(
    access: &crate::config::Access,
    route: &str,
    principal: &Principal,
    trusted_roles: &[String],
    ruled: &[(Option<String>, String)],
    sql: &[u8],
) -> (Decision, String) {
    let text = String::from_utf8_lossy(sql);
    let statements = classify_cached(&text);
    let summary: String = text.chars().take(200).collect();
    let trusted = trusted_roles.iter().any(|r| principal.has_role(r));
    let deny = |rule: &str, reason: String| Decision {
        effect: Effect::Deny,
        rule: rule.into(),
        reason,
        policy_version: access.policy.version.clone(),
    };
    if !trusted && let Some((rule, reason)) = guardrail(&statements) {
        return (deny(rule, reason), summary);
    }
    // The masker's column rules follow a column only where the result names it as its source:
    // a statement that returns a ruled column any other way is refused, trusted or not (the
    // masking applies to both).
    if !ruled.is_empty() {
        let unfollowable = match statements.as_ref() {
            Err(_) => Some("SQL the gateway cannot read".to_owned()),
            Ok(list) => list.iter().find_map(|s| {
                // A rule that names its table counts only where the statement reads that table.
                let applies = |table: &Option<String>| {
                    table.as_ref().is_none_or(|t| {
                        s.tables
                            .iter()
                            .any(|n| n == t || n.ends_with(&format!(".{t}")) || t.ends_with(&format!(".{n}")))
                    })
                };
                match &s.derived {
                    None if ruled.iter().any(|(t, _)| applies(t)) => Some("a whole row".to_owned()),
                    None => None,
                    Some(cols) => cols
                        .iter()
                        .find(|c| ruled.iter().any(|(t, rc)| rc == *c && applies(t)))
                        .map(|c| format!("the column `{c}`")),
                }
            }),
        };
        if let Some(what) = unfollowable {
            let reason = format!(
                "column rules of this route's masking cannot follow {what} returned through an expression, a \
                 set operation or RETURNING; select the column itself"
            );
            return (deny("mask:unfollowable", reason), summary);
        }
    }
    // A denied statement refuses the string; a held one only if none is denied, so that a hold
    // never hides a deny.
    let (mut last, mut held) = (None, None);
    for request in statements.iter().flatten().flat_map(SqlStatement::requests) {
        let d = access.decide(route, principal, &request);
        match d.effect {
            Effect::Deny => return (d, summary),
            Effect::Allow => last = Some(d),
            Effect::RequireApproval => {
                held.get_or_insert(d);
            }
        }
    }
    let d = held.or(last).unwrap_or_else(|| {
        // No statement (an empty string), or SQL that does not parse (a trusted role's): what
        // it touches is unknown, so rules on tables that refuse or hold apply.
        let tables = statements.is_ok().then(Vec::new);
        access.decide(route, principal, &Request::Sql { kind: crate::policy::SqlKind::Other, tables, columns: None })
    });
    (d, summary)
}

/// Relays until either side ends; returns the close reason.
#[expect(clippy::too_many_arguments, reason = "the session's whole state, passed once")]
async fn relay(
    ctx: &SessionCtx,
    sj: &Arc<SessionJournal>,
    principal: &Principal,
    leaf: Option<&[u8]>,
    trusted_roles: &[String],
    client: &mut Box<dyn Io>,
    cbuf: &mut BytesMut,
    upstream: &mut Box<dyn Io>,
    ubuf: &mut BytesMut,
    strict: bool,
    counters: &[AtomicU64; 2],
    minted_key: &mut Option<(i32, Vec<u8>)>,
    tx_status: &mut u8,
    masker: &mut Option<PgMasker>,
) -> String {
    let route = &ctx.route;
    let mut fdec = FrontendDecoder::default();
    let mut bdec = BackendDecoder::default();
    // Automatic logoff: the session ends when the caller's credential does.
    let expires = principal.expires_at.map(|secs| {
        let left_us = secs.saturating_mul(1_000_000).saturating_sub(crate::time::now_us());
        Instant::now() + std::time::Duration::from_micros(u64::try_from(left_us).unwrap_or(0))
    });
    // Refusals under way: a refused statement is not answered by the gateway but replaced, on its
    // way to the upstream, by a call of a function that does not exist, named by a marker. The
    // server's own error for it (swapped here for the refusal) then comes in the right place,
    // after the answers to everything sent before; the server skips to the next Sync as for any
    // error, aborts the transaction it is in, and reports the true transaction status.
    let mut refusals = Refusals::new();
    let mut prepared = Prepared::default();
    let mut version: Arc<str> = Arc::from(ctx.access.current().policy.version.as_str());
    let ruled = masker.as_ref().map(PgMasker::ruled_columns).unwrap_or_default();
    let mut to_client = Outbox::new(Direction::UpstreamToClient);
    let mut to_upstream = Outbox::new(Direction::ClientToUpstream);
    // A reload that revokes the caller's identity ends the session at once, idle or not (and
    // at its next message, should it arrive first).
    let mut reload = super::super::next_reload(ctx.access.watch());
    loop {
        // Everything already buffered from the upstream goes first, in one write.
        loop {
            let (m, raw) = match bdec.decode_raw(ubuf) {
                Ok(Some(pair)) => pair,
                Ok(None) => break,
                Err(e) => return format!("upstream sent a malformed message: {e}"),
            };
            let bytes: Bytes = match &m {
                BackendMessage::BackendKeyData { process_id, secret_key } => {
                    let mut key = [0u8; 4];
                    let _ = aws_lc_rs::rand::fill(&mut key);
                    let pid = i32::from_be_bytes(key) & 0x7fff_ffff;
                    let mut secret = [0u8; 4];
                    let _ = aws_lc_rs::rand::fill(&mut secret);
                    ctx.cancel_keys.insert((pid, secret.to_vec()), (*process_id, secret_key.clone()));
                    *minted_key = Some((pid, secret.to_vec()));
                    backend::encode(&BackendMessage::BackendKeyData {
                        process_id: pid,
                        secret_key: Bytes::copy_from_slice(&secret),
                    })
                }
                BackendMessage::ReadyForQuery { status } => {
                    *tx_status = *status;
                    raw
                }
                // However it came about (a function that calls `set_config`, a role's defaults),
                // a session whose server now reads SQL text differently from the gateway's
                // parser is not judged any further: it ends, unless its role is trusted.
                BackendMessage::ParameterStatus { name, value }
                    if !trusted_roles.iter().any(|r| principal.has_role(r)) && lexing_unsafe(name, value).is_some() =>
                {
                    let why = lexing_unsafe(name, value).unwrap_or_default();
                    let _ = sj.stage_decision(crate::journal::record::DecisionMeta {
                        phase: "response".into(),
                        effect: "deny".into(),
                        rule: "guard:lexing".into(),
                        reason: why.clone(),
                        principal: principal.label(),
                        request: "parameter status".into(),
                        policy_version: None,
                        break_glass: false,
                    });
                    let _ = to_client.flush(sj, client, strict, &counters[1]).await;
                    fatal(sj, client, strict, &counters[1], "42501", &format!("{why}; the session ends")).await;
                    return format!("the server's reading of SQL text changed: {why}");
                }
                BackendMessage::ErrorResponse(_) => match refusals.answer(&m) {
                    Some(refusal) => {
                        // The gateway's own text: it quotes nothing from the result.
                        if let Some(mk) = masker.as_mut() {
                            let _ = mk.backend(&m, raw);
                        }
                        if let Err(e) = to_client.push(sj, refusal) {
                            return e;
                        }
                        continue;
                    }
                    None => raw,
                },
                _ => raw,
            };
            // Masking: what the caller receives (and the journal holds) is the masked message.
            let bytes = match masker.as_mut().map(|mk| mk.backend(&m, bytes.clone())) {
                None => bytes,
                Some(Ok(Some(b))) => b,
                Some(Ok(None)) => continue,
                Some(Err(why)) => {
                    let _ = sj.stage_decision(crate::journal::record::DecisionMeta {
                        phase: "response".into(),
                        effect: "deny".into(),
                        rule: "mask:fail-closed".into(),
                        reason: why.clone(),
                        principal: principal.label(),
                        request: "result rows".into(),
                        policy_version: None,
                        break_glass: false,
                    });
                    let _ = to_client.flush(sj, client, strict, &counters[1]).await;
                    fatal(sj, client, strict, &counters[1], "XX000", "a result could not be masked; the session ends")
                        .await;
                    return format!("masking failed, the rest of the result was withheld: {why}");
                }
            };
            if let Err(e) = to_client.push(sj, bytes) {
                return e;
            }
        }
        if let Err(e) = to_client.flush(sj, client, strict, &counters[1]).await {
            return e;
        }
        // Then every whole message from the caller, forwarded in one write; a refused statement
        // goes as its stand-in (see `refusals`).
        loop {
            let (m, raw) = match fdec.decode_raw(cbuf) {
                Ok(Some(pair)) => pair,
                Ok(None) => break,
                Err(e) => {
                    fatal(sj, client, strict, &counters[1], "08P01", &format!("malformed message: {e}")).await;
                    return format!("caller sent a malformed message: {e}");
                }
            };
            let mut sql = match &m {
                FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => Some(sql.clone()),
                FrontendMessage::FunctionCall(_) => Some(Bytes::new()),
                _ => None,
            };
            let query = sql.clone().unwrap_or_default();
            let mut forward = raw;
            // The identity in force now, too: a key removed (or given other roles) by a reload
            // ends the sessions it opened, at their next message (a Bind and Execute of a
            // statement prepared before as well). The same configuration judges the statement.
            let access = ctx.access.current();
            if let Some(why) = access.identity.revoked_presenting(principal, leaf, route.client_principal) {
                let _ = to_client.flush(sj, client, strict, &counters[1]).await;
                let ending = Ending { sj, strict, count: &counters[1], principal, access: &access };
                return ending.revoked(client, &why, "message (not judged)").await;
            }
            // A statement prepared under an older policy (before a reload) is judged again, by the
            // text that prepared it, when it is bound; an `EXECUTE name` always is, by the text
            // that prepared it (or, for a name the gateway did not see prepared, as reading tables
            // unknown).
            if version.as_ref() != access.policy.version {
                version = Arc::from(access.policy.version.as_str());
            }
            if let FrontendMessage::Bind { statement, .. } = &m {
                sql = prepared.stale(statement, &version);
            }
            if let Some(sql) = sql {
                // A long text is parsed off the session runtime first; the decision below finds
                // its classification (and, under EXECUTE, that of a long prepared text).
                crate::policy::sql::classify_long(&sql).await;
                let executes = prepared.executes(&sql);
                for runs in &executes {
                    if let Executes::Known(text) = runs {
                        crate::policy::sql::classify_long(text).await;
                    }
                }
                let refuse = |rule: &str, reason: String| Decision {
                    effect: Effect::Deny,
                    rule: rule.into(),
                    reason,
                    policy_version: access.policy.version.clone(),
                };
                let (d, summary) = if matches!(m, FrontendMessage::FunctionCall(_)) {
                    decide_function_call(&access, &route.name, principal, trusted_roles)
                } else {
                    let summary: String = String::from_utf8_lossy(&sql).chars().take(200).collect();
                    match prepared.room_for(&m, &query) {
                        Err(NoRoom::Taken(name)) => {
                            (refuse("guard:prepared", format!("prepared statement `{name}` already exists")), summary)
                        }
                        Err(NoRoom::Full) => (
                            refuse(
                                "guard:prepared_limit",
                                format!(
                                    "more than {MAX_PREPARED} prepared statements (or {MAX_PREPARED_BYTES} bytes of them) \
                                     in one session; close (DEALLOCATE) some"
                                ),
                            ),
                            summary,
                        ),
                        // The policy in force now: a reload applies to open sessions too. Each
                        // `EXECUTE name` in the text is judged by what it runs.
                        Ok(()) => {
                            let (mut d, summary) =
                                decide_sql(&access, &route.name, principal, trusted_roles, &ruled, &sql);
                            for runs in executes {
                                if d.effect == Effect::Deny {
                                    break;
                                }
                                let e = match runs {
                                    Executes::Known(text) => {
                                        decide_sql(&access, &route.name, principal, trusted_roles, &ruled, &text).0
                                    }
                                    Executes::Unknown => {
                                        let unknown = Request::Sql {
                                            kind: crate::policy::SqlKind::Other,
                                            tables: None,
                                            columns: None,
                                        };
                                        access.decide(&route.name, principal, &unknown)
                                    }
                                };
                                if e.effect != Effect::Allow {
                                    d = e;
                                }
                            }
                            (d, summary)
                        }
                    }
                };
                let meta = crate::journal::record::DecisionMeta {
                    phase: "request".into(),
                    effect: d.effect.as_str().into(),
                    rule: d.rule.clone(),
                    reason: d.reason.clone(),
                    principal: principal.label(),
                    request: format!("sql {summary}"),
                    policy_version: Some(d.policy_version.clone()),
                    break_glass: false,
                };
                // Staged before the statement's own record: the outbox's group carries it.
                if let Err(e) = sj.stage_decision(meta) {
                    return format!("journal write failed: {e}");
                }
                if let Some(denial) = Denial::from_decision(&d, sj.id().to_string()) {
                    let (stand_in, bytes) = refusals.stand_in(&m, deny::postgres(&denial, false));
                    forward = bytes;
                    // What the masker must expect is the stand-in's answer: a Parse's stays a
                    // Parse, a Bind's a Bind, anything else went as a Query.
                    if let Some(mk) = masker.as_mut() {
                        match m {
                            FrontendMessage::Parse { .. } => mk.frontend(&m),
                            FrontendMessage::Bind { .. } => mk.frontend(&stand_in),
                            _ => mk.frontend(&FrontendMessage::Query { sql: Bytes::new() }),
                        }
                    }
                    if let Err(e) = to_upstream.push(sj, forward) {
                        return e;
                    }
                    continue;
                }
            }
            prepared.judged(&m, &query, &version);
            if let Some(mk) = masker.as_mut() {
                mk.frontend(&m);
            }
            if let Err(e) = to_upstream.push(sj, forward) {
                return e;
            }
            if matches!(m, FrontendMessage::Terminate) {
                let _ = to_upstream.flush(sj, upstream, strict, &counters[0]).await;
                return "the caller terminated the session".into();
            }
        }
        if let Err(e) = to_upstream.flush(sj, upstream, strict, &counters[0]).await {
            return e;
        }
        if let Err(e) = to_client.flush(sj, client, strict, &counters[1]).await {
            return e;
        }
        // Read in sizable pieces (an empty BytesMut would otherwise grow 64 bytes at a time).
        cbuf.reserve(16 * 1024);
        ubuf.reserve(64 * 1024);
        tokio::select! {
            r = client.read_buf(cbuf) => match r {
                Ok(0) => return "the caller closed the connection".into(),
                Ok(_) => {}
                Err(e) => return format!("caller read error: {e}"),
            },
            r = upstream.read_buf(ubuf) => match r {
                Ok(0) => return "the upstream closed the connection".into(),
                Ok(_) => {}
                Err(e) => return format!("upstream read error: {e}"),
            },
            () = tokio::time::sleep(route.idle_timeout) => return "idle timeout".into(),
            () = ctx.abort.cancelled() => return "gateway shutdown: drain deadline passed".into(),
            (rx, access) = &mut reload => {
                reload = super::super::next_reload(rx);
                if let Some(why) = access.identity.revoked_presenting(principal, leaf, route.client_principal) {
                    let _ = to_client.flush(sj, client, strict, &counters[1]).await;
                    let ending = Ending { sj, strict, count: &counters[1], principal, access: &access };
                    return ending.revoked(client, &why, "reload").await;
                }
            }
            () = async { match expires { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let denial = Denial::expired_during_session(sj.id().to_string());
                let bytes = deny::postgres(&denial, true);
                let _ = to_client.push(sj, bytes);
                let _ = to_client.flush(sj, client, strict, &counters[1]).await;
                return "automatic logoff: the caller's credential expired during the session".into();
            }
        }
    }
}

/// Connects to the upstream; with `upstream_tls`, asks for TLS (SSLRequest) and verifies the
/// server's certificate and name (verify-full). A server that declines TLS is not used.
async fn connect_upstream(
    route: &crate::config::Route,
) -> Result<(Box<dyn Io>, Option<crate::journal::record::TlsMeta>), Fail> {
    let mut tcp = TcpStream::connect(&route.upstream)
        .await
        .map_err(|e| format!("upstream connect to {} failed: {e}", route.upstream))?;
    let _ = tcp.set_nodelay(true);
    let Some((connector, name)) = &route.upstream_tls else { return Ok((Box::new(tcp), None)) };
    tcp.write_all(&startup::encode(&StartupPacket::SslRequest))
        .await
        .map_err(|e| format!("upstream write error: {e}"))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| format!("upstream read error: {e}"))?;
    if answer[0] != b'S' {
        return Err(format!("upstream {} declined TLS; the route requires it", route.upstream));
    }
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| format!("upstream TLS handshake with {} failed: {e}", route.upstream))?;
    let meta = crate::tls::describe(tls.get_ref().1, Some(name.to_str().as_ref()));
    Ok((Box::new(tls), Some(meta)))
}

/// Forwards a CancelRequest with a key this gateway minted to the upstream backend it stands for.
async fn forward_cancel(ctx: &SessionCtx, minted: (i32, Vec<u8>)) {
    let Some((pid, key)) = ctx.cancel_keys.get(&minted) else {
        warn!(route = %ctx.route.name, "CancelRequest with an unknown key ignored.");
        return;
    };
    if let Ok(Ok((mut s, _))) = timeout(ctx.route.connect_timeout, connect_upstream(&ctx.route)).await {
        let _ = s.write_all(&startup::encode(&StartupPacket::Cancel { process_id: pid, secret_key: key })).await;
        let _ = s.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_options_are_read_as_the_server_reads_them() {
        assert_eq!(option_settings("-c search_path=app"), ["search_path"]);
        assert_eq!(
            option_settings("-c standard-conforming-strings=off -crole=x --Session-Authorization=y"),
            ["standard_conforming_strings", "role", "session_authorization"]
        );
        assert_eq!(option_settings(r"-c application_name=a\ -c\ role=x"), ["application_name"]);
        assert_eq!(option_settings("-e  -c  DateStyle=ISO"), ["datestyle"]);
        // Bundled letters, as getopt reads them.
        assert_eq!(option_settings("-ec role=postgres"), ["role"]);
        assert_eq!(option_settings("-ecclient_encoding=SJIS"), ["client_encoding"]);
        assert_eq!(option_settings("-B 8 -c a=1"), ["a"], "an argument is not a setting");
        let refused = |options: &str| {
            let o = Bytes::copy_from_slice(options.as_bytes());
            lexing_startup_parameter(&|n: &[u8]| (n == b"options").then(|| o.clone()))
        };
        for bad in [
            "-c standard-conforming-strings=off",
            "-c role=postgres",
            "--ROLE=postgres",
            "-cclient_encoding=sjis",
            "-ec role=x",
        ] {
            assert!(refused(bad).is_some(), "{bad}");
        }
        assert_eq!(refused("-c search_path=app -c statement_timeout=5s"), None);
    }
}
