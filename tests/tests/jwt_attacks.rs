//! The JWT attack suite against a local JWKS server that the test controls: forged and broken
//! tokens are refused with the specific error (and the RFC 6750 answer an HTTP caller would get),
//! an unknown `kid` triggers one rate-limited refresh that picks up a rotated key, and a JWKS
//! endpoint that goes down fails closed for new keys while cached keys work until their max age.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::config::{Access, Config};
use airlock::deny::{Denial, http};
use airlock::identity::AuthError;
use airlock_tests::*;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_A: &[u8] = include_bytes!("../fixtures/jwt/rsa-a.der");
const RSA_A_PUB_PEM: &[u8] = include_bytes!("../fixtures/jwt/rsa-a.pub.pem");
const RSA_B: &[u8] = include_bytes!("../fixtures/jwt/rsa-b.der");

#[derive(Default)]
struct JwksState {
    issuer: String,
    keys: Vec<Value>,
    up: bool,
    jwks_hits: usize,
}

struct Idp {
    state: Arc<Mutex<JwksState>>,
    issuer: String,
    access: Arc<Access>,
}

fn public_jwk(der: &[u8], kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(der), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

async fn idp() -> Idp {
    let state = Arc::new(Mutex::new(JwksState { up: true, keys: vec![public_jwk(RSA_A, "a")], ..Default::default() }));
    let s = state.clone();
    let addr = http_responder(move |_method, path| {
        let mut st = s.lock().unwrap();
        if !st.up {
            return (503, "{}".into());
        }
        match path {
            "/.well-known/openid-configuration" => {
                (200, json!({"issuer": st.issuer, "jwks_uri": format!("{}/jwks", st.issuer)}).to_string())
            }
            "/jwks" => {
                st.jwks_hits += 1;
                (200, json!({"keys": st.keys}).to_string())
            }
            _ => (404, "{}".into()),
        }
    })
    .await;
    let issuer = format!("http://{addr}");
    state.lock().unwrap().issuer = issuer.clone();
    let cfg = format!(
        "[[identity.oidc]]\nname = \"local\"\nissuer = \"{issuer}\"\naudiences = [\"airlock\"]\nleeway = \"5s\"\n\
         jwks_max_age = \"2s\"\njwks_min_refresh_interval = \"1s\"\n"
    );
    let access = Config::parse(&cfg).unwrap().build_access().unwrap();
    Idp { state, issuer, access }
}

impl Idp {
    fn claims(&self) -> Value {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        json!({"iss": self.issuer, "aud": "airlock", "sub": "alice", "iat": now, "exp": now + 120})
    }

    async fn check(&self, token: &str) -> Result<airlock::identity::Principal, AuthError> {
        self.access.identity.authenticate_bearer(token).await
    }

    fn hits(&self) -> usize {
        self.state.lock().unwrap().jwks_hits
    }
}

fn sign(der: &[u8], kid: &str, claims: &Value) -> String {
    let header = Header { kid: Some(kid.into()), ..Header::new(Algorithm::RS256) };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der)).unwrap()
}

fn b64(v: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// The RFC 6750 `error` an HTTP caller would receive for this failure.
fn bearer_error(e: &AuthError) -> String {
    let r = http(&Denial::unauthenticated(e, "req"), "airlock");
    assert_eq!(r.status, 401);
    serde_json::from_slice::<Value>(&r.body).unwrap()["error"].as_str().unwrap().to_string()
}

/// (what, token, the error expected, the RFC 6750 code an HTTP caller gets).
type Case = (&'static str, String, fn(&AuthError) -> bool, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused_with_the_right_error() {
    let idp = idp().await;
    let good = sign(RSA_A, "a", &idp.claims());
    assert_eq!(idp.check(&good).await.unwrap().subject, "alice");
    let now = jsonwebtoken::get_current_timestamp() as i64;

    // Fresh kids, and past the refresh interval: if these reached the key lookup, they would cause
    // a fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unsigned =
        format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT","kid":"fresh-1"}"#), b64(idp.claims().to_string()));
    let confused = jsonwebtoken::encode(
        &Header { kid: Some("fresh-2".into()), ..Header::new(Algorithm::HS256) },
        &idp.claims(),
        &EncodingKey::from_secret(RSA_A_PUB_PEM),
    )
    .unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = idp.claims();
        f(&mut c);
        sign(RSA_A, "a", &c)
    };
    let expired = edit(&|c| c["exp"] = json!(now - 60));
    let not_yet = edit(&|c| c["nbf"] = json!(now + 60));
    let wrong_iss = edit(&|c| c["iss"] = json!("http://127.0.0.1:1"));
    let wrong_aud = edit(&|c| c["aud"] = json!("billing"));
    let no_sub = edit(&|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    let oversized = edit(&|c| c["pad"] = json!("x".repeat(9000)));
    let bad_base64 = format!("{}.@@@.{}", good.split('.').next().unwrap(), good.split('.').nth(2).unwrap());
    let bad_json =
        format!("{}.{}.{}", good.split('.').next().unwrap(), b64("{not json"), good.split('.').nth(2).unwrap());
    let foreign_key = sign(RSA_B, "a", &idp.claims());
    // Validly signed, but it names a critical extension (RFC 7515 §4.1.11) no one here implements.
    let critical = jsonwebtoken::encode(
        &Header { kid: Some("a".into()), crit: Some(vec!["urn:example:bind".into()]), ..Header::new(Algorithm::RS256) },
        &idp.claims(),
        &EncodingKey::from_rsa_der(RSA_A),
    )
    .unwrap();

    let cases: Vec<Case> = vec![
        ("alg none", unsigned, |e| *e == AuthError::AlgNone, "invalid_token"),
        ("HS256 keyed with the RSA public key", confused, |e| matches!(e, AuthError::HmacRejected(_)), "invalid_token"),
        ("expired", expired, |e| *e == AuthError::Expired, "invalid_token"),
        ("not yet valid", not_yet, |e| *e == AuthError::NotYetValid, "invalid_token"),
        ("wrong iss", wrong_iss, |e| matches!(e, AuthError::UnknownIssuer(_)), "invalid_token"),
        ("wrong aud", wrong_aud, |e| *e == AuthError::WrongAudience, "invalid_token"),
        ("missing sub", no_sub, |e| *e == AuthError::MissingClaim("sub".into()), "invalid_token"),
        ("oversized", oversized, |e| matches!(e, AuthError::TooLarge { .. }), "invalid_token"),
        ("malformed base64", bad_base64, |e| matches!(e, AuthError::Malformed(_)), "invalid_token"),
        ("malformed JSON", bad_json, |e| matches!(e, AuthError::Malformed(_)), "invalid_token"),
        ("signed by another key", foreign_key, |e| *e == AuthError::BadSignature, "invalid_token"),
        ("a critical extension", critical, |e| matches!(e, AuthError::Malformed(_)), "invalid_token"),
    ];
    for (what, token, expected, code) in cases {
        let err = idp.check(&token).await.expect_err(what);
        assert!(expected(&err), "{what}: got {err:?}");
        assert_eq!(bearer_error(&err), code, "{what}");
        // The message never echoes the token.
        assert!(!err.to_string().contains(&token[..20.min(token.len())]), "{what}: {err}");
    }
    assert_eq!(idp.hits(), 1, "none of the forgeries caused a key fetch");
    // The control: a well-formed token with a fresh kid does cause one.
    let _ = idp.check(&sign(RSA_A, "fresh-3", &idp.claims())).await;
    assert_eq!(idp.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refreshes_once_and_picks_up_a_rotated_key() {
    let idp = idp().await;
    assert!(idp.check(&sign(RSA_A, "a", &idp.claims())).await.is_ok());
    assert_eq!(idp.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let rotated = sign(RSA_B, "b", &idp.claims());
    assert_eq!(idp.check(&rotated).await.unwrap_err(), AuthError::UnknownKey("b".into()));
    assert_eq!(idp.hits(), 2, "an unknown kid caused one refresh");
    // A burst of unknown kids inside the refresh interval does not reach the provider.
    for i in 0..20 {
        let t = sign(RSA_B, &format!("random-{i}"), &idp.claims());
        assert!(matches!(idp.check(&t).await, Err(AuthError::UnknownKey(_))));
    }
    assert_eq!(idp.hits(), 2, "refreshes are rate-limited");

    // The provider rotates: the new key is published next to the old one.
    idp.state.lock().unwrap().keys.push(public_jwk(RSA_B, "b"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(idp.check(&rotated).await.unwrap().subject, "alice");
    assert_eq!(idp.hits(), 3);
    assert!(idp.check(&sign(RSA_A, "a", &idp.claims())).await.is_ok(), "the old key still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_outage_fails_closed_for_new_keys_and_after_max_age() {
    let idp = idp().await;
    let token = sign(RSA_A, "a", &idp.claims());
    assert!(idp.check(&token).await.is_ok());
    idp.state.lock().unwrap().up = false;

    // Cached keys keep working while fresh.
    assert!(idp.check(&token).await.is_ok());
    // A key the cache does not hold cannot be fetched: refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = idp.check(&sign(RSA_B, "b", &idp.claims())).await;
    assert!(matches!(r, Err(AuthError::KeysUnavailable(_))), "{r:?}");
    // Past the max age (2 s) the cached keys are no longer trusted either.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = idp.check(&token).await;
    assert!(matches!(r, Err(AuthError::KeysUnavailable(_))), "{r:?}");

    // The provider comes back: after the refresh interval, keys are fetched again.
    idp.state.lock().unwrap().up = true;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(idp.check(&token).await.is_ok());
}
