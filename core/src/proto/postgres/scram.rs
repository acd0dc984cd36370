//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), as PostgreSQL speaks it (§53.3.1
//! "SCRAM-SHA-256 Authentication"): how the gateway proves the upstream credential it holds,
//! without ever sending the password.
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<base64(ClientKey XOR HMAC(StoredKey, AuthMessage))>
//! server-final  v=<base64(HMAC(ServerKey, AuthMessage))>   — checked: the server knew the key
//! ```
//!
//! A hostile server controls the iteration count: it is bounded, so it cannot make the gateway
//! spin. PostgreSQL ignores the SCRAM user name (the startup message names the user), so the
//! gateway sends an empty one, as libpq does.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Most PBKDF2 iterations a server may ask for (PostgreSQL's default is 4096).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// The server's message does not follow RFC 5802.
    #[error("malformed SCRAM message from the server: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours (a replay or a confused peer).
    #[error("the server's nonce does not extend the client's")]
    NonceMismatch,
    /// The server asked for more iterations than allowed.
    #[error("the server asked for {0} PBKDF2 iterations (at most {MAX_ITERATIONS})")]
    TooManyIterations(u64),
    /// The server's signature is wrong: it does not know the password's keys.
    #[error("the server's SCRAM signature does not verify")]
    BadServerSignature,
    /// The server reported an error (`e=...`).
    #[error("the server refused the SCRAM exchange: {0}")]
    ServerError(String),
}

/// One SCRAM-SHA-256 exchange, client side.
#[derive(Debug)]
pub struct ScramClient {
    password: Vec<u8>,
    client_nonce: String,
    first_bare: String,
    /// Set by [`ScramClient::server_first`]: the server signature the final message must carry.
    expected_server_signature: Option<Vec<u8>>,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce; returns the client-first message.
    pub fn new(user: &str, password: &[u8]) -> (Self, String) {
        let mut raw = [0u8; 18];
        let _ = aws_lc_rs::rand::fill(&mut raw);
        Self::with_nonce(user, password, &B64.encode(raw))
    }

    /// Starts an exchange with a given nonce (tests use the RFC's vector).
    pub fn with_nonce(user: &str, password: &[u8], nonce: &str) -> (Self, String) {
        // RFC 5802 §5.1: `=` and `,` in the name are escaped.
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={user},r={nonce}");
        let first = format!("n,,{first_bare}");
        (
            Self {
                password: password.to_vec(),
                client_nonce: nonce.to_owned(),
                first_bare,
                expected_server_signature: None,
            },
            first,
        )
    }

    /// Reads the server-first message and returns the client-final message.
    pub fn server_first(&mut self, msg: &str) -> Result<String, ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in msg.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| ScramError::Malformed("salt is not base64"))?),
                Some(("i", v)) => {
                    iterations = Some(v.parse::<u64>().map_err(|_| ScramError::Malformed("bad iteration count"))?)
                }
                Some(("e", v)) => return Err(ScramError::ServerError(v.chars().take(200).collect())),
                Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension not supported")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iterations = iterations.ok_or(ScramError::Malformed("no iteration count"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let iterations = u32::try_from(iterations)
            .ok()
            .filter(|i| *i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or(ScramError::TooManyIterations(iterations))?;
        let mut salted = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, &self.password, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.first_bare);
        let client_signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        let server_key = hmac_sha256(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac_sha256(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server proves it knows the password's keys.
    pub fn server_final(&self, msg: &str) -> Result<(), ScramError> {
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.chars().take(200).collect()));
        }
        let v = msg.strip_prefix("v=").ok_or(ScramError::Malformed("no verifier"))?;
        let v = v.split(',').next().unwrap_or("");
        let got = B64.decode(v).map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        let expected = self.expected_server_signature.as_ref().ok_or(ScramError::Malformed("final before first"))?;
        if subtle::ConstantTimeEq::ct_eq(&got[..], &expected[..]).into() {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's test vector.
    #[test]
    fn the_rfc_7677_exchange() {
        let (mut c, first) = ScramClient::with_nonce("user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_msg = c.server_first(server_first).unwrap();
        assert_eq!(
            final_msg,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(c.server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Ok(()));
        assert_eq!(
            c.server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn hostile_servers_are_refused() {
        let (mut c, _) = ScramClient::with_nonce("", b"pw", "abc");
        assert_eq!(c.server_first("r=xyz123,s=c2FsdA==,i=4096"), Err(ScramError::NonceMismatch));
        assert_eq!(
            c.server_first("r=abc,s=c2FsdA==,i=4096"),
            Err(ScramError::NonceMismatch),
            "the server adds to the nonce"
        );
        assert_eq!(c.server_first("r=abcd,s=c2FsdA==,i=999999999"), Err(ScramError::TooManyIterations(999_999_999)));
        assert_eq!(c.server_first("r=abcd,s=c2FsdA==,i=0"), Err(ScramError::TooManyIterations(0)));
        assert!(matches!(c.server_first("r=abcd,i=4096"), Err(ScramError::Malformed(_))));
        assert!(matches!(c.server_first("e=invalid-proof"), Err(ScramError::ServerError(_))));
        assert!(matches!(c.server_final("v=AAAA"), Err(ScramError::Malformed(_))), "final before first");
    }
}
