//! The configuration file: one TOML document, parsed into serde structs that reject unknown
//! fields, then [`Config::build`] into validated runtime types (certificates loaded, addresses
//! parsed, keys located). `airlock config check` is exactly `load` + `build` without binding.
//!
//! Relative paths in the file are resolved against the directory that holds the file.
//!
//! ```toml
//! [journal]
//! data_dir = "./airlock-data"
//! durability = "strict"            # or "batched"
//!
//! [[route]]
//! name = "pg"
//! listen = "127.0.0.1:6543"
//! protocol = "tcp"
//! upstream = "127.0.0.1:5432"
//! # tls = { cert = "server.pem", key = "server.key" }
//! # upstream_tls = { ca = "ca.pem", server_name = "db.internal" }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod access;
mod masking;
pub use access::{
    Access, ApiKeyConfig, BreakGlassConfig, CertificateRuleConfig, GrpcMatchConfig, HttpMatchConfig, IdentityConfig,
    McpMatchConfig, OidcConfig, RuleConfig, SqlMatchConfig,
};
pub use masking::{
    CustomConfig, DenyListConfig, FieldConfig, Masking, MaskingConfig, ProfileConfig, RoleMaskConfig, RouteMask,
};

use crate::identity::mtls::PrincipalFrom;
use crate::journal::{Durability, JournalSettings, default_master_key, default_signing_key};
use crate::tls;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not match the schema. The message names the line, the
    /// column and the field.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value parses but is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `route[pg].listen`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A TLS file could not be loaded.
    #[error("{field}: {source}")]
    Tls {
        /// Dotted path of the field.
        field: String,
        /// The cause.
        source: tls::TlsError,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// A duration written as text: `500ms`, `5s`, `10m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed: jiff::SignedDuration = s.parse().map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration like \"500ms\", \"5s\" or \"10m\": {e}"))
        })?;
        Duration::try_from(parsed).map(Dur).map_err(|_| serde::de::Error::custom(format!("`{s}` must not be negative")))
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The journal. Default: every field's default.
    #[serde(default)]
    pub journal: JournalConfig,
    /// The admin listener (health, readiness, metrics). Default: `127.0.0.1:9090`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Gateway-wide behaviour. Default: every field's default.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The routes, written `[[route]]`. Default: none; at least one is required.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// How callers authenticate. Default: no providers, no keys (routes without client
    /// certificates then serve `anonymous`).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The emergency role. Default: none.
    #[serde(default)]
    pub break_glass: Option<BreakGlassConfig>,
    /// Operation rules, written `[[rule]]`. Default: none.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// PHI masking: detectors, custom entities and profiles. Default: none (no route masks).
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Directory that relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Where the journal database and (by default) its keys live. Default: `./airlock-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `strict` forwards bytes only after their record is fsynced; `batched` forwards at once and
    /// fsyncs at most every 10 ms. Default: `strict`.
    #[serde(default)]
    pub durability: Durability,
    /// Sign a checkpoint after this many records. Default: `10000`.
    #[serde(default = "default_checkpoint_records")]
    pub checkpoint_every_records: u64,
    /// Sign a checkpoint at least this often while records arrive. Default: `"60s"`.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Dur,
    /// Ed25519 signing key (PKCS#8 DER), created on first start if missing.
    /// Default: `<data_dir>/keys/signing.key`.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Master key that wraps per-session data keys (32 raw bytes), created on first start if
    /// missing. Keep it off the journal's disk in production. Default: `<data_dir>/keys/master.key`.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// Seal data payloads with per-session AES-256-GCM keys. Default: `true`.
    #[serde(default = "yes")]
    pub encrypt: bool,
    /// Records that may wait for the writer thread before producers are slowed. Default: `8192`.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// Bytes of records held in memory (one RocksDB memtable per column family, up to two while
    /// one is written out) before they go to a table file. WAL files are kept up to two
    /// memtables' worth. Default: `67108864` (64 MiB); 65536 to 1073741824.
    #[serde(default = "default_memtable_bytes")]
    pub memtable_bytes: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            durability: Durability::Strict,
            checkpoint_every_records: default_checkpoint_records(),
            checkpoint_interval: default_checkpoint_interval(),
            signing_key_file: None,
            master_key_file: None,
            encrypt: true,
            queue_depth: default_queue_depth(),
            memtable_bytes: default_memtable_bytes(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve `/healthz`, `/readyz` and `/metrics`. Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address of the admin listener. Default: `127.0.0.1:9090`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { enabled: true, listen: default_admin_listen() }
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// On SIGTERM/SIGINT, how long open sessions may finish before they are closed.
    /// Default: `"30s"`.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { drain_timeout: default_drain_timeout() }
    }
}

/// The protocol driver of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Raw TCP: bytes are streamed both ways and journaled as they are.
    Tcp,
    /// HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN over TLS): each request is
    /// authenticated, decided, journaled and forwarded with the gateway-held credential.
    Http,
    /// The PostgreSQL wire protocol: the caller authenticates with a JWT or an API key as its
    /// password, every statement is classified and decided, the upstream login uses the
    /// gateway-held credential.
    Postgres,
}

impl Protocol {
    /// Name as written in the config and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Postgres => "postgres",
        }
    }
}

/// `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in the journal, metrics and CLI filters. Required.
    pub name: String,
    /// `ip:port` to accept callers on. Required.
    pub listen: String,
    /// Protocol driver. Default: `tcp`.
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// `host:port` of the protected service. Required.
    pub upstream: String,
    /// Client-facing TLS: `{ cert = "server.pem", key = "server.key" }`. Default: none (plain TCP).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// TLS to the upstream. Default: none (plain TCP).
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTlsConfig>,
    /// Most concurrent sessions; an excess caller is closed and the refusal is journaled.
    /// Default: `1024`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed to connect (and handshake) to the upstream. Default: `"5s"`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// A session with no bytes in either direction for this long is closed. Default: `"30m"`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Time allowed for the caller's TLS handshake. Default: `"10s"`.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout: Dur,
    /// Roles that may use this route (any of them). Default: empty, any authenticated principal
    /// (on a route without client authentication that includes `anonymous`).
    #[serde(default)]
    pub allow_roles: Vec<String>,
    /// What happens to a request no `[[rule]]` matches: `allow` or `deny`. Default: `allow`.
    #[serde(default)]
    pub default_effect: Option<crate::policy::Effect>,
    /// HTTP routes: serve callers without a credential (principal `anonymous`). Default: `false`,
    /// every request needs `Authorization: Bearer` with a JWT or an API key.
    #[serde(default)]
    pub anonymous: bool,
    /// HTTP routes: headers the gateway sets on every forwarded request from a secret, after the
    /// caller's own `Authorization` is removed, written `[[route.credential]]`. Default: none.
    #[serde(default)]
    pub credential: Vec<CredentialConfig>,
    /// HTTP routes: speak HTTP/2 to the upstream (gRPC needs it). Default: `false` (HTTP/1.1).
    #[serde(default)]
    pub upstream_http2: bool,
    /// HTTP routes: read JSON-RPC (MCP) request bodies before deciding, so `mcp = { tools }` rules
    /// apply to `tools/call`. Such bodies are buffered up to `max_inspect_body`; a larger one is
    /// refused (413), never forwarded uninspected. Default: `false`.
    #[serde(default)]
    pub mcp: bool,
    /// HTTP routes: the largest request body read for inspection, in bytes. Default: `1048576`.
    #[serde(default = "default_max_inspect_body")]
    pub max_inspect_body: usize,
    /// HTTP routes with masking: JSON paths (`$.token.text`, `$.candidates[*].content.parts[*].text`)
    /// of string fields that a streaming upstream sends in pieces across SSE events or NDJSON
    /// lines, beyond the shapes the masker knows (OpenAI, Anthropic, Gemini, TGI, llama.cpp,
    /// Ollama): each becomes one stream, so a value split across events is found. Default: none.
    #[serde(default)]
    pub stream_fields: Vec<String>,
    /// HTTP routes: time the upstream has to send its response head. Default: `"5m"` (a model
    /// may think before it answers).
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: Dur,
    /// HTTP routes: time a whole exchange may take, request to the end of the response body.
    /// Default: none (streams may run as long as they keep moving; `idle_timeout` still applies
    /// between frames).
    #[serde(default)]
    pub request_timeout: Option<Dur>,
    /// PostgreSQL routes: the role the gateway logs in to the upstream as. Default: `"postgres"`.
    #[serde(default)]
    pub upstream_user: Option<String>,
    /// PostgreSQL routes: that role's password (`{ env = "…" }` or `{ file = "…" }`), used with
    /// SCRAM-SHA-256 or cleartext as the upstream asks. Default: none (trust).
    #[serde(default)]
    pub upstream_password: Option<SecretSource>,
    /// PostgreSQL routes: accept the caller's password (its JWT or API key) without TLS when the
    /// caller is on loopback. Default: `false` — a password is only accepted over TLS.
    #[serde(default)]
    pub plaintext_password_on_loopback: bool,
    /// HTTP routes: take callers' bearer credentials without TLS on an address other than
    /// loopback (behind a TLS-terminating proxy on the same host, say). Default: `false` — such
    /// a route needs `tls`, or `anonymous`.
    #[serde(default)]
    pub plaintext_credentials: bool,
    /// PostgreSQL routes: send `upstream_password` in clear text when the upstream asks for it
    /// that way without `upstream_tls` (anyone who answers at the upstream's address could ask).
    /// Default: `false` — such a login is refused; SCRAM-SHA-256 never sends the password.
    #[serde(default)]
    pub upstream_cleartext_password: bool,
    /// PostgreSQL routes: the databases callers may open (the startup `database`, or the
    /// upstream user's name when it names none). Default: empty — any the upstream user may.
    #[serde(default)]
    pub databases: Vec<String>,
    /// PostgreSQL routes: roles that skip the built-in SQL guardrails (no DROP/TRUNCATE/ALTER, no
    /// UPDATE/DELETE without WHERE, no COPY … PROGRAM, one statement per query, parseable SQL).
    /// Default: none.
    #[serde(default)]
    pub sql_trusted_roles: Vec<String>,
    /// HTTP routes: keep the caller's `X-Forwarded-For` and append the peer to it (set this only
    /// when the callers are trusted proxies). Default: `false` — the header is replaced by the
    /// peer's address, so a caller cannot forge its origin.
    #[serde(default)]
    pub trust_forwarded: bool,
    /// HTTP routes: time a caller has to send a whole request head, and a new connection to
    /// begin its first request; a slower sender is cut off (slowloris). Default: `"30s"`.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// HTTP and PostgreSQL routes: the `[[masking.profile]]` that masks responses (`"none"`: not
    /// masked). Default: none — responses pass unmasked.
    #[serde(default)]
    pub mask: Option<String>,
    /// Per-role profiles, first match wins: `[{ role = "clinician", profile = "clinical" }]`.
    /// Callers without any of these roles get `mask`. Default: none.
    #[serde(default)]
    pub mask_roles: Vec<RoleMaskConfig>,
}

impl RouteConfig {
    /// Whether this route's driver decodes operations of the kind a rule table names (`http`,
    /// `grpc`, `sql`, `mcp`). Raw TCP decodes none: its rules apply to whole sessions.
    pub fn decodes(&self, table: &str) -> bool {
        match self.protocol {
            Protocol::Tcp => false,
            Protocol::Http => matches!(table, "http" | "grpc") || (table == "mcp" && self.mcp),
            Protocol::Postgres => table == "sql",
        }
    }
}

/// A secret named in the config: an environment variable or a file, never the value itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable that holds it.
    #[serde(default)]
    pub env: Option<String>,
    /// File that holds it (surrounding whitespace trimmed).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A secret's value: printed and logged as `[redacted]`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// PostgreSQL route settings.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Upstream role.
    pub upstream_user: String,
    /// Upstream password.
    pub upstream_password: Option<Secret>,
    /// Plaintext client passwords on loopback.
    pub plaintext_password_on_loopback: bool,
    /// Roles that skip the guardrails.
    pub trusted_roles: Vec<String>,
    /// The upstream password may go in clear text without TLS.
    pub upstream_cleartext_password: bool,
    /// Databases callers may open; empty: any.
    pub databases: Vec<String>,
}

/// `[[route.credential]]`: one header set from a secret. The value is never logged, never
/// journaled (the journal shows `[redacted]`) and never returned to the caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Header name, e.g. `authorization`, `x-api-key`, `api-key`. Required.
    pub header: String,
    /// Text before the secret, e.g. `"Bearer "`. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// Environment variable that holds the secret. Set this or `file`.
    #[serde(default)]
    pub env: Option<String>,
    /// File that holds the secret (surrounding whitespace trimmed). Set this or `env`.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Client-facing TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first. Required.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates: set it and every caller must present a certificate
    /// that chains to it (mutual TLS). Default: none (no client certificate asked for).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM file of certificate revocation lists from the `client_ca` authorities: a client
    /// certificate one lists is refused at the handshake, and so is one whose status no list
    /// gives. Read at start (a new list needs a restart). Only with `client_ca`. Default: none.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
    /// Which certificate field names the principal: `cn`, `san_dns`, `san_email`, `san_uri`.
    /// Only with `client_ca`. Default: `cn`.
    #[serde(default)]
    pub client_principal: Option<PrincipalFrom>,
}

/// TLS towards the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM CA bundle that the upstream's certificate must chain to. Default: the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Name the upstream's certificate must carry (and SNI). Default: the host of `upstream`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM client certificate for mutual TLS. Default: none.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM key of `cert`. Default: none.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./airlock-data")
}
fn default_checkpoint_records() -> u64 {
    10_000
}
fn default_checkpoint_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_queue_depth() -> usize {
    8192
}
fn default_memtable_bytes() -> usize {
    crate::journal::DEFAULT_MEMTABLE_BYTES
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_drain_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn default_first_byte_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_inspect_body() -> usize {
    1024 * 1024
}
fn default_max_connections() -> usize {
    1024
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(30 * 60))
}
fn default_handshake_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

// === validated runtime types ===

/// Everything the gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Journal settings.
    pub journal: JournalSettings,
    /// Admin listener address, if enabled.
    pub admin: Option<SocketAddr>,
    /// Drain deadline on shutdown.
    pub drain_timeout: Duration,
    /// Routes.
    pub routes: Vec<Arc<Route>>,
    /// Identity and policy.
    pub access: Arc<Access>,
}

/// One validated route.
pub struct Route {
    /// Name.
    pub name: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Protocol driver.
    pub protocol: Protocol,
    /// Upstream `host:port`.
    pub upstream: String,
    /// Client-facing TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Upstream TLS and the name to verify.
    pub upstream_tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// Most concurrent sessions.
    pub max_connections: usize,
    /// Upstream connect + handshake timeout.
    pub connect_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Caller TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// With client-certificate authentication: which field names the principal.
    pub client_principal: Option<PrincipalFrom>,
    /// `client_principal` was written in the file: on HTTP routes a certificate then names a
    /// caller who presents no bearer credential (otherwise only on `anonymous` routes).
    pub client_principal_named: bool,
    /// HTTP routes: serve callers without a credential.
    pub anonymous: bool,
    /// HTTP routes: headers set from secrets on every forwarded request (values are sensitive).
    pub credentials: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// HTTP routes: the credentials' secrets, which a response that carries one is withheld
    /// for (an upstream that echoes what it was sent).
    pub credential_secrets: crate::proto::echo::Secrets,
    /// HTTP routes: speak HTTP/2 to the upstream.
    pub upstream_http2: bool,
    /// HTTP routes: inspect JSON-RPC (MCP) request bodies.
    pub mcp: bool,
    /// HTTP routes: the largest request body read for inspection.
    pub max_inspect_body: usize,
    /// HTTP routes: streamed JSON fields beyond the known shapes (see `stream_fields`).
    pub stream_fields: Arc<[Vec<crate::mask::PathSeg>]>,
    /// HTTP routes: time allowed for a request head.
    pub header_timeout: Duration,
    /// HTTP routes: append to a caller's `X-Forwarded-For` instead of replacing it.
    pub trust_forwarded: bool,
    /// HTTP routes: time allowed for the upstream's response head.
    pub first_byte_timeout: Duration,
    /// HTTP routes: time allowed for a whole exchange.
    pub request_timeout: Option<Duration>,
    /// PostgreSQL routes: their settings.
    pub pg: Option<PgSettings>,
    /// HTTP routes: the upstream's TLS client configuration (with the name to verify), kept for
    /// building the pooled HTTP client.
    pub upstream_client_tls: Option<(rustls::ClientConfig, String)>,
    /// Response masking, if the route masks.
    pub mask: Option<Arc<RouteMask>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("protocol", &self.protocol)
            .field("upstream", &self.upstream)
            .field("tls", &self.tls.is_some())
            .field("upstream_tls", &self.upstream_tls.as_ref().map(|(_, n)| n))
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Most connections one route may hold open.
const MAX_CONNECTIONS: usize = 1 << 20;

impl Config {
    /// What in `new` differs from this (running) configuration and cannot be reloaded, if
    /// anything does: a reload puts identity, rules, the break-glass role and each route's
    /// `allow_roles` and `default_effect` in force; everything else (listeners, upstreams, TLS,
    /// credentials, masking, `mcp`, `sql_trusted_roles`, the journal …) is built once at start.
    /// Named as `route[pg].mcp` or `masking`.
    pub fn fixed_changes(&self, new: &Config) -> Option<String> {
        /// The path (`tls.cert`) of the first field whose value differs between two pretty
        /// `Debug` renderings: the differing line's field, and those of the lines that open it.
        fn first_difference(a: &str, b: &str) -> String {
            fn field(line: &str) -> Option<&str> {
                let (name, _) = line.trim().split_once(':')?;
                (!name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')).then_some(name)
            }
            let indent = |l: &str| l.len() - l.trim_start().len();
            let lines: Vec<&str> = a.lines().collect();
            let Some(at) = lines.iter().zip(b.lines()).position(|(x, y)| *x != y) else { return String::new() };
            let mut path = Vec::new();
            let mut below = indent(lines[at]) + 1;
            for line in lines[..=at].iter().rev() {
                if indent(line) < below
                    && let Some(name) = field(line)
                {
                    path.push(name);
                    below = indent(line);
                }
            }
            path.reverse();
            path.join(".")
        }
        let fixed = |r: &RouteConfig| {
            let mut r = r.clone();
            r.allow_roles.clear();
            r.default_effect = None;
            format!("{r:#?}")
        };
        let names = |c: &Config| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        if names(self) != names(new) {
            return Some("the routes (their names or order)".to_owned());
        }
        for (old, now) in self.routes.iter().zip(&new.routes) {
            let (a, b) = (fixed(old), fixed(now));
            if a != b {
                return Some(format!("route[{}].{}", old.name, first_difference(&a, &b)));
            }
        }
        let sections = [
            ("journal", format!("{:#?}", self.journal), format!("{:#?}", new.journal)),
            ("admin", format!("{:#?}", self.admin), format!("{:#?}", new.admin)),
            ("gateway", format!("{:#?}", self.gateway), format!("{:#?}", new.gateway)),
            ("masking", format!("{:#?}", self.masking), format!("{:#?}", new.masking)),
        ];
        sections.into_iter().find(|(_, a, b)| a != b).map(|(name, a, b)| {
            let field = first_difference(&a, &b);
            if field.is_empty() { name.to_owned() } else { format!("{name}.{field}") }
        })
    }

    /// Reads and parses a file. Errors name the line, column and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut cfg = Self::parse(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(cfg)
    }

    /// Parses TOML text; relative paths resolve against the current directory.
    pub fn parse(text: &str) -> Result<Self, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }

    /// The journal data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.journal.data_dir)
    }

    /// Validates everything and loads certificates and keys. Binds nothing.
    pub fn build(&self) -> Result<Settings, ConfigError> {
        if self.routes.is_empty() {
            return Err(invalid("route", "no [[route]] is configured; add at least one"));
        }
        let j = &self.journal;
        let data_dir = self.data_dir();
        if j.queue_depth == 0 {
            return Err(invalid("journal.queue_depth", "must be at least 1"));
        }
        if !(64 << 10..=1 << 30).contains(&j.memtable_bytes) {
            return Err(invalid("journal.memtable_bytes", "must be from 65536 (64 KiB) to 1073741824 (1 GiB)"));
        }
        if j.checkpoint_every_records == 0 {
            return Err(invalid("journal.checkpoint_every_records", "must be at least 1"));
        }
        if j.checkpoint_interval.0.is_zero() {
            return Err(invalid("journal.checkpoint_interval", "must be longer than zero"));
        }
        let journal = JournalSettings {
            signing_key: j
                .signing_key_file
                .as_deref()
                .map_or_else(|| default_signing_key(&data_dir), |p| self.resolve(p)),
            master_key: j.master_key_file.as_deref().map_or_else(|| default_master_key(&data_dir), |p| self.resolve(p)),
            data_dir,
            durability: j.durability,
            checkpoint_every_records: j.checkpoint_every_records,
            checkpoint_interval: j.checkpoint_interval.0,
            encrypt: j.encrypt,
            queue_depth: j.queue_depth,
            memtable_bytes: j.memtable_bytes,
        };
        let admin = if self.admin.enabled { Some(parse_addr("admin.listen", &self.admin.listen)?) } else { None };
        let mut names = HashSet::new();
        let mut listens = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        let masking = self.build_masking()?;
        for r in &self.routes {
            let route = self.build_route(r, &masking)?;
            if !names.insert(route.name.clone()) {
                return Err(invalid(format!("route[{}].name", r.name), "two routes have this name"));
            }
            // Port 0 asks the OS for a free port: several routes may say so.
            if route.listen.port() != 0 && !listens.insert(route.listen) {
                return Err(invalid(format!("route[{}].listen", r.name), "another route listens on this address"));
            }
            routes.push(Arc::new(route));
        }
        let access = self.build_access()?;
        Ok(Settings { journal, admin, drain_timeout: self.gateway.drain_timeout.0, routes, access })
    }

    fn build_route(&self, r: &RouteConfig, masking: &Masking) -> Result<Route, ConfigError> {
        let field = |f: &str| format!("route[{}].{f}", r.name);
        if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(invalid(field("name"), "use letters, digits, `-`, `_` and `.` only"));
        }
        let listen = parse_addr(&field("listen"), &r.listen)?;
        let (host, _port) = split_host_port(&r.upstream)
            .ok_or_else(|| invalid(field("upstream"), format!("`{}` is not host:port", r.upstream)))?;
        if r.max_connections == 0 {
            return Err(invalid(field("max_connections"), "must be at least 1"));
        }
        // A semaphore holds at most this many permits; more would stop the route's listener.
        if r.max_connections > MAX_CONNECTIONS {
            return Err(invalid(field("max_connections"), format!("must be at most {MAX_CONNECTIONS}")));
        }
        // A zero timeout would refuse every caller (or every request) at once.
        for (name, d) in [
            ("connect_timeout", r.connect_timeout),
            ("idle_timeout", r.idle_timeout),
            ("tls_handshake_timeout", r.tls_handshake_timeout),
            ("header_timeout", r.header_timeout),
            ("first_byte_timeout", r.first_byte_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(field(name), "must be longer than zero"));
            }
        }
        if r.request_timeout.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid(field("request_timeout"), "must be longer than zero"));
        }
        // HTTP routes offer HTTP/2 and HTTP/1.1 by ALPN.
        let alpn: &[&[u8]] = match r.protocol {
            Protocol::Http => &[b"h2", b"http/1.1"],
            Protocol::Tcp | Protocol::Postgres => &[],
        };
        // Bearer tokens and API keys (and the PHI in the answers) would cross the network in
        // clear text.
        if r.protocol == Protocol::Http
            && r.tls.is_none()
            && !r.anonymous
            && !listen.ip().is_loopback()
            && !r.plaintext_credentials
        {
            return Err(invalid(
                field("tls"),
                format!(
                    "{listen} is reachable from the network, and callers would send their credentials without TLS: \
                     set `tls`, listen on loopback, or set `plaintext_credentials = true` behind a TLS proxy"
                ),
            ));
        }
        // Settings about client certificates that no `client_ca` asks for.
        if let Some(t) = r.tls.as_ref().filter(|t| t.client_ca.is_none()) {
            for (set, name, what) in [
                (t.client_crl.is_some(), "client_crl", "revokes client certificates"),
                (t.client_principal.is_some(), "client_principal", "names callers by their client certificates"),
            ] {
                if set {
                    return Err(invalid(
                        field(&format!("tls.{name}")),
                        format!("{what}, but no `client_ca` asks for one: set `client_ca` too"),
                    ));
                }
            }
        }
        let tls = match &r.tls {
            None => None,
            Some(t) => Some(
                tls::acceptor_with_alpn(
                    &self.resolve(&t.cert),
                    &self.resolve(&t.key),
                    t.client_ca.as_deref().map(|p| self.resolve(p)).as_deref(),
                    t.client_crl.as_deref().map(|p| self.resolve(p)).as_deref(),
                    alpn,
                )
                .map_err(|source| ConfigError::Tls { field: field("tls"), source })?,
            ),
        };
        let upstream_tls = match &r.upstream_tls {
            None => None,
            Some(t) => {
                let client_auth = match (&t.cert, &t.key) {
                    (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
                    (None, None) => None,
                    _ => return Err(invalid(field("upstream_tls"), "set both `cert` and `key`, or neither")),
                };
                let connector = tls::connector(t.ca.as_deref().map(|p| self.resolve(p)).as_deref(), client_auth)
                    .map_err(|source| ConfigError::Tls { field: field("upstream_tls"), source })?;
                let name = t.server_name.clone().unwrap_or_else(|| host.to_string());
                let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                    invalid(field("upstream_tls.server_name"), format!("`{name}` is not a DNS name or IP"))
                })?;
                Some((connector, server_name))
            }
        };
        let mut credentials = Vec::new();
        let mut credential_secrets = Vec::new();
        for (i, c) in r.credential.iter().enumerate() {
            let f = || field(&format!("credential[{i}]"));
            let name = hyper::header::HeaderName::from_bytes(c.header.as_bytes())
                .map_err(|_| invalid(f(), format!("`{}` is not a header name", c.header)))?;
            let secret = self.read_secret(&SecretSource { env: c.env.clone(), file: c.file.clone() }, &f())?;
            // The message never includes the value.
            let mut value = hyper::header::HeaderValue::from_str(&format!("{}{secret}", c.prefix))
                .map_err(|_| invalid(f(), "the secret is not a valid header value"))?;
            value.set_sensitive(true);
            credentials.push((name, value));
            credential_secrets.push(secret.into_bytes().into_boxed_slice());
        }
        if r.protocol == Protocol::Tcp && (!credentials.is_empty() || r.anonymous || r.upstream_http2 || r.mcp) {
            return Err(invalid(
                field("credential"),
                "credential, anonymous, upstream_http2 and mcp apply to http routes",
            ));
        }
        let mask = masking.route(&r.name, r.mask.as_deref(), &r.mask_roles)?;
        if mask.is_some() && r.protocol == Protocol::Tcp {
            return Err(invalid(field("mask"), "masking applies to http and postgres routes (raw TCP has no fields)"));
        }
        let upstream_password = match &r.upstream_password {
            None => None,
            Some(src) => Some(self.read_secret(src, &field("upstream_password"))?),
        };
        let upstream_client_tls = match (&r.upstream_tls, r.protocol) {
            (Some(t), Protocol::Http) => {
                let client_auth = match (&t.cert, &t.key) {
                    (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
                    _ => None,
                };
                let cfg = tls::client_config(t.ca.as_deref().map(|p| self.resolve(p)).as_deref(), client_auth)
                    .map_err(|source| ConfigError::Tls { field: field("upstream_tls"), source })?;
                Some((cfg, t.server_name.clone().unwrap_or_else(|| host.to_string())))
            }
            _ => None,
        };
        Ok(Route {
            name: r.name.clone(),
            listen,
            protocol: r.protocol,
            upstream: r.upstream.clone(),
            tls,
            upstream_tls,
            max_connections: r.max_connections,
            connect_timeout: r.connect_timeout.0,
            idle_timeout: r.idle_timeout.0,
            tls_handshake_timeout: r.tls_handshake_timeout.0,
            client_principal: r
                .tls
                .as_ref()
                .filter(|t| t.client_ca.is_some())
                .map(|t| t.client_principal.unwrap_or_default()),
            client_principal_named: r.tls.as_ref().is_some_and(|t| t.client_principal.is_some()),
            anonymous: r.anonymous,
            credentials,
            credential_secrets: crate::proto::echo::Secrets::new(&credential_secrets),
            upstream_http2: r.upstream_http2,
            mcp: r.mcp,
            max_inspect_body: r.max_inspect_body,
            stream_fields: r
                .stream_fields
                .iter()
                .map(|f| match crate::mask::FieldSelector::path(f) {
                    Some(crate::mask::FieldSelector::Path(segs)) if !segs.is_empty() => Ok(segs),
                    _ => {
                        Err(invalid("route.stream_fields", format!("`{f}` is not a JSON path such as `$.token.text`")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
                .into(),
            header_timeout: r.header_timeout.0,
            trust_forwarded: r.trust_forwarded,
            first_byte_timeout: r.first_byte_timeout.0,
            pg: (r.protocol == Protocol::Postgres).then(|| PgSettings {
                upstream_user: r.upstream_user.clone().unwrap_or_else(|| "postgres".into()),
                upstream_password: upstream_password.clone().map(Secret),
                plaintext_password_on_loopback: r.plaintext_password_on_loopback,
                trusted_roles: r.sql_trusted_roles.clone(),
                upstream_cleartext_password: r.upstream_cleartext_password,
                databases: r.databases.clone(),
            }),
            request_timeout: r.request_timeout.map(|d| d.0),
            upstream_client_tls,
            mask,
        })
    }
}

impl Config {
    /// A secret's value, from its environment variable or file, surrounding whitespace trimmed
    /// either way (a secret made from a file often ends in a newline). A file that others than
    /// its owner may read is used, with a warning.
    fn read_secret(&self, src: &SecretSource, field: &str) -> Result<String, ConfigError> {
        let value = match (&src.env, &src.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| invalid(field, format!("environment variable `{var}` is not set")))?
                .trim()
                .to_owned(),
            (None, Some(path)) => {
                use std::os::unix::fs::PermissionsExt as _;
                let path = self.resolve(path);
                if let Ok(meta) = std::fs::metadata(&path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        field,
                        file = %path.display(),
                        mode = format!("{:o}", meta.permissions().mode() & 0o777),
                        "A secret file is readable by others than its owner; chmod 600 it."
                    );
                }
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned()
            }
            _ => return Err(invalid(field, "set exactly one of `env` and `file`")),
        };
        if value.is_empty() {
            return Err(invalid(field, "the secret is empty"));
        }
        Ok(value)
    }
}

fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| invalid(field, format!("`{s}` is not ip:port (for example 127.0.0.1:6543)")))
}

/// Splits `host:port` / `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[journal]
data_dir = "./airlock-data"
durability = "strict"

[[route]]
name = "pg"
listen = "127.0.0.1:6543"
protocol = "tcp"
upstream = "127.0.0.1:5432"
"#;

    #[test]
    fn a_reload_names_what_only_a_restart_applies() {
        let base = format!("{MINIMAL}allow_roles = [\"a\"]\n");
        let running = Config::parse(&base).unwrap();
        let changed = |text: &str| running.fixed_changes(&Config::parse(text).unwrap());
        assert_eq!(changed(&base), None);
        // What a reload applies.
        assert_eq!(changed(&base.replace("[\"a\"]", "[\"a\", \"b\"]")), None);
        assert_eq!(changed(&format!("{base}default_effect = \"deny\"\n")), None);
        let key = crate::identity::apikey::format_hash("k");
        assert_eq!(changed(&format!("{base}\n[[identity.api_key]]\nname = \"k\"\nsha256 = \"{key}\"\n")), None);
        // What it does not.
        assert_eq!(changed(&format!("{base}idle_timeout = \"1m\"\n")).as_deref(), Some("route[pg].idle_timeout"));
        assert_eq!(changed(&base.replace("127.0.0.1:5432", "127.0.0.1:5433")).as_deref(), Some("route[pg].upstream"));
        let batched = base.replace("durability = \"strict\"", "durability = \"batched\"");
        assert_eq!(changed(&batched).as_deref(), Some("journal.durability"));
        assert_eq!(
            changed(&base.replace("name = \"pg\"", "name = \"db\"")).as_deref(),
            Some("the routes (their names or order)")
        );
    }

    #[test]
    fn minimal_config_builds_with_defaults() {
        let cfg = Config::parse(MINIMAL).unwrap();
        let s = cfg.build().unwrap();
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.routes[0].max_connections, 1024);
        assert_eq!(s.routes[0].idle_timeout, Duration::from_secs(1800));
        assert_eq!(s.journal.durability, Durability::Strict);
        assert_eq!(s.journal.memtable_bytes, 64 << 20);
        assert_eq!(s.admin, Some("127.0.0.1:9090".parse().unwrap()));
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = MINIMAL.replace("protocol = \"tcp\"", "protocl = \"tcp\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 9"), "{err}");
        assert!(err.contains("protocl"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let text = MINIMAL.replace("durability = \"strict\"", "durability = \"sometimes\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("sometimes"), "{err}");

        let text = MINIMAL.replace("\"127.0.0.1:6543\"", "\"localhost\"");
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.starts_with("route[pg].listen"), "{err}");

        let text = format!("{MINIMAL}idle_timeout = \"soon\"\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("soon") && err.contains("line 11"), "{err}");

        let text = MINIMAL.replace("durability = \"strict\"", "memtable_bytes = 4096");
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.starts_with("journal.memtable_bytes"), "{err}");

        let text = format!("{MINIMAL}stream_fields = [\"$.token.text\", \"token.text\"]\n");
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.contains("stream_fields") && err.contains("`token.text`"), "{err}");
        let text = MINIMAL.replace("durability = \"strict\"", "memtable_bytes = 1048576");
        assert_eq!(Config::parse(&text).unwrap().build().unwrap().journal.memtable_bytes, 1 << 20);

        // Values that would start but serve nothing.
        for (line, field) in [
            ("max_connections = 3000000000000000000", "route[pg].max_connections"),
            ("tls_handshake_timeout = \"0s\"", "route[pg].tls_handshake_timeout"),
            ("header_timeout = \"0s\"", "route[pg].header_timeout"),
            ("first_byte_timeout = \"0s\"", "route[pg].first_byte_timeout"),
            ("request_timeout = \"0s\"", "route[pg].request_timeout"),
        ] {
            let err = Config::parse(&format!("{MINIMAL}{line}\n")).unwrap().build().unwrap_err().to_string();
            assert!(err.starts_with(field), "{line}: {err}");
        }
    }

    #[test]
    fn duplicate_routes_and_missing_certs_are_refused() {
        let text = format!("{MINIMAL}{}", MINIMAL.split("[[route]]").nth(1).map(|r| format!("[[route]]{r}")).unwrap());
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.contains("two routes"), "{err}");

        let text = format!("{MINIMAL}tls = {{ cert = \"/nonexistent/server.pem\", key = \"/nonexistent/k.pem\" }}\n");
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.contains("route[pg].tls") && err.contains("/nonexistent/server.pem"), "{err}");

        // An HTTP route on the network without TLS, for callers with credentials.
        let http =
            MINIMAL.replace("protocol = \"tcp\"", "protocol = \"http\"").replace("127.0.0.1:6543", "0.0.0.0:6543");
        let err = Config::parse(&http).unwrap().build().unwrap_err().to_string();
        assert!(err.starts_with("route[pg].tls") && err.contains("plaintext_credentials"), "{err}");
        for fine in [
            format!("{http}plaintext_credentials = true\n"),
            format!("{http}anonymous = true\n"),
            http.replace("0.0.0.0:6543", "127.0.0.1:6543"),
        ] {
            assert!(Config::parse(&fine).unwrap().build().is_ok(), "{fine}");
        }

        // A principal read from client certificates that are never asked for.
        let text = format!(
            "{MINIMAL}tls = {{ cert = \"/nonexistent/server.pem\", key = \"/nonexistent/k.pem\", client_principal = \"san_dns\" }}\n"
        );
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.contains("route[pg].tls.client_principal") && err.contains("client_ca"), "{err}");
        let text = format!(
            "{MINIMAL}tls = {{ cert = \"/nonexistent/server.pem\", key = \"/nonexistent/k.pem\", client_crl = \"crl.pem\" }}\n"
        );
        let err = Config::parse(&text).unwrap().build().unwrap_err().to_string();
        assert!(err.contains("route[pg].tls.client_crl") && err.contains("client_ca"), "{err}");
    }
}
