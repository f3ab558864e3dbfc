//! Limits on the HTTP request itself: a head larger than `max-header-bytes` gets 431, and
//! a client that does not finish its request within `handshake-timeout-ms` is dropped.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::harness::{HANG_GUARD, HttpRequest, Route, Server, guests, routes_toml};

async fn server() -> Result<Server> {
    let routes = format!(
        "max-header-bytes = 1024\nhandshake-timeout-ms = 300\n{}",
        routes_toml(&[Route::to(&guests().echo)])
    );
    Server::start(&routes).await
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() -> Result<()> {
    let server = server().await?;
    let request = HttpRequest::upgrade("/x").header("X-Padding", &"p".repeat(2000));
    let response = server.http(&request).await?;
    assert_eq!(response.status, 431, "{response:?}");
    assert!(
        response
            .body_text()
            .starts_with("request header fields too large"),
        "{response:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_stalls_mid_request_is_dropped() -> Result<()> {
    let server = server().await?;
    let mut tcp = TcpStream::connect(server.addr()).await?;
    tcp.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await?;
    // The server closes the connection without answering once the timeout passes.
    let mut received = Vec::new();
    timeout(HANG_GUARD, tcp.read_to_end(&mut received))
        .await
        .context("the stalled connection was not dropped (hang guard)")??;
    assert!(received.is_empty(), "expected no answer, got {received:?}");
    server
        .log_line("about the timeout", |l| l.contains("handshake timeout"))
        .await?;
    Ok(())
}
