//! What a controller logs (through the host's `log` and on its own stdout and stderr) ends
//! up in the host's log on stderr, tagged with the controller's name, with its control
//! characters escaped so that it cannot forge log lines.

use anyhow::Result;

use crate::harness::{Route, Server, controller_toml, guests, routes_toml};

/// A probe server (controller name `chatty`) that was asked to `log {msg}`.
async fn logged(msg: &str) -> Result<Server> {
    let routes = format!(
        "{}\n{}",
        controller_toml("chatty", &guests().probe),
        routes_toml(&[Route::to_controller("chatty")])
    );
    // The text format: what a person reading the log sees is what a guest could forge.
    let server = Server::start_text(&routes).await?;
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

#[tokio::test]
async fn a_guest_cannot_forge_log_lines_or_send_terminal_escapes() -> Result<()> {
    let server = logged("a\r\nINFO forged line\x1b[31m").await?;
    // The host log call: one line, everything escaped.
    server
        .log_line("with the escaped host log call", |line| {
            line.contains(r"a\r\nINFO forged line\x1b[31m") && line.contains("chatty")
        })
        .await?;
    // stdout and stderr are split at the newline; the second half is still escaped and
    // follows the host's own line prefix.
    for stream in ["stdout", "stderr"] {
        server
            .log_line(&format!("with the escaped {stream} half"), |line| {
                line.contains(r"INFO forged line\x1b[31m")
                    && line.contains(&format!("stream=\"{stream}\""))
            })
            .await?;
    }
    let log = server.log();
    assert!(
        !log.lines()
            .any(|l| l.trim_start().starts_with("INFO forged")),
        "a guest forged a line:\n{log}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\r'),
        "raw control characters in:\n{log}"
    );
    Ok(())
}
