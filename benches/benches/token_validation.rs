//! Token validation with a warm JWKS cache, per algorithm:
//! - `*_verify`: full verification (`OidcProvider::verify_fully`: size check, header peek, key
//!   lookup, signature, claims, principal) — a token the gateway has not seen before;
//! - `*_repeat`: `OidcProvider::verify`, the path every request takes — the same token again is
//!   answered from the verified-token cache (hash, lookup, `exp`/`nbf` re-checked);
//! - `*_signature_only`: the anchor, the bare signature verification through aws-lc-rs in the
//!   same run, so the ratio shows what the gateway adds on top of the cryptography.
//!
//! Run: `cargo bench -p airlock-benches --bench token_validation`. Results in BENCHMARKS.md.
#![expect(clippy::unwrap_used, reason = "a benchmark whose set-up fails should stop loudly")]

use std::collections::BTreeMap;
use std::time::Duration;

use airlock::identity::OidcProvider;
use airlock::identity::jwks::KeySourceSettings;
use airlock::identity::jwt::{ASYMMETRIC, DEFAULT_MAX_TOKEN_BYTES, OidcSettings};
use aws_lc_rs::signature::{self, KeyPair as _};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISS: &str = "https://idp.example";
const RSA: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-a.der");

fn settings() -> OidcSettings {
    OidcSettings {
        name: "bench".into(),
        audiences: vec!["airlock".into()],
        client_ids: vec![],
        roles_claim: "groups".into(),
        role_map: BTreeMap::new(),
        leeway: Duration::from_secs(60),
        algorithms: ASYMMETRIC.to_vec(),
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        keys: KeySourceSettings {
            issuer: ISS.into(),
            jwks_uri: None,
            max_age: Duration::from_secs(3600),
            min_refresh_interval: Duration::from_secs(30),
        },
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

/// A typical access token: registered claims, groups, e-mail.
fn token(key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": ISS, "aud": "airlock", "sub": "alice", "iat": now, "exp": now + 3600,
        "groups": ["clinician", "staff"], "email": "alice@example.org", "client_id": "ehr-app",
    });
    jsonwebtoken::encode(&Header { kid: Some(kid.into()), ..Header::new(alg) }, &claims, key).unwrap()
}

fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine as _;
    let (msg, sig) = token.rsplit_once('.').unwrap();
    (msg.as_bytes().to_vec(), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap())
}

/// (name, signing key, algorithm, kid, aws-lc-rs verification algorithm, public key).
type Case<'a> = (&'a str, &'a EncodingKey, Algorithm, &'a str, &'static dyn signature::VerificationAlgorithm, &'a [u8]);

fn token_validation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ec_pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ed_pkcs8 = signature::Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
    let rsa = EncodingKey::from_rsa_der(RSA);
    let ec = EncodingKey::from_ec_der(ec_pkcs8.as_ref());
    let ed = EncodingKey::from_ed_der(ed_pkcs8.as_ref());
    let set = JwkSet {
        keys: vec![
            jwk(&rsa, Algorithm::RS256, "rsa"),
            jwk(&ec, Algorithm::ES256, "ec"),
            jwk(&ed, Algorithm::EdDSA, "ed"),
        ],
    };
    let provider = OidcProvider::with_static_keys(settings(), &serde_json::to_vec(&set).unwrap()).unwrap();

    // Public keys for the signature-only anchors.
    let rsa_pub = aws_lc_rs::rsa::KeyPair::from_der(RSA).unwrap().public_key().as_ref().to_vec();
    let ec_pub = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let ed_pub = signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap().public_key().as_ref().to_vec();

    let mut group = c.benchmark_group("token_validation");
    group.measurement_time(Duration::from_secs(5));
    let cases: [Case<'_>; 3] = [
        ("RS256", &rsa, Algorithm::RS256, "rsa", &signature::RSA_PKCS1_2048_8192_SHA256, &rsa_pub),
        ("ES256", &ec, Algorithm::ES256, "ec", &signature::ECDSA_P256_SHA256_FIXED, &ec_pub),
        ("EdDSA", &ed, Algorithm::EdDSA, "ed", &signature::ED25519, &ed_pub),
    ];
    for (name, key, alg, kid, verify_alg, public) in cases {
        let t = token(key, alg, kid);
        assert!(rt.block_on(provider.verify(&t)).is_ok(), "{name} token must verify");
        group.bench_function(format!("{name}_verify"), |b| {
            b.iter(|| rt.block_on(provider.verify_fully(std::hint::black_box(&t))).unwrap())
        });
        group.bench_function(format!("{name}_repeat"), |b| {
            b.iter(|| rt.block_on(provider.verify(std::hint::black_box(&t))).unwrap())
        });
        let (msg, sig) = split(&t);
        let pk = signature::UnparsedPublicKey::new(verify_alg, public.to_vec());
        assert!(pk.verify(&msg, &sig).is_ok(), "{name} anchor must verify");
        group.bench_function(format!("{name}_signature_only"), |b| {
            b.iter(|| pk.verify(std::hint::black_box(&msg), std::hint::black_box(&sig)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, token_validation);
criterion_main!(benches);
