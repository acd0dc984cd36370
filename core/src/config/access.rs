//! The identity and access parts of the configuration: `[identity]`, `[break_glass]`, `[[rule]]`
//! and each route's `allow_roles` / `default_effect`. This is everything a SIGHUP reloads.
//!
//! ```toml
//! [[identity.oidc]]
//! name = "corp"
//! issuer = "https://idp.example.org/realms/ehr"
//! audiences = ["airlock"]
//! roles_claim = "realm_access.roles"
//! role_map = { "ehr-readers" = ["clinician"] }
//!
//! [[identity.api_key]]
//! name = "etl-bot"
//! sha256 = "sha256:…"            # airlock identity hash-key < key.txt
//! roles = ["etl"]
//!
//! [[identity.certificate]]
//! subject = "*.svc.internal"
//! roles = ["service"]
//!
//! [break_glass]
//! role = "emergency"
//! webhook = "https://pager.example.org/hooks/airlock"
//!
//! [[rule]]
//! id = "agents-no-ddl"
//! effect = "deny"
//! roles = ["agent"]
//! sql = { kinds = ["ddl"] }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur, RouteConfig, invalid};
use crate::identity::apikey::{ApiKey, parse_hash};
use crate::identity::jwks::KeySourceSettings;
use crate::identity::jwt::{ASYMMETRIC, DEFAULT_MAX_TOKEN_BYTES, OidcSettings};
use crate::identity::mtls::CertificateRule;
use crate::identity::{ApiKeys, CertificateMapper, Identity, OidcProvider};
use crate::outbound::HttpClient;
use crate::policy::{Effect, OperationMatch, Policy, RouteAccess, Rule, SqlKind, glob};

/// `[identity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// OpenID providers, written `[[identity.oidc]]`. Default: none.
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
    /// API keys, written `[[identity.api_key]]`. Default: none.
    #[serde(default)]
    pub api_key: Vec<ApiKeyConfig>,
    /// Client-certificate name → roles, written `[[identity.certificate]]`. Default: none (a
    /// verified certificate gets a principal with no roles).
    #[serde(default)]
    pub certificate: Vec<CertificateRuleConfig>,
    /// PEM CA bundle for https calls to identity providers and webhooks. Default: system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Deadline of each call to an identity provider or webhook. Default: `"5s"`.
    #[serde(default = "default_http_timeout")]
    pub http_timeout: Dur,
}

/// `[[identity.oidc]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Name used in principals (`oidc:<name>/<sub>`) and the journal. Required.
    pub name: String,
    /// Issuer URL, exactly as tokens carry it in `iss`. Required.
    pub issuer: String,
    /// Accepted `aud` values. Required (at least one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted authorized parties (`azp`, or `client_id` in access tokens). Default: any.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Claim with the caller's groups: a top-level name (namespaced URLs allowed) or a dotted path
    /// like `realm_access.roles`. Default: `"groups"`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// IdP group → Airlock roles. Default: empty, and groups are used as roles unchanged.
    #[serde(default)]
    pub role_map: BTreeMap<String, Vec<String>>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`. Default: `"60s"`.
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Accepted algorithms, from RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    /// Default: all of them. `none` and HMAC are never accepted.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Longest token accepted, in bytes. Default: `8192`.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// JWKS URL. Default: discovered from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A JWKS document on disk instead of fetching (air-gapped set-ups). Default: none.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// How long fetched keys are trusted before they must be fetched again; if that fails they
    /// are no longer used. Default: `"10m"`.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age: Dur,
    /// Least time between fetches triggered by an unknown `kid` or a failure. Default: `"30s"`.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_interval: Dur,
}

/// `[[identity.api_key]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The service account's name (principal subject). Required.
    pub name: String,
    /// `sha256:<hex>` of the key, as `airlock identity hash-key` prints it. Required.
    pub sha256: String,
    /// Roles granted. Default: none.
    #[serde(default)]
    pub roles: Vec<String>,
    /// End of validity, RFC 3339 (`2027-01-01T00:00:00Z`). Default: none.
    #[serde(default)]
    pub expires: Option<String>,
}

/// `[[identity.certificate]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRuleConfig {
    /// Glob over the name the route takes from the certificate (`*.svc.internal`). Required.
    pub subject: String,
    /// Roles granted. Required.
    pub roles: Vec<String>,
}

/// `[break_glass]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// The emergency role. Its holders skip approval holds (never denials, never masking); every
    /// record of their sessions is marked. Required.
    pub role: String,
    /// URL that receives a JSON POST when a break-glass session starts. Default: none (logged only).
    #[serde(default)]
    pub webhook: Option<String>,
}

/// `[[rule]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique id, named in every decision it makes. Required.
    pub id: String,
    /// `allow`, `deny` or `require_approval`. Required.
    pub effect: Effect,
    /// Shown to the caller and journaled. Default: `"rule <id>"`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Routes it applies to. Default: all.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Roles it applies to (any of them). Default: every principal.
    #[serde(default)]
    pub roles: Vec<String>,
    /// HTTP operations: `{ methods = ["DELETE"], path = "/v1/**" }`. At most one operation table.
    #[serde(default)]
    pub http: Option<HttpMatchConfig>,
    /// gRPC operations: `{ service = "inference.*", method = "ModelInfer" }`.
    #[serde(default)]
    pub grpc: Option<GrpcMatchConfig>,
    /// SQL statements: `{ kinds = ["ddl"], tables = ["patients"], columns = ["ssn"] }`.
    #[serde(default)]
    pub sql: Option<SqlMatchConfig>,
    /// MCP tool calls: `{ tools = ["delete_*"] }`.
    #[serde(default)]
    pub mcp: Option<McpMatchConfig>,
}

/// HTTP part of a rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatchConfig {
    /// Methods. Default: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path glob; `*` stays within a segment, `**` crosses them. Default: any.
    #[serde(default)]
    pub path: Option<String>,
}

/// gRPC part of a rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatchConfig {
    /// Service glob. Default: any.
    #[serde(default)]
    pub service: Option<String>,
    /// Method glob. Default: any.
    #[serde(default)]
    pub method: Option<String>,
}

/// SQL part of a rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMatchConfig {
    /// Statement kinds. Default: any.
    #[serde(default)]
    pub kinds: Vec<SqlKind>,
    /// Table globs. Default: any.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Column globs. Default: any.
    #[serde(default)]
    pub columns: Vec<String>,
}

/// MCP part of a rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpMatchConfig {
    /// Tool-name globs. Default: any.
    #[serde(default)]
    pub tools: Vec<String>,
}

fn default_http_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_roles_claim() -> String {
    "groups".into()
}
fn default_leeway() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_jwks_max_age() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_jwks_min_refresh() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            oidc: Vec::new(),
            api_key: Vec::new(),
            certificate: Vec::new(),
            ca: None,
            http_timeout: default_http_timeout(),
        }
    }
}

/// Everything that decides who a caller is and what it may do. Swapped as a whole on reload;
/// a session keeps the `Arc` it started with for its admission, and asks again per request.
#[derive(Debug)]
pub struct Access {
    /// Authentication.
    pub identity: Identity,
    /// Authorization.
    pub policy: Policy,
    /// The request-phase filter chain (the policy first; plugins later).
    pub chain: crate::filter::FilterChain,
    /// Break-glass webhook URL.
    pub break_glass_webhook: Option<String>,
    /// Outbound HTTP (JWKS, discovery, webhooks).
    pub http: HttpClient,
}

fn check_name(field: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(field, format!("`{s}` must be 1–128 characters without spaces")));
    }
    Ok(())
}

fn check_url(field: &str, s: &str) -> Result<(), ConfigError> {
    match s.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(invalid(field, format!("`{s}` is not an http(s) URL"))),
    }
}

impl Access {
    /// The decision for `req` by `principal` on `route`, from the filter chain.
    pub fn decide(
        &self,
        route: &str,
        principal: &crate::identity::Principal,
        req: &crate::policy::Request,
    ) -> crate::policy::Decision {
        self.chain.decide(&crate::filter::RequestCx { route, principal }, req, &self.policy.version)
    }
}

impl Config {
    /// Builds identity and policy. Separate from [`Config::build`] so a reload can rebuild only
    /// this.
    pub fn build_access(&self) -> Result<Arc<Access>, ConfigError> {
        let id = &self.identity;
        let tls = crate::tls::outbound_client_config(id.ca.as_deref().map(|p| self.resolve(p)).as_deref())
            .map_err(|source| ConfigError::Tls { field: "identity.ca".into(), source })?;
        let http = HttpClient::new(tls, id.http_timeout.0);

        let mut names = HashSet::new();
        let mut issuers = HashSet::new();
        let mut oidc = Vec::new();
        for (i, o) in id.oidc.iter().enumerate() {
            let field = |f: &str| format!("identity.oidc[{i}].{f}");
            check_name(&field("name"), &o.name)?;
            if !names.insert(o.name.clone()) {
                return Err(invalid(field("name"), "two providers have this name"));
            }
            check_url(&field("issuer"), &o.issuer)?;
            if !issuers.insert(o.issuer.clone()) {
                return Err(invalid(field("issuer"), "two providers have this issuer"));
            }
            if o.audiences.is_empty() {
                return Err(invalid(field("audiences"), "list at least one accepted audience"));
            }
            let algorithms = if o.algorithms.is_empty() {
                ASYMMETRIC.to_vec()
            } else {
                o.algorithms
                    .iter()
                    .map(|a| {
                        a.parse::<Algorithm>().ok().filter(|alg| ASYMMETRIC.contains(alg)).ok_or_else(|| {
                            invalid(field("algorithms"), format!("`{a}` is not one of RS/PS256-512, ES256/384, EdDSA"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            if o.max_token_bytes < 256 || o.max_token_bytes > 1 << 20 {
                return Err(invalid(field("max_token_bytes"), "must be between 256 and 1048576"));
            }
            if let Some(u) = &o.jwks_uri {
                check_url(&field("jwks_uri"), u)?;
                if o.issuer.starts_with("https://") && !u.starts_with("https://") {
                    return Err(invalid(field("jwks_uri"), "an https issuer's keys must be fetched over https"));
                }
            }
            if o.jwks_max_age.0.is_zero() || o.jwks_min_refresh_interval.0.is_zero() {
                return Err(invalid(field("jwks_max_age"), "jwks_max_age and jwks_min_refresh_interval must be > 0"));
            }
            if o.jwks_max_age.0 < o.jwks_min_refresh_interval.0 {
                return Err(invalid(
                    field("jwks_max_age"),
                    "must be at least jwks_min_refresh_interval, or keys would expire between allowed refreshes",
                ));
            }
            let settings = OidcSettings {
                name: o.name.clone(),
                audiences: o.audiences.clone(),
                client_ids: o.client_ids.clone(),
                roles_claim: o.roles_claim.clone(),
                role_map: o.role_map.clone(),
                leeway: o.leeway.0,
                algorithms,
                max_token_bytes: o.max_token_bytes,
                keys: KeySourceSettings {
                    issuer: o.issuer.clone(),
                    jwks_uri: o.jwks_uri.clone(),
                    max_age: o.jwks_max_age.0,
                    min_refresh_interval: o.jwks_min_refresh_interval.0,
                },
            };
            let provider = match &o.jwks_file {
                None => OidcProvider::new(settings, http.clone()),
                Some(path) => {
                    let path = self.resolve(path);
                    let doc = std::fs::read(&path)
                        .map_err(|e| invalid(field("jwks_file"), format!("cannot read {}: {e}", path.display())))?;
                    OidcProvider::with_static_keys(settings, &doc)
                        .map_err(|e| invalid(field("jwks_file"), format!("{}: {e}", path.display())))?
                }
            };
            oidc.push(Arc::new(provider));
        }

        let mut keys = Vec::new();
        let mut key_names = HashSet::new();
        for (i, k) in id.api_key.iter().enumerate() {
            let field = |f: &str| format!("identity.api_key[{i}].{f}");
            check_name(&field("name"), &k.name)?;
            if !key_names.insert(k.name.clone()) {
                return Err(invalid(field("name"), "two API keys have this name"));
            }
            let sha256 = parse_hash(&k.sha256).ok_or_else(|| {
                invalid(field("sha256"), "expected `sha256:` and 64 hex digits (see `airlock identity hash-key`)")
            })?;
            let expires_at = match &k.expires {
                None => None,
                Some(t) => Some(
                    t.parse::<jiff::Timestamp>()
                        .map_err(|e| invalid(field("expires"), format!("`{t}` is not an RFC 3339 time: {e}")))?
                        .as_second(),
                ),
            };
            keys.push(ApiKey { name: k.name.clone(), sha256, roles: k.roles.iter().cloned().collect(), expires_at });
        }

        let mut cert_rules = Vec::new();
        for (i, c) in id.certificate.iter().enumerate() {
            let rule = CertificateRule::new(&c.subject, c.roles.clone())
                .map_err(|e| invalid(format!("identity.certificate[{i}].subject"), e))?;
            cert_rules.push(rule);
        }

        let policy = self.build_policy()?;
        if let Some(bg) = &self.break_glass
            && let Some(url) = &bg.webhook
        {
            check_url("break_glass.webhook", url)?;
        }
        Ok(Arc::new(Access {
            identity: Identity { oidc, api_keys: ApiKeys::new(keys), certificates: CertificateMapper::new(cert_rules) },
            chain: crate::filter::FilterChain::new(vec![Box::new(crate::filter::PolicyFilter(policy.clone()))]),
            policy,
            break_glass_webhook: self.break_glass.as_ref().and_then(|b| b.webhook.clone()),
            http,
        }))
    }

    fn build_policy(&self) -> Result<Policy, ConfigError> {
        let route_names: HashSet<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        let mut routes = BTreeMap::new();
        for r in &self.routes {
            routes.insert(
                r.name.clone(),
                RouteAccess { allow_roles: r.allow_roles.iter().cloned().collect(), default_effect: r.default_effect },
            );
        }
        let mut ids = HashSet::new();
        let mut rules = Vec::new();
        for (i, rc) in self.rules.iter().enumerate() {
            let field = |f: &str| format!("rule[{}].{f}", if rc.id.is_empty() { i.to_string() } else { rc.id.clone() });
            check_name(&field("id"), &rc.id)?;
            if rc.id.starts_with("route:") || rc.id.starts_with("authn:") {
                return Err(invalid(field("id"), "ids starting with `route:` or `authn:` are reserved"));
            }
            if !ids.insert(rc.id.clone()) {
                return Err(invalid(field("id"), "two rules have this id"));
            }
            for r in &rc.routes {
                if !route_names.contains(r.as_str()) {
                    return Err(invalid(field("routes"), format!("no route is named `{r}`")));
                }
            }
            let tables = [rc.http.is_some(), rc.grpc.is_some(), rc.sql.is_some(), rc.mcp.is_some()];
            if tables.iter().filter(|b| **b).count() > 1 {
                return Err(invalid(field("http"), "a rule matches one protocol: use one of http, grpc, sql, mcp"));
            }
            // An operation table only means something on a route whose driver decodes that
            // protocol. A rule no route can ever match is a silent hole in the policy: refuse it.
            let decoding = [
                (rc.http.is_some(), "http"),
                (rc.grpc.is_some(), "grpc"),
                (rc.sql.is_some(), "sql"),
                (rc.mcp.is_some(), "mcp"),
            ];
            if let Some((_, table)) = decoding.iter().find(|(set, _)| *set) {
                let applicable: Vec<&RouteConfig> =
                    self.routes.iter().filter(|r| rc.routes.is_empty() || rc.routes.contains(&r.name)).collect();
                // A tool-call rule over an HTTP route that does not read tool calls (`mcp = true`)
                // would let every call there through undecided: each HTTP route it covers must.
                if *table == "mcp"
                    && rc.effect != Effect::Allow
                    && let Some(r) = applicable.iter().find(|r| r.decodes("http") && !r.decodes("mcp"))
                {
                    return Err(invalid(
                        field("mcp"),
                        format!(
                            "route `{}` is an HTTP route without `mcp = true`, so tool calls on it are never read \
                             and this rule would never apply there; set `mcp = true` on it or scope the rule with \
                             `routes`",
                            r.name
                        ),
                    ));
                }
                if !applicable.iter().any(|r| r.decodes(table)) {
                    let protocols: BTreeSet<&str> = applicable.iter().map(|r| r.protocol.as_str()).collect();
                    return Err(invalid(
                        field(table),
                        format!(
                            "no route this rule applies to decodes {table} (their protocols: {}); the rule could \
                             never match. Scope it with `routes`, or drop the `{table}` table to match whole sessions",
                            protocols.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            let g = |pattern: &str, sep: bool, f: &str| glob(pattern, sep).map_err(|e| invalid(field(f), e));
            let operation = if let Some(h) = &rc.http {
                OperationMatch::Http {
                    methods: h.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                    path: h.path.as_deref().map(|p| g(p, true, "http.path")).transpose()?,
                }
            } else if let Some(gr) = &rc.grpc {
                OperationMatch::Grpc {
                    service: gr.service.as_deref().map(|p| g(p, false, "grpc.service")).transpose()?,
                    method: gr.method.as_deref().map(|p| g(p, false, "grpc.method")).transpose()?,
                }
            } else if let Some(s) = &rc.sql {
                OperationMatch::Sql {
                    kinds: s.kinds.iter().copied().collect(),
                    tables: s
                        .tables
                        .iter()
                        .map(|p| g(&p.to_lowercase(), false, "sql.tables"))
                        .collect::<Result<_, _>>()?,
                    bare_tables: s
                        .tables
                        .iter()
                        .filter_map(|p| p.rsplit_once('.').map(|(_, last)| last.to_lowercase()))
                        .map(|p| g(&p, false, "sql.tables"))
                        .collect::<Result<_, _>>()?,
                    columns: s
                        .columns
                        .iter()
                        .map(|p| g(&p.to_lowercase(), false, "sql.columns"))
                        .collect::<Result<_, _>>()?,
                }
            } else if let Some(m) = &rc.mcp {
                OperationMatch::Mcp {
                    tools: m.tools.iter().map(|p| g(p, false, "mcp.tools")).collect::<Result<_, _>>()?,
                }
            } else {
                OperationMatch::Any
            };
            rules.push(Rule {
                id: rc.id.clone(),
                effect: rc.effect,
                reason: rc.reason.clone().unwrap_or_else(|| format!("rule {}", rc.id)),
                routes: rc.routes.iter().cloned().collect::<BTreeSet<_>>(),
                roles: rc.roles.iter().cloned().collect(),
                operation,
            });
        }
        let break_glass_role = match &self.break_glass {
            Some(bg) => {
                check_name("break_glass.role", &bg.role)?;
                Some(bg.role.clone())
            }
            None => None,
        };
        let version = policy_version(&routes, &self.rules, self.break_glass.as_ref(), &self.identity);
        Ok(Policy { version, routes, rules, break_glass_role })
    }
}

/// 12 hex digits of SHA-256 over everything that decides: the rules, each route's access, the
/// break-glass role, and every mapping that hands out roles (IdP claim and group map, API-key
/// roles, certificate rules). Equal policies, equal versions; a change to who gets which role
/// changes the version too.
fn policy_version(
    routes: &BTreeMap<String, RouteAccess>,
    rules: &[RuleConfig],
    break_glass: Option<&BreakGlassConfig>,
    identity: &IdentityConfig,
) -> String {
    let oidc: Vec<_> = identity
        .oidc
        .iter()
        .map(|o| serde_json::json!({"name": o.name, "roles_claim": o.roles_claim, "role_map": o.role_map}))
        .collect();
    let keys: Vec<_> = identity.api_key.iter().map(|k| serde_json::json!({"name": k.name, "roles": k.roles})).collect();
    let doc = serde_json::json!({
        "routes": routes,
        "rules": rules,
        "break_glass_role": break_glass.map(|b| &b.role),
        "oidc_roles": oidc,
        "api_key_roles": keys,
        "certificate_roles": identity.certificate,
    });
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    crate::journal::crypto::hex(&d.as_ref()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "[[route]]\nname = \"pg\"\nlisten = \"127.0.0.1:6543\"\nupstream = \"127.0.0.1:5432\"\n";

    fn build(extra: &str) -> Result<Arc<Access>, ConfigError> {
        Config::parse(&format!("{ROUTE}{extra}")).map_err(|e| invalid("parse", e.to_string()))?.build_access()
    }

    fn err(extra: &str) -> String {
        build(extra).unwrap_err().to_string()
    }

    #[test]
    fn a_full_access_section_builds() {
        let key = crate::identity::apikey::format_hash("k");
        let a = build(&format!(
            "allow_roles = [\"clinician\"]\n\
             [[identity.oidc]]\nname = \"corp\"\nissuer = \"https://idp.example\"\naudiences = [\"airlock\"]\nalgorithms = [\"RS256\", \"EdDSA\"]\n\
             [[identity.api_key]]\nname = \"etl\"\nsha256 = \"{key}\"\nroles = [\"etl\"]\nexpires = \"2030-01-01T00:00:00Z\"\n\
             [[identity.certificate]]\nsubject = \"*.svc\"\nroles = [\"service\"]\n\
             [break_glass]\nrole = \"emergency\"\nwebhook = \"http://127.0.0.1:9/x\"\n\
             [[rule]]\nid = \"agents-out\"\neffect = \"deny\"\nroutes = [\"pg\"]\nroles = [\"agent\"]\n"
        ))
        .unwrap();
        assert_eq!(a.identity.oidc.len(), 1);
        assert!(a.identity.api_keys.authenticate("k").is_ok());
        assert_eq!(a.policy.rules.len(), 1);
        assert_eq!(a.policy.break_glass_role.as_deref(), Some("emergency"));
        assert_eq!(a.policy.routes["pg"].allow_roles.len(), 1);
    }

    #[test]
    fn a_reload_revokes_what_a_changed_key_opened() {
        let key = |name: &str, secret: &str, roles: &str, expires: &str| {
            let hash = crate::identity::apikey::format_hash(secret);
            format!("[[identity.api_key]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nroles = [{roles}]\n{expires}")
        };
        let first = key("etl", "k1", "\"etl\"", "");
        let p = build(&first).unwrap().identity.api_keys.authenticate("k1").unwrap();
        let revoked = |cfg: &str| build(cfg).unwrap().identity.revoked(&p);
        assert_eq!(revoked(&first), None);
        assert_eq!(revoked(&format!("{first}{}", key("other", "k9", "", ""))), None);
        let cases = [
            (key("etl2", "k1", "\"etl\"", ""), "is no longer configured"),
            (key("etl", "k2", "\"etl\"", ""), "was replaced"),
            (key("etl", "k1", "\"etl\", \"admin\"", ""), "roles"),
            (key("etl", "k1", "\"etl\"", "expires = \"2030-01-01T00:00:00Z\"\n"), "validity"),
        ];
        for (cfg, why) in cases {
            let got = revoked(&cfg).unwrap_or_default();
            assert!(got.contains("`etl`") && got.contains(why), "{got:?} for {cfg}");
        }
    }

    #[test]
    fn a_reload_names_a_certificate_principal_again() {
        let mut params = rcgen::CertificateParams::new(vec!["etl.prod.internal".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "etl");
        let der = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec();
        let rules =
            |roles: &str| format!("[[identity.certificate]]\nsubject = \"*.prod.internal\"\nroles = [{roles}]\n");
        let from = Some(crate::identity::mtls::PrincipalFrom::SanDns);
        let first = build(&rules("\"service\"")).unwrap();
        let p = first.identity.certificates.principal(&der, crate::identity::mtls::PrincipalFrom::SanDns).unwrap();
        assert_eq!(first.identity.revoked_presenting(&p, Some(&der), from), None);
        let later = build(&rules("\"service\", \"admin\"")).unwrap();
        let why = later.identity.revoked_presenting(&p, Some(&der), from).unwrap_or_default();
        assert!(why.contains("roles") && why.contains("etl.prod.internal"), "{why}");
        // Without the certificate at hand, nothing can be said (as before).
        assert_eq!(later.identity.revoked_presenting(&p, None, from), None);
    }

    #[test]
    fn mistakes_are_named() {
        let oidc = "[[identity.oidc]]\nname = \"corp\"\nissuer = \"https://idp.example\"\n";
        assert!(err(oidc).contains("identity.oidc[0].audiences"), "{}", err(oidc));
        let hs = format!("{oidc}audiences = [\"a\"]\nalgorithms = [\"HS256\"]\n");
        assert!(err(&hs).contains("identity.oidc[0].algorithms") && err(&hs).contains("HS256"));
        let bad_issuer = "[[identity.oidc]]\nname = \"c\"\nissuer = \"idp.example\"\naudiences = [\"a\"]\n";
        assert!(err(bad_issuer).contains("identity.oidc[0].issuer"));
        let key = "[[identity.api_key]]\nname = \"etl\"\nsha256 = \"plain-text-key\"\n";
        assert!(err(key).contains("identity.api_key[0].sha256"));
        let rule = "[[rule]]\nid = \"r\"\neffect = \"deny\"\nroutes = [\"nope\"]\n";
        assert!(err(rule).contains("rule[r].routes") && err(rule).contains("nope"));
        let two = "[[rule]]\nid = \"r\"\neffect = \"deny\"\n[[rule]]\nid = \"r\"\neffect = \"allow\"\n";
        assert!(err(two).contains("two rules"));
        let both = "[[rule]]\nid = \"r\"\neffect = \"deny\"\nhttp = {}\nsql = {}\n";
        assert!(err(both).contains("one protocol"));
        // The only route is raw TCP: a SQL rule could never match there.
        let sql = "[[rule]]\nid = \"no-ddl\"\neffect = \"deny\"\nsql = { kinds = [\"ddl\"] }\n";
        assert!(err(sql).contains("rule[no-ddl].sql") && err(sql).contains("tcp"), "{}", err(sql));
        // A tool-call rule over an HTTP route that does not read tool calls is refused, even
        // when another route it covers does.
        let routes = "[[route]]\nname = \"tools\"\nlisten = \"127.0.0.1:1\"\nprotocol = \"http\"\n\
                      upstream = \"127.0.0.1:2\"\nmcp = true\n\
                      [[route]]\nname = \"plain\"\nlisten = \"127.0.0.1:3\"\nprotocol = \"http\"\n\
                      upstream = \"127.0.0.1:4\"\n";
        let rule = "[[rule]]\nid = \"no-del\"\neffect = \"deny\"\nmcp = { tools = [\"delete_*\"] }\n";
        let mixed = Config::parse(&format!("{routes}{rule}")).unwrap().build_access().unwrap_err().to_string();
        assert!(mixed.contains("rule[no-del].mcp") && mixed.contains("`plain`"), "{mixed}");
        let scoped = format!("{routes}{}", rule.replace("effect", "routes = [\"tools\"]\neffect"));
        assert!(Config::parse(&scoped).unwrap().build_access().is_ok());
        let reserved = "[[rule]]\nid = \"route:x\"\neffect = \"deny\"\n";
        assert!(err(reserved).contains("reserved"));
        let glob = "[[identity.certificate]]\nsubject = \"a[\"\nroles = []\n";
        assert!(err(glob).contains("identity.certificate[0].subject"));
    }

    #[test]
    fn the_policy_version_follows_the_content() {
        let v = |extra: &str| build(extra).unwrap().policy.version.clone();
        let rule = "[[rule]]\nid = \"r\"\neffect = \"deny\"\n";
        assert_eq!(v(rule), v(rule));
        assert_ne!(v(rule), v(&rule.replace("deny", "allow")));
        assert_ne!(v(""), v("allow_roles = [\"x\"]\n"));
        // Who gets which role decides too.
        assert_ne!(v(""), v("[[identity.certificate]]\nsubject = \"*\"\nroles = [\"x\"]\n"));
        // Timeouts do not.
        assert_eq!(v(""), v("[identity]\nhttp_timeout = \"9s\"\n"));
    }
}
