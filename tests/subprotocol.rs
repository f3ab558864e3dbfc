//! Sub-protocol negotiation: the chosen protocol is the first one in the client's order that
//! the route lists; a route listing protocols only accepts clients offering one of them;
//! a route listing none accepts any client and names no protocol.

use anyhow::Result;

use crate::harness::{HttpRequest, Route, Server, guests, info_value, parse_info, routes_toml};

#[tokio::test]
async fn the_first_offered_protocol_the_route_lists_is_chosen() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)
        .at("/s/*")
        .protocols(&["a", "b"])]))
    .await?;
    // The client prefers `b` over `a`; the route's own order does not matter.
    let (mut client, protocol) = server
        .connect_with_protocols("/s/x", &["x", "b", "a"])
        .await?;
    assert_eq!(protocol.as_deref(), Some("b"));
    client.expect_open().await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "protocol"), Some("b"));
    Ok(())
}

#[tokio::test]
async fn offering_none_of_the_routes_protocols_is_400() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)
        .at("/s/*")
        .protocols(&["a", "b"])]))
    .await?;
    let offers_other = HttpRequest::upgrade("/s/x").header("Sec-WebSocket-Protocol", "x, y");
    let response = server.http(&offers_other).await?;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(!response.body.is_empty(), "{response:?}");

    let offers_nothing = HttpRequest::upgrade("/s/x");
    let response = server.http(&offers_nothing).await?;
    assert_eq!(response.status, 400, "{response:?}");
    Ok(())
}

#[tokio::test]
async fn a_route_without_protocols_accepts_any_offer_and_names_none() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe).at("/p/*")])).await?;
    let request = HttpRequest::upgrade("/p/x").header("Sec-WebSocket-Protocol", "a, b");
    let (response, mut client) = server.upgrade(&request).await?;
    assert_eq!(
        response.header("sec-websocket-protocol"),
        None,
        "{response:?}"
    );
    client.expect_open().await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "protocol"), Some("-"));
    Ok(())
}

#[tokio::test]
async fn routing_skips_a_route_whose_protocols_are_not_offered() -> Result<()> {
    let probe = &guests().probe;
    let server = Server::start(&routes_toml(&[
        Route::to(probe)
            .at("/s/*")
            .protocols(&["chat"])
            .named("with-chat"),
        Route::to(probe).at("/s/*").named("plain"),
    ]))
    .await?;

    let (mut client, _) = server.connect_probe("/s/x").await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "attr.route"), Some("plain"));
    assert_eq!(info_value(&info, "protocol"), Some("-"));

    let (mut client, protocol) = server.connect_with_protocols("/s/x", &["chat"]).await?;
    assert_eq!(protocol.as_deref(), Some("chat"));
    client.expect_open().await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "attr.route"), Some("with-chat"));
    assert_eq!(info_value(&info, "protocol"), Some("chat"));
    Ok(())
}
