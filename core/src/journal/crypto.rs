//! Cryptography of the journal: the hash chain, per-session data keys wrapped by a master key,
//! and Ed25519 checkpoint signing. Everything uses aws-lc-rs, the same library that backs rustls.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::JournalError;
use super::record::{HASH_LEN, Hash};

/// Length of a master key and of a session data key (AES-256).
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// `hash = SHA-256(prev_hash ‖ seq_be ‖ body)`.
pub fn chain_hash(prev: &Hash, seq: u64, body: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(body);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash that precedes sequence number 1.
pub const GENESIS: Hash = [0u8; HASH_LEN];

fn random<const N: usize>() -> Result<[u8; N], JournalError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| JournalError::Crypto("system random source failed"))?;
    Ok(out)
}

/// Writes a secret file readable only by its owner, failing if it already exists.
fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| JournalError::io(path, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| JournalError::io(path, e))
}

// === impl MasterKey ===

/// The key that wraps per-session data keys.
///
/// Each session's data key is wrapped under its own key, derived from the master key and the
/// session id with HKDF-SHA256, so no AES-GCM key ever sees more than one nonce: with one key
/// and random nonces, NIST SP 800-38D allows 2^32 wraps, which a gateway that opens a session
/// per HTTP request reaches in days. Keys wrapped directly by the master key (the first format)
/// still unwrap.
pub struct MasterKey {
    key: LessSafeKey,
    derive: aws_lc_rs::hkdf::Prk,
}

/// First byte of a wrapped key in the derived-key format; the tag follows the ciphertext.
const WRAP_V2: u8 = 2;
/// HKDF `info` prefix of a session's wrapping key (the session id follows).
const WRAP_INFO: &[u8] = b"airlock-session-key-wrap-v2";

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Loads the key from `path` (32 raw bytes), creating it when `create` is set and it does not
    /// exist.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, JournalError> {
        if create && !path.exists() {
            write_secret_file(path, &random::<KEY_LEN>()?)?;
        }
        let bytes = fs::read(path).map_err(|e| JournalError::io(path, e))?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, JournalError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| JournalError::Crypto("master key must be 32 bytes"))?;
        let derive = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"airlock-journal").extract(bytes);
        Ok(Self { key: LessSafeKey::new(unbound), derive })
    }

    /// The key that wraps `session`'s data key, and nothing else.
    fn wrapping_key(&self, session: &[u8; 16]) -> Result<LessSafeKey, JournalError> {
        let info = [WRAP_INFO, session.as_slice()];
        let okm = self
            .derive
            .expand(&info, &AES_256_GCM)
            .map_err(|_| JournalError::Crypto("deriving a session's wrapping key failed"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Creates a fresh data key for a session and returns it with its wrapped form.
    pub fn new_session_key(&self, session: &[u8; 16]) -> Result<(SessionCipher, Vec<u8>), JournalError> {
        let raw = random::<KEY_LEN>()?;
        let mut wrapped = raw.to_vec();
        // Its own key, used once: a fixed nonce is safe.
        self.wrapping_key(session)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(session), &mut wrapped)
            .map_err(|_| JournalError::Crypto("wrapping a session key failed"))?;
        let mut out = vec![WRAP_V2];
        out.extend_from_slice(&wrapped);
        Ok((SessionCipher::new(&raw)?, out))
    }

    /// Whether `wrapped` has the shape of a wrapped data key in either format (checked without
    /// the master key, by `journal verify`).
    pub fn well_formed(wrapped: &[u8]) -> bool {
        wrapped.len() == 1 + KEY_LEN + 16 && wrapped[0] == WRAP_V2 || wrapped.len() == NONCE_LEN + KEY_LEN + 16
    }

    /// Unwraps a session's data key.
    pub fn unwrap_session_key(&self, session: &[u8; 16], wrapped: &[u8]) -> Result<SessionCipher, JournalError> {
        if wrapped.len() == 1 + KEY_LEN + 16 && wrapped[0] == WRAP_V2 {
            let mut buf = wrapped[1..].to_vec();
            let raw = self
                .wrapping_key(session)?
                .open_in_place(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(session), &mut buf)
                .map_err(|_| JournalError::Crypto("session key does not unwrap with this master key"))?;
            return SessionCipher::new(raw);
        }
        if wrapped.len() != NONCE_LEN + KEY_LEN + 16 {
            return Err(JournalError::Crypto("wrapped session key has the wrong length"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = wrapped[NONCE_LEN..].to_vec();
        let raw = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(session), &mut buf)
            .map_err(|_| JournalError::Crypto("session key does not unwrap with this master key"))?;
        SessionCipher::new(raw)
    }
}

// === impl SessionCipher ===

/// Seals and opens one session's data payloads. Nonces are a per-session counter, so a key never
/// sees the same nonce twice.
pub struct SessionCipher {
    key: LessSafeKey,
    counter: AtomicU64,
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCipher(..)")
    }
}

impl SessionCipher {
    fn new(raw: &[u8]) -> Result<Self, JournalError> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| JournalError::Crypto("bad session key"))?;
        Ok(Self { key: LessSafeKey::new(unbound), counter: AtomicU64::new(0) })
    }

    /// Encrypts `plaintext`; returns the nonce and ciphertext‖tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), JournalError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let mut buf = Vec::with_capacity(plaintext.len() + 16);
        buf.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| JournalError::Crypto("sealing a payload failed"))?;
        Ok((nonce, buf))
    }

    /// Decrypts a sealed payload.
    pub fn open(&self, aad: &[u8], nonce: [u8; NONCE_LEN], ciphertext: &[u8]) -> Result<Vec<u8>, JournalError> {
        let mut buf = ciphertext.to_vec();
        let len = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| JournalError::Crypto("payload does not decrypt: wrong key or altered record"))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

// === impl SigningKey ===

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public={})", hex(self.public_key()))
    }
}

impl SigningKey {
    /// Loads a PKCS#8 key from `path`, creating one when `create` is set and it does not exist.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, JournalError> {
        if create && !path.exists() {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| JournalError::Crypto("generating the signing key failed"))?;
            write_secret_file(path, doc.as_ref())?;
        }
        let bytes = fs::read(path).map_err(|e| JournalError::io(path, e))?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&bytes))
            .map_err(|_| JournalError::Crypto("signing key is not a PKCS#8 Ed25519 key"))?;
        Ok(Self { pair })
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Checks an Ed25519 signature.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(message, signature).is_ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_depends_on_every_input() {
        let h = chain_hash(&GENESIS, 1, b"body");
        assert_ne!(h, chain_hash(&GENESIS, 2, b"body"));
        assert_ne!(h, chain_hash(&GENESIS, 1, b"bodz"));
        assert_ne!(h, chain_hash(&h, 1, b"body"));
        assert_eq!(h, chain_hash(&GENESIS, 1, b"body"));
    }

    #[test]
    fn session_keys_wrap_seal_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load_or_create(&dir.path().join("m.key"), true).unwrap();
        let sid = [7u8; 16];
        let (cipher, wrapped) = master.new_session_key(&sid).unwrap();
        let (nonce, ct) = cipher.seal(b"aad", b"patient 42").unwrap();
        let reopened = master.unwrap_session_key(&sid, &wrapped).unwrap();
        assert_eq!(reopened.open(b"aad", nonce, &ct).unwrap(), b"patient 42");
        assert!(reopened.open(b"aaX", nonce, &ct).is_err(), "aad is bound");
        assert!(master.unwrap_session_key(&[8u8; 16], &wrapped).is_err(), "key is bound to its session");
        let (nonce2, _) = cipher.seal(b"aad", b"x").unwrap();
        assert_ne!(nonce, nonce2);
        assert_eq!((wrapped[0], wrapped.len()), (WRAP_V2, 1 + KEY_LEN + 16), "wrapped under a derived key");
        let (_, other) = master.new_session_key(&[8u8; 16]).unwrap();
        assert_ne!(wrapped[1..], other[1..], "another session, another wrapping key");
    }

    #[test]
    fn a_key_wrapped_in_the_first_format_still_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::load_or_create(&dir.path().join("m.key"), true).unwrap();
        let sid = [7u8; 16];
        // The first format: the data key sealed by the master key itself under a random nonce.
        let raw = [42u8; KEY_LEN];
        let nonce = [3u8; NONCE_LEN];
        let mut sealed = raw.to_vec();
        master.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&sid), &mut sealed).unwrap();
        let wrapped = [nonce.as_slice(), &sealed].concat();
        let cipher = master.unwrap_session_key(&sid, &wrapped).unwrap();
        let (n, ct) = SessionCipher::new(&raw).unwrap().seal(b"a", b"old session").unwrap();
        assert_eq!(cipher.open(b"a", n, &ct).unwrap(), b"old session");
    }

    #[test]
    fn signing_key_persists_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.key");
        let k1 = SigningKey::load_or_create(&path, true).unwrap();
        let k2 = SigningKey::load_or_create(&path, false).unwrap();
        assert_eq!(k1.public_key(), k2.public_key());
        let sig = k1.sign(b"msg");
        assert!(verify_signature(k2.public_key(), b"msg", &sig));
        assert!(!verify_signature(k2.public_key(), b"msh", &sig));
        assert_eq!(unhex(&hex(&sig)).unwrap(), sig);
    }
}
