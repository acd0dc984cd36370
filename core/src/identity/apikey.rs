//! API keys for service accounts.
//!
//! The config holds only `sha256:<hex>` of each key, so a leaked config file does not leak the
//! keys. A presented key is hashed and compared with *every* configured hash in constant time, so
//! neither the position of a match nor the length of a common prefix shows in the timing.

use std::collections::BTreeSet;

use subtle::ConstantTimeEq;

use super::{AuthError, AuthMethod, Principal};

/// One configured key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The service account's name (the principal's subject).
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Roles granted.
    pub roles: BTreeSet<String>,
    /// End of validity, seconds since the Unix epoch.
    pub expires_at: Option<i64>,
}

/// All configured keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses the config form `sha256:<64 hex digits>`.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let bytes = crate::journal::crypto::unhex(hex)?;
    bytes.try_into().ok()
}

/// The config form of a key's hash, as `airlock identity hash-key` prints it.
pub fn format_hash(key: &str) -> String {
    format!("sha256:{}", crate::journal::crypto::hex(&hash_key(key)))
}

impl ApiKeys {
    /// Keys from the config.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self { keys }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key of a service account, by name.
    pub fn named(&self, name: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// The principal for a presented key.
    pub fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        if presented.len() > 4096 {
            return Err(AuthError::TooLarge { len: presented.len(), max: 4096 });
        }
        let digest = hash_key(presented);
        let mut found: Option<&ApiKey> = None;
        for key in &self.keys {
            // Every entry is compared; only the bookkeeping after the comparison branches.
            if bool::from(key.sha256.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthError::UnknownApiKey)?;
        if key.expires_at.is_some_and(|t| t <= crate::time::now_us() / 1_000_000) {
            return Err(AuthError::ApiKeyExpired);
        }
        Ok(Principal {
            subject: key.name.clone(),
            issuer: Some("api-key".into()),
            name: None,
            email: None,
            roles: key.roles.clone(),
            groups: Vec::new(),
            method: AuthMethod::ApiKey { sha256: key.sha256 },
            expires_at: key.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(vec![
            ApiKey {
                name: "etl-bot".into(),
                sha256: hash_key("ak_live_123"),
                roles: ["etl".to_string()].into(),
                expires_at: None,
            },
            ApiKey { name: "old".into(), sha256: hash_key("ak_old"), roles: BTreeSet::new(), expires_at: Some(1) },
        ])
    }

    #[test]
    fn matching_key_gives_its_principal() {
        let p = keys().authenticate("ak_live_123").unwrap();
        assert_eq!(p.subject, "etl-bot");
        assert!(p.has_role("etl"));
        assert_eq!(p.method, AuthMethod::ApiKey { sha256: hash_key("ak_live_123") });
    }

    #[test]
    fn wrong_and_expired_keys_are_refused() {
        assert_eq!(keys().authenticate("ak_live_124"), Err(AuthError::UnknownApiKey));
        assert_eq!(keys().authenticate(""), Err(AuthError::UnknownApiKey));
        assert_eq!(keys().authenticate("ak_old"), Err(AuthError::ApiKeyExpired));
    }

    #[test]
    fn hash_format_round_trips() {
        let h = format_hash("secret");
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64);
        assert_eq!(parse_hash(&h), Some(hash_key("secret")));
        assert_eq!(parse_hash("sha256:zz"), None);
        assert_eq!(parse_hash("md5:00"), None);
    }
}
