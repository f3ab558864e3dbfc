//! The hop-free message path: a connection task calls `on-message` itself when its
//! controller is free (`inline`), and queues the message for the controller's actor when
//! it is busy (`queued`). Both paths keep each connection's messages in order, a trap on
//! the inline path closes only its connection and the next message meets a fresh
//! instance, and a timer set by an inline call wakes the actor even when it sleeps on a
//! later one. `wshost_controller_messages_total{path}` shows which path ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, ensure};

use crate::harness::{Client, Route, Scrape, Server, controller_toml, guests, routes_toml};

/// Listens for metrics on a free port.
const METRICS: &str = "metrics = \"127.0.0.1:0\"\n";

/// The probe as controller `prober`, on every path; calls may run for 5 s (the `busy`
/// command spins for up to a second).
async fn probe_server() -> Result<Server> {
    Server::start(&format!(
        "{METRICS}{}\n{}",
        controller_toml("prober", &guests().probe),
        routes_toml(&[Route::to_controller("prober").limits("call-deadline-ms = 5000")])
    ))
    .await
}

/// Messages `prober` took by `path` (`inline` or `queued`).
fn messages(scrape: &Scrape, path: &str) -> Result<f64> {
    scrape.value(
        "wshost_controller_messages_total",
        &[("controller", "prober"), ("path", path)],
    )
}

/// Both counts, scraped once.
async fn paths(server: &Server) -> Result<(f64, f64)> {
    let scrape = server.scrape().await?;
    Ok((messages(&scrape, "inline")?, messages(&scrape, "queued")?))
}

/// Reads the next message that is not the probe's `busy` notice.
async fn next_echo(client: &mut Client) -> Result<String> {
    loop {
        let text = client.recv_text().await?;
        if text != "busy" {
            return Ok(text);
        }
    }
}

/// Sends `count` numbered messages back to back, then checks that the echoes come back
/// complete and in order.
async fn numbered(mut client: Client, who: usize, count: usize) -> Result<Client> {
    for n in 0..count {
        client.send_text(&format!("{who}:{n}")).await?;
    }
    for n in 0..count {
        let echo = next_echo(&mut client).await?;
        ensure!(
            echo == format!("{who}:{n}"),
            "client {who}: expected echo {n}, got {echo:?}"
        );
    }
    Ok(client)
}

#[tokio::test]
async fn fifty_connections_keep_their_order_through_both_paths() -> Result<()> {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 40;
    let server = probe_server().await?;
    let (mut busy, _) = server.connect_probe("/busy").await?;
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        clients.push(server.connect_probe(&format!("/c/{i}")).await?.0);
    }

    // The controller is busy for a second: every client hears so (the notice comes from
    // the busy call itself), then sends while it still is, so its first messages take
    // the queue; once the controller is free, later ones may go inline.
    busy.send_text("busy 1000").await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (who, mut client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            ensure!(
                client.recv_text().await? == "busy",
                "client {who}: no busy notice"
            );
            numbered(client, who, MESSAGES).await
        });
    }
    assert_eq!(busy.recv_text().await?, "busy done");
    // While they stream, the controller keeps turning busy for a moment now and then.
    let streaming = Arc::new(AtomicBool::new(true));
    let still = streaming.clone();
    let busy = tokio::spawn(async move {
        while still.load(Ordering::Relaxed) {
            ensure!(busy.request("busy 5").await? == "busy done");
        }
        anyhow::Ok(busy)
    });
    let mut clients = Vec::new();
    while let Some(done) = tasks.join_next().await {
        clients.push(done??);
    }
    streaming.store(false, Ordering::Relaxed);
    let _busy = busy.await??;
    assert_eq!(clients.len(), CLIENTS);

    let (inline, queued) = paths(&server).await?;
    let total = (CLIENTS * MESSAGES) as f64;
    assert!(
        queued >= 1.0,
        "no message took the queue: inline {inline}, queued {queued}"
    );
    assert!(
        inline >= 1.0,
        "no message went inline: inline {inline}, queued {queued}"
    );
    assert!(
        inline + queued >= total,
        "{total} numbered messages, but inline {inline} + queued {queued}"
    );
    Ok(())
}

#[tokio::test]
async fn a_lone_sequential_client_is_served_inline() -> Result<()> {
    const REQUESTS: usize = 20;
    let server = probe_server().await?;
    let (mut client, _) = server.connect_probe("/alone").await?;
    for n in 0..REQUESTS {
        assert_eq!(client.request(&format!("m{n}")).await?, format!("m{n}"));
    }
    let (inline, queued) = paths(&server).await?;
    // Only the first may race the actor, which may still hold the controller after the
    // connection's `open` (it always takes the queue); each later message finds it free.
    assert_eq!(inline + queued, REQUESTS as f64);
    assert!(
        inline >= (REQUESTS - 1) as f64,
        "inline {inline}, queued {queued}"
    );
    Ok(())
}

#[tokio::test]
async fn a_trap_on_the_inline_path_closes_only_its_connection() -> Result<()> {
    let server = probe_server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    let (mut b, id_b) = server.connect_probe("/b").await?;
    // A few sequential requests settle `a` on the inline path.
    for n in 0..3 {
        assert_eq!(a.request(&format!("a{n}")).await?, format!("a{n}"));
    }
    let before = paths(&server).await?;
    a.send_text("panic").await?;
    assert_eq!(a.recv_close().await?.0, 1011);
    let after = paths(&server).await?;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1.0, 0.0),
        "the panic went inline"
    );

    // The next message of another connection meets a fresh instance (its counter starts
    // over), and `b` carries on, alone in the connection table.
    assert_eq!(b.probe_request("count").await?, "1");
    assert_eq!(b.probe_request("still here").await?, "still here");
    assert_eq!(b.probe_request("connections").await?, id_b.to_string());
    let scrape = server.scrape().await?;
    assert_eq!(
        scrape.value(
            "wshost_instance_restarts_total",
            &[("controller", "prober")]
        )?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_timer_set_inline_before_the_actors_next_wake_fires_on_time() -> Result<()> {
    let server = Server::start(&format!(
        "{METRICS}{}\n{}",
        controller_toml("lifecycle", &guests().lifecycle_v1),
        routes_toml(&[Route::to_controller("lifecycle").at("/t/*")])
    ))
    .await?;
    let mut client = server.connect("/t/a").await?;
    // The actor now sleeps until this timer, far past the test's hang guard.
    let late = client.request("timer 120000 once").await?;
    let late = late.strip_prefix("timer ").context("timer id")?.to_owned();
    let inline = |s: &Scrape| {
        s.value(
            "wshost_controller_messages_total",
            &[("controller", "lifecycle"), ("path", "inline")],
        )
    };
    let before = inline(&server.scrape().await?)?;
    let soon = client.request("timer 10 once").await?;
    let soon = soon.strip_prefix("timer ").context("timer id")?.to_owned();
    assert_eq!(
        inline(&server.scrape().await?)? - before,
        1.0,
        "the second timer was set by an inline call"
    );
    // Due long before the actor's sleep ends: the inline call woke it.
    assert_eq!(client.recv_text().await?, format!("fired {soon}"));
    assert_eq!(
        client.request(&format!("cancel {late}")).await?,
        "cancelled true"
    );
    Ok(())
}
