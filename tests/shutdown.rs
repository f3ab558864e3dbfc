//! Graceful shutdown: on SIGTERM the controllers' `on-shutdown` runs (and may still
//! send), every client then gets close 1001 "server shutting down", requests arriving
//! during the drain get 503, and the process exits 0, within `shutdown-timeout-ms` even
//! when a client never answers its close frame.

use anyhow::Result;

use crate::harness::{HttpRequest, Route, Server, guests, routes_toml};

fn routes(extra: &str) -> String {
    format!(
        "{extra}\n{}",
        routes_toml(&[Route::to(&guests().lifecycle_v1).at("/life/*")])
    )
}

#[tokio::test]
async fn clients_hear_on_shutdown_then_get_1001_and_the_process_exits_0() -> Result<()> {
    let mut server = Server::start(&routes("")).await?;
    let mut a = server.connect("/life/a").await?;
    let mut b = server.connect("/life/b").await?;
    // Both are registered with the controller once they get an answer.
    assert_eq!(a.request("hi").await?, "v1:hi");
    assert_eq!(b.request("hi").await?, "v1:hi");

    server.signal("TERM")?;
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.recv_text().await?,
            "shutdown",
            "sent from on-shutdown"
        );
        assert_eq!(
            client.recv_close().await?,
            (1001, "server shutting down".to_owned())
        );
    }
    let status = server.wait_exit().await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test]
async fn requests_during_the_drain_get_503_and_a_silent_client_is_cut_off() -> Result<()> {
    let mut server = Server::start(&routes("shutdown-timeout-ms = 1500")).await?;
    // This client never reads again, so it never answers the server's close frame and
    // keeps the drain going until the deadline.
    let mut silent = server.connect("/life/silent").await?;
    assert_eq!(silent.request("hi").await?, "v1:hi");

    server.signal("TERM")?;
    server
        .log_line("announcing the shutdown", |l| l.contains("shutting down"))
        .await?;
    let response = server.http(&HttpRequest::upgrade("/life/late")).await?;
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body_text().trim(), "server shutting down");

    let status = server.wait_exit().await?;
    assert!(status.success(), "exit status {status}");
    server
        .log_event("saying what was cut off", |e| e["cut_off"] == 1)
        .await?;
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn a_second_signal_exits_at_once() -> Result<()> {
    let mut server = Server::start(&routes("shutdown-timeout-ms = 60000")).await?;
    // Never answers the close frame: without the second signal the drain would last a
    // minute.
    let mut silent = server.connect("/life/silent").await?;
    assert_eq!(silent.request("hi").await?, "v1:hi");
    server.signal("TERM")?;
    server
        .log_line("announcing the shutdown", |l| l.contains("shutting down"))
        .await?;
    server.signal("INT")?;
    let status = server.wait_exit().await?;
    assert_eq!(status.code(), Some(130), "exit status {status}");
    drop(silent);
    Ok(())
}
