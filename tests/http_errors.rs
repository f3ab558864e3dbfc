//! Requests that cannot become WebSocket connections get a proper HTTP answer (status,
//! short text/plain body, `Connection: close`) rather than a silently closed socket,
//! including requests HTTP/1.1 itself refuses (no `Host`; two of a header that must be
//! single).

use anyhow::{Result, ensure};

use crate::harness::{HttpRequest, HttpResponse, Route, Server, guests, routes_toml};

/// A server with a single route, /echo/*.
async fn server() -> Result<Server> {
    Server::start(&routes_toml(&[Route::to(&guests().echo).at("/echo/*")])).await
}

/// Checks what every error answer has in common and returns it.
fn expect_error(response: HttpResponse, status: u16) -> Result<HttpResponse> {
    ensure!(
        response.status == status,
        "expected {status}, got {response:?}"
    );
    let body = response.body_text();
    ensure!(
        !body.trim().is_empty() && body.len() < 1024,
        "expected a short non-empty body, got {response:?}"
    );
    ensure!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "expected a text/plain body, got {response:?}"
    );
    ensure!(
        response
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close")),
        "expected `Connection: close`, got {response:?}"
    );
    Ok(response)
}

#[tokio::test]
async fn no_route_for_the_path_is_404() -> Result<()> {
    let server = server().await?;
    let response = server.http(&HttpRequest::upgrade("/nothing/here")).await?;
    expect_error(response, 404)?;
    Ok(())
}

#[tokio::test]
async fn a_method_other_than_get_is_405() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/echo/x").method("POST");
    let response = expect_error(server.http(&request).await?, 405)?;
    assert_eq!(response.header("allow"), Some("GET"));
    Ok(())
}

#[tokio::test]
async fn a_request_without_upgrade_is_426() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/echo/x")
        .without("Upgrade")
        .header("Connection", "keep-alive");
    let response = expect_error(server.http(&request).await?, 426)?;
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    Ok(())
}

#[tokio::test]
async fn websocket_version_8_is_426() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/echo/x").header("Sec-WebSocket-Version", "8");
    let response = expect_error(server.http(&request).await?, 426)?;
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    Ok(())
}

#[tokio::test]
async fn an_invalid_key_is_400() -> Result<()> {
    let server = server().await?;
    // Valid base64, but not of 16 bytes.
    let request = HttpRequest::upgrade("/echo/x").header("Sec-WebSocket-Key", "c2hvcnQ=");
    expect_error(server.http(&request).await?, 400)?;
    let request = HttpRequest::upgrade("/echo/x").header("Sec-WebSocket-Key", "not base64 !!");
    expect_error(server.http(&request).await?, 400)?;
    Ok(())
}

#[tokio::test]
async fn a_missing_key_is_400() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/echo/x").without("Sec-WebSocket-Key");
    expect_error(server.http(&request).await?, 400)?;
    Ok(())
}

#[tokio::test]
async fn a_missing_connection_upgrade_is_400() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/echo/x").header("Connection", "keep-alive");
    expect_error(server.http(&request).await?, 400)?;
    Ok(())
}

#[tokio::test]
async fn the_path_is_checked_before_the_method() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/nothing").method("POST");
    expect_error(server.http(&request).await?, 404)?;
    Ok(())
}

#[tokio::test]
async fn a_request_without_host_is_400() -> Result<()> {
    let server = server().await?;
    let response = server
        .http(&HttpRequest::upgrade("/echo/x").without("Host"))
        .await?;
    let body = expect_error(response, 400)?.body_text();
    ensure!(body.contains("Host"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_second_key_version_authorization_or_host_header_is_400() -> Result<()> {
    let server = server().await?;
    for (name, value) in [
        ("Host", "other.example"),
        ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("Sec-WebSocket-Version", "13"),
        ("Authorization", "Bearer x"),
    ] {
        let mut request = HttpRequest::upgrade("/echo/x");
        if name == "Authorization" {
            request = request.header(name, "Bearer y");
        }
        let response = server.http(&request.also(name, value)).await?;
        let body = expect_error(response, 400)?.body_text();
        ensure!(body.contains("more than one"), "{name}: {body}");
    }
    // A header that may repeat (its values are a list) still upgrades.
    let request = HttpRequest::upgrade("/echo/x")
        .header("Sec-WebSocket-Extensions", "x-a")
        .also("Sec-WebSocket-Extensions", "x-b");
    ensure!(server.attempt(&request).await?.is_ok());
    Ok(())
}
