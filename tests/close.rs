//! Closing: the code and reason of the closing handshake reach the controller's on-close
//! (1005 for a close frame without a code, 1006 for a dropped connection), and a controller
//! can close a connection itself.

use anyhow::Result;

use crate::harness::{Client, Closed, Route, Server, guests, parse_closed, routes_toml};

/// A probe server and two probe clients, `a` and `b`, with their ids.
async fn two_probes() -> Result<(Server, (Client, u64), (Client, u64))> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)])).await?;
    let a = server.connect_probe("/a").await?;
    let b = server.connect_probe("/b").await?;
    Ok((server, a, b))
}

#[tokio::test]
async fn the_clients_code_and_reason_reach_on_close() -> Result<()> {
    let (_server, (a, id_a), (mut b, _)) = two_probes().await?;
    a.close(4001, "bye").await?;
    let closed = parse_closed(&b.recv_text().await?)?;
    let expected = Closed {
        id: id_a,
        code: 4001,
        reason: "bye".to_owned(),
    };
    assert_eq!(closed, expected);
    Ok(())
}

#[tokio::test]
async fn a_close_frame_without_code_is_1005() -> Result<()> {
    let (_server, (a, id_a), (mut b, _)) = two_probes().await?;
    a.close_without_code().await?;
    let closed = parse_closed(&b.recv_text().await?)?;
    assert_eq!((closed.id, closed.code), (id_a, 1005));
    assert_eq!(closed.reason.trim(), "");
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_is_1006() -> Result<()> {
    let (_server, (a, id_a), (mut b, _)) = two_probes().await?;
    a.drop_tcp();
    let closed = parse_closed(&b.recv_text().await?)?;
    assert_eq!((closed.id, closed.code), (id_a, 1006));
    Ok(())
}

#[tokio::test]
async fn the_controller_can_close_a_connection() -> Result<()> {
    let (_server, (mut a, id_a), (mut b, id_b)) = two_probes().await?;
    a.send_text("close 4002 done").await?;
    assert_eq!(a.recv_close().await?, (4002, "done".to_owned()));
    // The client echoed the close frame; on-close sees the same code and reason.
    let closed = parse_closed(&b.recv_text().await?)?;
    let expected = Closed {
        id: id_a,
        code: 4002,
        reason: "done".to_owned(),
    };
    assert_eq!(closed, expected);
    // And the closed connection is gone from `connections()`.
    assert_eq!(b.request("connections").await?, id_b.to_string());
    Ok(())
}
