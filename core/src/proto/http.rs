//! The HTTP driver: HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN over TLS) on hyper.
//!
//! Every request is its own journaled session (its `connection` field ties a connection's
//! requests together), in this order:
//! 1. identify: `Authorization: Bearer` — a JWT or an API key — unless the route is anonymous;
//! 2. decide: the policy over `Request::Http { method, path }` — or `Request::Grpc { service,
//!    method }` for `application/grpc` calls; the decision is journaled and durable before
//!    anything is forwarded (write-ahead). A refusal is answered by [`crate::deny`]: 401 with
//!    `WWW-Authenticate`, or 403, with a JSON body and the request id; for gRPC a Trailers-Only
//!    response with `grpc-status` UNAUTHENTICATED or PERMISSION_DENIED;
//! 3. forward: hop-by-hop headers and the caller's `Authorization` are removed, the route's
//!    credential headers are set from their secrets, `X-Forwarded-For` / `X-Request-Id` are set;
//!    the request head (credentials redacted) is journaled, then body chunks as they stream —
//!    in strict mode each one durable before it moves;
//! 4. respond: the response head and each body chunk are journaled as they are delivered,
//!    streaming (the first chunk reaches the caller without waiting for the rest).
//!
//! A body of known length up to `WHOLE_MAX` (64 KiB; not gRPC) is read whole instead of
//! streamed: its head, units and end are journaled as one group (with the open and decision
//! records for a request, with the close for a response), and it is forwarded as one buffer.
//!
//! An upstream that cannot be reached or fails mid-stream gives the caller a 502 or a reset
//! stream, and the journal says which.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

use super::liveness::{Liveness, Stale, Tracked, Watched};
use super::multipart;
use super::session::{ActiveSession, accept_client, journal_admission, notify_break_glass, open_session};
use super::{Reload, SessionCtx, next_reload};
use crate::admin::metrics::{BytesLabels, RouteLabels};
use crate::config::Route;
use crate::deny::{self, Denial};
use crate::identity::{AuthError, Principal};
use crate::journal::record::{CloseMeta, TlsMeta};
use crate::journal::{Direction, Durability, SessionJournal};
use crate::mask::Tally;
use crate::mask::body::{BodyKind, BodyMasker};
use crate::policy::Request as Operation;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the gateway.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Realm in `WWW-Authenticate` challenges.
const REALM: &str = "airlock";
/// Body chunks buffered between the journal and the peer, per direction.
const BODY_QUEUE: usize = 8;
/// Largest request head (request line and headers) a caller may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The pooled client towards one route's upstream.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// One per session runtime, so a pooled connection is driven on the thread that uses it.
    clients: Vec<Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>>,
    /// `http://host:port` or `https://host:port`.
    base: String,
    http2: bool,
    /// Request bodies read whole for inspection, in KiB, across the route: each holds its
    /// route's `max_inspect_body` while it is read, so many callers (or many HTTP/2 streams of
    /// one) cannot make the gateway hold more than this.
    inspecting: Arc<tokio::sync::Semaphore>,
    /// MCP routes: who opened each session the upstream named (`Mcp-Session-Id`). Every caller
    /// reaches the upstream with the route's one credential, so the session id is all that
    /// keeps one caller's session (its tool results, its resumable streams) from another.
    mcp_sessions: std::sync::Mutex<McpSessions>,
}

/// The owners of the MCP sessions a route has seen (bounded: past a caller's own limit its
/// oldest go first, so no caller can push out another's; past the route's, the oldest of all).
#[derive(Debug, Default)]
struct McpSessions {
    owner: std::collections::HashMap<String, String>,
    /// Each caller's sessions, oldest first.
    of: std::collections::HashMap<String, std::collections::VecDeque<String>>,
    order: std::collections::VecDeque<String>,
}

/// Most MCP sessions a route remembers, and one caller.
const MAX_MCP_SESSIONS: usize = 65_536;
const MAX_MCP_SESSIONS_PER_CALLER: usize = 1024;

impl McpSessions {
    fn insert(&mut self, id: &str, principal: &str) {
        if self.owner.contains_key(id) {
            return;
        }
        self.owner.insert(id.to_owned(), principal.to_owned());
        self.order.push_back(id.to_owned());
        let mine = self.of.entry(principal.to_owned()).or_default();
        mine.push_back(id.to_owned());
        if mine.len() > MAX_MCP_SESSIONS_PER_CALLER
            && let Some(old) = mine.pop_front()
        {
            self.owner.remove(&old);
        }
        while self.owner.len() > MAX_MCP_SESSIONS {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(p) = self.owner.remove(&old)
                && let Some(list) = self.of.get_mut(&p)
            {
                list.retain(|s| *s != old);
            }
        }
        // Entries already forgotten through a caller's limit leave the order list lazily.
        if self.order.len() > 2 * MAX_MCP_SESSIONS {
            let owner = &self.owner;
            self.order.retain(|s| owner.contains_key(s));
        }
    }
}

/// The most memory a route spends on request bodies being read for inspection: 64 MiB, or
/// 16 bodies of the route's `max_inspect_body` if that is more.
fn inspect_budget_kib(route: &Route) -> usize {
    (64 << 10).max(16 * route.max_inspect_body.div_ceil(1024))
}

impl Upstream {
    /// The clients for an HTTP route, one for each of `runtimes` session runtimes.
    pub(crate) fn new(route: &Route, runtimes: usize) -> Result<Self, crate::tls::TlsError> {
        let (tls, server_name) = match &route.upstream_client_tls {
            Some((cfg, name)) => {
                // The name was validated when the route was built.
                let name = rustls::pki_types::ServerName::try_from(name.clone()).ok();
                (cfg.clone(), name)
            }
            None => (crate::tls::outbound_client_config(None)?, None),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(route.connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_all_versions().wrap_connector(http);
        let clients = (0..runtimes.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .http2_only(route.upstream_http2)
                    .build(connector.clone())
            })
            .collect();
        let scheme = if route.upstream_client_tls.is_some() { "https" } else { "http" };
        Ok(Self {
            clients,
            base: format!("{scheme}://{}", route.upstream),
            http2: route.upstream_http2,
            inspecting: Arc::new(tokio::sync::Semaphore::new(
                inspect_budget_kib(route).min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            mcp_sessions: Default::default(),
        })
    }

    /// The client of the session runtime this runs on.
    fn client(&self) -> &Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
        &self.clients[crate::shards::current() % self.clients.len()]
    }
}

/// What every request of one connection shares.
struct Conn {
    ctx: Arc<SessionCtx>,
    peer: SocketAddr,
    id: Uuid,
    tls: Option<TlsMeta>,
    /// The caller's verified client certificate (DER), on routes that ask for one.
    leaf: Option<Vec<u8>>,
}

/// Serves one accepted connection: TLS if configured, then HTTP/1.1 or HTTP/2 until either side
/// closes or the gateway's drain deadline passes.
pub(crate) async fn serve(ctx: Arc<SessionCtx>, stream: TcpStream, peer: SocketAddr, _permit: OwnedSemaphorePermit) {
    let labels = RouteLabels { route: ctx.route.name.clone() };
    ctx.metrics.connections.get_or_create(&labels).inc();
    let _active = ActiveSession::new(ctx.metrics.connections_active.get_or_create(&labels).clone());
    let Some((io, tls, leaf)) = accept_client(&ctx, stream, peer).await else { return };
    let conn = Arc::new(Conn { ctx: ctx.clone(), peer, id: Uuid::now_v7(), tls, leaf });
    let live = Liveness::new();
    let io = Watched { inner: io, live: live.clone() };
    let requests = live.clone();
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        let flight = requests.request();
        async move { Ok::<_, Infallible>(handle(&conn, req).await.map(|inner| Tracked { inner, _flight: flight })) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(ctx.route.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(MAX_HEAD_BYTES).unwrap_or(u32::MAX));
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        r = serving => if let Err(e) = r {
            // hyper has already answered a malformed head with 400 (smuggling attempts included:
            // Content-Length with Transfer-Encoding, duplicate lengths, obs-fold, bad chunk sizes,
            // CR/LF in values) and closed; the journal gets the refusal too.
            match e.downcast_ref::<hyper::Error>() {
                Some(h) if h.is_parse() || h.is_parse_too_large() => {
                    ctx.metrics.error("http_parse");
                    super::session::refuse(&ctx, peer, &format!("malformed HTTP from the caller, answered 400: {h}")).await;
                }
                Some(h) if h.is_timeout() => {
                    ctx.metrics.error("http_header_timeout");
                    let reason = format!("the caller did not send a request head within {:?}", ctx.route.header_timeout);
                    super::session::refuse(&ctx, peer, &reason).await;
                }
                _ => debug!(route = %ctx.route.name, client = %peer, error = %e, "HTTP connection ended with an error."),
            }
        },
        // A connection that sends no request, or sits idle between requests, gives its slot back.
        // (A second later than hyper's own head timeout, which answers an HTTP/1.1 head begun
        // and not finished, and says so.)
        stale = live.stale(ctx.route.header_timeout + Duration::from_secs(1), ctx.route.idle_timeout) => {
            if stale == Stale::NoRequest {
                ctx.metrics.error("http_header_timeout");
                let reason = format!("the caller sent no request within {:?}", ctx.route.header_timeout);
                super::session::refuse(&ctx, peer, &reason).await;
            }
        }
        () = ctx.abort.cancelled() => {}
    }
}

/// The bearer credential of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(AuthError::Missing) };
    let value = value.to_str().map_err(|_| AuthError::Malformed("Authorization is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(AuthError::Malformed("Authorization is not a Bearer credential".into())),
    }
}

fn json_response(status: StatusCode, headers: Vec<(&'static str, String)>, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

fn denial_response(denial: &Denial, grpc: bool) -> Response<Body> {
    if grpc {
        return grpc_status_response(denial);
    }
    let r = deny::http(denial, REALM);
    json_response(StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN), r.headers, r.body)
}

/// A gRPC "Trailers-Only" answer (PROTOCOL-HTTP2.md): HTTP 200, `content-type: application/grpc`,
/// and the status in the headers, with no messages.
fn grpc_status_response(denial: &Denial) -> Response<Body> {
    let (code, message) = deny::grpc(denial);
    let mut resp = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(HeaderName::from_static("grpc-status"), HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        h.insert(HeaderName::from_static("grpc-message"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&denial.request_id) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    resp
}

/// `grpc-message` encoding: percent-encode everything outside printable ASCII and `%` itself.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A gRPC call's service and method, from `content-type: application/grpc*` and the path
/// `/package.Service/Method`.
fn grpc_call(req: &Request<Incoming>) -> Option<(String, String)> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.starts_with("application/grpc") {
        return None;
    }
    let (service, method) = req.uri().path().strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then(|| (service.to_owned(), method.to_owned()))
}

/// An error of the gateway or the upstream (not a policy decision): 502/503 with the same JSON
/// shape as a denial.
fn error_response(status: StatusCode, error: &str, message: &str, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "message": message, "request_id": request_id });
    json_response(status, vec![("x-request-id", request_id.to_owned())], Bytes::from(body.to_string()))
}

/// [`error_response`], or for a gRPC caller the Trailers-Only answer gRPC clients understand:
/// UNAVAILABLE for an unreachable upstream or journal, DEADLINE_EXCEEDED for a timeout,
/// INVALID_ARGUMENT for a malformed request.
fn gateway_error(grpc: bool, status: StatusCode, error: &str, message: &str, request_id: &str) -> Response<Body> {
    if !grpc {
        return error_response(status, error, message, request_id);
    }
    let code: u32 = match status {
        StatusCode::GATEWAY_TIMEOUT => 4,
        StatusCode::BAD_REQUEST => 3,
        _ => 14,
    };
    let mut resp = Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(HeaderName::from_static("grpc-status"), HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&format!("{message} (request {request_id})"))) {
        h.insert(HeaderName::from_static("grpc-message"), v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    resp
}

/// A 400 (INVALID_ARGUMENT for gRPC) after which the connection closes: what the caller sent
/// cannot be trusted to end where the next request begins.
fn bad_request_closing(grpc: bool, message: &str, request_id: &str) -> Response<Body> {
    let mut resp = gateway_error(grpc, StatusCode::BAD_REQUEST, "bad_request", message, request_id);
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The answer when the journal cannot record: 503 (UNAVAILABLE for gRPC), and nothing forwarded.
fn journal_unavailable(grpc: bool, request_id: &str) -> Response<Body> {
    gateway_error(
        grpc,
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        "the audit journal cannot record this request; nothing was forwarded",
        request_id,
    )
}

/// The answer when the journal cannot record the response: 503, and the response withheld.
fn response_unrecorded(grpc: bool, request_id: &str) -> Response<Body> {
    gateway_error(
        grpc,
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        "the audit journal cannot record the response; it was not delivered",
        request_id,
    )
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the caller's own
/// credentials, which stop at the gateway.
/// A transfer coding other than `chunked`, or a content coding other than `identity`, in
/// `headers`, if there is one.
fn undone_coding(headers: &HeaderMap) -> Option<String> {
    let codings = |name: header::HeaderName, ok: &'static str| {
        headers.get_all(name).into_iter().find_map(move |v| {
            let text = v.to_str().unwrap_or("?");
            text.split(',')
                .map(str::trim)
                .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(ok))
                .then(|| coding_named(text))
        })
    };
    codings(header::TRANSFER_ENCODING, "chunked").or_else(|| codings(header::CONTENT_ENCODING, "identity"))
}

/// A content or transfer coding as an error may name it: the registered names as they are,
/// anything else not at all (the upstream's header value is not echoed into the caller's
/// error, where it would pass the masker).
fn coding_named(text: &str) -> String {
    const KNOWN: &[&str] =
        &["gzip", "x-gzip", "br", "deflate", "zstd", "compress", "x-compress", "identity", "chunked"];
    let known = text.split(',').map(str::trim).all(|c| KNOWN.iter().any(|k| c.eq_ignore_ascii_case(k)));
    if known { text.to_ascii_lowercase() } else { "an unregistered coding".into() }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
        header::AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    // `te: trailers` is end-to-end in gRPC; anything else in TE is hop-by-hop.
    let only_trailers = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.to_str().is_ok_and(|v| v.split(',').all(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    if !only_trailers {
        headers.remove(header::TE);
    }
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A head in HTTP/1.1 text form for the journal, with the values of `secret` headers redacted.
fn head_text(first_line: &str, headers: &HeaderMap, secret: &[HeaderName]) -> Bytes {
    let mut out = String::with_capacity(256);
    out.push_str(first_line);
    out.push_str("\r\n");
    for (name, value) in headers {
        out.push_str(name.as_str());
        out.push_str(": ");
        if value.is_sensitive() || secret.contains(name) {
            out.push_str("[redacted]");
        } else {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    Bytes::from(out)
}

/// Byte counters of one exchange, shared with the body pumps that outlive `handle`.
#[derive(Default)]
struct Counters {
    from_client: AtomicU64,
    from_upstream: AtomicU64,
}

/// The MCP tool calls in a JSON-RPC body (a batch can hold several).
fn mcp_operations(rpc: &airlock_decoders::jsonrpc::Body) -> Result<Vec<Operation>, airlock_decoders::DecodeError> {
    let mut calls = Vec::new();
    for m in rpc.messages() {
        if let Some(call) = airlock_decoders::jsonrpc::tool_call(m)? {
            calls.push(Operation::McpCall { tool: call.name });
        }
    }
    Ok(calls)
}

/// One operation to decide for a body with several tool calls: the first one the policy denies,
/// else the first one it holds for approval, else the first — so one denied call in a batch
/// refuses the batch, and a held call never hides a denied one.
fn calls_to_operation(
    calls: Vec<Operation>,
    access: &crate::config::Access,
    route: &str,
    p: Option<&Principal>,
) -> Operation {
    use crate::policy::Effect;
    let effects: Vec<Effect> = match p {
        Some(p) if calls.len() > 1 => calls.iter().map(|op| access.decide(route, p, op).effect).collect(),
        _ => Vec::new(),
    };
    let i = effects
        .iter()
        .position(|e| *e == Effect::Deny)
        .or_else(|| effects.iter().position(|e| *e != Effect::Allow))
        .unwrap_or(0);
    calls.into_iter().nth(i).unwrap_or(Operation::Bytes)
}

/// The decision for `operation`, and for the HTTP request it also is: a rule on the method and
/// path that denies (or holds) it counts even when the operation is a gRPC or tool call. Only a
/// rule counts there, not the route's default, which the operation's own decision already
/// applies. For a plain HTTP request, every other reading of it (its path as other servers
/// read it, a `_method` override) must be allowed as the request itself is, the route's default
/// included: on a route that denies by default, an allow rule for `/v1/public/**` does not let
/// `/v1/public/..;/admin/users` through to a server that reads `/v1/admin/users`.
fn decide_views(
    access: &crate::config::Access,
    route: &str,
    principal: &Principal,
    operation: &Operation,
    http_views: &[Operation],
) -> crate::policy::Decision {
    use crate::policy::Effect;
    let d = access.decide(route, principal, operation);
    // A plain HTTP request is its own only view: one evaluation, nothing more.
    if d.effect == Effect::Deny || http_views.iter().all(|v| v == operation) {
        return d;
    }
    let default = format!("route:{route}:default");
    let reading = |v: &Operation| matches!(operation, Operation::Http { .. }) && matches!(v, Operation::Http { .. });
    // A reading that only folds case or decodes `%2F` names the same resource to the servers
    // that read it so (`/fhir/Patient/1`, `/v1/models/org%2Fmodel`): a rule may still deny it,
    // but the route's default does not. One that reaches elsewhere (`..` or a `;parameter`
    // resolved) or runs another method must be allowed as the request is.
    let reaches_elsewhere = |v: &Operation| match (operation, v) {
        (Operation::Http { method: m, path: p }, Operation::Http { method: vm, path: vp }) => {
            let decoded = p.replace("%2F", "/");
            m != vm || ![p.to_ascii_lowercase(), decoded.clone(), decoded.to_ascii_lowercase()].contains(vp)
        }
        _ => false,
    };
    let explained = |h: crate::policy::Decision, v: &Operation| {
        if reading(v) {
            let reason = format!("{} (the request as another server may read it: {})", h.reason, v.summary());
            crate::policy::Decision { reason, ..h }
        } else {
            h
        }
    };
    let mut held = None;
    for view in http_views.iter().filter(|v| *v != operation) {
        let h = access.decide(route, principal, view);
        let counts = h.rule != default || reaches_elsewhere(view);
        match h.effect {
            Effect::Deny if counts => return explained(h, view),
            Effect::RequireApproval if counts => {
                held.get_or_insert_with(|| explained(h, view));
            }
            _ => {}
        }
    }
    match (held, d.effect) {
        (Some(h), Effect::Allow) => h,
        _ => d,
    }
}

/// The canonical form of a request path, or why it is refused. Percent-encoded unreserved
/// characters are decoded (`%61` is `a` to every server), `.` and `..` segments resolved and
/// repeated slashes merged, so that a rule on `/v1/admin/**` sees `/v1/%61dmin/x`,
/// `/v1/./admin/x` and `/v1//admin/x` as the server will. A path that does not start with `/`
/// (an HTTP/2 `:path` of `@host/…` would make the upstream URL name another host), or that
/// encodes a backslash or NUL, or holds a backslash, is refused: servers disagree on what those
/// mean. An encoded slash stays encoded (model ids such as `org%2Fmodel`); the decision reads
/// the path both ways (see `decide_views`).
fn canonical_path(path: &str) -> Result<String, &'static str> {
    if path == "*" {
        return Ok(path.to_owned());
    }
    if !path.starts_with('/') {
        return Err("the request path does not start with `/`");
    }
    // Most paths have nothing to decode or resolve.
    if !path.contains(['%', '\\']) && !path.contains("//") && !path.contains("/.") && path.is_ascii() {
        return Ok(path.to_owned());
    }
    if path.contains('\\') {
        return Err("the request path holds a backslash");
    }
    let b = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| char::from(c).to_digit(16);
            let (Some(hi), Some(lo)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
            else {
                return Err("the request path holds a malformed percent-escape");
            };
            let byte = u8::try_from(hi * 16 + lo).unwrap_or(0);
            if matches!(byte, b'\\' | 0) {
                return Err("the request path encodes a backslash or NUL");
            }
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(byte));
            } else {
                decoded.push_str(&format!("%{byte:02X}"));
            }
            i += 3;
        } else if b[i].is_ascii() {
            decoded.push(char::from(b[i]));
            i += 1;
        } else {
            decoded.push_str(&format!("%{:02X}", b[i]));
            i += 1;
        }
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/').skip(1) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = format!("/{}", segments.join("/"));
    if trailing && out != "/" {
        out.push('/');
    }
    Ok(out)
}

/// Removes the headers named in `names` (lower case). One pass over the few headers a request
/// has, rather than a lookup per name: most requests carry none of them.
fn strip_headers(headers: &mut HeaderMap, names: &[&str]) {
    let present: Vec<HeaderName> = headers.keys().filter(|k| names.contains(&k.as_str())).cloned().collect();
    for name in present {
        headers.remove(name);
    }
}

/// The `Mcp-Session-Id` a request or response carries.
fn mcp_session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// On an MCP route, why a request may not use the session it names, if it may not: the
/// gateway did not see the upstream open it (it may have restarted), or opened it for another
/// caller. The caller gets a 404, on which MCP clients open a new session.
fn mcp_session_stranger(ctx: &SessionCtx, headers: &HeaderMap, p: &Principal) -> Option<String> {
    if !ctx.route.mcp {
        return None;
    }
    // Servers differ on which of two values they read (the last, or both joined): one only.
    if headers.get_all("mcp-session-id").iter().count() > 1 {
        return Some("the request names more than one MCP session".into());
    }
    let id = mcp_session_id(headers)?;
    let up = ctx.http_upstream.as_ref()?;
    let Ok(sessions) = up.mcp_sessions.lock() else {
        return Some("the gateway's record of MCP sessions is unavailable".into());
    };
    let owner = sessions.owner.get(id).cloned();
    drop(sessions);
    match owner {
        Some(o) if o == p.label() => None,
        Some(_) => Some("the MCP session was opened by another caller".into()),
        None => Some("the gateway did not see this MCP session opened; initialize a new one".into()),
    }
}

/// The methods a `_method` field of a query string or form body asks for, read as frameworks
/// read it: percent-decoded (`%5Fmethod=%44ELETE`), `+` a space, in upper case.
fn form_method_overrides(form: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(form);
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| {
            let (k, v) =
                (percent_decode(k.replace('+', " ").as_bytes()), percent_decode(v.replace('+', " ").as_bytes()));
            k.trim().eq_ignore_ascii_case("_method").then(|| v.trim().to_ascii_uppercase())
        })
        .collect()
}

/// The other paths a server might read in the canonical `path`: with `%2F` decoded, with
/// `;parameters` dropped from each segment, in lower case — each made canonical again.
fn path_readings(path: &str) -> Vec<String> {
    fn add(out: &mut Vec<String>, path: &str, p: String) {
        let p = canonical_path(&p).unwrap_or(p);
        if p != path && !out.contains(&p) {
            out.push(p);
        }
    }
    let mut out: Vec<String> = Vec::new();
    if !path.contains("%2F") && !path.contains(';') && !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return out;
    }
    let slashes = path.replace("%2F", "/");
    if path.contains("%2F") {
        add(&mut out, path, slashes.clone());
    }
    for base in [path, slashes.as_str()] {
        if base.contains(';') {
            let dropped: Vec<&str> = base.split('/').map(|seg| seg.split(';').next().unwrap_or("")).collect();
            add(&mut out, path, dropped.join("/"));
        }
    }
    let so_far: Vec<String> = std::iter::once(path.to_owned()).chain(out.iter().cloned()).collect();
    for p in so_far {
        if p.bytes().any(|b| b.is_ascii_uppercase()) {
            add(&mut out, path, p.to_ascii_lowercase());
        }
    }
    out
}

/// Framing that hyper tolerates (RFC 9112 lets a server resolve it) but a gateway must not pass
/// on, because a server behind it may resolve it differently (request smuggling).
fn framing_abuse(req: &Request<Incoming>) -> Option<&'static str> {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Some("Content-Length together with Transfer-Encoding");
    }
    if h.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Some("more than one Content-Length");
    }
    if let Some(te) = h.get(header::TRANSFER_ENCODING)
        && !te.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return Some("a Transfer-Encoding other than chunked");
    }
    None
}

async fn handle(conn: &Conn, mut req: Request<Incoming>) -> Response<Body> {
    let ctx = &conn.ctx;
    let route = &ctx.route;
    let started = Instant::now();
    if let Some(why) = framing_abuse(&req) {
        ctx.metrics.error("http_parse");
        super::session::refuse(ctx, conn.peer, &format!("malformed HTTP from the caller, answered 400: {why}")).await;
        return bad_request_closing(false, why, "-");
    }
    // TRACE (and its kin) has the upstream echo the request, injected credentials included;
    // CONNECT would open a tunnel nothing inspects.
    if let Some(refused) =
        ["TRACE", "TRACK", "CONNECT"].into_iter().find(|m| req.method().as_str().eq_ignore_ascii_case(m))
    {
        ctx.metrics.error("http_parse");
        super::session::refuse(ctx, conn.peer, &format!("method {refused} refused, answered 405")).await;
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{refused} is not forwarded by this gateway"),
            "-",
        );
    }
    // Methods are case-sensitive in HTTP, but many servers fold them: a standard method in
    // another case goes on as the method it is decided as.
    if req.method().as_str().bytes().any(|b| b.is_ascii_lowercase())
        && let Some(m) = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
            .into_iter()
            .find(|m| req.method().as_str().eq_ignore_ascii_case(m))
        && let Ok(m) = hyper::Method::from_bytes(m.as_bytes())
    {
        *req.method_mut() = m;
    }
    // The path the policy decides is the path the upstream gets: canonical, and only that.
    let (mut req, path) = match canonical_path(req.uri().path()) {
        Ok(path) => (req, path),
        Err(why) => {
            ctx.metrics.error("http_parse");
            super::session::refuse(ctx, conn.peer, &format!("request target refused, answered 400: {why}")).await;
            return bad_request_closing(grpc_call(&req).is_some(), why, "-");
        }
    };
    if path != req.uri().path() {
        let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        match format!("{path}{query}").parse::<hyper::http::uri::PathAndQuery>() {
            Ok(pq) => {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
            Err(_) => return bad_request_closing(false, "the request target is not valid", "-"),
        }
    }
    // A method override would have the upstream run another method than the one decided, and
    // a URL override another path (IIS URL Rewrite and some frameworks read these). `Proxy`
    // becomes `HTTP_PROXY` to a CGI or PHP-FPM upstream, whose own calls (and the credentials
    // they carry) would go where the caller says (httpoxy).
    strip_headers(
        req.headers_mut(),
        &["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url", "proxy"],
    );
    // Watched from here on: a reload that revokes the caller's identity ends its streams.
    let mut reloads = ctx.access.watch();
    let access = reloads.borrow_and_update().clone();

    // 1. Who is calling: the bearer credential, if the route asks for one and the caller
    // presents one; else, on a route that verifies client certificates, the certificate.
    // (A route whose certificates only guard the connection — `client_ca` without a named
    // `client_principal` — still asks each request for a bearer credential.)
    let certificate = || match (conn.leaf.as_deref(), route.client_principal) {
        (Some(der), Some(from)) if route.anonymous || route.client_principal_named => {
            Some(access.identity.certificates.principal(der, from))
        }
        _ => None,
    };
    let identified = if !route.anonymous && req.headers().contains_key(header::AUTHORIZATION) {
        match bearer(req.headers()) {
            Ok(token) => access.identity.authenticate_bearer(token).await,
            Err(e) => Err(e),
        }
    } else {
        match certificate() {
            Some(from_certificate) => from_certificate,
            None if route.anonymous => Ok(Principal::anonymous()),
            None => Err(AuthError::Missing),
        }
    };
    let principal = identified.as_ref().ok();
    let break_glass = principal.is_some_and(|p| access.policy.is_break_glass(p));
    let grpc = grpc_call(&req);
    let is_grpc = grpc.is_some();
    // Method names are case-sensitive in HTTP, but many servers fold them; HEAD runs GET's
    // handler. The decision sees what the handler will be.
    let method = match req.method().as_str().to_ascii_uppercase() {
        m if m == "HEAD" => "GET".to_owned(),
        m => m,
    };
    // Every request is also an HTTP request: the rules on its method and path apply to it
    // whatever else it is (a gRPC call, a tool call), so neither a `content-type` nor a body
    // chosen by the caller can step around them.
    let http_view = Operation::Http { method: method.clone(), path: path.clone() };
    let mut operation = match grpc {
        Some((service, method)) => Operation::Grpc { service, method },
        None => http_view.clone(),
    };
    // Paths other servers would read in this one are decided too (a rule that denies or
    // holds any of them counts): an encoded slash decoded (`/v1/admin%2Fusers`), path
    // parameters dropped (`/v1/public/..;/admin`, `/v1/admin;x/users` to Tomcat or Jetty), the
    // path in lower case (`/V1/ADMIN` to a server that folds case), and a `_method` in the
    // query (Laravel runs it in place of POST).
    let mut http_views = vec![http_view];
    for other in path_readings(&path) {
        if !http_views.iter().any(|v| matches!(v, Operation::Http { path: p, .. } if *p == other)) {
            http_views.push(Operation::Http { method: method.clone(), path: other });
        }
    }
    if let Some(q) = req.uri().query() {
        for m in form_method_overrides(q.as_bytes()) {
            http_views.push(Operation::Http { method: m, path: path.clone() });
        }
    }
    // A POST to `/package.Service/Method` (or any `/Service/Method` with `te: trailers`) is a
    // gRPC call to a server that does not insist on its `content-type` (gRPC C-core only logs
    // a wrong one): gRPC rules see it either way.
    let trailers = req.headers().get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !is_grpc
        && method == "POST"
        && let Some((service, rpc)) = path.strip_prefix('/').and_then(|p| p.split_once('/'))
        && (service.contains('.') || trailers)
        && !service.is_empty()
        && !rpc.is_empty()
        && !rpc.contains('/')
    {
        http_views.push(Operation::Grpc { service: service.to_owned(), method: rpc.to_owned() });
    }
    // MCP routes read every POST body first, so the decision can see the tool being called. A
    // body that is not plain JSON-RPC (another encoding, not JSON-RPC at all, a batch with an
    // invalid element) is not inspectable there, and so not forwarded. Nothing is read for a
    // caller that did not authenticate.
    let (parts, body) = req.into_parts();
    let mut uninspectable = None;
    // Every body but a GET's, HEAD's, DELETE's or OPTIONS' (whose bodies MCP does not use): a
    // server that took JSON-RPC over PUT would otherwise run a tool call no rule saw.
    let inspects_body =
        !matches!(parts.method.as_str().to_ascii_uppercase().as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
    // A form-encoded POST is read too, for a `_method` in it: Rails (Rack::MethodOverride),
    // Laravel and Symfony run that method in place of POST.
    // The method in any case (a server may take `post`), every Content-Type the request carries
    // (a server may join them), read even where it is not ASCII (one may parse it anyway).
    let post = !route.mcp && parts.method.as_str().eq_ignore_ascii_case("POST");
    // (Only for a POST: nothing is allocated for the other requests.)
    let content_type = if post {
        let all = parts.headers.get_all(header::CONTENT_TYPE).iter().map(|v| v.as_bytes()).collect::<Vec<_>>();
        String::from_utf8_lossy(&all.join(&b", "[..])).into_owned()
    } else {
        String::new()
    };
    let form = post
        && content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded");
    // So is a multipart POST, for a `_method` field (see `multipart`): its first bytes before
    // the decision, the rest as it goes on.
    let multipart = post.then(|| multipart::boundary(&content_type)).flatten();
    let body: Body = if let Some(boundary) = multipart.filter(|_| identified.is_ok()) {
        let encoded = content_encoded(&parts.headers);
        let units = inspect_units(&parts.headers, route.max_inspect_body);
        let budget = ctx.http_upstream.as_ref().map(|u| u.inspecting.clone());
        let limit = route.max_inspect_body;
        let read = async move {
            let room = match budget {
                Some(b) => b.acquire_many_owned(units).await.ok(),
                None => None,
            };
            (room, read_prefix(body.map_err(|e| Box::new(e) as BoxError).boxed(), limit).await)
        };
        match (tokio::time::timeout(route.header_timeout, read).await, boundary) {
            (Err(_), _) => {
                uninspectable = Some(format!("the request body did not arrive within {:?}", route.header_timeout));
                http_body_util::Empty::new().map_err(|never| match never {}).boxed()
            }
            (Ok((_, Err(why))), _) => {
                uninspectable = Some(why);
                http_body_util::Empty::new().map_err(|never| match never {}).boxed()
            }
            (Ok(_), None) => {
                uninspectable = Some("a multipart body without a boundary cannot be inspected".into());
                http_body_util::Empty::new().map_err(|never| match never {}).boxed()
            }
            (Ok((room, Ok((first, rest)))), Some(boundary)) => {
                let fields = if encoded {
                    Err("an encoded (compressed) multipart body cannot be inspected".to_owned())
                } else {
                    multipart::method_fields(&boundary, &first, rest.is_none())
                };
                let forwarded = fields.and_then(|prefix| {
                    for m in prefix.methods {
                        http_views.push(Operation::Http { method: m, path: path.clone() });
                    }
                    let Some(rest) = rest else {
                        return Ok(Full::new(first).map_err(|never| match never {}).boxed());
                    };
                    // The scan reads the judged bytes too, to find where the next part begins.
                    let mut scan = multipart::Scan::new(&boundary, prefix.judged);
                    scan.feed(&first)?;
                    let rest = multipart::Scanned { inner: rest, scan }.boxed();
                    Ok(Prefixed { first: Some(first), rest }.boxed())
                });
                match forwarded {
                    Ok(inner) => Held { inner, _room: room }.boxed(),
                    Err(why) => {
                        uninspectable = Some(why);
                        http_body_util::Empty::new().map_err(|never| match never {}).boxed()
                    }
                }
            }
        }
    } else if ((route.mcp && inspects_body) || form) && identified.is_ok() {
        let encoded = content_encoded(&parts.headers);
        let limited = http_body_util::Limited::new(body, route.max_inspect_body).collect();
        // Room in the route's inspection budget first, held until the body has gone on.
        let units = inspect_units(&parts.headers, route.max_inspect_body);
        let budget = ctx.http_upstream.as_ref().map(|u| u.inspecting.clone());
        let read = async move {
            let room = match budget {
                Some(b) => b.acquire_many_owned(units).await.ok(),
                None => None,
            };
            (room, limited.await)
        };
        match tokio::time::timeout(route.header_timeout, read).await {
            Ok((room, Ok(collected))) if form => {
                let bytes = collected.to_bytes();
                if encoded {
                    uninspectable = Some("an encoded (compressed) form body cannot be inspected".to_owned());
                }
                for m in form_method_overrides(&bytes) {
                    http_views.push(Operation::Http { method: m, path: path.clone() });
                }
                Held { inner: Full::new(bytes).map_err(|never| match never {}), _room: room }.boxed()
            }
            Ok((room, Ok(collected))) => {
                let bytes = collected.to_bytes();
                let parsed = airlock_decoders::jsonrpc::parse(&bytes, route.max_inspect_body);
                match (encoded, parsed) {
                    (true, _) => uninspectable = Some("an encoded (compressed) body cannot be inspected".to_owned()),
                    (false, Err(e)) => uninspectable = Some(format!("the body is not JSON-RPC: {e}")),
                    (false, Ok(rpc)) => match mcp_operations(&rpc) {
                        Ok(calls) if !calls.is_empty() => {
                            operation = calls_to_operation(calls, &access, &route.name, identified.as_ref().ok())
                        }
                        Ok(_) => {}
                        Err(e) => uninspectable = Some(format!("the JSON-RPC body cannot be inspected: {e}")),
                    },
                }
                Held { inner: Full::new(bytes).map_err(|never| match never {}), _room: room }.boxed()
            }
            Ok((_, Err(e))) => {
                uninspectable = Some(if e.is::<http_body_util::LengthLimitError>() {
                    format!("the request body is larger than the {} bytes this route inspects", route.max_inspect_body)
                } else {
                    format!("the request body could not be read: {e}")
                });
                http_body_util::Empty::new().map_err(|never| match never {}).boxed()
            }
            Err(_) => {
                uninspectable = Some(format!("the request body did not arrive within {:?}", route.header_timeout));
                http_body_util::Empty::new().map_err(|never| match never {}).boxed()
            }
        }
    } else {
        body.map_err(|e| Box::new(e) as BoxError).boxed()
    };
    let admission = match (&identified, &uninspectable) {
        (Err(e), _) => Err(e.clone()),
        // Fail closed: what cannot be inspected is not forwarded.
        (Ok(_), Some(why)) => Ok(crate::policy::Decision {
            effect: crate::policy::Effect::Deny,
            rule: "inspect:body".into(),
            reason: why.clone(),
            policy_version: access.policy.version.clone(),
        }),
        (Ok(p), None) => Ok(match mcp_session_stranger(ctx, &parts.headers, p) {
            Some(why) => crate::policy::Decision {
                effect: crate::policy::Effect::Deny,
                rule: crate::deny::MCP_SESSION_RULE.into(),
                reason: why,
                policy_version: access.policy.version.clone(),
            },
            None => decide_views(&access, &route.name, p, &operation, &http_views),
        }),
    };

    // 2. The session (this request) and its decision, durable before anything is forwarded.
    let opened = open_session(
        ctx,
        conn.peer,
        conn.tls.clone(),
        principal,
        Some(&access),
        break_glass,
        Some(conn.id.to_string()),
    );
    let sj = match opened {
        Ok(sj) => Arc::new(sj),
        Err(e) => {
            ctx.metrics.error("journal_write");
            warn!(route = %route.name, error = %e, "Journal refused the request.");
            return gateway_error(
                is_grpc,
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                "the audit journal cannot record this request; nothing was forwarded",
                "-",
            );
        }
    };
    let request_id = sj.id().to_string();
    let counters = Arc::new(Counters::default());
    let tally = Arc::new(Tally::default());
    let mut guard = CloseGuard {
        sj: sj.clone(),
        counters: counters.clone(),
        tally: tally.clone(),
        started,
        armed: true,
        tracker: ctx.tracker.clone(),
        pump: None,
    };
    let strict = ctx.journal.durability() == Durability::Strict;
    // The decision's receipt is covered by the request head's (strict), or by the close record's
    // (batched, where nothing waits for the disk before forwarding).
    match journal_admission(ctx, &sj, &access, principal, &admission, &operation, false).await {
        Err(e) => {
            ctx.metrics.error("journal_write");
            guard.close(format!("journal write failed: {e}")).await;
            return journal_unavailable(is_grpc, &request_id);
        }
        Ok(Some(denial)) => {
            let resp = denial_response(&denial, is_grpc);
            let head = head_text(&format!("{} {}", version_text(Version::HTTP_11), resp.status()), resp.headers(), &[]);
            // The close record carries the staged open, decision and head: one hand-off.
            let _ = sj.stage_http_head(Direction::UpstreamToClient, &head, true);
            guard.close(format!("refused with {}: {}", resp.status().as_u16(), denial.message)).await;
            return resp;
        }
        Ok(None) => {}
    }
    if break_glass && let Some(p) = principal {
        notify_break_glass(ctx, &access, &sj, p, conn.peer);
    }
    // The masking profile for this caller, if the route masks.
    let mask = route.mask.as_ref().and_then(|m| principal.and_then(|p| m.for_principal(p)));
    let principal_label = principal.map(Principal::label).unwrap_or_default();
    // Automatic logoff: a stream ends when the caller's credential does.
    let expires = principal.and_then(|p| p.expires_at).map(|secs| {
        let left_us = secs.saturating_mul(1_000_000).saturating_sub(crate::time::now_us());
        Instant::now() + Duration::from_micros(u64::try_from(left_us).unwrap_or(0))
    });
    let Some(upstream) = ctx.http_upstream.as_ref() else {
        guard.close("route has no HTTP upstream client".into()).await;
        return gateway_error(
            is_grpc,
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "the route has no upstream",
            &request_id,
        );
    };

    // 3. The forwarded request.
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let grpc_path = parts.uri.path().to_owned();
    let uri = format!("{}{path}", upstream.base).parse::<Uri>().ok().filter(|u| {
        // The path cannot have changed the host (it starts with `/`), but check anyway.
        upstream.base.parse::<Uri>().ok().is_some_and(|b| b.authority() == u.authority())
    });
    let Some(uri) = uri else {
        guard.close("request target cannot be forwarded".into()).await;
        return gateway_error(
            is_grpc,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target is not valid",
            &request_id,
        );
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if !route.trust_forwarded {
        // The caller's word about who and where it is, which upstreams may trust.
        strip_headers(
            &mut headers,
            &[
                "forwarded",
                "x-real-ip",
                "x-forwarded-host",
                "x-forwarded-prefix",
                "x-forwarded-port",
                "x-forwarded-server",
                "x-forwarded-scheme",
                "x-host",
                "x-original-host",
                "true-client-ip",
                "x-client-ip",
                "x-cluster-client-ip",
                "cf-connecting-ip",
                "fastly-client-ip",
            ],
        );
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let peer_ip = conn.peer.ip().to_string();
    let forwarded_for = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) if route.trust_forwarded => format!("{prior}, {peer_ip}"),
        _ => peer_ip,
    };
    headers.remove(&xff);
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls.is_some() { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    for (name, value) in &route.credentials {
        headers.insert(name.clone(), value.clone());
    }
    if mask.is_some() || !route.credential_secrets.is_empty() {
        // A masked response, or one searched for the route's credential, must arrive in a form
        // the gateway can read, and whole: a range could cut a value in two and each part would
        // pass.
        headers.remove(header::ACCEPT_ENCODING);
        headers.remove(HeaderName::from_static("grpc-accept-encoding"));
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
    }
    let secret: Vec<HeaderName> = route.credentials.iter().map(|(n, _)| n.clone()).collect();
    let request_line = format!("{} {path} {}", parts.method, version_text(parts.version));
    let head = head_text(&request_line, &headers, &secret);
    let metric =
        |direction| ctx.metrics.bytes.get_or_create(&BytesLabels { route: route.name.clone(), direction }).clone();
    let deadline = route.request_timeout.map(|t| started + t);
    // A small request body of known length (or none) is read whole before anything is forwarded:
    // no body pump runs, and the request's end rides on its last record.
    let request_body = if !is_grpc && body.size_hint().upper().is_some_and(|n| n <= WHOLE_MAX) {
        let framer = Framer::for_content_type(&headers);
        match read_whole(body, framer, None, None, route.idle_timeout, deadline, "client").await {
            Ok(whole) => Outgoing::Whole(whole),
            Err(unread) => {
                ctx.metrics.error("http_parse");
                guard.close(format!("request body not read, answered 400: {}", unread.reason())).await;
                return bad_request_closing(is_grpc, "the request body did not arrive whole", &request_id);
            }
        }
    } else {
        Outgoing::Stream(body)
    };
    // The open and decision records were staged: they go with the head (and a whole body), one
    // hand-off for all.
    let recorded = match &request_body {
        Outgoing::Whole(whole) => whole.stage(&sj, Direction::ClientToUpstream, &head),
        Outgoing::Stream(_) => sj.stage_http_head(Direction::ClientToUpstream, &head, false),
    };
    let flushed = match recorded {
        Ok(()) => sj.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = journal_record(flushed, strict).await {
        guard.close(format!("journal write failed: {e}")).await;
        return journal_unavailable(is_grpc, &request_id);
    }
    let (forwarded, up_task) = match request_body {
        Outgoing::Whole(whole) => {
            let len = whole.len();
            counters.from_client.fetch_add(len, Ordering::Relaxed);
            metric("client_to_upstream").inc_by(len);
            (whole.into_body(), None)
        }
        Outgoing::Stream(body) => {
            let (tx, forwarded) = Channel::<Bytes, BoxError>::new(BODY_QUEUE);
            let up = Pump {
                tx,
                idle: route.idle_timeout,
                deadline,
                sj: sj.clone(),
                direction: Direction::ClientToUpstream,
                strict,
                counters: counters.clone(),
                metric: metric("client_to_upstream"),
                masker: None,
                mask: None,
                principal: String::new(),
                abort: ctx.abort.clone(),
                grpc: false,
                // The upstream's end of a request body is watched by hyper's client.
                gone: tokio_util::sync::CancellationToken::new(),
                expires,
                reloads: principal.map(|p| Caller::new(reloads.clone(), p, conn)),
                echo: None,
            };
            (forwarded.boxed(), Some(ctx.tracker.spawn(up.run(body, Framer::for_content_type(&headers)))))
        }
    };
    // The guard holds the request pump: whichever way this exchange ends, the pump is stopped
    // before the session's close is written.
    guard.pump = up_task;
    let mut up_req = Request::new(forwarded);
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = uri;
    *up_req.version_mut() = if upstream.http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    *up_req.headers_mut() = headers;

    // 4. The response, streamed back as it is journaled.
    // The head is awaited for the connect and first-byte timeouts, and no longer than the
    // exchange's own deadline.
    let head_by = Instant::now() + route.connect_timeout + route.first_byte_timeout;
    let head_by = deadline.map_or(head_by, |d| d.min(head_by));
    let resp = match tokio::time::timeout_at(head_by, upstream.client().request(up_req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            // If the caller's own body was malformed (an invalid chunk size, say), the failure
            // is the caller's: 400, not 502.
            let up_reason = match guard.pump.take() {
                None => "read whole before it was forwarded".into(),
                Some(mut task) => match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => format!("request body task failed: {e}"),
                    Err(_) => {
                        stop_pump(Some(task)).await;
                        "request body still streaming".into()
                    }
                },
            };
            if up_reason.starts_with("client broke off the body") {
                ctx.metrics.error("http_parse");
                let reason = format!("malformed request body from the caller, answered 400: {up_reason}");
                guard.close(reason).await;
                return bad_request_closing(is_grpc, "the request body is malformed", &request_id);
            }
            ctx.metrics.error("upstream_request");
            let reason = format!("upstream request to {} failed: {e} (request body: {up_reason})", route.upstream);
            warn!(session = %request_id, %reason, "Upstream failed.");
            guard.close(reason).await;
            return gateway_error(
                is_grpc,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream could not be reached or failed",
                &request_id,
            );
        }
        Err(_) => {
            ctx.metrics.error("upstream_request");
            stop_pump(guard.pump.take()).await;
            guard.close("upstream gave no response head in time".into()).await;
            return gateway_error(
                is_grpc,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
                &request_id,
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    // An MCP session the upstream opens belongs to the caller it opened it for.
    if route.mcp
        && let (Some(id), Some(up)) = (mcp_session_id(&parts.headers), ctx.http_upstream.as_ref())
        && let Ok(mut sessions) = up.mcp_sessions.lock()
    {
        sessions.insert(id, &principal_label);
    }
    // On a masked route, a coding the gateway does not undo is refused before the hop-by-hop
    // headers go: a `Transfer-Encoding: gzip, chunked` (hyper undoes only the chunking), or a
    // `Content-Encoding` that `Connection` names, would otherwise lose the header that says the
    // bytes are compressed, and pass the masker unread.
    // So is one searched for the route's credential: compressed, an echo would pass unseen.
    // (A gRPC response compresses message by message, named by `grpc-encoding`; the masker
    // reads those, the credential search does not.)
    let grpc_coding = || {
        parts
            .headers
            .get("grpc-encoding")
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            .map(|v| coding_named(v.to_str().unwrap_or("?")))
    };
    let unsearchable = undone_coding(&parts.headers).or_else(|| if mask.is_none() { grpc_coding() } else { None });
    if (mask.is_some() || !route.credential_secrets.is_empty())
        && let Some(coding) = unsearchable
    {
        stop_pump(guard.pump.take()).await;
        if mask.is_none() {
            ctx.metrics.error("credential_unsearchable");
            let why = format!("the response is encoded ({coding}) and cannot be searched for the route's credential");
            let decision = crate::journal::record::DecisionMeta {
                rule: "credential:unsearchable".into(),
                ..mask_refusal(&principal_label, &why)
            };
            let close = format!("response withheld: {why}");
            return withhold_as(&sj, &mut guard, decision, &close, is_grpc, &request_id).await;
        }
        ctx.metrics.error("mask");
        let why = crate::mask::MaskError::Encoded(coding).to_string();
        return withhold(&sj, &mut guard, &principal_label, &why, is_grpc, &request_id).await;
    }
    // A length that came with a transfer coding describes nothing we forward (RFC 9112 §6.3).
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if route.credential_secrets.in_headers(&parts.headers) {
        ctx.metrics.error("credential_echoed");
        stop_pump(guard.pump.take()).await;
        return withhold_echo(&sj, &mut guard, &principal_label, is_grpc, &request_id).await;
    }
    // On a masked route the body is inspected before the head leaves: a JSON document is masked
    // whole (so a failure is still a clean 502), a stream gets a unit masker, and what cannot be
    // inspected is not delivered.
    let mut body: Body = body.map_err(|e| Box::new(e) as BoxError).boxed();
    let mut masker = None;
    if let Some(profile) = &mask {
        match mask_response(
            ctx,
            profile,
            &tally,
            &mut parts.headers,
            body,
            is_grpc.then_some(grpc_path.as_str()),
            deadline,
        )
        .await
        {
            Ok((b, m)) => {
                body = b;
                masker = m;
            }
            Err(why) => {
                ctx.metrics.error("mask");
                stop_pump(guard.pump.take()).await;
                return withhold(&sj, &mut guard, &principal_label, &why, is_grpc, &request_id).await;
            }
        }
    }
    let status_line = format!("{} {}", version_text(parts.version), parts.status);
    let resp_head = head_text(&status_line, &parts.headers, &[]);
    // A small response of known length, after a request that has ended, is read whole before
    // anything is delivered (as nginx buffers): its head, body, end and the session's close go to
    // the journal in one hand-off — one fsync in strict mode — and the caller gets the head and
    // the body in one write.
    if guard.pump.is_none() && !is_grpc && body.size_hint().upper().is_some_and(|n| n <= WHOLE_MAX) {
        let profile = mask.as_ref().map(|p| (p.as_ref(), tally.as_ref()));
        let framer = Framer::for_content_type(&parts.headers);
        let whole = match read_whole(body, framer, masker, profile, route.idle_timeout, deadline, "upstream").await {
            Ok(whole) => whole,
            Err(Unread::Mask(why)) => {
                ctx.metrics.error("mask");
                return withhold(&sj, &mut guard, &principal_label, &why, is_grpc, &request_id).await;
            }
            Err(Unread::Peer(reason)) => {
                ctx.metrics.error("upstream_request");
                warn!(session = %request_id, %reason, "Upstream failed.");
                guard.close(reason).await;
                return gateway_error(
                    is_grpc,
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream failed before its response was complete",
                    &request_id,
                );
            }
        };
        if let Some(mut watch) = route.credential_secrets.watch()
            && whole.units.iter().any(|u| watch.seen(u))
        {
            ctx.metrics.error("credential_echoed");
            return withhold_echo(&sj, &mut guard, &principal_label, is_grpc, &request_id).await;
        }
        let len = whole.len();
        counters.from_upstream.fetch_add(len, Ordering::Relaxed);
        // Once the close is staged the guard stands down: a cancelled hand-off leaves the
        // records staged, and the session's `Drop` queues them.
        let recorded = async {
            whole.stage(&sj, Direction::UpstreamToClient, &resp_head).map_err(|e| e.to_string())?;
            sj.stage_close(close_meta(&counters, &tally, started, "complete".into())).map_err(|e| e.to_string())?;
            guard.armed = false;
            journal_record(sj.flush().await, strict).await
        };
        if let Err(e) = recorded.await {
            ctx.metrics.error("journal_write");
            if guard.armed {
                guard.close(format!("journal write failed: {e}")).await;
            }
            return response_unrecorded(is_grpc, &request_id);
        }
        metric("upstream_to_client").inc_by(len);
        parts.version = Version::HTTP_11;
        return Response::from_parts(parts, whole.into_body());
    }
    if let Err(e) = journal_record(sj.http_head(Direction::UpstreamToClient, &resp_head, false).await, strict).await {
        stop_pump(guard.pump.take()).await;
        guard.close(format!("journal write failed: {e}")).await;
        return response_unrecorded(is_grpc, &request_id);
    }
    let (tx, delivered) = Channel::<Bytes, BoxError>::new(BODY_QUEUE);
    // Dropped with the response body when the caller goes away: the pump stops waiting then,
    // rather than on an upstream that may stay quiet for long.
    let gone = tokio_util::sync::CancellationToken::new();
    let delivered = Delivered { inner: delivered, _gone: gone.clone().drop_guard() };
    let down = Pump {
        tx,
        idle: route.idle_timeout,
        deadline,
        sj: sj.clone(),
        direction: Direction::UpstreamToClient,
        strict,
        counters: counters.clone(),
        metric: metric("upstream_to_client"),
        masker,
        mask: mask.clone().map(|p| (p, tally.clone())),
        principal: principal_label,
        abort: ctx.abort.clone(),
        grpc: is_grpc,
        gone,
        expires,
        reloads: principal.map(|p| Caller::new(reloads, p, conn)),
        echo: route.credential_secrets.watch(),
    };
    let framer = Framer::for_content_type(&parts.headers);
    let up_task = guard.pump.take();
    guard.armed = false;
    // Tracked: a shutdown waits for the close this task writes.
    ctx.tracker.spawn(async move {
        let reason = down.run(body, framer).await;
        // The request side may still be streaming (bidirectional gRPC): its records come first.
        // One that is still going after that is stopped, so nothing is journaled after the close.
        if let Some(mut task) = up_task
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            stop_pump(Some(task)).await;
        }
        close(&sj, &counters, &tally, started, reason, true).await;
    });
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, delivered.boxed())
}

/// Stops the request-body pump, if one runs, and waits until it has: its records must come
/// before the session's close, never after it. (A record it had staged goes with the close.)
async fn stop_pump(task: Option<tokio::task::JoinHandle<String>>) {
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}

/// Largest response read whole before delivery (see `handle`); larger ones stream.
const WHOLE_MAX: u64 = 64 * 1024;

/// A response body read to its end before any of it is delivered.
struct Whole {
    /// Its journal frames, masked if the route masks.
    units: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

/// A request body on its way upstream: read whole first, or streamed by a pump.
enum Outgoing {
    Whole(Whole),
    Stream(Body),
}

/// Why a body could not be read whole.
enum Unread {
    /// The sender failed, stalled or sent a malformed stream.
    Peer(String),
    /// Masking refused the body.
    Mask(String),
}

impl Unread {
    fn reason(&self) -> &str {
        match self {
            Self::Peer(r) | Self::Mask(r) => r,
        }
    }
}

impl Whole {
    /// Body bytes, as delivered.
    fn len(&self) -> u64 {
        self.units.iter().map(|u| u.len() as u64).sum()
    }

    /// Stages the message head, each unit and the trailers; the last record carries the end.
    fn stage(&self, sj: &SessionJournal, dir: Direction, head: &Bytes) -> Result<(), crate::journal::JournalError> {
        let n = self.units.len();
        sj.stage_http_head(dir, head, n == 0 && self.trailers.is_none())?;
        for (i, unit) in self.units.iter().enumerate() {
            sj.stage_data(dir, i + 1 == n && self.trailers.is_none(), unit)?;
        }
        if let Some(trailers) = &self.trailers {
            sj.stage_http_head(dir, &head_text("(trailers)", trailers, &[]), true)?;
        }
        Ok(())
    }

    /// The body to deliver: one buffer, and the trailers if there are any.
    fn into_body(self) -> Body {
        let data = match self.units.len() {
            1 => self.units.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(self.units.concat()),
        };
        match self.trailers {
            None => Full::new(data).map_err(|never| match never {}).boxed(),
            Some(trailers) => {
                let (mut tx, body) = Channel::<Bytes, BoxError>::new(2);
                // Room for both frames was made above.
                let _ = tx.try_send(hyper::body::Frame::data(data));
                let _ = tx.try_send(hyper::body::Frame::trailers(trailers));
                body.boxed()
            }
        }
    }
}

/// Reads a body from `from` to its end, each frame within the idle timeout and the exchange's
/// deadline, cut into units and masked as the streaming path would.
async fn read_whole(
    mut body: Body,
    mut framer: Framer,
    masker: Option<BodyMasker>,
    profile: Option<(&crate::mask::Profile, &Tally)>,
    idle: Duration,
    deadline: Option<Instant>,
    from: &str,
) -> Result<Whole, Unread> {
    let mut buf = bytes::BytesMut::new();
    let mut units = Vec::new();
    let mut trailers = None;
    let malformed = |e| Unread::Peer(format!("{from} sent a malformed stream: {e}"));
    loop {
        match next_frame(&mut body, idle, deadline).await {
            Err(stall) => return Err(Unread::Peer(stall.reason(from))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Unread::Peer(format!("{from} broke off the body: {e}"))),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => {
                    buf.extend_from_slice(&chunk);
                    while let Some(unit) = framer.next(&mut buf).map_err(malformed)? {
                        units.push(unit);
                    }
                }
                Err(frame) => {
                    if let Ok(mut t) = frame.into_trailers() {
                        clean_trailers(&mut t, profile);
                        trailers = Some(t);
                    }
                }
            },
        }
    }
    units.extend(framer.finish(&mut buf).map_err(malformed)?);
    if let Some(mut masker) = masker {
        let mut masked = Vec::with_capacity(units.len());
        for unit in units {
            masked.extend(masker.unit(unit).map_err(|e| Unread::Mask(e.to_string()))?);
        }
        masked.extend(masker.finish().map_err(|e| Unread::Mask(e.to_string()))?);
        units = masked;
    }
    Ok(Whole { units, trailers })
}

/// Trailers are headers too: no hop-by-hop fields, and on a masked route `grpc-message` masked
/// and binary values dropped.
fn clean_trailers(trailers: &mut HeaderMap, profile: Option<(&crate::mask::Profile, &Tally)>) {
    strip_hop_by_hop(trailers);
    if let Some((profile, tally)) = profile {
        mask_headers(profile, tally, trailers);
        strip_binary_headers(trailers);
    }
}

/// Why no next body frame came.
enum Stall {
    /// The exchange's deadline (`request_timeout`) passed.
    Deadline,
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
}

impl Stall {
    fn reason(&self, from: &str) -> String {
        match self {
            Self::Deadline => "the request timeout passed mid-body".into(),
            Self::Idle(idle) => format!("{from} sent nothing for {idle:?}"),
        }
    }
}

/// The next frame of `body`, within `idle` and before `deadline`.
async fn next_frame<B>(
    body: &mut B,
    idle: Duration,
    deadline: Option<Instant>,
) -> Result<Option<Result<hyper::body::Frame<Bytes>, B::Error>>, Stall>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let next = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, body.frame()).await.map_err(|_| Stall::Deadline),
            None => Ok(body.frame().await),
        }
    };
    tokio::time::timeout(idle, next).await.unwrap_or(Err(Stall::Idle(idle)))
}

/// Answers 502 for a response that masking could not inspect: the refusal is journaled as a
/// decision, then the answer's head and the close, in one hand-off.
async fn withhold(
    sj: &SessionJournal,
    guard: &mut CloseGuard,
    principal: &str,
    why: &str,
    is_grpc: bool,
    request_id: &str,
) -> Response<Body> {
    let close = format!("response withheld, masking could not run: {why}");
    withhold_as(sj, guard, mask_refusal(principal, why), &close, is_grpc, request_id).await
}

/// Withholds a response that carries the route's credential (an upstream that echoes what it
/// was sent); the caller gets a 502 that names neither the credential nor where it was.
async fn withhold_echo(
    sj: &SessionJournal,
    guard: &mut CloseGuard,
    principal: &str,
    is_grpc: bool,
    request_id: &str,
) -> Response<Body> {
    let why = "the upstream's response carries the credential the gateway sent it";
    let close = format!("response withheld: {why}");
    withhold_as(sj, guard, echo_refusal(principal), &close, is_grpc, request_id).await
}

async fn withhold_as(
    sj: &SessionJournal,
    guard: &mut CloseGuard,
    decision: crate::journal::record::DecisionMeta,
    close: &str,
    is_grpc: bool,
    request_id: &str,
) -> Response<Body> {
    let why = decision.reason.clone();
    let _ = sj.stage_decision(decision);
    let resp = gateway_error(
        is_grpc,
        StatusCode::BAD_GATEWAY,
        "response_not_inspectable",
        &format!("the response was not delivered: {why}"),
        request_id,
    );
    let head = head_text(&format!("{} {}", version_text(Version::HTTP_11), resp.status()), resp.headers(), &[]);
    let _ = sj.stage_http_head(Direction::UpstreamToClient, &head, true);
    guard.close(close.to_owned()).await;
    resp
}

/// Strict: waits until the record is durable. Batched: only checks that the journal took it (a
/// later failure still ends the session, through the receipts the body pumps await).
async fn journal_record(
    receipt: Result<crate::journal::Receipt, crate::journal::JournalError>,
    strict: bool,
) -> Result<(), String> {
    let receipt = receipt.map_err(|e| e.to_string())?;
    if strict {
        receipt.await.map(|_| ()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// How a body is cut into journal frames: by the protocol unit when the content type names one
/// (each SSE event, NDJSON line or gRPC message is its own frame, forwarded as soon as it is
/// whole), else by the chunks as they arrive.
enum Framer {
    Chunks,
    Sse(airlock_decoders::sse::SseDecoder),
    Ndjson(airlock_decoders::ndjson::NdjsonDecoder),
    Grpc(airlock_decoders::grpc::GrpcDecoder),
}

impl Framer {
    fn for_content_type(headers: &HeaderMap) -> Self {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match base.as_str() {
            "text/event-stream" => Self::Sse(Default::default()),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
                Self::Ndjson(Default::default())
            }
            // gRPC proper; gRPC-Web frames trailers in the body and may be base64 — chunks.
            b if b == "application/grpc" || b.starts_with("application/grpc+") => Self::Grpc(Default::default()),
            _ => Self::Chunks,
        }
    }

    /// The next whole unit's bytes, exactly as received.
    fn next(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Bytes>, airlock_decoders::DecodeError> {
        use airlock_decoders::Decoder as _;
        match self {
            Self::Chunks => Ok((!buf.is_empty()).then(|| buf.split().freeze())),
            Self::Sse(d) => Ok(d.decode(buf)?.map(|b| b.raw)),
            Self::Ndjson(d) => Ok(d.decode(buf)?.map(|l| l.raw)),
            Self::Grpc(d) => Ok(d.decode(buf)?.map(|m| airlock_decoders::grpc::encode(&m))),
        }
    }

    /// At the end of the body: the last units, then whatever is left (an unterminated event, a
    /// truncated message) as it was received.
    fn finish(&mut self, buf: &mut bytes::BytesMut) -> Result<Vec<Bytes>, airlock_decoders::DecodeError> {
        let mut out = Vec::new();
        match self {
            Self::Sse(d) => {
                while let Some(b) = d.decode_eof(buf)? {
                    out.push(b.raw);
                }
            }
            Self::Ndjson(d) => {
                while let Some(l) = d.decode_eof(buf)? {
                    out.push(l.raw);
                }
            }
            Self::Chunks | Self::Grpc(_) => {}
        }
        if !buf.is_empty() {
            out.push(buf.split().freeze());
        }
        Ok(out)
    }
}

/// One direction of an exchange: journals each unit — durably first in strict mode — and
/// forwards it.
struct Pump {
    tx: Sender<Bytes, BoxError>,
    /// Longest wait for the next frame.
    idle: Duration,
    /// When the whole exchange must be over, if the route sets a limit.
    deadline: Option<Instant>,
    sj: Arc<SessionJournal>,
    direction: Direction,
    strict: bool,
    counters: Arc<Counters>,
    metric: prometheus_client::metrics::counter::Counter,
    /// Masks each unit before it is journaled and delivered (responses on masked routes).
    masker: Option<BodyMasker>,
    /// The profile that masks, for the trailers (`grpc-message` can quote what failed).
    mask: Option<(Arc<crate::mask::Profile>, Arc<Tally>)>,
    /// The caller, for the decision record of a masking failure.
    principal: String,
    /// Fires when the gateway's drain deadline passes: the pump ends, and its session closes.
    abort: tokio_util::sync::CancellationToken,
    /// A gRPC response: a failure mid-stream ends it with a gRPC status in trailers (journaled
    /// first), not a reset stream.
    grpc: bool,
    /// Fires when the receiving side has dropped the body (the caller went away).
    gone: tokio_util::sync::CancellationToken,
    /// When the caller's credential expires: the body ends then (automatic logoff).
    expires: Option<Instant>,
    /// Reloads, and the caller: a reload that revokes the caller's identity ends the body.
    reloads: Option<Caller>,
    /// Responses: watches for the route's credential, which ends the body where it appears.
    echo: Option<super::echo::EchoWatch>,
}

/// Waits for a reload that revokes `principal`'s identity; says why.
async fn revoked(reloads: &mut Option<Caller>) -> String {
    let Some(w) = reloads else { return std::future::pending().await };
    loop {
        let (rx, access) = w.reload.as_mut().await;
        w.reload = next_reload(rx);
        if let Some(why) = access.identity.revoked_presenting(&w.principal, w.leaf.as_deref(), w.from) {
            return why;
        }
    }
}

/// A body's caller, watched for reloads that revoke it.
struct Caller {
    reload: Reload,
    principal: Principal,
    /// The client certificate that named the caller, if one did (it is named again from it).
    leaf: Option<Vec<u8>>,
    from: Option<crate::identity::mtls::PrincipalFrom>,
}

impl Caller {
    fn new(reloads: tokio::sync::watch::Receiver<Arc<crate::config::Access>>, p: &Principal, conn: &Conn) -> Self {
        let by_certificate = matches!(p.method, crate::identity::AuthMethod::Mtls { .. });
        Self {
            reload: next_reload(reloads),
            principal: p.clone(),
            leaf: conn.leaf.clone().filter(|_| by_certificate),
            from: conn.ctx.route.client_principal,
        }
    }
}

/// The response body the caller reads. Dropping it cancels `_gone`'s token.
struct Delivered {
    inner: Channel<Bytes, BoxError>,
    _gone: tokio_util::sync::DropGuard,
}

impl hyper::body::Body for Delivered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Pump {
    fn sides(&self) -> (&'static str, &'static str) {
        match self.direction {
            Direction::ClientToUpstream => ("client", "upstream"),
            Direction::UpstreamToClient => ("upstream", "client"),
        }
    }

    /// Ends the other side's stream with an error (a reset), never a silently short body.
    /// Ends the body after a failure. A gRPC response that can still be answered gets trailers
    /// with UNAVAILABLE (DEADLINE_EXCEEDED for a timeout) and why, journaled before they go;
    /// anything else, and any failure of the journal, resets the stream.
    async fn fail(mut self, why: &'static str, reason: String) -> String {
        // Trailers only for a client that is still there and reading.
        let client_gone = reason.starts_with("client went away") || reason.starts_with("client stopped reading");
        if self.grpc && !client_gone && !reason.starts_with("journal write failed") {
            let code: u32 = match why {
                "timeout" => 4,
                "credential expired" | "credential revoked" => 16,
                _ => 14,
            };
            let message = if reason.starts_with("masking failed") {
                "the rest of the response could not be masked and was withheld".to_owned()
            } else {
                format!("the stream ended early: {why}")
            };
            let mut t = HeaderMap::new();
            t.insert(HeaderName::from_static("grpc-status"), HeaderValue::from(code));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
                t.insert(HeaderName::from_static("grpc-message"), v);
            }
            let text = head_text("(trailers)", &t, &[]);
            let journaled = journal_record(self.sj.http_head(self.direction, &text, true).await, self.strict).await;
            if journaled.is_ok()
                && matches!(tokio::time::timeout(Duration::from_secs(1), self.tx.send_trailers(t)).await, Ok(Ok(())))
            {
                return reason;
            }
        }
        self.tx.abort(why.into());
        reason
    }

    /// Masks a unit, if this direction masks, and emits what comes out.
    async fn pass(&mut self, unit: Bytes) -> Result<(), String> {
        let units = match &mut self.masker {
            None => return self.emit(unit).await,
            Some(m) => m.unit(unit),
        };
        self.emit_masked(units).await
    }

    /// At the end of the body: what the masker held back.
    async fn pass_end(&mut self) -> Result<(), String> {
        let units = match &mut self.masker {
            None => return Ok(()),
            Some(m) => m.finish(),
        };
        self.emit_masked(units).await
    }

    async fn emit_masked(&mut self, units: Result<Vec<Bytes>, crate::mask::MaskError>) -> Result<(), String> {
        match units {
            Ok(units) => {
                for u in units {
                    self.emit(u).await?;
                }
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                let _ = self.sj.decision(mask_refusal(&self.principal, &why)).await;
                Err(format!("masking failed, the rest of the response was withheld: {why}"))
            }
        }
    }

    async fn emit(&mut self, unit: Bytes) -> Result<(), String> {
        if let Some(watch) = &mut self.echo
            && watch.seen(&unit)
        {
            let _ = self.sj.decision(echo_refusal(&self.principal)).await;
            return Err(
                "the upstream's response carries the credential the gateway sent it; the rest was withheld".into()
            );
        }
        let receipt =
            self.sj.data(self.direction, false, &unit).await.map_err(|e| format!("journal write failed: {e}"))?;
        let pending = if self.strict {
            receipt.await.map_err(|e| format!("journal write failed: {e}"))?;
            None
        } else {
            Some(receipt.awaited_next())
        };
        let count = match self.direction {
            Direction::ClientToUpstream => &self.counters.from_client,
            Direction::UpstreamToClient => &self.counters.from_upstream,
        };
        count.fetch_add(unit.len() as u64, Ordering::Relaxed);
        let len = unit.len() as u64;
        match tokio::time::timeout(self.idle, self.tx.send_data(unit)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(format!("{} went away mid-body", self.sides().1)),
            Err(_) => return Err(format!("{} stopped reading for {:?}", self.sides().1, self.idle)),
        }
        self.metric.inc_by(len);
        if let Some(r) = pending {
            r.await.map_err(|e| format!("journal write failed: {e}"))?;
        }
        Ok(())
    }

    /// Moves `body` across, unit by unit, and forwards trailers. Returns why it ended, for the
    /// session-close record.
    async fn run<B>(mut self, mut body: B, mut framer: Framer) -> String
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (from, to) = self.sides();
        let mut buf = bytes::BytesMut::new();
        loop {
            // In this order: at the drain deadline the caller's connection goes too, and the
            // shutdown is the reason.
            let next = tokio::select! {
                biased;
                () = self.abort.cancelled() => {
                    return self.fail("gateway shutdown", "gateway shutdown: drain deadline passed".into()).await;
                }
                () = async {
                    match self.expires {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let reason = "automatic logoff: the caller's credential expired during the stream".to_owned();
                    return self.fail("credential expired", reason).await;
                }
                why = revoked(&mut self.reloads) => {
                    return self.fail("credential revoked", format!("credential revoked: {why}")).await;
                }
                // Before the caller's departure: hyper drops a body of known length once it has
                // sent it all, and the end still to be read here is a complete response.
                next = next_frame(&mut body, self.idle, self.deadline) => next,
                () = self.gone.cancelled() => {
                    let to = self.sides().1;
                    return self.fail("caller went away", format!("{to} went away mid-body")).await;
                }
            };
            let frame = match next {
                Ok(f) => f,
                Err(stall @ Stall::Deadline) => return self.fail("timeout", stall.reason(from)).await,
                Err(stall @ Stall::Idle(_)) => return self.fail("idle timeout", stall.reason(from)).await,
            };
            match frame {
                None => {
                    let rest = match framer.finish(&mut buf) {
                        Ok(rest) => rest,
                        Err(e) => {
                            return self.fail("malformed stream", format!("{from} sent a malformed stream: {e}")).await;
                        }
                    };
                    for unit in rest {
                        if let Err(reason) = self.pass(unit).await {
                            return self.fail("journal or peer failure", reason).await;
                        }
                    }
                    if let Err(reason) = self.pass_end().await {
                        return self.fail("journal or peer failure", reason).await;
                    }
                    if let Err(e) =
                        journal_record(self.sj.data(self.direction, true, &Bytes::new()).await, self.strict).await
                    {
                        return self.fail("journal write failed", format!("journal write failed: {e}")).await;
                    }
                    return "complete".into();
                }
                Some(Err(e)) => return self.fail("body failed", format!("{from} broke off the body: {e}")).await,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        buf.extend_from_slice(&chunk);
                        loop {
                            match framer.next(&mut buf) {
                                Ok(Some(unit)) => {
                                    if let Err(reason) = self.pass(unit).await {
                                        return self.fail("journal or peer failure", reason).await;
                                    }
                                }
                                Ok(None) => break,
                                // An inspected stream that does not parse is not forwarded.
                                Err(e) => {
                                    return self
                                        .fail("malformed stream", format!("{from} sent a malformed stream: {e}"))
                                        .await;
                                }
                            }
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            // What the masker holds back goes before the trailers end the stream.
                            if let Err(reason) = self.pass_end().await {
                                return self.fail("journal or peer failure", reason).await;
                            }
                            clean_trailers(&mut trailers, self.mask.as_ref().map(|(p, t)| (p.as_ref(), t.as_ref())));
                            let text = head_text("(trailers)", &trailers, &[]);
                            if let Err(e) =
                                journal_record(self.sj.http_head(self.direction, &text, false).await, self.strict).await
                            {
                                return self.fail("journal write failed", format!("journal write failed: {e}")).await;
                            }
                            if self.tx.send_trailers(trailers).await.is_err() {
                                return format!("{to} went away before the trailers");
                            }
                        }
                    }
                },
            }
        }
    }
}

/// Writes the session-close record exactly once: by [`CloseGuard::close`], by the response task
/// it hands over to, or — if the request future is dropped because the caller reset or left
/// before the response head — from `Drop`.
struct CloseGuard {
    sj: Arc<SessionJournal>,
    counters: Arc<Counters>,
    tally: Arc<Tally>,
    started: Instant,
    armed: bool,
    /// The close written from `Drop` is a task of its own, which a shutdown waits for.
    tracker: tokio_util::task::TaskTracker,
    /// The request-body pump, while one runs: stopped before the close.
    pump: Option<tokio::task::JoinHandle<String>>,
}

impl CloseGuard {
    async fn close(&mut self, reason: String) {
        self.armed = false;
        stop_pump(self.pump.take()).await;
        close(&self.sj, &self.counters, &self.tally, self.started, reason, false).await;
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if self.armed {
            let (sj, counters, tally, started) =
                (self.sj.clone(), self.counters.clone(), self.tally.clone(), self.started);
            let pump = self.pump.take();
            self.tracker.spawn(async move {
                stop_pump(pump).await;
                close(&sj, &counters, &tally, started, "the caller went away before the response".into(), true).await;
            });
        } else if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }
}

fn close_meta(counters: &Counters, tally: &Tally, started: Instant, reason: String) -> CloseMeta {
    CloseMeta {
        masked: tally.snapshot(),
        reason,
        bytes_from_client: counters.from_client.load(Ordering::Relaxed),
        bytes_from_upstream: counters.from_upstream.load(Ordering::Relaxed),
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        break_glass: false,
    }
}

/// Writes the session's close record and waits for it. `detached` when nothing but the task
/// that writes it waits on it (no response does): then the writer may gather first.
async fn close(
    sj: &SessionJournal,
    counters: &Counters,
    tally: &Tally,
    started: Instant,
    reason: String,
    detached: bool,
) {
    match sj.close(close_meta(counters, tally, started, reason)).await {
        Ok(receipt) => {
            let receipt = if detached { receipt.patient() } else { receipt };
            if let Err(e) = receipt.await {
                warn!(session = %sj.id(), error = %e, "Session-close record not written.");
            }
        }
        Err(e) => warn!(session = %sj.id(), error = %e, "Session-close record not written."),
    }
}

/// The decision record of a response withheld because masking could not run.
/// The decision record of a response withheld because it carries the route's credential.
fn echo_refusal(principal: &str) -> crate::journal::record::DecisionMeta {
    crate::journal::record::DecisionMeta {
        rule: "credential:echoed".into(),
        ..mask_refusal(principal, "the upstream's response carries the credential the gateway sent it")
    }
}

fn mask_refusal(principal: &str, why: &str) -> crate::journal::record::DecisionMeta {
    crate::journal::record::DecisionMeta {
        phase: "response".into(),
        effect: "deny".into(),
        rule: "mask:fail-closed".into(),
        reason: why.to_owned(),
        principal: principal.to_owned(),
        request: "response body".into(),
        policy_version: None,
        break_glass: false,
    }
}

/// Prepares a response body on a masked route: a JSON document is read (up to the route's
/// inspection limit) and masked whole; a stream gets its unit masker; an encoded, binary or
/// schema-less body is refused. Headers that describe the upstream's bytes go.
async fn mask_response(
    ctx: &SessionCtx,
    profile: &Arc<crate::mask::Profile>,
    tally: &Arc<Tally>,
    headers: &mut HeaderMap,
    body: Body,
    grpc_path: Option<&str>,
    deadline: Option<Instant>,
) -> Result<(Body, Option<BodyMasker>), String> {
    let route = &ctx.route;
    let budget = ctx.http_upstream.as_ref().map(|u| u.inspecting.clone());
    // Any header can quote a value: the gRPC status message (a Trailers-Only answer carries it
    // here), a redirect target, a file name, custom metadata. Binary headers cannot be read, so
    // they go.
    mask_headers(profile, tally, headers);
    strip_binary_headers(headers);
    if headers.get(header::CONTENT_RANGE).is_some() {
        return Err("a partial (range) response cannot be inspected whole".into());
    }
    if body.is_end_stream() {
        return Ok((body, None));
    }
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let enc = v.to_str().unwrap_or("?");
        if enc.split(',').map(str::trim).any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity")) {
            return Err(crate::mask::MaskError::Encoded(coding_named(enc)).to_string());
        }
    }
    for h in ["content-md5", "digest", "repr-digest", "content-digest", "etag"] {
        headers.remove(h);
    }
    if let Some(path) = grpc_path {
        let schema =
            route.mask.as_ref().and_then(|m| m.grpc.clone()).ok_or_else(|| {
                "gRPC responses on a masked route need [masking] descriptor_set to be decoded".to_owned()
            })?;
        let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let g = crate::mask::grpc::GrpcMasker::new(
            profile.clone(),
            tally.clone(),
            schema,
            path,
            encoding,
            route.max_inspect_body,
        )
        .map_err(|e| e.to_string())?;
        headers.remove("grpc-encoding");
        headers.remove(header::CONTENT_LENGTH);
        return Ok((body, Some(BodyMasker::Grpc(Box::new(g)))));
    }
    // A type that is not visible ASCII names nothing the masker knows how to read.
    let kind = match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => BodyKind::of(None),
        Some(Ok(ct)) => BodyKind::of(Some(ct)),
        Some(Err(_)) => BodyKind::Opaque,
    };
    match kind {
        BodyKind::Json => {
            let mut body = body;
            let mut bytes = bytes::BytesMut::new();
            let room = inspection_room(budget, route, deadline).await?;
            while read_more(&mut body, &mut bytes, route, deadline).await? {}
            let (masked, room) = mask_whole(profile, tally, bytes, BodyKind::Json, &route.stream_fields, room).await?;
            Ok(whole_body(headers, masked, room))
        }
        kind @ (BodyKind::Text | BodyKind::Html | BodyKind::Xml) => {
            // A text or markup body (or one with no type at all) that reads as JSON is masked as
            // JSON, so that field rules and `\u` escapes apply to it as to `application/json`
            // (PHP, for one, labels everything `text/html`).
            let mut body = body;
            let mut bytes = bytes::BytesMut::new();
            let mut more = true;
            let mut looks = JsonLook::Undecided;
            while more && (looks == JsonLook::Undecided || bytes.len() < 2) {
                more = read_more(&mut body, &mut bytes, route, deadline).await?;
                looks = json_look(&bytes, more);
            }
            if crate::mask::body::utf16_bom(&bytes) {
                return Err(
                    crate::mask::MaskError::Uninspectable("a UTF-16 text (its byte-order mark says so)").to_string()
                );
            }
            if looks == JsonLook::Json {
                let room = inspection_room(budget, route, deadline).await?;
                while more {
                    more = read_more(&mut body, &mut bytes, route, deadline).await?;
                }
                let (masked, room) = mask_whole(profile, tally, bytes, kind, &route.stream_fields, room).await?;
                return Ok(whole_body(headers, masked, room));
            }
            let masker =
                BodyMasker::with_stream_fields(kind, profile.clone(), tally.clone(), route.stream_fields.clone())
                    .map_err(|e| e.to_string())?;
            headers.remove(header::CONTENT_LENGTH);
            let body =
                if bytes.is_empty() { body } else { Prefixed { first: Some(bytes.freeze()), rest: body }.boxed() };
            Ok((body, Some(masker)))
        }
        kind => {
            let masker =
                BodyMasker::with_stream_fields(kind, profile.clone(), tally.clone(), route.stream_fields.clone())
                    .map_err(|e| e.to_string())?;
            headers.remove(header::CONTENT_LENGTH);
            Ok((body, Some(masker)))
        }
    }
}

/// Room in the route's inspection budget for one body read whole (see `Upstream::inspecting`),
/// held until the permit is dropped; waited for no longer than the route's idle timeout.
async fn inspection_room(
    budget: Option<Arc<tokio::sync::Semaphore>>,
    route: &Route,
    deadline: Option<Instant>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, String> {
    let Some(budget) = budget else { return Ok(None) };
    let units = u32::try_from(route.max_inspect_body.div_ceil(1024)).unwrap_or(u32::MAX);
    let wait =
        deadline.map_or(route.idle_timeout, |d| route.idle_timeout.min(d.saturating_duration_since(Instant::now())));
    match tokio::time::timeout(wait, budget.acquire_many_owned(units)).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        _ => Err("the gateway is already reading as many bodies for masking as this route may hold".into()),
    }
}

/// Reads the next frame of a body that is inspected whole into `bytes`, within the route's
/// inspection limit and idle timeout and before the exchange's deadline; false at the end of the
/// body.
async fn read_more(
    body: &mut Body,
    bytes: &mut bytes::BytesMut,
    route: &Route,
    deadline: Option<Instant>,
) -> Result<bool, String> {
    match next_frame(body, route.idle_timeout, deadline).await {
        Ok(Some(Ok(frame))) => {
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > route.max_inspect_body {
                    return Err(crate::mask::MaskError::TooLarge { limit: route.max_inspect_body }.to_string());
                }
                bytes.extend_from_slice(&data);
            }
            Ok(true)
        }
        Ok(Some(Err(e))) => Err(format!("the upstream broke off the body: {e}")),
        Ok(None) => Ok(false),
        Err(stall) => Err(stall.reason("the upstream")),
    }
}

/// A masked body delivered whole, with its new length; it keeps its room in the route's
/// inspection budget until it has been sent.
fn whole_body(
    headers: &mut HeaderMap,
    masked: Vec<u8>,
    room: Option<tokio::sync::OwnedSemaphorePermit>,
) -> (Body, Option<BodyMasker>) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
    headers.remove(header::TRANSFER_ENCODING);
    (Held { inner: Full::new(Bytes::from(masked)).map_err(|never| match never {}), _room: room }.boxed(), None)
}

/// Whether the start of a text body reads as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonLook {
    Json,
    Text,
    /// Not enough bytes yet.
    Undecided,
}

/// At most this much leading white space is read before a text body is taken for text.
const JSON_LOOK_MAX: usize = 64 * 1024;

/// Looks at the first two significant bytes: `{` then `"` or `}`, or `[` then `{`, `[`, `"` or
/// `]`. `[INFO] …`, `[1] a citation`, `[2024-05-01 …]` and `{{template}}` stay text (an array of
/// bare numbers has neither fields nor escapes, so text masking loses nothing on it).
fn json_look(bytes: &[u8], more: bool) -> JsonLook {
    let mut significant = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace());
    let undecided = if more && bytes.len() < JSON_LOOK_MAX { JsonLook::Undecided } else { JsonLook::Text };
    let Some(first) = significant.next() else { return undecided };
    if first != b'{' && first != b'[' {
        return JsonLook::Text;
    }
    let Some(second) = significant.next() else {
        return if more { undecided } else { JsonLook::Text };
    };
    match (first, second) {
        (b'{', b'"' | b'}') | (b'[', b'{' | b'[' | b'"' | b']') => JsonLook::Json,
        _ => JsonLook::Text,
    }
}

/// Bodies larger than this are masked off the session runtime: masking runs at roughly 100 MB/s,
/// so a 1 MiB body would stall the runtime's other sessions for about 10 ms.
const MASK_INLINE_MAX: usize = 64 * 1024;

/// [`mask_json_ish`] for a body read whole; a large one on the blocking pool. The body's room
/// in the route's inspection budget goes with the work and comes back with its result, so a
/// caller that goes away (an HTTP/2 stream reset) does not free room that is still in use.
async fn mask_whole(
    profile: &Arc<crate::mask::Profile>,
    tally: &Arc<Tally>,
    bytes: bytes::BytesMut,
    kind: BodyKind,
    stream_fields: &Arc<[Vec<crate::mask::PathSeg>]>,
    room: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>), String> {
    if bytes.len() <= MASK_INLINE_MAX {
        return mask_json_ish(profile, tally, &bytes, kind, stream_fields).map(|m| (m, room));
    }
    let (profile, tally, fields) = (profile.clone(), tally.clone(), stream_fields.clone());
    let (masked, room) =
        tokio::task::spawn_blocking(move || (mask_json_ish(&profile, &tally, &bytes, kind, &fields), room))
            .await
            .map_err(|_| "the masker failed".to_owned())?;
    masked.map(|m| (m, room))
}

/// Masks a body that is or looks like JSON: as one document if it is one, as JSON lines if
/// every line is JSON, and otherwise as text — or, for a body labelled JSON, not at all.
fn mask_json_ish(
    profile: &Arc<crate::mask::Profile>,
    tally: &Arc<Tally>,
    bytes: &[u8],
    kind: BodyKind,
    stream_fields: &Arc<[Vec<crate::mask::PathSeg>]>,
) -> Result<Vec<u8>, String> {
    // One document: the masker reads it (and refuses what it cannot read as values, such as a
    // lone surrogate escape, which passes a grammar check).
    if let Ok(masked) = crate::mask::json::mask_document(profile, bytes, tally) {
        return Ok(masked);
    }
    let lines = bytes.split_inclusive(|&b| b == b'\n');
    let all_json = lines.clone().all(|l| {
        let t = l.trim_ascii();
        t.is_empty() || serde_json::from_slice::<serde_json::Value>(t).is_ok()
    });
    // JSON Lines under a JSON type are masked line by line. A JSON body that is neither is
    // refused: its reader may still read it (Python's `json` takes `NaN`, and detects UTF-16),
    // but the masker could not, and field rules and `\u` escapes would pass unapplied.
    if kind == BodyKind::Json && !all_json {
        return Err("the upstream's JSON response is not valid UTF-8 JSON and cannot be masked".into());
    }
    // Not JSON after all: masked as what its type says (text or markup), in one piece.
    let (mut masker, units) = if all_json {
        (
            BodyMasker::with_stream_fields(BodyKind::Ndjson, profile.clone(), tally.clone(), stream_fields.clone()),
            lines.collect::<Vec<_>>(),
        )
    } else {
        (BodyMasker::with_stream_fields(kind, profile.clone(), tally.clone(), stream_fields.clone()), vec![bytes])
    };
    let masker = masker.as_mut().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(bytes.len());
    for line in units {
        for unit in masker.unit(Bytes::copy_from_slice(line)).map_err(|e| e.to_string())? {
            out.extend_from_slice(&unit);
        }
    }
    for unit in masker.finish().map_err(|e| e.to_string())? {
        out.extend_from_slice(&unit);
    }
    Ok(out)
}

/// Whether a body comes in a content coding other than `identity`.
fn content_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|c| !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity"))
    })
}

/// Room (in KiB) a body read for inspection takes in the route's budget: as much as it says it
/// holds, or the most the route reads.
fn inspect_units(headers: &HeaderMap, max: usize) -> u32 {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let size = declared.unwrap_or(max).min(max);
    u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// The first `limit` bytes of a body (or a little more: whole frames), and the rest unless that
/// was all.
async fn read_prefix(mut body: Body, limit: usize) -> Result<(Bytes, Option<Body>), String> {
    let mut first = bytes::BytesMut::new();
    while first.len() < limit {
        match body.frame().await {
            None => return Ok((first.freeze(), None)),
            Some(Err(e)) => return Err(format!("the request body could not be read: {e}")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => first.extend_from_slice(&data),
                Err(_) => return Err("a multipart body with trailers cannot be inspected".into()),
            },
        }
    }
    let rest = (!body.is_end_stream()).then_some(body);
    Ok((first.freeze(), rest))
}

/// A body that holds room in an inspection budget until it has been sent (or dropped).
struct Held<B> {
    inner: B,
    _room: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose first bytes were already read: they come first, then the rest.
struct Prefixed {
    first: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        std::pin::Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// Response headers whose values are protocol metadata, never content: they are not masked (a
/// `Date` would read as a date of birth). Every other header, and every value of it, is.
const METADATA_HEADERS: [&str; 30] = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "transfer-encoding",
    "date",
    "expires",
    "last-modified",
    "age",
    "etag",
    "cache-control",
    "pragma",
    "vary",
    "server",
    "accept-ranges",
    "connection",
    "keep-alive",
    "alt-svc",
    "strict-transport-security",
    "x-request-id",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "retry-after",
    "grpc-status",
    "grpc-encoding",
    "grpc-accept-encoding",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-max-age",
];

/// Prefixes of vendor metadata headers (rate limits, model, timing) that are not masked either.
const METADATA_PREFIXES: [&str; 4] = ["x-ratelimit-", "openai-", "anthropic-", "access-control-"];

/// Masks every value of every header that may carry content (see [`METADATA_HEADERS`]).
/// `grpc-message` is masked as the text it encodes. A value no longer valid as a header after
/// masking is dropped.
fn mask_headers(profile: &crate::mask::Profile, tally: &Tally, headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            !METADATA_HEADERS.contains(&k) && !METADATA_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .cloned()
        .collect();
    for name in names {
        let grpc_message = name.as_str() == "grpc-message";
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let masked: Vec<Option<HeaderValue>> = values
            .iter()
            .map(|v| {
                let out = if grpc_message {
                    let text = percent_decode(v.as_bytes());
                    let masked = profile.mask_str(&text, tally);
                    if masked == text { v.as_bytes().to_vec() } else { percent_encode(&masked).into_bytes() }
                } else if name == header::SET_COOKIE {
                    // The cookie itself; its attributes (`Expires=<a date>`, `Path`) are metadata.
                    let b = v.as_bytes();
                    let end = b.iter().position(|&c| c == b';').unwrap_or(b.len());
                    let mut out = profile.mask_text(&b[..end], tally);
                    out.extend_from_slice(&b[end..]);
                    out
                } else if v.as_bytes().contains(&b'%') {
                    // A URL in a header (`Location: …?email=a%40b.org`) is read decoded.
                    let text = percent_decode(v.as_bytes());
                    let masked = profile.mask_str(&text, tally);
                    if masked == text { v.as_bytes().to_vec() } else { percent_encode(&masked).into_bytes() }
                } else {
                    profile.mask_text(v.as_bytes(), tally)
                };
                if out == v.as_bytes() {
                    return Some(v.clone());
                }
                changed = true;
                HeaderValue::from_bytes(&out).ok()
            })
            .collect();
        if changed {
            headers.remove(&name);
            for v in masked.into_iter().flatten() {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// Decodes `grpc-message` percent-encoding (what [`percent_encode`] writes); a `%` not followed
/// by two hex digits stays as it is, and bytes that are not UTF-8 are replaced.
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (v[i], v.get(i + 1).copied().and_then(hex), v.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `*-bin` headers (gRPC binary metadata such as `grpc-status-details-bin`): the gateway
/// cannot read them, so on a masked route they do not pass.
fn strip_binary_headers(headers: &mut HeaderMap) {
    let binary: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().ends_with("-bin")).cloned().collect();
    for name in binary {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper::header::{HeaderMap, HeaderValue};

    use super::{
        JSON_LOOK_MAX, JsonLook, MAX_MCP_SESSIONS_PER_CALLER, McpSessions, inspect_budget_kib, inspection_room,
        json_look, mask_headers, path_readings, percent_decode, percent_encode,
    };
    use crate::mask::{Detector, Profile, ProfileSpec, Tally};

    #[test]
    fn a_text_body_is_taken_for_json_only_when_it_starts_like_json() {
        for json in [&b"{\"a\":1}"[..], b"  \n{ }", b"[]", b"[\"x\"]", b"[{\"a\":[]}]", b"[[1]]", b"[ ] "] {
            assert_eq!(json_look(json, false), JsonLook::Json, "{}", String::from_utf8_lossy(json));
        }
        for text in [
            &b"[INFO] started"[..],
            b"[1] a citation",
            b"[2024-05-01 12:00] up",
            b"[-1]",
            b"[null]",
            b"{{template}}",
            b"{ x }",
            b"hello {\"a\":1}",
            b"",
            b"   ",
            b"{",
        ] {
            assert_eq!(json_look(text, false), JsonLook::Text, "{}", String::from_utf8_lossy(text));
        }
        // More may come: wait for two significant bytes, but not through endless white space.
        assert_eq!(json_look(b"  {", true), JsonLook::Undecided);
        assert_eq!(json_look(b"", true), JsonLook::Undecided);
        assert_eq!(json_look(b"  {\"", true), JsonLook::Json);
        assert_eq!(json_look(&vec![b' '; JSON_LOOK_MAX], true), JsonLook::Text);
    }

    #[test]
    fn every_content_header_value_is_masked_and_metadata_is_left_alone() {
        let det = Arc::new(Detector::new(&[], &[]).unwrap());
        let profile = Profile::new(det, ProfileSpec::redact_all("t"), None).unwrap();
        let mut h = HeaderMap::new();
        h.insert("date", HeaderValue::from_static("Wed, 02 Jan 1980 07:20:00 GMT"));
        h.insert("x-patient", HeaderValue::from_static("SSN 219-09-9999"));
        h.append("content-disposition", HeaderValue::from_static("attachment; filename=ok.txt"));
        h.append("content-disposition", HeaderValue::from_static("attachment; filename=a.b@example.org.txt"));
        h.insert("grpc-message", HeaderValue::from_static("record:%0A219-09-9999 not found"));
        h.insert("set-cookie", HeaderValue::from_static("note=SSN-219-09-9999; Expires=Wed, 02 Jan 1980 07:20:00 GMT"));
        h.insert("location", HeaderValue::from_static("/find?email=a.b%40example.org&x=1"));
        mask_headers(&profile, &Tally::default(), &mut h);
        assert_eq!(h["date"], "Wed, 02 Jan 1980 07:20:00 GMT", "metadata is not content");
        assert!(!h["x-patient"].to_str().unwrap().contains("219-09"), "{:?}", h["x-patient"]);
        let cd: Vec<_> = h.get_all("content-disposition").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(cd.len(), 2);
        assert!(cd[0].contains("ok.txt") && !cd[1].contains("example.org"), "{cd:?}");
        let cookie = h["set-cookie"].to_str().unwrap();
        assert!(!cookie.contains("219-09") && cookie.ends_with("; Expires=Wed, 02 Jan 1980 07:20:00 GMT"), "{cookie}");
        let location = percent_decode(h["location"].as_bytes());
        assert!(location.starts_with("/find?email=") && !location.contains("example.org"), "{location}");
        let msg = percent_decode(h["grpc-message"].as_bytes());
        assert!(msg.starts_with("record:\n") && !msg.contains("219-09"), "{msg}");
    }

    #[test]
    fn a_held_body_gives_its_room_back_only_when_dropped() {
        use http_body_util::{BodyExt, Full};
        let budget = Arc::new(tokio::sync::Semaphore::new(8));
        let permit = budget.clone().try_acquire_many_owned(5).unwrap();
        let body = super::Held { inner: Full::new(bytes::Bytes::from_static(b"x")), _room: Some(permit) }.boxed();
        assert_eq!(budget.available_permits(), 3, "held while the body waits to be sent");
        drop(body);
        assert_eq!(budget.available_permits(), 8);
    }

    #[test]
    fn one_caller_cannot_push_out_another_callers_mcp_sessions() {
        let mut m = McpSessions::default();
        m.insert("a-1", "alice");
        for i in 0..MAX_MCP_SESSIONS_PER_CALLER + 10 {
            m.insert(&format!("m-{i}"), "mallory");
        }
        assert_eq!(m.owner.get("a-1").map(String::as_str), Some("alice"));
        assert_eq!(m.of["mallory"].len(), MAX_MCP_SESSIONS_PER_CALLER);
        assert!(!m.owner.contains_key("m-0") && m.owner.contains_key("m-10"), "the caller's own oldest went");
        m.insert("a-1", "mallory");
        assert_eq!(m.owner["a-1"], "alice", "a session keeps the owner it was issued to");
    }

    #[test]
    fn other_readings_of_a_path_are_found() {
        assert!(path_readings("/v1/models").is_empty(), "nothing to read otherwise");
        assert_eq!(path_readings("/v1/public/..;/admin/x"), ["/v1/admin/x"]);
        assert_eq!(path_readings("/v1/admin;jsessionid=1/x"), ["/v1/admin/x"]);
        assert_eq!(path_readings("/V1/Admin"), ["/v1/admin"]);
        assert_eq!(path_readings("/v1/a%2F..%2Fadmin"), ["/v1/admin"]);
        // Each reading and each combination of them.
        assert_eq!(
            path_readings("/A%2F..%2FB;x/c"),
            ["/B;x/c", "/A%2F..%2FB/c", "/B/c", "/a%2F..%2Fb;x/c", "/b;x/c", "/a%2F..%2Fb/c", "/b/c"]
        );
    }

    #[tokio::test]
    async fn the_inspection_budget_is_waited_for_and_given_back() {
        let cfg = crate::config::Config::parse(
            "[[route]]\nname = \"h\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"127.0.0.1:1\"\n\
             max_inspect_body = 4194304\nidle_timeout = \"1s\"\n",
        )
        .unwrap();
        let route = cfg.build().unwrap().routes[0].clone();
        let budget = Arc::new(tokio::sync::Semaphore::new(inspect_budget_kib(&route)));
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(inspection_room(Some(budget.clone()), &route, None).await.unwrap());
        }
        let err = inspection_room(Some(budget.clone()), &route, None).await.unwrap_err();
        assert!(err.contains("as many bodies"), "{err}");
        held.pop();
        assert!(inspection_room(Some(budget), &route, None).await.is_ok(), "a finished body gives its room back");
    }

    #[test]
    fn request_paths_are_made_canonical_or_refused() {
        use super::canonical_path as c;
        assert_eq!(c("/v1/%61dmin/x").unwrap(), "/v1/admin/x");
        assert_eq!(c("/v1/./admin//x/").unwrap(), "/v1/admin/x/");
        assert_eq!(c("/v1/x/../../../admin").unwrap(), "/admin");
        assert_eq!(c("/v1/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(c("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9", "other escapes stay, upper-cased");
        assert_eq!(c("/").unwrap(), "/");
        assert_eq!(c("*").unwrap(), "*");
        assert_eq!(c("/v1/models/org%2fmodel").unwrap(), "/v1/models/org%2Fmodel");
        for bad in ["@evil.example:80/v1", "v1/models", "/a%5Cb", "/a%00", "/a\\b", "/a%zz", "/a%4"] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grpc_message_encoding_round_trips() {
        for s in ["plain", "two\nlines", "100% sure", "ünïcode ✓", "%zz and %4"] {
            assert_eq!(percent_decode(percent_encode(s).as_bytes()), s);
        }
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
