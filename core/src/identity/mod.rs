//! Who is calling: every caller becomes a [`Principal`] before any upstream connection is opened.
//!
//! Three ways in, chosen by the protocol and the route:
//! - an OpenID Connect JWT (`Authorization: Bearer`, or the PostgreSQL password), verified against
//!   the issuer's JWKS ([`jwt`], [`jwks`]);
//! - an API key for a service account, stored only as a SHA-256 hash in the config ([`apikey`]);
//! - a TLS client certificate, verified by rustls against the route's CA and mapped to a subject
//!   ([`mtls`]).
//!
//! Every failure is an [`AuthError`] that says what was wrong with the credential without echoing
//! it; [`crate::deny`] turns it into the protocol's own answer.

pub mod apikey;
pub mod jwks;
pub mod jwt;
pub mod mtls;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use apikey::ApiKeys;
pub use jwt::OidcProvider;
pub use mtls::CertificateMapper;

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum AuthMethod {
    /// The route requires no credential.
    Anonymous,
    /// An OIDC JWT from the named provider.
    Oidc {
        /// Provider name from the config.
        provider: String,
    },
    /// An API key.
    ApiKey {
        /// SHA-256 of the key presented: a reload that gives the key's name another secret
        /// revokes what the old one opened. Never journaled (it is what the config holds).
        #[serde(default, skip_serializing)]
        sha256: [u8; 32],
    },
    /// A TLS client certificate.
    Mtls {
        /// SHA-256 fingerprint of the certificate (hex).
        fingerprint: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable identifier: the JWT `sub`, the API key's name, the certificate's mapped name.
    pub subject: String,
    /// Who vouches for it: the JWT `iss`, `api-key`, or the certificate's issuer DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Display name, if the credential carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail address, if the credential carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Airlock roles (after the group→role mapping).
    pub roles: BTreeSet<String>,
    /// Groups as the identity provider sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How it authenticated.
    pub method: AuthMethod,
    /// When the credential stops being valid, seconds since the Unix epoch. Sessions end then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The principal of a route that asks for no credential.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".into(),
            issuer: None,
            name: None,
            email: None,
            roles: BTreeSet::new(),
            groups: Vec::new(),
            method: AuthMethod::Anonymous,
            expires_at: None,
        }
    }

    /// Short form for logs and the session index: `oidc:corp/alice`, `api-key:etl-bot`,
    /// `mtls:svc.internal`, `anonymous`.
    pub fn label(&self) -> String {
        match &self.method {
            AuthMethod::Anonymous => "anonymous".into(),
            AuthMethod::Oidc { provider } => format!("oidc:{provider}/{}", self.subject),
            AuthMethod::ApiKey { .. } => format!("api-key:{}", self.subject),
            AuthMethod::Mtls { .. } => format!("mtls:{}", self.subject),
        }
    }

    /// The journal's form of the principal.
    pub fn to_meta(&self) -> crate::journal::record::PrincipalMeta {
        let (method, detail) = match &self.method {
            AuthMethod::Anonymous => ("anonymous", None),
            AuthMethod::Oidc { provider } => ("oidc", Some(provider.clone())),
            AuthMethod::ApiKey { .. } => ("api_key", None),
            AuthMethod::Mtls { fingerprint } => ("mtls", Some(fingerprint.clone())),
        };
        crate::journal::record::PrincipalMeta {
            subject: self.subject.clone(),
            issuer: self.issuer.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            roles: self.roles.iter().cloned().collect(),
            groups: self.groups.clone(),
            method: method.into(),
            method_detail: detail,
            expires_at: self.expires_at,
        }
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }
}

/// Why a credential was not accepted. Messages describe the problem for the caller and the
/// journal; they never contain the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented where one is required.
    #[error("no credential presented; send `Authorization: Bearer <token>`")]
    Missing,
    /// The credential is longer than the configured limit.
    #[error("credential of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed JWT (segments, base64url, JSON).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("unsigned tokens (alg `none`) are not accepted")]
    AlgNone,
    /// An HMAC algorithm: a shared secret cannot prove who issued a token, and a public key used as
    /// an HMAC secret is the classic algorithm-confusion attack.
    #[error("HMAC-signed tokens ({0}) are not accepted from an OpenID provider")]
    HmacRejected(String),
    /// An algorithm this provider does not allow.
    #[error("signing algorithm {0} is not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    /// The `iss` claim names no configured provider.
    #[error("issuer `{0}` is not trusted by this gateway")]
    UnknownIssuer(String),
    /// The `iss` claim does not match the provider the route expects.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No key in the issuer's JWKS has this `kid`, even after a refresh.
    #[error("no signing key with kid `{0}` is published by the issuer")]
    UnknownKey(String),
    /// The issuer's keys could not be fetched and no usable cached copy exists. The detail (URLs,
    /// transport errors) is for the journal and the log, not for the caller.
    #[error("the issuer's signing keys are unavailable; try again later")]
    KeysUnavailable(String),
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `aud` names none of the accepted audiences.
    #[error("token audience is not accepted by this gateway")]
    WrongAudience,
    /// `azp`/`client_id` names a client that is not accepted.
    #[error("token was issued to a client that is not accepted")]
    WrongClient,
    /// A required claim is absent.
    #[error("token lacks the required `{0}` claim")]
    MissingClaim(String),
    /// A claim has the wrong type.
    #[error("token claim `{0}` has the wrong type")]
    InvalidClaim(String),
    /// No configured API key matches.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The API key matched but its validity has ended.
    #[error("API key expired")]
    ApiKeyExpired,
    /// The client certificate could not be mapped to a principal.
    #[error("client certificate not accepted: {0}")]
    Certificate(String),
}

impl AuthError {
    /// The RFC 6750 §3.1 error code for `WWW-Authenticate`: `invalid_token` for any credential
    /// that is "expired, revoked, malformed, or invalid for other reasons", and `None` when no
    /// credential was sent (the challenge then carries no error code, §3.1).
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            _ => Some("invalid_token"),
        }
    }

    /// The message with the operator-only detail, for the journal and the log (the `Display` form
    /// is what the caller may see).
    pub fn detail(&self) -> String {
        match self {
            Self::KeysUnavailable(why) => format!("{self} ({why})"),
            _ => self.to_string(),
        }
    }

    /// Short machine-readable name, used as the rule id of authentication denials and in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_credential",
            Self::TooLarge { .. } => "credential_too_large",
            Self::Malformed(_) => "malformed_token",
            Self::AlgNone => "alg_none",
            Self::HmacRejected(_) => "hmac_rejected",
            Self::AlgorithmNotAllowed(_) => "alg_not_allowed",
            Self::UnknownIssuer(_) => "unknown_issuer",
            Self::WrongIssuer => "wrong_issuer",
            Self::UnknownKey(_) => "unknown_kid",
            Self::KeysUnavailable(_) => "jwks_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "iat_in_future",
            Self::WrongAudience => "wrong_audience",
            Self::WrongClient => "wrong_client",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::UnknownApiKey => "unknown_api_key",
            Self::ApiKeyExpired => "api_key_expired",
            Self::Certificate(_) => "certificate",
        }
    }
}

/// Every configured way to authenticate, built from the config and swapped as a whole on reload.
#[derive(Debug, Default)]
pub struct Identity {
    /// OIDC providers, by name.
    pub oidc: Vec<Arc<OidcProvider>>,
    /// API keys.
    pub api_keys: ApiKeys,
    /// Client-certificate name → roles mapping.
    pub certificates: CertificateMapper,
}

impl Identity {
    /// Authenticates a bearer credential: a JWT (three dot-separated base64url segments) goes to
    /// the provider its `iss` names; anything else is tried as an API key.
    pub async fn authenticate_bearer(&self, credential: &str) -> Result<Principal, AuthError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if !jwt::looks_like_jwt(credential) {
            return self.api_keys.authenticate(credential);
        }
        let max = self.oidc.iter().map(|p| p.max_token_bytes()).max().unwrap_or(jwt::DEFAULT_MAX_TOKEN_BYTES);
        if credential.len() > max {
            return Err(AuthError::TooLarge { len: credential.len(), max });
        }
        let unverified = jwt::peek(credential)?;
        let provider = self
            .oidc
            .iter()
            .find(|p| p.issuer() == unverified.issuer)
            .ok_or_else(|| AuthError::UnknownIssuer(truncate(&unverified.issuer, 128)))?;
        provider.verify(credential).await
    }
}

impl Identity {
    /// [`Identity::revoked`] for a principal that may have come from a client certificate, with
    /// that certificate (DER) and the field that names it.
    pub fn revoked_presenting(
        &self,
        p: &Principal,
        leaf: Option<&[u8]>,
        from: Option<mtls::PrincipalFrom>,
    ) -> Option<String> {
        // A certificate's principal: named again from the same certificate under these
        // settings (the mapping to roles may have changed).
        if let (AuthMethod::Mtls { .. }, Some(der), Some(from)) = (&p.method, leaf, from) {
            return match self.certificates.principal(der, from) {
                Err(e) => Some(format!("the certificate of `{}` no longer names a principal: {e}", p.subject)),
                Ok(now) if now.roles != p.roles => Some(format!("the roles of `{}` changed", p.subject)),
                Ok(_) => None,
            };
        }
        self.revoked(p)
    }

    /// Why a principal authenticated earlier no longer stands under this (reloaded)
    /// configuration, if it does not: its API key was removed, replaced by another secret under
    /// the same name, or given other roles or another expiry; or its OIDC provider was removed.
    /// (Tokens and certificates end at their own expiry.)
    pub fn revoked(&self, p: &Principal) -> Option<String> {
        match &p.method {
            AuthMethod::ApiKey { sha256 } => match self.api_keys.named(&p.subject) {
                None => Some(format!("the API key `{}` is no longer configured", p.subject)),
                Some(k) if k.sha256 != *sha256 => Some(format!("the API key `{}` was replaced", p.subject)),
                Some(k) if k.roles != p.roles => Some(format!("the roles of the API key `{}` changed", p.subject)),
                Some(k) if k.expires_at != p.expires_at => {
                    Some(format!("the validity of the API key `{}` changed", p.subject))
                }
                Some(_) => None,
            },
            AuthMethod::Oidc { provider } => (!self.oidc.iter().any(|o| o.name() == provider))
                .then(|| format!("the OIDC provider `{provider}` is no longer configured")),
            AuthMethod::Anonymous | AuthMethod::Mtls { .. } => None,
        }
    }
}

/// Cuts untrusted text for an error message.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
