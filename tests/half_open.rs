//! Sockets that never finish their request: the server-wide cap is checked when a socket
//! is accepted, and one address may hold only `max-handshakes-per-address` sockets in
//! the handshake phase, so silent sockets from one address cannot lock others out.

use std::net::IpAddr;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use crate::harness::{HANG_GUARD, HttpRequest, Route, Server, guests, routes_toml};

async fn server() -> Result<Server> {
    let routes = format!(
        "handshake-timeout-ms = 60000\n[limits]\nmax-connections = 12\nmax-handshakes-per-address = 3\n{}",
        routes_toml(&[Route::to(&guests().echo).at("/echo/*")])
    );
    Server::start(&routes).await
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// Opens one silent socket from each of `from` and reads each until the server closes
/// it: a task completes with what the server said, and only if it said something.
async fn silent_sockets(server: &Server, from: &[IpAddr]) -> Result<JoinSet<Result<String>>> {
    let mut set = JoinSet::new();
    for addr in from {
        let mut tcp = server.connect_from(*addr).await?;
        set.spawn(async move {
            let mut bytes = Vec::new();
            tcp.read_to_end(&mut bytes).await?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        });
    }
    Ok(set)
}

/// Waits for `n` sockets of `set` to be answered and returns the answers.
async fn answers(set: &mut JoinSet<Result<String>>, n: usize) -> Result<Vec<String>> {
    let mut answers = Vec::new();
    while answers.len() < n {
        let done = tokio::time::timeout(HANG_GUARD, set.join_next())
            .await
            .context("the server left a socket over the cap waiting (hang guard)")?
            .context("fewer sockets answered than expected")?;
        answers.push(done??);
    }
    Ok(answers)
}

#[tokio::test]
async fn silent_sockets_from_one_address_do_not_lock_others_out() -> Result<()> {
    let server = server().await?;
    let mut set = silent_sockets(&server, &[ip("127.0.0.1"); 23]).await?;
    // Past the per-address cap: answered at once, before any request.
    for answer in answers(&mut set, 20).await? {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    let request = HttpRequest::upgrade("/echo/x");
    let other = server.attempt_from(ip("127.0.0.2"), &request).await?;
    let (_, mut client) = other.map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
    assert_eq!(client.request("still here").await?, "still here");
    // Three are still waiting for their request: the cap held them, nothing timed out.
    assert_eq!(set.len(), 3);
    assert!(
        set.try_join_next().is_none(),
        "a silent socket within the cap was answered"
    );
    Ok(())
}

#[tokio::test]
async fn the_server_wide_cap_is_checked_at_accept() -> Result<()> {
    let server = server().await?;
    let mut from = Vec::new();
    for n in 2..=5 {
        from.extend([ip(&format!("127.0.0.{n}")); 3]);
    }
    from.push(ip("127.0.0.9"));
    // Thirteen silent sockets, twelve places: one is answered 503 without sending
    // anything, the others wait.
    let mut set = silent_sockets(&server, &from).await?;
    let answer = answers(&mut set, 1).await?.remove(0);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    assert_eq!(set.len(), 12);
    assert!(
        set.try_join_next().is_none(),
        "a socket within the cap was answered"
    );
    Ok(())
}
