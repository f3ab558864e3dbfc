//! What a controller logs (through the host's `log` and on its own stdout and stderr) ends
//! up in the host's log on stderr, tagged with the controller's name.

use anyhow::Result;

use crate::harness::{Route, Server, controller_toml, guests, routes_toml};

/// A probe server (controller name `chatty`) that was asked to `log {msg}`.
async fn logged(msg: &str) -> Result<Server> {
    let routes = format!(
        "{}\n{}",
        controller_toml("chatty", &guests().probe),
        routes_toml(&[Route::to_controller("chatty")])
    );
    let server = Server::start(&routes).await?;
    let (mut client, _) = server.connect_probe("/").await?;
    assert_eq!(client.request(&format!("log {msg}")).await?, "logged");
    Ok(server)
}

/// Waits for a log line holding `text` and the controller name.
async fn tagged_line(server: &Server, text: &str) -> Result<()> {
    server
        .log_line(&format!("with {text:?} tagged `chatty`"), |line| {
            line.contains(text) && line.contains("chatty")
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn host_log_calls_reach_the_log() -> Result<()> {
    let server = logged("via-host-log-4711").await?;
    // The log call's own line, not the guest's stdout/stderr echoes of the message.
    server
        .log_line("with the host log call tagged `chatty`", |line| {
            line.contains("via-host-log-4711")
                && line.contains("chatty")
                && !line.contains("stdout via-host-log-4711")
                && !line.contains("stderr via-host-log-4711")
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn guest_stdout_reaches_the_log() -> Result<()> {
    let server = logged("via-stdout-4712").await?;
    tagged_line(&server, "stdout via-stdout-4712").await?;
    Ok(())
}

#[tokio::test]
async fn guest_stderr_reaches_the_log() -> Result<()> {
    let server = logged("via-stderr-4713").await?;
    tagged_line(&server, "stderr via-stderr-4713").await?;
    Ok(())
}
