//! Timers: `set-timer` fires `on-timer` once or repeatedly, `cancel-timer` stops it, an
//! instance has at most `max-timers` pending, and the ticker example pushes ticks to
//! every client while anyone is connected.

use anyhow::Result;

use crate::harness::{Client, Route, Server, guests, routes_toml};

async fn lifecycle_server() -> Result<(Server, Client)> {
    lifecycle_server_with("").await
}

/// [`lifecycle_server`] with route limits `limits`.
async fn lifecycle_server_with(limits: &str) -> Result<(Server, Client)> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().lifecycle_v1)
        .at("/t/*")
        .limits(limits)]))
    .await?;
    let client = server.connect("/t/a").await?;
    Ok((server, client))
}

/// Reads messages until one is not a `fired` notice; returns it.
async fn next_reply(client: &mut Client) -> Result<String> {
    loop {
        let text = client.recv_text().await?;
        if !text.starts_with("fired ") {
            return Ok(text);
        }
    }
}

#[tokio::test]
async fn a_one_shot_timer_fires_once() -> Result<()> {
    let (_server, mut client) = lifecycle_server().await?;
    let reply = client.request("timer 10 once").await?;
    let id = reply.strip_prefix("timer ").expect("timer id").to_owned();
    assert_eq!(client.recv_text().await?, format!("fired {id}"));
    // Fired and gone: cancelling it finds nothing.
    assert_eq!(
        client.request(&format!("cancel {id}")).await?,
        "cancelled false"
    );
    Ok(())
}

#[tokio::test]
async fn a_repeating_timer_fires_until_cancelled() -> Result<()> {
    let (_server, mut client) = lifecycle_server().await?;
    let reply = client.request("timer 5 repeat").await?;
    let id = reply.strip_prefix("timer ").expect("timer id").to_owned();
    for _ in 0..3 {
        assert_eq!(client.recv_text().await?, format!("fired {id}"));
    }
    client.send_text(&format!("cancel {id}")).await?;
    assert_eq!(next_reply(&mut client).await?, "cancelled true");
    client.send_text(&format!("cancel {id}")).await?;
    assert_eq!(next_reply(&mut client).await?, "cancelled false");
    Ok(())
}

#[tokio::test]
async fn set_timer_past_max_timers_is_an_error_the_guest_sees() -> Result<()> {
    let (_server, mut client) = lifecycle_server_with("max-timers = 100").await?;
    let cap_error = "error this instance already has 100 pending timers, its `max-timers` limit";
    assert_eq!(
        client.request("timers 150 600000").await?,
        format!("timers 100 {cap_error}")
    );
    assert_eq!(
        client.request("timer 10 once").await?,
        format!("timer {cap_error}")
    );
    // A cancelled timer frees its place; the first timer set has id 1.
    assert_eq!(client.request("cancel 1").await?, "cancelled true");
    let reply = client.request("timer 10 once").await?;
    let id = reply.strip_prefix("timer ").expect("timer id").to_owned();
    assert!(id.parse::<u64>().is_ok(), "{reply}");
    assert_eq!(client.recv_text().await?, format!("fired {id}"));
    // A fired one-shot timer too.
    assert_eq!(
        client.request("timers 5 600000").await?,
        format!("timers 1 {cap_error}")
    );
    Ok(())
}

#[tokio::test]
async fn the_default_timer_cap_is_ten_thousand() -> Result<()> {
    let (_server, mut client) = lifecycle_server().await?;
    let reply = client.request("timers 10001 600000").await?;
    assert!(
        reply.starts_with("timers 10000 error ") && reply.contains("10000 pending timers"),
        "{reply}"
    );
    Ok(())
}

#[tokio::test]
async fn the_ticker_example_ticks_while_clients_are_connected() -> Result<()> {
    let routes = format!(
        "{}\n[route.config]\ninterval-ms = \"10\"\n",
        routes_toml(&[Route::to(&guests().ticker).at("/ticker")])
    );
    let server = Server::start(&routes).await?;
    let mut a = server.connect("/ticker").await?;
    assert_eq!(a.recv_text().await?, "welcome; 0 ticks so far");
    assert_eq!(a.recv_text().await?, "tick 1");
    assert_eq!(a.recv_text().await?, "tick 2");
    let mut b = server.connect("/ticker").await?;
    let welcome = b.recv_text().await?;
    assert!(welcome.starts_with("welcome; "), "{welcome}");
    let tick = b.recv_text().await?;
    assert!(tick.starts_with("tick "), "{tick}");
    Ok(())
}
