//! The one place where a refusal becomes the protocol's own answer.
//!
//! A [`Denial`] says what happened in terms the caller can act on — a credential problem, a rule,
//! an approval that is required — with the rule id and the request id, never internals or secrets.
//! Each driver asks this module for the bytes or the status it sends:
//! - HTTP: 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3) or 403, a JSON body
//!   `{error, message, request_id, rule}`;
//! - gRPC: `UNAUTHENTICATED` (16) or `PERMISSION_DENIED` (7) with the message;
//! - PostgreSQL: an ErrorResponse (protocol 3.0 §55.8) with SQLSTATE 28000, 28P01 or 42501;
//! - raw TCP: no bytes of ours can be spoken, so the session is closed (after a TLS `close_notify`
//!   on TLS routes; a certificate rustls rejects gets its alert during the handshake).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::identity::AuthError;
use crate::policy::{Decision, Effect};

/// Why a request or session was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenialKind {
    /// No acceptable credential: who is calling is not established.
    Unauthenticated {
        /// RFC 6750 error code, `None` when no credential was sent.
        bearer_error: Option<&'static str>,
        /// Whether a credential was presented (PostgreSQL: 28P01 rather than 28000).
        credential_presented: bool,
    },
    /// The principal is known but a rule refuses the operation.
    Forbidden,
    /// A rule holds the operation for a human approver.
    ApprovalRequired,
    /// The session the request names is not the caller's (an MCP `Mcp-Session-Id` another
    /// caller opened, or one the gateway never saw opened): answered as not found, on which
    /// MCP clients open a new session.
    UnknownSession,
}

/// The rule of a refusal for an MCP session that is not the caller's.
pub const MCP_SESSION_RULE: &str = "mcp:session";

/// A refusal, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What kind.
    pub kind: DenialKind,
    /// For the caller: what happened and what to do.
    pub message: String,
    /// The rule id (or the authentication error code).
    pub rule: String,
    /// The request (or session) id the journal files it under.
    pub request_id: String,
}

impl Denial {
    /// A refusal of a credential.
    pub fn unauthenticated(err: &AuthError, request_id: impl Into<String>) -> Self {
        Self {
            kind: DenialKind::Unauthenticated {
                bearer_error: err.bearer_error(),
                credential_presented: !matches!(err, AuthError::Missing),
            },
            message: err.to_string(),
            rule: format!("authn:{}", err.code()),
            request_id: request_id.into(),
        }
    }

    /// A refusal by the policy; `None` when the decision allows.
    pub fn from_decision(d: &Decision, request_id: impl Into<String>) -> Option<Self> {
        let (kind, message) = match d.effect {
            Effect::Allow => return None,
            Effect::Deny if d.rule == MCP_SESSION_RULE => (DenialKind::UnknownSession, d.reason.clone()),
            Effect::Deny => (DenialKind::Forbidden, format!("denied by rule `{}`: {}", d.rule, d.reason)),
            Effect::RequireApproval => (
                DenialKind::ApprovalRequired,
                format!(
                    "rule `{}` requires human approval for this request ({}); approvals are not enabled on this \
                     gateway yet, so it is refused",
                    d.rule, d.reason
                ),
            ),
        };
        Some(Self { kind, message, rule: d.rule.clone(), request_id: request_id.into() })
    }

    /// A refusal because the credential expired during a session (automatic logoff).
    pub fn expired_during_session(request_id: impl Into<String>) -> Self {
        Self::unauthenticated(&AuthError::Expired, request_id)
    }
}

/// An HTTP refusal: status, extra headers, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDenial {
    /// 401 or 403.
    pub status: u16,
    /// Headers to set besides `content-type`.
    pub headers: Vec<(&'static str, String)>,
    /// `application/json` body.
    pub body: Bytes,
}

#[derive(Serialize)]
struct HttpBody<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
    rule: &'a str,
}

/// Quotes a value for a `WWW-Authenticate` auth-param. RFC 6750 §3 limits `realm`, `error` and
/// `error_description` to printable ASCII without `"` and `\` (%x20-21 / %x23-5B / %x5D-7E), so
/// anything else is dropped rather than escaped; the result is always a valid header value.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    out.extend(s.chars().filter(|&c| matches!(c, '\x20'..='\x7e') && c != '"' && c != '\\'));
    out.push('"');
    out
}

/// Renders a denial for HTTP.
pub fn http(d: &Denial, realm: &str) -> HttpDenial {
    let (status, error, headers) = match &d.kind {
        DenialKind::Unauthenticated { bearer_error, .. } => {
            let mut challenge = format!("Bearer realm={}", quoted(realm));
            if let Some(code) = bearer_error {
                challenge.push_str(&format!(", error={}, error_description={}", quoted(code), quoted(&d.message)));
            }
            (401, bearer_error.unwrap_or("unauthenticated"), vec![("www-authenticate", challenge)])
        }
        DenialKind::Forbidden => (403, "forbidden", vec![]),
        DenialKind::ApprovalRequired => (403, "approval_required", vec![]),
        DenialKind::UnknownSession => (404, "session_not_found", vec![]),
    };
    let body = serde_json::to_vec(&HttpBody { error, message: &d.message, request_id: &d.request_id, rule: &d.rule })
        .unwrap_or_default();
    let mut headers = headers;
    headers.push(("x-request-id", d.request_id.clone()));
    HttpDenial { status, headers, body: Bytes::from(body) }
}

/// gRPC status codes used here (grpc/doc/statuscodes.md).
pub mod grpc_code {
    /// The caller does not have permission.
    pub const PERMISSION_DENIED: u32 = 7;
    /// The request does not have valid authentication credentials.
    pub const UNAUTHENTICATED: u32 = 16;
    /// Something the request names was not found.
    pub const NOT_FOUND: u32 = 5;
}

/// Renders a denial as a gRPC status code and message (`grpc-status`, `grpc-message`).
pub fn grpc(d: &Denial) -> (u32, String) {
    let code = match d.kind {
        DenialKind::Unauthenticated { .. } => grpc_code::UNAUTHENTICATED,
        DenialKind::Forbidden | DenialKind::ApprovalRequired => grpc_code::PERMISSION_DENIED,
        DenialKind::UnknownSession => grpc_code::NOT_FOUND,
    };
    (code, format!("{} (rule {}, request {})", d.message, d.rule, d.request_id))
}

/// The SQLSTATE of a denial (PostgreSQL Appendix A).
pub fn sqlstate(d: &Denial) -> &'static str {
    match d.kind {
        // invalid_password: a credential was presented and refused.
        DenialKind::Unauthenticated { credential_presented: true, .. } => "28P01",
        // invalid_authorization_specification
        DenialKind::Unauthenticated { credential_presented: false, .. } => "28000",
        // insufficient_privilege
        DenialKind::Forbidden | DenialKind::ApprovalRequired | DenialKind::UnknownSession => "42501",
    }
}

/// Renders a denial as a PostgreSQL ErrorResponse message (`E`). Severity `FATAL` when the
/// connection ends after it — every authentication failure, and any denial with `ends_session`
/// (a refused session admission) — and `ERROR` when the session stays usable (a refused
/// statement).
pub fn postgres(d: &Denial, ends_session: bool) -> Bytes {
    let severity = match d.kind {
        DenialKind::Unauthenticated { .. } => "FATAL",
        _ if ends_session => "FATAL",
        _ => "ERROR",
    };
    let hint = format!("rule {}; request {}", d.rule, d.request_id);
    let fields: [(u8, &str); 5] =
        [(b'S', severity), (b'V', severity), (b'C', sqlstate(d)), (b'M', &d.message), (b'H', &hint)];
    let mut body = BytesMut::new();
    for (tag, value) in fields {
        body.put_u8(tag);
        // A NUL inside a field would end it early on the client: drop any.
        body.extend(value.bytes().filter(|&b| b != 0));
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'E');
    out.put_u32(u32::try_from(body.len() + 4).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(effect: Effect) -> Decision {
        Decision { effect, rule: "no-drop".into(), reason: "agents may not drop".into(), policy_version: "v".into() }
    }

    #[test]
    fn http_401_carries_an_rfc6750_challenge() {
        let d = Denial::unauthenticated(&AuthError::Expired, "req-1");
        let r = http(&d, "airlock");
        assert_eq!(r.status, 401);
        let (_, challenge) = r.headers.iter().find(|(k, _)| *k == "www-authenticate").unwrap();
        assert_eq!(challenge, r#"Bearer realm="airlock", error="invalid_token", error_description="token expired""#);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["rule"], "authn:expired");
        // No credential: a bare challenge, no error code (RFC 6750 §3.1).
        let r = http(&Denial::unauthenticated(&AuthError::Missing, "req-2"), "airlock");
        assert_eq!(r.headers[0].1, r#"Bearer realm="airlock""#);
        // Untrusted text in the description cannot break out of the quoted-string.
        let e = AuthError::UnknownIssuer("x\", error=\"evil\r\nSet-Cookie: a=b…".into());
        let r = http(&Denial::unauthenticated(&e, "req-3"), "airlock");
        let (_, challenge) = &r.headers[0];
        assert!(challenge.bytes().all(|b| (0x20..0x7f).contains(&b)), "{challenge}");
        assert_eq!(challenge.matches('"').count(), 6, "{challenge}");
    }

    #[test]
    fn http_403_names_the_rule() {
        let r = http(&Denial::from_decision(&decision(Effect::Deny), "req-3").unwrap(), "airlock");
        assert_eq!(r.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["rule"], "no-drop");
        assert!(body["message"].as_str().unwrap().contains("agents may not drop"));
        let r = http(&Denial::from_decision(&decision(Effect::RequireApproval), "req-4").unwrap(), "airlock");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "approval_required");
        assert!(body["message"].as_str().unwrap().contains("requires human approval"));
        assert!(Denial::from_decision(&decision(Effect::Allow), "x").is_none());
    }

    #[test]
    fn grpc_codes() {
        assert_eq!(grpc(&Denial::unauthenticated(&AuthError::BadSignature, "r")).0, 16);
        assert_eq!(grpc(&Denial::from_decision(&decision(Effect::Deny), "r").unwrap()).0, 7);
    }

    #[test]
    fn postgres_error_response_is_well_formed() {
        let d = Denial::from_decision(&decision(Effect::Deny), "req-5").unwrap();
        let msg = postgres(&d, false);
        assert_eq!(msg[0], b'E');
        let len = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        assert_eq!(len + 1, msg.len());
        assert_eq!(*msg.last().unwrap(), 0);
        let fields: Vec<&[u8]> = msg[5..msg.len() - 1].split(|&b| b == 0).filter(|f| !f.is_empty()).collect();
        assert!(fields.contains(&&b"C42501"[..]));
        assert!(fields.contains(&&b"SERROR"[..]));
        assert!(postgres(&d, true).windows(6).any(|w| w == b"SFATAL"), "a refused session is FATAL");
        let auth = postgres(&Denial::unauthenticated(&AuthError::UnknownApiKey, "r"), false);
        assert!(auth.windows(6).any(|w| w == b"C28P01"));
        assert!(auth.windows(6).any(|w| w == b"SFATAL"));
        assert_eq!(sqlstate(&Denial::unauthenticated(&AuthError::Missing, "r")), "28000");
    }
}
