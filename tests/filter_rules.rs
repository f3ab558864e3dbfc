//! The non-token filters: `deny`, `origin`, `header`, `authorize` and `rate-limit`, each
//! accepting what it should and refusing the rest with the documented status and body.

use anyhow::{Result, bail};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{HttpRequest, HttpResponse, RoutesDir, SECRET, Server, claims, guests, jwt};

/// One route per filter kind, all to the probe.
async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[controllers.probe]
wasm = "{}"

[filters.login]
kind = "bearer"
algorithm = "HS256"
secret-env = "WSHOST_TEST_SECRET"
claims = ["role"]

[[route]]
match = "/deny/*"
filters = [{{ kind = "deny", status = 451, body = "unavailable here" }}]
controller = "probe"

[[route]]
match = "/deny-default/*"
filters = [{{ kind = "deny" }}]
controller = "probe"

[[route]]
match = "/origin/*"
filters = [{{ kind = "origin", allow = ["example.com", "*.trusted.org", "http://localhost:3000"] }}]
controller = "probe"

[[route]]
match = "/origin-open/*"
filters = [{{ kind = "origin", allow = ["example.com"], allow-missing = true }}]
controller = "probe"

[[route]]
match = "/header/*"
filters = [{{ kind = "header", name = "X-Api-Key", one-of = ["k1", "k2"], attribute = "api-key" }}]
controller = "probe"

[[route]]
match = "/admin/*"
filters = ["login", {{ kind = "authorize", claims = {{ role = ["admin"] }} }}]
controller = "probe"

[[route]]
match = "/limited/*"
filters = [{{ kind = "rate-limit", max = 2, window-secs = 60 }}]
controller = "probe"
"#,
        guests().probe.display()
    ))?;
    Server::start_in_with_env(dir, &[("WSHOST_TEST_SECRET", SECRET)]).await
}

async fn attempt(server: &Server, request: HttpRequest) -> Result<Result<Value, HttpResponse>> {
    Ok(match server.attempt(&request).await? {
        Ok((_, mut client)) => {
            client.recv_text().await?;
            let info: Value = serde_json::from_str(&client.probe_request("info-json").await?)?;
            Ok(info["attributes"].clone())
        }
        Err(response) => Err(response),
    })
}

async fn expect_refusal(
    server: &Server,
    request: HttpRequest,
    status: u16,
    body: &str,
) -> Result<HttpResponse> {
    match attempt(server, request).await? {
        Ok(attrs) => bail!("expected {status}, but the upgrade succeeded with {attrs}"),
        Err(response) => {
            assert_eq!(response.status, status, "{response:?}");
            assert_eq!(response.body_text().trim(), body, "{response:?}");
            Ok(response)
        }
    }
}

async fn expect_accept(server: &Server, request: HttpRequest) -> Result<Value> {
    match attempt(server, request).await? {
        Ok(attrs) => Ok(attrs),
        Err(response) => bail!("expected an upgrade, got {response:?}"),
    }
}

#[tokio::test]
async fn deny_answers_its_status_and_body() -> Result<()> {
    let server = server().await?;
    expect_refusal(
        &server,
        HttpRequest::upgrade("/deny/x"),
        451,
        "unavailable here",
    )
    .await?;
    expect_refusal(
        &server,
        HttpRequest::upgrade("/deny-default/x"),
        403,
        "Forbidden",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn origin_allows_listed_sites_only() -> Result<()> {
    let server = server().await?;
    let with = |origin: &str| HttpRequest::upgrade("/origin/x").header("Origin", origin);
    for ok in [
        "https://example.com",
        "http://EXAMPLE.com:8080",
        "https://a.trusted.org",
        "http://localhost:3000",
    ] {
        expect_accept(&server, with(ok)).await?;
    }
    for bad in [
        "https://evil.com",
        "https://trusted.org",
        "http://localhost:3001",
        "null",
    ] {
        expect_refusal(&server, with(bad), 403, "Origin not allowed").await?;
    }
    expect_refusal(
        &server,
        HttpRequest::upgrade("/origin/x"),
        403,
        "Origin not provided",
    )
    .await?;
    expect_accept(&server, HttpRequest::upgrade("/origin-open/x")).await?;
    Ok(())
}

#[tokio::test]
async fn header_requires_a_listed_value_and_copies_it() -> Result<()> {
    let server = server().await?;
    let attrs = expect_accept(
        &server,
        HttpRequest::upgrade("/header/x").header("X-Api-Key", "k2"),
    )
    .await?;
    assert_eq!(attrs["api-key"], "k2");
    let body = "header `x-api-key` missing or not allowed";
    expect_refusal(
        &server,
        HttpRequest::upgrade("/header/x").header("X-Api-Key", "k3"),
        403,
        body,
    )
    .await?;
    expect_refusal(&server, HttpRequest::upgrade("/header/x"), 403, body).await?;
    Ok(())
}

#[tokio::test]
async fn authorize_needs_a_user_with_the_right_claims() -> Result<()> {
    let server = server().await?;
    let as_role = |role: &str| {
        let token = jwt(Algorithm::HS256, &claims("u", json!({ "role": role })));
        HttpRequest::upgrade("/admin/x").header("Authorization", &format!("Bearer {token}"))
    };
    let attrs = expect_accept(&server, as_role("admin")).await?;
    assert_eq!(attrs["user"], "u");
    expect_refusal(&server, as_role("guest"), 403, "not authorized").await?;
    let anonymous = expect_refusal(
        &server,
        HttpRequest::upgrade("/admin/x"),
        401,
        "authentication required",
    )
    .await?;
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    Ok(())
}

#[tokio::test]
async fn authorize_compares_claims_with_their_json_types() -> Result<()> {
    let server = server().await?;
    let with_role = |role: Value| {
        let token = jwt(Algorithm::HS256, &claims("u", json!({ "role": role })));
        HttpRequest::upgrade("/admin/x").header("Authorization", &format!("Bearer {token}"))
    };
    expect_accept(&server, with_role(json!(["guest", "admin"]))).await?;
    // The text of a list is not a list.
    expect_refusal(
        &server,
        with_role(json!(r#"["admin"]"#)),
        403,
        "not authorized",
    )
    .await?;
    expect_refusal(
        &server,
        with_role(json!(["admin-ish"])),
        403,
        "not authorized",
    )
    .await?;
    expect_refusal(
        &server,
        with_role(json!({ "admin": true })),
        403,
        "not authorized",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn rate_limit_refuses_the_connection_over_the_limit() -> Result<()> {
    let server = server().await?;
    expect_accept(&server, HttpRequest::upgrade("/limited/x")).await?;
    expect_accept(&server, HttpRequest::upgrade("/limited/x")).await?;
    let refused = expect_refusal(
        &server,
        HttpRequest::upgrade("/limited/x"),
        429,
        "too many connections; try again later",
    )
    .await?;
    let retry: u64 = refused.header("retry-after").unwrap_or_default().parse()?;
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    Ok(())
}
