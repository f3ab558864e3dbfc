//! `info(conn)` tells a controller what the host knows about a connection: path and query
//! as sent, sub-protocol, peer address, lower-case request headers and route attributes.

use anyhow::Result;

use crate::harness::{HttpRequest, Route, Server, guests, info_value, parse_info, routes_toml};

#[tokio::test]
async fn info_describes_the_connection() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)
        .at("/info/*")
        .named("info-route")]))
    .await?;
    let request =
        HttpRequest::upgrade("/info/a%20b?x=1&y=two").header("X-Custom-Header", "Mixed Case Value");
    let (_, mut client) = server.upgrade(&request).await?;
    let id = client.expect_open().await?;
    let remote = client.local_addr()?.to_string();

    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "id"), Some(id.to_string().as_str()));
    // Percent-encoding is kept; the query is split off without its `?`.
    assert_eq!(info_value(&info, "path"), Some("/info/a%20b"));
    assert_eq!(info_value(&info, "query"), Some("x=1&y=two"));
    assert_eq!(info_value(&info, "protocol"), Some("-"));
    assert_eq!(info_value(&info, "remote"), Some(remote.as_str()));
    assert_eq!(info_value(&info, "attr.route"), Some("info-route"));
    assert_eq!(info_value(&info, "attr.match.1"), Some("a%20b"));
    // Header names are lower-cased, values are kept as sent.
    assert_eq!(
        info_value(&info, "header.x-custom-header"),
        Some("Mixed Case Value")
    );
    assert_eq!(info_value(&info, "header.upgrade"), Some("websocket"));
    assert_eq!(
        info_value(&info, "header.sec-websocket-version"),
        Some("13")
    );
    assert!(
        info.iter()
            .filter(|(k, _)| k.starts_with("header."))
            .all(|(k, _)| *k == k.to_ascii_lowercase()),
        "{info:?}"
    );
    Ok(())
}

#[tokio::test]
async fn headers_are_listed_in_the_order_received() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)])).await?;
    let request = HttpRequest::upgrade("/")
        .header("X-First", "1")
        .header("X-Second", "2")
        .header("X-Third", "3");
    let (_, mut client) = server.upgrade(&request).await?;
    client.expect_open().await?;
    let info = parse_info(&client.request("info").await?);
    let custom: Vec<&str> = info
        .iter()
        .filter(|(k, _)| k.starts_with("header.x-"))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        custom,
        ["header.x-first", "header.x-second", "header.x-third"]
    );
    Ok(())
}

#[tokio::test]
async fn an_empty_query_is_empty() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)])).await?;
    let (mut client, _) = server.connect_probe("/plain").await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "path"), Some("/plain"));
    assert_eq!(info_value(&info, "query"), Some(""));
    Ok(())
}
