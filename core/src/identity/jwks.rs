//! The signing keys of one OpenID provider: discovered, fetched, cached and refreshed.
//!
//! - The JWKS URL comes from the config or from OpenID Connect Discovery 1.0 §4
//!   (`<issuer>/.well-known/openid-configuration`, whose `issuer` must equal the configured one,
//!   §4.3).
//! - A fetched key set is trusted for `max_age`. After that it is fetched again; if that fails the
//!   old keys are no longer used (fail closed), so a revoked key cannot live on while the provider
//!   is unreachable.
//! - A token whose `kid` is not in the set triggers a refresh (key rotation), at most once per
//!   `min_refresh_interval`, so a stream of tokens with random `kid`s cannot turn the gateway
//!   into a load generator against the provider.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use tracing::{info, warn};

use super::AuthError;
use crate::outbound::HttpClient;

/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;

/// Where and how often to fetch keys.
#[derive(Debug, Clone)]
pub struct KeySourceSettings {
    /// The issuer, exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// The JWKS URL; `None` to discover it.
    pub jwks_uri: Option<String>,
    /// How long a fetched key set is trusted.
    pub max_age: Duration,
    /// Least time between two fetches caused by unknown `kid`s or failures.
    pub min_refresh_interval: Duration,
}

/// One verification key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Cache {
    keys: Vec<Key>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    discovered_uri: Option<String>,
}

/// The cached key set of one provider.
#[derive(Debug)]
pub struct KeySource {
    settings: KeySourceSettings,
    /// `None` for keys given once (a JWKS file): never fetched, never stale.
    http: Option<HttpClient>,
    /// Bumped whenever a new key set is put in place, so verified-token caches know their
    /// entries were checked against keys that may have gone.
    generation: std::sync::atomic::AtomicU64,
    cache: RwLock<Cache>,
    refreshing: Mutex<()>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl KeySource {
    /// A key source that fetches lazily, on the first token.
    pub fn new(settings: KeySourceSettings, http: HttpClient) -> Self {
        Self {
            settings,
            http: Some(http),
            cache: RwLock::new(Cache::default()),
            refreshing: Mutex::new(()),
            generation: Default::default(),
        }
    }

    /// A key source with a fixed key set (a JWKS document given in the config): it is never
    /// fetched and never goes stale.
    pub fn with_static_keys(mut settings: KeySourceSettings, jwks: &[u8]) -> Result<Self, String> {
        let keys = parse_jwks(jwks)?;
        settings.max_age = Duration::MAX;
        let cache = Cache { keys, fetched: Some(Instant::now()), ..Cache::default() };
        Ok(Self {
            settings,
            http: None,
            cache: RwLock::new(cache),
            refreshing: Mutex::new(()),
            generation: Default::default(),
        })
    }

    /// The key that verifies a token with this header `kid` and `alg`.
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, AuthError> {
        {
            let cache = self.cache.read().await;
            if self.is_fresh(&cache)
                && let Some(k) = find(&cache.keys, kid, alg)
            {
                return Ok(k);
            }
            if self.http.is_none() {
                return Err(AuthError::UnknownKey(kid.map_or_else(|| "(none)".into(), |k| super::truncate(k, 64))));
            }
        }
        // One refresher at a time; the cache itself is locked only to read or swap, never across
        // the network, so tokens with cached keys keep verifying while a fetch is slow.
        let _guard = self.refreshing.lock().await;
        let (fresh, may_fetch, discovered) = {
            let cache = self.cache.read().await;
            if self.is_fresh(&cache)
                && let Some(k) = find(&cache.keys, kid, alg)
            {
                // Another caller refreshed while this one waited.
                return Ok(k);
            }
            let fresh = self.is_fresh(&cache);
            let may_fetch = cache.last_attempt.is_none_or(|t| t.elapsed() >= self.settings.min_refresh_interval)
                || !fresh && cache.last_error.is_none();
            (fresh, may_fetch, cache.discovered_uri.clone())
        };
        if may_fetch {
            let attempt = Instant::now();
            let (result, discovered) = self.fetch(discovered).await;
            let mut cache = self.cache.write().await;
            cache.last_attempt = Some(attempt);
            cache.discovered_uri = discovered;
            match result {
                Ok(keys) => {
                    info!(issuer = %self.settings.issuer, keys = keys.len(), "Fetched signing keys.");
                    cache.keys = keys;
                    self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    cache.fetched = Some(Instant::now());
                    cache.last_error = None;
                }
                Err(e) => {
                    warn!(issuer = %self.settings.issuer, error = %e, "Signing keys could not be fetched.");
                    cache.last_error = Some(e);
                }
            }
        } else if !fresh {
            let cache = self.cache.read().await;
            let why = cache.last_error.clone().unwrap_or_else(|| "no key set fetched yet".into());
            return Err(AuthError::KeysUnavailable(why));
        }
        let cache = self.cache.read().await;
        if !self.is_fresh(&cache) {
            // Never fetched, or older than max_age and the refresh failed: fail closed.
            let why = cache.last_error.clone().unwrap_or_else(|| "no key set fetched yet".into());
            return Err(AuthError::KeysUnavailable(why));
        }
        find(&cache.keys, kid, alg).ok_or_else(|| match (&cache.last_error, kid) {
            (Some(e), _) => AuthError::KeysUnavailable(format!("kid not cached and refresh failed: {e}")),
            (None, Some(kid)) => AuthError::UnknownKey(super::truncate(kid, 64)),
            (None, None) => AuthError::UnknownKey("(none)".into()),
        })
    }

    /// The key-set generation, if the keys may still be used (fetched, and younger than
    /// `max_age`): a verification cached under this generation is still backed by those keys.
    pub async fn usable_generation(&self) -> Option<u64> {
        let cache = self.cache.read().await;
        self.is_fresh(&cache).then(|| self.generation.load(std::sync::atomic::Ordering::Acquire))
    }

    fn is_fresh(&self, cache: &Cache) -> bool {
        cache.fetched.is_some_and(|t| t.elapsed() < self.settings.max_age)
    }

    /// Fetches the key set, discovering its URL first when needed. Returns the result and the
    /// discovered URL to keep (dropped after a failure: the provider may have moved its keys).
    async fn fetch(&self, discovered: Option<String>) -> (Result<Vec<Key>, String>, Option<String>) {
        let Some(http) = &self.http else { return (Err("keys are fixed by the configuration".into()), None) };
        let uri = match (&self.settings.jwks_uri, discovered) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u,
            (None, None) => match self.discover(http).await {
                Ok(u) => u,
                Err(e) => return (Err(e), None),
            },
        };
        let result = async {
            let body = http.get(&uri, MAX_DOCUMENT_BYTES).await.map_err(|e| e.to_string())?;
            parse_jwks(&body)
        }
        .await;
        let keep = result.is_ok().then_some(uri);
        (result, keep)
    }

    async fn discover(&self, http: &HttpClient) -> Result<String, String> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let body = http.get(&url, MAX_DOCUMENT_BYTES).await.map_err(|e| e.to_string())?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|e| format!("discovery document at {url} is invalid: {e}"))?;
        if doc.issuer != self.settings.issuer {
            return Err(format!(
                "discovery document at {url} names issuer `{}`, not the configured `{}`",
                super::truncate(&doc.issuer, 128),
                self.settings.issuer
            ));
        }
        // Keys fetched over plain http could be swapped by anyone on the path: an https issuer
        // must publish them over https.
        if self.settings.issuer.starts_with("https://") && !doc.jwks_uri.starts_with("https://") {
            return Err(format!("discovery document at {url} names a jwks_uri that is not https"));
        }
        Ok(doc.jwks_uri)
    }
}

/// Parses a JWKS, keeping the signature keys this gateway can use and skipping the rest (an
/// encryption key, an unsupported key type) rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let mut keys = Vec::new();
    for jwk in set.keys.iter().take(MAX_KEYS) {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            // A symmetric key in a public JWKS is never a signing key we accept.
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
        // A key marked for an algorithm that is not a JWS signature algorithm (RSA-OAEP, say) is
        // not a signing key.
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match a.to_string().parse::<Algorithm>() {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
        };
        keys.push(Key { kid: jwk.common.key_id.clone(), alg, key: Arc::new(key) });
    }
    if keys.is_empty() {
        return Err("JWKS holds no usable signing key".into());
    }
    Ok(keys)
}

fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
    let usable = |k: &&Key| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family();
    match kid {
        Some(kid) => keys.iter().filter(usable).find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
        // Without a kid, only an unambiguous key will do.
        None => {
            let mut it = keys.iter().filter(usable);
            match (it.next(), it.next()) {
                (Some(k), None) => Some(k.key.clone()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keeps_signature_keys_only() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"EdDSA"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(find(&keys, Some("ed"), Algorithm::EdDSA).is_some());
        assert!(find(&keys, Some("ed"), Algorithm::RS256).is_none(), "family must match");
        assert!(find(&keys, None, Algorithm::EdDSA).is_some(), "one key: kid may be omitted");
        assert!(find(&keys, Some("other"), Algorithm::EdDSA).is_none());
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(parse_jwks(b"not json").is_err());
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
    }
}
