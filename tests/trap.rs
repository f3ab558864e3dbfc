//! A trapping controller closes only the connection whose event trapped (1011); the
//! controller's other connections stay open on a fresh instance with fresh guest memory,
//! and the log says which route and controller trapped.

use anyhow::Result;

use crate::harness::{Route, Server, controller_toml, guests, routes_toml};

/// A server routing everything to the probe under the controller name `prober` and the
/// route name `boom-route`.
async fn server() -> Result<Server> {
    let routes = format!(
        "{}\n{}",
        controller_toml("prober", &guests().probe),
        routes_toml(&[Route::to_controller("prober").named("boom-route")])
    );
    Server::start(&routes).await
}

#[tokio::test]
async fn the_trapping_connection_gets_1011_and_the_others_carry_on() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    let (mut b, id_b) = server.connect_probe("/b").await?;
    assert_eq!(a.request("count").await?, "1");
    assert_eq!(b.request("count").await?, "2");

    a.send_text("panic").await?;
    let (code, _) = a.recv_close().await?;
    assert_eq!(code, 1011);

    // The instance was replaced: its message counter starts again from one. (Whether the
    // fresh instance hears about the trapped connection's close is not the point here, so
    // its `closed` notice, if any, is skipped.)
    assert_eq!(b.probe_request("count").await?, "1");
    assert_eq!(b.probe_request("still here").await?, "still here");
    // The fresh instance finds the connection that stayed open, and only that one.
    assert_eq!(b.probe_request("connections").await?, id_b.to_string());
    Ok(())
}

#[tokio::test]
async fn the_log_names_the_route_and_controller_that_trapped() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    a.send_text("panic").await?;
    assert_eq!(a.recv_close().await?.0, 1011);
    server
        .log_line("about the trap, naming `boom-route` and `prober`", |line| {
            line.contains("boom-route")
                && line.contains("prober")
                && line.to_ascii_lowercase().contains("trap")
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn new_connections_work_after_a_trap() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    a.send_text("panic").await?;
    assert_eq!(a.recv_close().await?.0, 1011);
    let (mut c, _) = server.connect_probe("/c").await?;
    assert_eq!(c.probe_request("count").await?, "1");
    assert_eq!(c.probe_request("hello").await?, "hello");
    Ok(())
}
