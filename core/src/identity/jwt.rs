//! OpenID Connect JWT verification (RFC 7519, RFC 7515, OIDC Core 1.0 §3.1.3.7, RFC 9068).
//!
//! The order of checks is deliberate: size first, then the header is read *before* any key is
//! looked up, so `alg: none` and HMAC tokens are refused without touching the key cache; then the
//! signature with a key from the issuer's JWKS; then the registered claims (`iss`, `aud`, `exp`,
//! `nbf`, `iat` with leeway, `sub`) and the authorized party.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{KeySource, KeySourceSettings};
use super::{AuthError, AuthMethod, Principal, truncate};
use crate::outbound::HttpClient;

/// Default bound on a token's length.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The asymmetric algorithms an OIDC provider may use (the default allow-list).
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One provider's validated settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Name from the config, used in principals and the journal.
    pub name: String,
    /// Accepted `aud` values (at least one must be present in the token).
    pub audiences: Vec<String>,
    /// Accepted `azp`/`client_id` values; empty accepts any client.
    pub client_ids: Vec<String>,
    /// Claim that holds the groups/roles: a top-level name (namespaced URLs included) or a dotted
    /// path such as `realm_access.roles`.
    pub roles_claim: String,
    /// IdP group → Airlock roles. Empty: groups are used as roles unchanged.
    pub role_map: BTreeMap<String, Vec<String>>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Accepted signature algorithms (never `none`, never HMAC).
    pub algorithms: Vec<Algorithm>,
    /// Longest token accepted.
    pub max_token_bytes: usize,
    /// Where the keys come from.
    pub keys: KeySourceSettings,
}

/// Most verified tokens remembered per provider.
const VERIFIED_CACHE_ENTRIES: usize = 10_000;

/// A token that passed full verification, remembered so the same token on the next request costs
/// a hash and a lookup instead of a signature check. An entry is used only while the key set it
/// was checked against is still in place and fresh, and only within the token's `exp`/`nbf`.
#[derive(Debug, Clone)]
struct Verified {
    principal: Principal,
    exp: i64,
    nbf: Option<i64>,
    generation: u64,
}

/// A configured OpenID provider.
#[derive(Debug)]
pub struct OidcProvider {
    settings: OidcSettings,
    keys: KeySource,
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

/// What [`peek`] reads from a token before its signature is checked. Used only to pick the
/// provider; nothing here is trusted.
#[derive(Debug)]
pub struct Unverified {
    /// The `iss` claim.
    pub issuer: String,
}

/// Whether a credential is meant as a compact JWS: three dot-separated segments. Anything else is
/// an API key (which therefore must not contain two dots); a JWT with bad segments is reported as
/// malformed rather than as an unknown API key.
pub fn looks_like_jwt(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'.').count() == 2
}

fn segment_json(seg: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(seg.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Malformed(format!("{what} is not a JSON object"))),
    }
}

/// A numeric claim of a token already verified (used to remember `nbf`).
fn peek_claim_i64(token: &str, claim: &str) -> Option<i64> {
    let c = token.split('.').nth(1)?;
    segment_json(c, "claims").ok()?.get(claim)?.as_f64().map(|v| v as i64)
}

/// Reads the header's `alg` (refusing `none` and HMAC outright) and the unverified `iss`.
pub fn peek(token: &str) -> Result<Unverified, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Malformed("a JWT has three segments".into()));
    };
    let header = segment_json(h, "header")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Malformed("header lacks a string `alg`".into()))?;
    check_alg_name(alg)?;
    let claims = segment_json(c, "claims")?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(Unverified { issuer: iss.clone() }),
        Some(_) => Err(AuthError::InvalidClaim("iss".into())),
        None => Err(AuthError::MissingClaim("iss".into())),
    }
}

fn check_alg_name(alg: &str) -> Result<(), AuthError> {
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNone);
    }
    if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs")) {
        return Err(AuthError::HmacRejected(truncate(alg, 16)));
    }
    Ok(())
}

impl OidcProvider {
    /// A provider whose keys are fetched (and discovered, when no JWKS URL is configured).
    pub fn new(settings: OidcSettings, http: HttpClient) -> Self {
        let keys = KeySource::new(settings.keys.clone(), http);
        Self { settings, keys, verified: Default::default() }
    }

    /// A provider with a fixed key set (a `jwks_file`, or a benchmark): never fetched.
    pub fn with_static_keys(settings: OidcSettings, jwks: &[u8]) -> Result<Self, String> {
        let keys = KeySource::with_static_keys(settings.keys.clone(), jwks)?;
        Ok(Self { settings, keys, verified: Default::default() })
    }

    /// The issuer, as tokens carry it.
    pub fn issuer(&self) -> &str {
        &self.settings.keys.issuer
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Longest token accepted.
    pub fn max_token_bytes(&self) -> usize {
        self.settings.max_token_bytes
    }

    /// Verifies a token from this provider and builds its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let s = &self.settings;
        if token.len() > s.max_token_bytes {
            return Err(AuthError::TooLarge { len: token.len(), max: s.max_token_bytes });
        }
        let digest: [u8; 32] = {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        if let Some(p) = self.cached(&digest).await {
            return Ok(p);
        }
        let generation = self.keys.usable_generation().await;
        let principal = self.verify_fully(token).await?;
        if let (Some(generation), Some(exp)) = (generation, principal.expires_at)
            && let Ok(mut cache) = self.verified.lock()
        {
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
            let nbf = peek_claim_i64(token, "nbf");
            cache.insert(digest, Verified { principal: principal.clone(), exp, nbf, generation });
        }
        Ok(principal)
    }

    /// A remembered verification that still holds: same key generation, keys still fresh, and
    /// the clock inside `nbf`..`exp` (with leeway). Anything else goes through full verification.
    async fn cached(&self, digest: &[u8; 32]) -> Option<Principal> {
        let entry = self.verified.lock().ok()?.get(digest).cloned()?;
        let generation = self.keys.usable_generation().await?;
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let leeway = self.settings.leeway.as_secs() as i64;
        // `exp` is the principal's `expires_at`, which already holds the leeway.
        let timely = now <= entry.exp && entry.nbf.is_none_or(|nbf| now + leeway >= nbf);
        (entry.generation == generation && timely).then_some(entry.principal)
    }

    /// Full verification — header, key, signature, claims — without the verified-token cache.
    /// [`OidcProvider::verify`] is what the gateway calls; this is its cold path.
    pub async fn verify_fully(&self, token: &str) -> Result<Principal, AuthError> {
        let s = &self.settings;
        // Our own header check first: jsonwebtoken would also refuse these, but only after a key
        // lookup, and with less specific errors.
        peek(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(map_error)?;
        // RFC 7515 §4.1.11: a recipient that does not understand a critical extension must
        // reject the token. This gateway understands none.
        if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(AuthError::Malformed(
                "the token names critical header extensions this gateway does not implement".into(),
            ));
        }
        if !s.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let key = self.keys.key_for(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.leeway = s.leeway.as_secs();
        v.validate_nbf = true;
        v.set_issuer(&[self.issuer()]);
        v.set_audience(&s.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(map_error)?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        match claims.get("iat") {
            None => {}
            Some(iat) => {
                let iat = iat.as_f64().ok_or_else(|| AuthError::InvalidClaim("iat".into()))?;
                if iat > (now + s.leeway.as_secs()) as f64 {
                    return Err(AuthError::IssuedInFuture);
                }
            }
        }
        self.check_client(&claims)?;
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            Some(Value::String(_)) | None => return Err(AuthError::MissingClaim("sub".into())),
            Some(_) => return Err(AuthError::InvalidClaim("sub".into())),
        };
        let groups = claim_strings(&claims, &s.roles_claim);
        let roles: BTreeSet<String> = if s.role_map.is_empty() {
            groups.iter().cloned().collect()
        } else {
            groups.iter().filter_map(|g| s.role_map.get(g)).flatten().cloned().collect()
        };
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(|v| truncate(v, 256));
        Ok(Principal {
            subject,
            issuer: Some(self.issuer().to_owned()),
            name: text("name").or_else(|| text("preferred_username")),
            email: text("email"),
            roles,
            groups,
            method: AuthMethod::Oidc { provider: s.name.clone() },
            // When the token stops being accepted (its `exp` plus the leeway): sessions opened
            // with it end then (automatic logoff), not at once for a token taken within the leeway.
            expires_at: claims
                .get("exp")
                .and_then(Value::as_f64)
                .map(|e| (e as i64).saturating_add(i64::try_from(s.leeway.as_secs()).unwrap_or(i64::MAX))),
        })
    }

    /// OIDC Core §3.1.3.7 items 3–5 and RFC 9068 §2.2: when client ids are configured, the
    /// authorized party — `azp`, or `client_id` in an access token, or else the single `aud` — must
    /// be one of them; a token for several audiences must name its authorized party.
    fn check_client(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        if self.settings.client_ids.is_empty() {
            return Ok(());
        }
        let party = claims.get("azp").or_else(|| claims.get("client_id"));
        match party {
            Some(Value::String(p)) if self.settings.client_ids.iter().any(|c| c == p) => Ok(()),
            Some(_) => Err(AuthError::WrongClient),
            None => {
                let single = match claims.get("aud") {
                    Some(Value::String(a)) => Some(a.as_str()),
                    Some(Value::Array(a)) if a.len() == 1 => a[0].as_str(),
                    _ => None,
                };
                match single {
                    Some(a) if self.settings.client_ids.iter().any(|c| c == a) => Ok(()),
                    _ => Err(AuthError::WrongClient),
                }
            }
        }
    }
}

/// Strings at a claim path: the whole name first (namespaced claims like
/// `https://example.com/roles` contain dots), then as a dotted path. A string value counts as one
/// entry; anything that is not a string is skipped.
pub fn claim_strings(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let value = claims.get(path).or_else(|| {
        let mut parts = path.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, p| v.get(p))
    });
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().take(256).filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn map_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSubject => AuthError::InvalidClaim("sub".into()),
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(truncate(c, 32)),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(truncate(c, 32)),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed("unsupported".into())
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed(e.to_string())
        }
        // Key/format mismatches (an RSA key for an EC token and the like) are signature failures.
        _ => AuthError::BadSignature,
    }
}

/// Fuzz entry point: arbitrary bytes as a bearer credential. Never panics; a credential that
/// parses must name its issuer.
pub fn fuzz_peek(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if looks_like_jwt(s)
        && let Ok(u) = peek(s)
    {
        assert!(s.len() >= u.issuer.len(), "issuer longer than the token");
    }
    let _ = jsonwebtoken::decode_header(s);
}

#[cfg(test)]
mod tests;
