//! A real OpenID provider (`oidc-provider` from npm, started on loopback) issues access tokens
//! through the client-credentials grant; the gateway's identity layer — configured only with the
//! issuer URL, so discovery and the JWKS download are exercised — accepts them and maps the
//! provider's groups to Airlock roles.

use airlock::config::Config;
use airlock::identity::{AuthError, AuthMethod};
use airlock_tests::*;

fn identity_config(issuer: &str, extra: &str) -> String {
    format!(
        "[[identity.oidc]]\nname = \"corp\"\nissuer = \"{issuer}\"\naudiences = [\"airlock\"]\n\
         role_map = {{ agents = [\"agent\"], ehr-readers = [\"clinician\", \"reader\"] }}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_real_provider_are_accepted_through_discovery() {
    let idp = OidcServer::start().unwrap();
    let access = Config::parse(&identity_config(&idp.issuer, "")).unwrap().build_access().unwrap();

    // RS256 token for the `agent` client.
    let token = idp.client_credentials_token("agent", "agent-secret").unwrap();
    let p = access.identity.authenticate_bearer(&token).await.unwrap();
    assert_eq!(p.subject, "agent");
    assert_eq!(p.issuer.as_deref(), Some(idp.issuer.as_str()));
    assert_eq!(p.method, AuthMethod::Oidc { provider: "corp".into() });
    assert_eq!(p.roles.iter().collect::<Vec<_>>(), ["agent"]);
    assert_eq!(p.groups, ["agents"]);
    let now = jsonwebtoken::get_current_timestamp() as i64;
    // The token lives 300 s; sessions opened with it end when it stops being accepted, its
    // `exp` plus the default leeway of 60 s.
    assert!(p.expires_at.unwrap() > now + 60 && p.expires_at.unwrap() <= now + 301 + 60, "{:?}", p.expires_at);

    // ES256 token for the `ops` client, through the same cached key set.
    let token = idp.client_credentials_token("ops", "ops-secret").unwrap();
    let p = access.identity.authenticate_bearer(&token).await.unwrap();
    assert_eq!(p.subject, "ops");
    assert_eq!(p.roles.iter().collect::<Vec<_>>(), ["clinician", "reader"]);

    // The same token is refused where the audience or the client does not match.
    let other_aud = Config::parse(&identity_config(&idp.issuer, "").replace("[\"airlock\"]", "[\"billing\"]"))
        .unwrap()
        .build_access()
        .unwrap();
    assert_eq!(other_aud.identity.authenticate_bearer(&token).await, Err(AuthError::WrongAudience));
    let only_agent =
        Config::parse(&identity_config(&idp.issuer, "client_ids = [\"agent\"]")).unwrap().build_access().unwrap();
    assert_eq!(only_agent.identity.authenticate_bearer(&token).await, Err(AuthError::WrongClient));
    let agent_token = idp.client_credentials_token("agent", "agent-secret").unwrap();
    assert!(only_agent.identity.authenticate_bearer(&agent_token).await.is_ok());

    // A token altered after issue does not verify against the provider's keys.
    let forged = with_claims(&agent_token, |c| c["groups"] = serde_json::json!(["ehr-readers"]));
    assert_eq!(access.identity.authenticate_bearer(&forged).await, Err(AuthError::BadSignature));
}

/// The token with its claims edited (the signature is left as it was).
fn with_claims(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut c: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    edit(&mut c);
    format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_not_running_fails_closed() {
    // Nothing listens on this port: discovery fails, and so does every token.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let access = Config::parse(&identity_config(&issuer, "")).unwrap().build_access().unwrap();
    let idp = OidcServer::start().unwrap();
    let token = idp.client_credentials_token("agent", "agent-secret").unwrap();
    // The token names the running provider, which this gateway does not trust.
    assert!(matches!(access.identity.authenticate_bearer(&token).await, Err(AuthError::UnknownIssuer(_))));
    // A gateway that trusts the dead issuer cannot verify anything it claims.
    let forged = with_claims(&token, |c| c["iss"] = serde_json::json!(issuer));
    let r = access.identity.authenticate_bearer(&forged).await;
    assert!(matches!(r, Err(AuthError::KeysUnavailable(_))), "{r:?}");

    // Through a gateway: the caller gets a 401 that says so, without the provider's address or
    // the transport error (those are for the journal and the operator).
    let upstream = HttpUpstream::start().await;
    let config = format!(
        "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\n\n{}",
        upstream.addr,
        identity_config(&issuer, "")
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let url = format!("http://{}/v1/models", gw.addr("api"));
    let (code, headers, body) =
        tokio::task::block_in_place(|| curl(&["-H", &format!("Authorization: Bearer {forged}"), &url]));
    assert_eq!(code, 401, "{body}");
    let dead = issuer.trim_start_matches("http://");
    assert!(!body.contains(dead) && !headers.contains(dead), "{headers}{body}");
    gw.stop().await;
    let reasons: Vec<String> = sessions(gw.data_dir())
        .iter()
        .flat_map(|s| replay_json(gw.data_dir(), s["id"].as_str().unwrap()))
        .filter_map(|f| f["meta"]["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(reasons.iter().any(|r| r.contains(dead)), "the journal keeps the detail: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_accepts_the_providers_tokens_on_an_http_route() {
    let idp = OidcServer::start().unwrap();
    let upstream = HttpUpstream::start().await;
    let config = format!(
        "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"{}\"\nallow_roles = [\"agent\"]\n\n{}",
        upstream.addr,
        identity_config(&idp.issuer, "")
    );
    let mut gw = TestGateway::start(&config).await.unwrap();
    let url = format!("http://{}/v1/models", gw.addr("api"));
    let agent = idp.client_credentials_token("agent", "agent-secret").unwrap();
    let (code, _, body) =
        tokio::task::block_in_place(|| curl(&["-H", &format!("Authorization: Bearer {agent}"), &url]));
    assert_eq!(code, 200, "{body}");
    // `ops` is a clinician, not an agent: the route refuses it.
    let ops = idp.client_credentials_token("ops", "ops-secret").unwrap();
    let (code, _, body) = tokio::task::block_in_place(|| curl(&["-H", &format!("Authorization: Bearer {ops}"), &url]));
    assert_eq!(code, 403, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["rule"], "route:api:allow_roles");
    assert_eq!(upstream.seen().len(), 1);
    assert!(upstream.seen()[0].headers.iter().all(|(k, _)| k != "authorization"), "the caller's token is stripped");
    gw.stop().await;
    let principals: Vec<String> =
        sessions(gw.data_dir()).iter().map(|s| s["principal"].as_str().unwrap().to_string()).collect();
    assert_eq!(principals, ["oidc:corp/agent", "oidc:corp/ops"]);
}
