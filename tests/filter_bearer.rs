//! The `bearer` filter: JWTs (HS256, RS256, ES256) and static tokens, found in the
//! `Authorization` header, a query parameter or a sub-protocol entry; every way a token
//! can be wrong gets 401 with `WWW-Authenticate: Bearer error="invalid_token"`; the
//! token's subject and chosen claims reach the controller as attributes.

use anyhow::{Context, Result};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{
    Client, HttpRequest, HttpResponse, RoutesDir, SECRET, Server, claims, fixture, guests,
    hs256_with, jwt, now, unsigned,
};

/// Routes to the probe behind bearer filters: `/hs/*` (HS256, optional), `/req/*`
/// (HS256, required), `/proto/*` (HS256, protocol `chat`), `/rs/*` (RS256), `/es/*`
/// (ES256), `/static/*` (a tokens file).
async fn server() -> Result<Server> {
    let probe = guests().probe.display().to_string();
    let dir = RoutesDir::new(&format!(
        r#"
[controllers.probe]
wasm = "{probe}"

[filters.hs]
kind = "bearer"
algorithm = "HS256"
secret-file = "secret.txt"
claims = ["room", "roles"]

[[route]]
match = "/hs/*"
filters = ["hs"]
controller = "probe"

[[route]]
match = "/req/*"
filters = [{{ kind = "bearer", algorithm = "HS256", secret-file = "secret.txt", required = true }}]
controller = "probe"

[[route]]
match = "/proto/*"
protocols = ["chat"]
filters = ["hs"]
controller = "probe"

[[route]]
match = "/rs/*"
filters = [{{ kind = "bearer", algorithm = "RS256", public-key-file = "rsa.pem" }}]
controller = "probe"

[[route]]
match = "/es/*"
filters = [{{ kind = "bearer", algorithm = "ES256", public-key-file = "ec.pem" }}]
controller = "probe"

[[route]]
match = "/static/*"
filters = [{{ kind = "bearer", tokens-file = "tokens.txt" }}]
controller = "probe"
"#
    ))?;
    dir.write("secret.txt", format!("{SECRET}\n").as_bytes())?;
    dir.write("rsa.pem", &std::fs::read(fixture("rsa-public.pem"))?)?;
    dir.write("ec.pem", &std::fs::read(fixture("ec-public.pem"))?)?;
    dir.write(
        "tokens.txt",
        b"# dev tokens\ntok-alice alice\ntok-bob bob\n",
    )?;
    Server::start_in(dir).await
}

fn bearer(path: &str, token: &str) -> HttpRequest {
    HttpRequest::upgrade(path).header("Authorization", &format!("Bearer {token}"))
}

/// The attributes the probe sees on an accepted connection.
async fn attributes(client: &mut Client) -> Result<Value> {
    client.recv_text().await?; // "open N"
    let info: Value = serde_json::from_str(&client.probe_request("info-json").await?)?;
    Ok(info["attributes"].clone())
}

async fn accepted(server: &Server, request: &HttpRequest) -> Result<(HttpResponse, Value)> {
    let (response, mut client) = match server.attempt(request).await? {
        Ok(upgraded) => upgraded,
        Err(refused) => anyhow::bail!("expected an upgrade, got {refused:?}"),
    };
    Ok((response, attributes(&mut client).await?))
}

async fn refused(server: &Server, request: &HttpRequest) -> Result<HttpResponse> {
    match server.attempt(request).await? {
        Ok((response, _)) => anyhow::bail!("expected a refusal, got {response:?}"),
        Err(response) => Ok(response),
    }
}

/// Asserts a 401 for a bad token, with the reason in the body.
async fn invalid(server: &Server, request: &HttpRequest, why: &str) -> Result<()> {
    let response = refused(server, request).await?;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(response.body_text().trim(), format!("invalid token: {why}"));
    Ok(())
}

#[tokio::test]
async fn a_valid_hs256_token_in_the_header_sets_user_and_claims() -> Result<()> {
    let server = server().await?;
    let token = jwt(
        Algorithm::HS256,
        &claims(
            "ann",
            json!({ "room": "blue", "roles": ["a", "b"], "other": 1 }),
        ),
    );
    let (_, attrs) = accepted(&server, &bearer("/hs/x", &token)).await?;
    assert_eq!(attrs["user"], "ann");
    assert_eq!(attrs["claims.room"], "blue");
    assert_eq!(attrs["claims.roles"], r#"["a","b"]"#);
    assert!(
        attrs.get("claims.other").is_none(),
        "only listed claims: {attrs}"
    );
    Ok(())
}

#[tokio::test]
async fn the_token_may_come_in_the_query() -> Result<()> {
    let server = server().await?;
    let token = jwt(Algorithm::HS256, &claims("qa", json!({})));
    let request = HttpRequest::upgrade(&format!("/hs/x?a=1&access_token={token}"));
    let (_, attrs) = accepted(&server, &request).await?;
    assert_eq!(attrs["user"], "qa");
    Ok(())
}

#[tokio::test]
async fn the_token_may_come_as_a_sub_protocol_that_is_never_echoed() -> Result<()> {
    let server = server().await?;
    let token = jwt(Algorithm::HS256, &claims("pa", json!({})));
    let request = HttpRequest::upgrade("/proto/x")
        .header("Sec-WebSocket-Protocol", &format!("chat, bearer.{token}"));
    let (response, attrs) = accepted(&server, &request).await?;
    assert_eq!(response.header("sec-websocket-protocol"), Some("chat"));
    assert_eq!(attrs["user"], "pa");
    Ok(())
}

#[tokio::test]
async fn no_token_is_anonymous_unless_required() -> Result<()> {
    let server = server().await?;
    let (_, attrs) = accepted(&server, &HttpRequest::upgrade("/hs/x")).await?;
    assert!(attrs.get("user").is_none(), "{attrs}");

    let response = refused(&server, &HttpRequest::upgrade("/req/x")).await?;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(response.body_text().trim(), "a bearer token is required");
    Ok(())
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() -> Result<()> {
    let server = server().await?;
    let expired = jwt(Algorithm::HS256, &json!({ "sub": "x", "exp": now() - 600 }));
    invalid(&server, &bearer("/hs/x", &expired), "expired").await?;
    let early = jwt(
        Algorithm::HS256,
        &json!({ "sub": "x", "exp": now() + 3600, "nbf": now() + 600 }),
    );
    invalid(&server, &bearer("/hs/x", &early), "not valid yet").await?;
    let no_exp = jwt(Algorithm::HS256, &json!({ "sub": "x" }));
    invalid(&server, &bearer("/hs/x", &no_exp), "missing claim `exp`").await?;
    Ok(())
}

#[tokio::test]
async fn bad_signatures_alg_none_and_garbage_are_refused() -> Result<()> {
    let server = server().await?;
    let forged = hs256_with(b"another secret", &claims("x", json!({})));
    invalid(&server, &bearer("/hs/x", &forged), "bad signature").await?;
    invalid(&server, &bearer("/hs/x", "abc.d$f!.ghi"), "malformed token").await?;

    let none = unsigned(&claims("x", json!({})));
    let response = refused(&server, &bearer("/hs/x", &none)).await?;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    Ok(())
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_their_public_keys() -> Result<()> {
    let server = server().await?;
    let rs = jwt(Algorithm::RS256, &claims("rsa-user", json!({})));
    assert_eq!(
        accepted(&server, &bearer("/rs/x", &rs)).await?.1["user"],
        "rsa-user"
    );
    let es = jwt(Algorithm::ES256, &claims("ec-user", json!({})));
    assert_eq!(
        accepted(&server, &bearer("/es/x", &es)).await?.1["user"],
        "ec-user"
    );
    // An ES256 token is no good where RS256 is configured.
    invalid(&server, &bearer("/rs/x", &es), "algorithm not accepted").await?;
    Ok(())
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() -> Result<()> {
    let server = server().await?;
    let public_pem = std::fs::read(fixture("rsa-public.pem")).context("the public key")?;
    let confused = hs256_with(&public_pem, &claims("mallory", json!({})));
    invalid(
        &server,
        &bearer("/rs/x", &confused),
        "algorithm not accepted",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn static_tokens_map_to_users() -> Result<()> {
    let server = server().await?;
    let (_, attrs) = accepted(&server, &bearer("/static/x", "tok-bob")).await?;
    assert_eq!(attrs["user"], "bob");
    invalid(&server, &bearer("/static/x", "tok-eve"), "unknown token").await?;
    Ok(())
}
