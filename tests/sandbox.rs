//! The controller sandbox: a CPU deadline per call, a memory cap per instance (tables
//! included), restart backoff for a controller that keeps trapping, and no ambient
//! authority. Each misbehaviour hurts only the connection whose event caused it.

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::harness::{Route, Server, guests, routes_toml};

#[tokio::test]
async fn an_infinite_loop_is_cut_at_the_deadline_and_delays_no_one_else() -> Result<()> {
    let server = Server::hostile_and_echo("call-deadline-ms = 3000").await?;
    let (mut spinner, _) = server.open_hostile("/hostile/a").await?;
    let (mut neighbour, _) = server.open_hostile("/hostile/b").await?;
    let mut echo = server.connect("/echo/x").await?;

    spinner.send_text("spin").await?;
    assert_eq!(neighbour.recv_text().await?, "spinning");
    let closed = tokio::spawn(async move {
        let close = spinner.recv_close().await;
        (close, Instant::now())
    });
    // Another route keeps being served while the guest spins.
    for i in 0..5 {
        let text = format!("ping {i}");
        assert_eq!(echo.request(&text).await?, text);
    }
    let served = Instant::now();
    let (close, closed_at) = closed.await?;
    assert_eq!(close?, (1011, "controller error".to_owned()));
    assert!(
        served < closed_at,
        "the echo route was not served until the spinning call was cut"
    );
    // The spinner's route goes on with a fresh instance.
    assert_eq!(neighbour.request("still there?").await?, "still there?");
    let trap = server
        .log_event("for the deadline trap", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("controller trapped"))
        })
        .await?;
    assert!(
        trap["error"]
            .as_str()
            .is_some_and(|e| e.contains("deadline")),
        "{trap}"
    );
    assert_eq!(trap["export"], "on-message", "{trap}");
    Ok(())
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap_and_only_its_connection_closes() -> Result<()> {
    let server = Server::hostile_and_echo("memory-bytes = 33554432").await?;
    let (mut bomber, _) = server.open_hostile("/hostile/a").await?;
    let (mut modest, _) = server.open_hostile("/hostile/b").await?;
    // Below the cap, memory grows normally.
    assert_eq!(modest.request("grow 4").await?, "grew 4");

    bomber.send_text("grow").await?;
    assert_eq!(
        bomber.recv_close().await?,
        (1011, "controller error".to_owned())
    );
    let trap = server
        .log_line("for the memory trap", |l| l.contains("controller trapped"))
        .await?;
    assert!(trap.contains("growing memory"), "{trap}");
    // The fresh instance starts with fresh memory.
    assert_eq!(modest.request("after").await?, "after");
    assert_eq!(modest.request("grow 4").await?, "grew 4");
    Ok(())
}

/// Serves `bomb` beside echo, sends it one message, and checks that the message traps
/// with a reason containing each of `reasons`, that the server did not grow by the
/// memory asked for, and that both routes serve on (the bomb's with a fresh instance).
async fn bomb_hits_the_cap(bomb: &std::path::Path, reasons: &[&str]) -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(bomb).at("/bomb/*"),
        Route::to(&guests().echo).at("/echo/*"),
    ]))
    .await?;
    let mut echo = server.connect("/echo/x").await?;
    assert_eq!(echo.request("before").await?, "before");
    let before = server.rss_kib()?;
    for path in ["/bomb/a", "/bomb/b"] {
        let mut bomber = server.connect(path).await?;
        bomber.send_text("boom").await?;
        assert_eq!(
            bomber.recv_close().await?,
            (1011, "controller error".to_owned())
        );
    }
    let trap = server
        .log_event("for the trap", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("controller trapped"))
        })
        .await?;
    for reason in reasons {
        assert!(
            trap["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{trap}"
        );
    }
    let grown_mib = server.rss_kib()?.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "the server grew by {grown_mib} MiB for memory the cap refused"
    );
    assert_eq!(echo.request("after").await?, "after");
    Ok(())
}

#[tokio::test]
async fn a_table_bomb_hits_the_memory_cap_instead_of_growing_the_server() -> Result<()> {
    // Each message asks to grow a funcref table by 32M elements twice: 512 MiB of host
    // memory with nothing to stop it but the cap.
    bomb_hits_the_cap(&guests().table_bomb, &["growing a table", "memory-bytes"]).await
}

#[tokio::test]
async fn a_gc_heap_bomb_hits_the_memory_cap_instead_of_growing_the_server() -> Result<()> {
    // The wasm GC proposal is on in wasmtime 48; its heap grows through the same
    // limiter as linear memory and tables. Each message keeps 1 GiB of GC arrays.
    bomb_hits_the_cap(&guests().gc_bomb, &["GC heap"]).await
}

#[tokio::test]
async fn a_controller_that_keeps_panicking_is_restarted_with_backoff() -> Result<()> {
    let server = Server::hostile_and_echo("").await?;
    for _ in 0..6 {
        let (mut client, _) = server.open_hostile("/hostile/p").await?;
        client.send_text("panic").await?;
        assert_eq!(
            client.recv_close().await?,
            (1011, "controller error".to_owned())
        );
    }
    // Three restarts are free; the fourth and later waits double.
    for (traps, wait) in [(4, 100), (5, 200), (6, 400)] {
        server
            .log_event(&format!("for a {wait} ms backoff"), |e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("keeps trapping"))
                    && e["traps_in_last_minute"] == traps
                    && e["restart_in_ms"] == wait
            })
            .await?;
    }
    // After the backoff, the controller serves again.
    let (mut client, _) = server.open_hostile("/hostile/p").await?;
    assert_eq!(client.request("recovered").await?, "recovered");
    Ok(())
}

#[tokio::test]
async fn a_controller_has_no_files_environment_or_network() -> Result<()> {
    let server = Server::hostile_and_echo("").await?;
    let (mut client, _) = server.open_hostile("/hostile/x").await?;
    let report = client.request("ambient").await?;
    let value = |key: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .with_context(|| format!("no {key} in {report:?}"))
    };
    assert_eq!(value("env")?, "0", "{report}");
    for denied in ["read", "list", "write", "connect"] {
        assert!(value(denied)?.starts_with("err:"), "{denied}: {report}");
    }
    // Clocks are part of WASI and allowed.
    assert_eq!(value("clock")?, "true");
    Ok(())
}
