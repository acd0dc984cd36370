use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const ISS: &str = "https://idp.example";
const RSA_A: &[u8] = include_bytes!("../../../../tests/fixtures/jwt/rsa-a.der");
const RSA_A_PUB_PEM: &[u8] = include_bytes!("../../../../tests/fixtures/jwt/rsa-a.pub.pem");
const RSA_B: &[u8] = include_bytes!("../../../../tests/fixtures/jwt/rsa-b.der");

fn ec_key() -> EncodingKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    EncodingKey::from_ec_der(pkcs8.as_ref())
}

fn ed_key() -> EncodingKey {
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    EncodingKey::from_ed_der(pkcs8.as_ref())
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

struct Fixture {
    provider: OidcProvider,
    rsa: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
}

fn settings() -> OidcSettings {
    OidcSettings {
        name: "corp".into(),
        audiences: vec!["airlock".into()],
        client_ids: vec![],
        roles_claim: "groups".into(),
        role_map: BTreeMap::new(),
        leeway: Duration::from_secs(30),
        algorithms: ASYMMETRIC.to_vec(),
        max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        keys: KeySourceSettings {
            issuer: ISS.into(),
            jwks_uri: None,
            max_age: Duration::from_secs(600),
            min_refresh_interval: Duration::from_secs(30),
        },
    }
}

fn fixture_with(settings: OidcSettings) -> Fixture {
    let rsa = EncodingKey::from_rsa_der(RSA_A);
    let ec = ec_key();
    let ed = ed_key();
    let set = JwkSet {
        keys: vec![
            jwk(&rsa, Algorithm::RS256, "rsa"),
            jwk(&ec, Algorithm::ES256, "ec"),
            jwk(&ed, Algorithm::EdDSA, "ed"),
        ],
    };
    let provider = OidcProvider::with_static_keys(settings, &serde_json::to_vec(&set).unwrap()).unwrap();
    Fixture { provider, rsa, ec, ed }
}

fn fixture() -> Fixture {
    fixture_with(settings())
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "aud": "airlock", "sub": "alice", "exp": now() + 300, "iat": now(),
           "groups": ["clinician", "staff"], "email": "alice@example.org", "name": "Alice"})
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn raw_token(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

async fn verify(f: &Fixture, token: &str) -> Result<Principal, AuthError> {
    f.provider.verify(token).await
}

#[tokio::test]
async fn every_asymmetric_family_verifies() {
    let f = fixture();
    for (key, alg, kid) in
        [(&f.rsa, Algorithm::RS256, "rsa"), (&f.ec, Algorithm::ES256, "ec"), (&f.ed, Algorithm::EdDSA, "ed")]
    {
        let p = verify(&f, &sign(key, alg, kid, &claims())).await.unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.email.as_deref(), Some("alice@example.org"));
        assert_eq!(p.method, AuthMethod::Oidc { provider: "corp".into() });
        assert!(p.has_role("clinician") && p.has_role("staff"));
        assert!(p.expires_at.unwrap() > now());
    }
}

#[tokio::test]
async fn rsa_pss_and_larger_hashes_verify_with_an_rsa_key_without_alg() {
    // The JWK above says RS256; a second, unmarked JWK of the same key accepts the RSA family.
    let rsa = EncodingKey::from_rsa_der(RSA_A);
    let mut j = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    j.common.key_algorithm = None;
    j.common.key_id = Some("any".into());
    let set = JwkSet { keys: vec![j] };
    let provider = OidcProvider::with_static_keys(settings(), &serde_json::to_vec(&set).unwrap()).unwrap();
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512] {
        let token = sign(&rsa, alg, "any", &claims());
        assert_eq!(provider.verify(&token).await.unwrap().subject, "alice", "{alg:?}");
    }
}

#[tokio::test]
async fn alg_none_and_hmac_confusion_are_refused() {
    let f = fixture();
    let none = raw_token(json!({"alg": "none", "typ": "JWT"}), &claims(), b"");
    assert_eq!(verify(&f, &none).await, Err(AuthError::AlgNone));
    let none_upper = raw_token(json!({"alg": "NONE"}), &claims(), b"");
    assert_eq!(verify(&f, &none_upper).await, Err(AuthError::AlgNone));
    // Algorithm confusion: HS256 keyed with the RSA public key the JWKS publishes.
    let hs = jsonwebtoken::encode(
        &Header { kid: Some("rsa".into()), ..Header::new(Algorithm::HS256) },
        &claims(),
        &EncodingKey::from_secret(RSA_A_PUB_PEM),
    )
    .unwrap();
    assert_eq!(verify(&f, &hs).await, Err(AuthError::HmacRejected("HS256".into())));
}

#[tokio::test]
async fn time_claims_are_checked_with_leeway() {
    let f = fixture();
    let mut c = claims();
    c["exp"] = json!(now() - 120);
    assert_eq!(verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await, Err(AuthError::Expired));
    c["exp"] = json!(now() - 10); // within the 30 s leeway
    assert!(verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await.is_ok());
    let mut c = claims();
    c["nbf"] = json!(now() + 120);
    assert_eq!(verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await, Err(AuthError::NotYetValid));
    let mut c = claims();
    c["iat"] = json!(now() + 120);
    assert_eq!(verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await, Err(AuthError::IssuedInFuture));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await, Err(AuthError::MissingClaim("exp".into())));
}

#[tokio::test]
async fn issuer_audience_subject_and_client_are_checked() {
    let f = fixture();
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await, Err(AuthError::WrongAudience));
    c["aud"] = json!(["someone-else", "airlock"]);
    assert!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await.is_ok());
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await, Err(AuthError::WrongIssuer));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await, Err(AuthError::MissingClaim("sub".into())));

    let f = fixture_with(OidcSettings { client_ids: vec!["agent-app".into()], ..settings() });
    let mut c = claims();
    c["azp"] = json!("agent-app");
    assert!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await.is_ok());
    c["azp"] = json!("other-app");
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await, Err(AuthError::WrongClient));
    let mut c = claims();
    c["client_id"] = json!("agent-app");
    assert!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await.is_ok());
    let mut c = claims();
    c["aud"] = json!(["airlock", "other"]);
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &c)).await, Err(AuthError::WrongClient));
    // No azp or client_id: the single audience is the authorized party, and it is not a listed
    // client.
    assert_eq!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &claims())).await, Err(AuthError::WrongClient));
    let f = fixture_with(OidcSettings { client_ids: vec!["airlock".into()], ..settings() });
    assert!(verify(&f, &sign(&f.ed, Algorithm::EdDSA, "ed", &claims())).await.is_ok());
}

#[tokio::test]
async fn a_non_ascii_alg_is_malformed_not_a_panic() {
    let f = fixture();
    for alg in ["€", "é", "H€", "\u{0}"] {
        let t = raw_token(json!({"alg": alg}), &claims(), b"sig");
        let r = verify(&f, &t).await;
        assert!(matches!(r, Err(AuthError::Malformed(_) | AuthError::AlgorithmNotAllowed(_))), "{alg}: {r:?}");
    }
}

#[tokio::test]
async fn signatures_and_keys_must_match() {
    let f = fixture();
    // Signed by a key the JWKS does not hold, under a kid it does hold.
    let foreign = EncodingKey::from_rsa_der(RSA_B);
    assert_eq!(verify(&f, &sign(&foreign, Algorithm::RS256, "rsa", &claims())).await, Err(AuthError::BadSignature));
    // A kid nobody published.
    assert_eq!(
        verify(&f, &sign(&f.rsa, Algorithm::RS256, "rotated", &claims())).await,
        Err(AuthError::UnknownKey("rotated".into()))
    );
    // A flipped payload byte breaks the signature.
    let good = sign(&f.ec, Algorithm::ES256, "ec", &claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
    assert_eq!(verify(&f, &parts.join(".")).await, Err(AuthError::BadSignature));
    // An algorithm the provider does not allow.
    let f = fixture_with(OidcSettings { algorithms: vec![Algorithm::ES256], ..settings() });
    assert!(matches!(
        verify(&f, &sign(&f.rsa, Algorithm::RS256, "rsa", &claims())).await,
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_refused() {
    let f = fixture();
    for bad in ["a.b.c", "!!!.???.***", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "onlyone", "a.b.c.d"] {
        let r = verify(&f, bad).await;
        assert!(matches!(r, Err(AuthError::Malformed(_))), "{bad}: {r:?}");
    }
    let mut c = claims();
    c["padding"] = json!("x".repeat(DEFAULT_MAX_TOKEN_BYTES));
    let big = sign(&f.ec, Algorithm::ES256, "ec", &c);
    assert!(matches!(verify(&f, &big).await, Err(AuthError::TooLarge { .. })));
}

#[tokio::test]
async fn roles_come_from_claim_paths_through_the_map() {
    let mut s = settings();
    s.roles_claim = "realm_access.roles".into();
    s.role_map = BTreeMap::from([("ehr-readers".to_string(), vec!["clinician".to_string(), "reader".to_string()])]);
    let f = fixture_with(s);
    let mut c = claims();
    c["realm_access"] = json!({"roles": ["ehr-readers", "unmapped"]});
    let p = verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await.unwrap();
    assert_eq!(p.roles, BTreeSet::from(["clinician".to_string(), "reader".to_string()]));
    assert_eq!(p.groups, vec!["ehr-readers".to_string(), "unmapped".to_string()]);

    let mut s = settings();
    s.roles_claim = "https://airlock.example/roles".into();
    let f = fixture_with(s);
    let mut c = claims();
    c["https://airlock.example/roles"] = json!("auditor");
    let p = verify(&f, &sign(&f.ec, Algorithm::ES256, "ec", &c)).await.unwrap();
    assert_eq!(p.roles, BTreeSet::from(["auditor".to_string()]));
}

#[test]
fn jwt_shape_detection() {
    assert!(looks_like_jwt("eyJh.eyJz.sig"));
    assert!(looks_like_jwt("eyJh.eyJz."));
    assert!(!looks_like_jwt("ak_live_123"));
    assert!(!looks_like_jwt("a.b"));
    assert!(!looks_like_jwt("a.b.c.d"));
}

#[test]
fn fuzz_seed_corpus_never_panics() {
    let dir = crate::fuzz_corpus("bearer_token");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        fuzz_peek(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 4, "seed corpus missing from {}", dir.display());
}

proptest::proptest! {
    #[test]
    fn arbitrary_credentials_never_panic(s in "[A-Za-z0-9_=.@-]{0,300}") {
        fuzz_peek(s.as_bytes());
    }

    #[test]
    fn arbitrary_headers_never_panic(alg in "\\PC{0,8}", kid in "\\PC{0,8}") {
        let t = raw_token(json!({"alg": alg, "kid": kid}), &claims(), b"sig");
        fuzz_peek(t.as_bytes());
    }
}

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let f = fixture_with(OidcSettings { leeway: Duration::ZERO, ..settings() });
    let mut c = claims();
    c["exp"] = json!(now() + 1);
    let token = sign(&f.ec, Algorithm::ES256, "ec", &c);
    assert!(verify(&f, &token).await.is_ok());
    assert!(verify(&f, &token).await.is_ok(), "the second time comes from the cache");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verify(&f, &token).await, Err(AuthError::Expired), "the cache never outlives exp");
    // A token that was refused is not remembered as good.
    let mut bad = token.clone();
    bad.push('A');
    assert!(verify(&f, &bad).await.is_err());
    assert!(verify(&f, &bad).await.is_err());
}
