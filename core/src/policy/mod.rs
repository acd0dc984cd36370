//! Access decisions: which principal may use which route and which operation.
//!
//! [`Policy::evaluate`] is pure and synchronous — same inputs, same [`Decision`] — so it can be
//! tested exhaustively and replayed against the journal. The order:
//! 1. the route's `allow_roles` (empty: any authenticated principal);
//! 2. every `[[rule]]` whose routes, roles and operation match: **deny overrides** require-approval,
//!    which overrides allow; among rules of the winning effect the first in the file names the
//!    decision;
//! 3. no rule matched: the route's `default_effect`.
//!
//! Every decision carries a rule id (`route:<name>:allow_roles`, `route:<name>:default`, or the
//! id of a `[[rule]]`) and the version of the policy that produced it.

pub mod sql;

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::identity::Principal;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it for a human approver. Until the approval gate exists it is refused with a message
    /// saying that approval is required.
    RequireApproval,
}

impl Effect {
    /// Name as written in the config and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
        }
    }
}

/// A SQL statement's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlKind {
    /// `SELECT`, `VALUES`, `TABLE`, `SHOW`, `EXPLAIN`.
    Select,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `MERGE`.
    Merge,
    /// Data definition: `CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT`.
    Ddl,
    /// Privileges: `GRANT`, `REVOKE`, role management.
    Dcl,
    /// `COPY`.
    Copy,
    /// `CALL` and `DO`.
    Call,
    /// `SET`, `RESET`.
    Set,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, savepoints.
    Transaction,
    /// Anything else.
    Other,
}

/// A decoded operation, as the filter chain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A raw TCP session: one decision when it opens.
    Bytes,
    /// An HTTP request.
    Http {
        /// Method, upper case.
        method: String,
        /// Path without the query.
        path: String,
    },
    /// A gRPC call.
    Grpc {
        /// Fully qualified service, e.g. `inference.GRPCInferenceService`.
        service: String,
        /// Method name.
        method: String,
    },
    /// One SQL statement.
    Sql {
        /// Its kind.
        kind: SqlKind,
        /// Tables it reads or writes (lower-case, schema-qualified when written so); `None`
        /// when they cannot be known (SQL the gateway cannot parse, names written as `U&"…"`
        /// escapes, SQL run from text by a function). A deny or approval rule on tables then
        /// matches (fail closed); an allow rule does not.
        tables: Option<Vec<String>>,
        /// Columns it names; `None` when they cannot be known (`SELECT *`, a view). A deny or
        /// approval rule on columns then matches (fail closed); an allow rule does not.
        columns: Option<Vec<String>>,
    },
    /// An MCP `tools/call`.
    McpCall {
        /// The tool name.
        tool: String,
    },
}

impl Request {
    /// One line for the journal and logs.
    pub fn summary(&self) -> String {
        match self {
            Self::Bytes => "tcp session".into(),
            Self::Http { method, path } => format!("{method} {path}"),
            Self::Grpc { service, method } => format!("/{service}/{method}"),
            Self::Sql { kind, tables: Some(tables), .. } => {
                format!("sql {kind:?} {}", tables.join(",")).trim_end().to_owned()
            }
            Self::Sql { kind, tables: None, .. } => format!("sql {kind:?} (tables unknown)"),
            Self::McpCall { tool } => format!("mcp tools/call {tool}"),
        }
    }
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What happens.
    pub effect: Effect,
    /// The rule that decided.
    pub rule: String,
    /// Why, in words for the caller and the auditor.
    pub reason: String,
    /// The policy version that decided.
    pub policy_version: String,
}

/// A route's own access settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteAccess {
    /// Roles that may use the route; empty: any authenticated principal.
    pub allow_roles: BTreeSet<String>,
    /// Effect when no rule matches.
    pub default_effect: Option<Effect>,
}

/// The operation part of a rule.
#[derive(Debug, Clone)]
pub enum OperationMatch {
    /// Any request.
    Any,
    /// HTTP: methods (empty: any) and a path glob.
    Http {
        /// Upper-case methods.
        methods: BTreeSet<String>,
        /// Path glob (`/v1/**`).
        path: Option<GlobMatcher>,
    },
    /// gRPC: service and method globs.
    Grpc {
        /// Service glob.
        service: Option<GlobMatcher>,
        /// Method glob.
        method: Option<GlobMatcher>,
    },
    /// SQL: kinds (empty: any), table globs and column globs (empty: any).
    Sql {
        /// Kinds.
        kinds: BTreeSet<SqlKind>,
        /// Table globs: at least one table of the statement must match one.
        tables: Vec<GlobMatcher>,
        /// The last part of each schema-qualified table glob (`public.patients` → `patients`):
        /// a deny or approval rule meets the table named without its schema too, which
        /// `search_path` may resolve to it.
        bare_tables: Vec<GlobMatcher>,
        /// Column globs: at least one column of the statement must match one.
        columns: Vec<GlobMatcher>,
    },
    /// MCP: tool globs.
    Mcp {
        /// Tool globs.
        tools: Vec<GlobMatcher>,
    },
}

/// One compiled `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id.
    pub id: String,
    /// Effect.
    pub effect: Effect,
    /// Reason shown to the caller.
    pub reason: String,
    /// Routes it applies to; empty: all.
    pub routes: BTreeSet<String>,
    /// Roles it applies to (any of); empty: every principal.
    pub roles: BTreeSet<String>,
    /// The operation it matches.
    pub operation: OperationMatch,
}

/// Compiles a glob for a rule; `*` does not cross `/` in paths.
pub fn glob(pattern: &str, literal_separator: bool) -> Result<GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| format!("`{pattern}` is not a valid glob: {e}"))
}

impl Rule {
    fn applies(&self, route: &str, principal: &Principal, req: &Request) -> bool {
        if !self.routes.is_empty() && !self.routes.contains(route) {
            return false;
        }
        if !self.roles.is_empty() && !self.roles.iter().any(|r| principal.has_role(r)) {
            return false;
        }
        match (&self.operation, req) {
            (OperationMatch::Any, _) => true,
            (OperationMatch::Http { methods, path }, Request::Http { method, path: p }) => {
                (methods.is_empty() || methods.contains(method)) && path.as_ref().is_none_or(|g| g.is_match(p))
            }
            (OperationMatch::Grpc { service, method }, Request::Grpc { service: s, method: m }) => {
                service.as_ref().is_none_or(|g| g.is_match(s)) && method.as_ref().is_none_or(|g| g.is_match(m))
            }
            (
                OperationMatch::Sql { kinds, tables, bare_tables, columns },
                Request::Sql { kind, tables: t, columns: c },
            ) => {
                // What cannot be known matches what refuses or holds, never what allows.
                let refuses = self.effect != Effect::Allow;
                let columns_match = match c {
                    _ if columns.is_empty() => true,
                    Some(c) => c.iter().any(|c| columns.iter().any(|g| g.is_match(c))),
                    None => refuses,
                };
                let tables_match = match t {
                    _ if tables.is_empty() => true,
                    Some(t) => t.iter().any(|t| {
                        tables.iter().any(|g| g.is_match(t))
                            || (refuses && !t.contains('.') && bare_tables.iter().any(|g| g.is_match(t)))
                    }),
                    None => refuses,
                };
                (kinds.is_empty() || kinds.contains(kind)) && tables_match && columns_match
            }
            (OperationMatch::Mcp { tools }, Request::McpCall { tool }) => {
                tools.is_empty() || tools.iter().any(|g| g.is_match(tool))
            }
            _ => false,
        }
    }
}

/// The whole access policy: per-route settings, rules, and the break-glass role.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Content hash of everything that decides (12 hex digits), journaled with every decision.
    pub version: String,
    /// Per-route settings, by route name.
    pub routes: BTreeMap<String, RouteAccess>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// The emergency role: its holders skip approval holds (never denials, never masking).
    pub break_glass_role: Option<String>,
}

impl Policy {
    /// Whether the principal acts under break-glass.
    pub fn is_break_glass(&self, principal: &Principal) -> bool {
        self.break_glass_role.as_deref().is_some_and(|r| principal.has_role(r))
    }

    /// Decides one request. Pure: no I/O, no clock.
    pub fn evaluate(&self, route: &str, principal: &Principal, req: &Request) -> Decision {
        let decide = |effect, rule: String, reason: String| Decision {
            effect,
            rule,
            reason,
            policy_version: self.version.clone(),
        };
        let Some(access) = self.routes.get(route) else {
            // A route this policy does not know (a reload that dropped it, say) admits no one.
            return decide(
                Effect::Deny,
                format!("route:{route}:unknown"),
                format!("route `{route}` is not in the policy in force"),
            );
        };
        if !access.allow_roles.is_empty() && !access.allow_roles.iter().any(|r| principal.has_role(r)) {
            return decide(
                Effect::Deny,
                format!("route:{route}:allow_roles"),
                format!(
                    "route `{route}` requires one of the roles {}; `{}` has {}",
                    list(&access.allow_roles),
                    principal.subject,
                    if principal.roles.is_empty() { "none".to_owned() } else { list(&principal.roles) }
                ),
            );
        }
        let mut approval = None;
        let mut allow = None;
        for rule in self.rules.iter().filter(|r| r.applies(route, principal, req)) {
            match rule.effect {
                Effect::Deny => return decide(Effect::Deny, rule.id.clone(), rule.reason.clone()),
                Effect::RequireApproval => {
                    approval.get_or_insert(rule);
                }
                Effect::Allow => {
                    allow.get_or_insert(rule);
                }
            }
        }
        if let Some(rule) = approval {
            if self.is_break_glass(principal) {
                return decide(
                    Effect::Allow,
                    rule.id.clone(),
                    format!("break-glass: approval hold skipped ({})", rule.reason),
                );
            }
            return decide(Effect::RequireApproval, rule.id.clone(), rule.reason.clone());
        }
        if let Some(rule) = allow {
            return decide(Effect::Allow, rule.id.clone(), rule.reason.clone());
        }
        let effect = access.default_effect.unwrap_or(Effect::Allow);
        let reason = match (effect, !access.allow_roles.is_empty()) {
            (Effect::Allow, true) => format!("principal holds a role that route `{route}` allows"),
            (Effect::Allow, false) => format!("route `{route}` admits every authenticated principal"),
            _ => format!("no rule allows this on route `{route}`"),
        };
        decide(effect, format!("route:{route}:default"), reason)
    }
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
