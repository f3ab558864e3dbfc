//! examples/echo sends every message back unchanged, as text or binary, whatever its size.

use anyhow::Result;

use crate::harness::{Client, Route, Server, guests, routes_toml};

/// A server with one catch-all route to echo, and a client connected to it.
async fn echo_client() -> Result<(Server, Client)> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().echo)])).await?;
    let client = server.connect("/echo").await?;
    Ok((server, client))
}

#[tokio::test]
async fn text_comes_back_as_text() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    assert_eq!(client.request("hello, wshost").await?, "hello, wshost");
    assert_eq!(client.request("héllo ✓").await?, "héllo ✓");
    Ok(())
}

#[tokio::test]
async fn binary_comes_back_as_binary() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    let bytes = [0u8, 1, 2, 0xff, 0xfe, b'\n'];
    client.send_binary(&bytes).await?;
    assert_eq!(client.recv_binary().await?, bytes);
    Ok(())
}

#[tokio::test]
async fn empty_text_comes_back() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    assert_eq!(client.request("").await?, "");
    // The connection still works after an empty message.
    assert_eq!(client.request("after").await?, "after");
    Ok(())
}

#[tokio::test]
async fn empty_binary_comes_back() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    client.send_binary(&[]).await?;
    assert_eq!(client.recv_binary().await?, Vec::<u8>::new());
    client.send_binary(b"after").await?;
    assert_eq!(client.recv_binary().await?, b"after");
    Ok(())
}

#[tokio::test]
async fn one_mib_binary_round_trips() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    let bytes: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    client.send_binary(&bytes).await?;
    let back = client.recv_binary().await?;
    assert_eq!(back.len(), bytes.len());
    assert!(back == bytes, "the 1 MiB binary message came back altered");
    Ok(())
}

#[tokio::test]
async fn one_mib_text_round_trips() -> Result<()> {
    let (_server, mut client) = echo_client().await?;
    // Multi-byte characters too, so a payload cut or re-encoded anywhere shows.
    let unit = "wshost-echo ✓ ü 0123456789\n";
    let mut text = unit.repeat(1024 * 1024 / unit.len());
    while text.len() < 1024 * 1024 {
        text.push('.');
    }
    client.send_text(&text).await?;
    let back = client.recv_text().await?;
    assert_eq!(back.len(), text.len());
    assert!(back == text, "the 1 MiB text message came back altered");
    Ok(())
}

#[tokio::test]
async fn json_logs_name_the_connection_of_its_events() -> Result<()> {
    let (server, mut client) = echo_client().await?;
    client.request("x").await?;
    // The connection's own events name its span as parent without entering it: the JSON
    // line still carries the connection's fields.
    let open = server
        .log_event("logging the open connection", |e| e["message"] == "open")
        .await?;
    assert_eq!(open["span"]["name"], "conn", "{open}");
    assert!(open["span"]["conn_id"].is_u64(), "{open}");
    assert_eq!(open["span"]["path"], "/echo", "{open}");
    assert!(open["span"]["peer"].is_string(), "{open}");
    Ok(())
}
