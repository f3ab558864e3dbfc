//! The limits of routes.toml, each with the close code or status it documents: message
//! and frame sizes (1009), invalid UTF-8 (1007), protocol errors (1002), keepalive
//! (a silent peer is closed, `on-close` 1006), connection caps (503), the slow-client
//! policies (1008, or drop-oldest) and inbound backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::harness::{Client, HANG_GUARD, HttpRequest, Route, Server, guests, opcode, routes_toml};

/// A deadline for the `flood` calls, which push 30–125 MiB through the host's
/// bindings in one call: more than the 200 ms default in the test build, so the floods
/// finish and the policy under test, not the deadline, decides.
const FLOOD_DEADLINE: &str = "call-deadline-ms = 20000";

#[tokio::test]
async fn a_message_or_frame_over_the_limit_closes_with_1009() -> Result<()> {
    let server =
        Server::hostile_and_echo("max-message-bytes = 1024, max-frame-bytes = 512").await?;
    let (mut client, _) = server.open_hostile("/hostile/a").await?;
    let fits = "m".repeat(500);
    assert_eq!(client.request(&fits).await?, fits);
    client.send_text(&"m".repeat(2000)).await?;
    assert_eq!(client.recv_close().await?.0, 1009);

    // 600 bytes fit the message limit, but arrive as one frame over the frame limit.
    let (mut client, _) = server.open_hostile("/hostile/b").await?;
    client.send_text(&"f".repeat(600)).await?;
    assert_eq!(client.recv_close().await?.0, 1009);

    // Other routes keep the default limits.
    let mut echo = server.connect("/echo/x").await?;
    let big = "e".repeat(100_000);
    assert_eq!(echo.request(&big).await?, big);
    Ok(())
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_a_protocol_error_with_1002() -> Result<()> {
    let server = Server::hostile_and_echo("").await?;
    let (mut watcher, _) = server.open_hostile("/hostile/w").await?;

    let (mut peer, id) = server.open_raw_hostile("/hostile/a").await?;
    peer.send_frame(opcode::TEXT, &[b'o', b'k', 0xff, 0xfe])
        .await?;
    let close = peer.read_close().await?;
    assert_eq!(close.close_code(), Some(1007), "{close:?}");
    assert_eq!(
        watcher.recv_text().await?,
        format!("closed {id} 1007 invalid UTF-8 in text message")
    );

    // A client frame without a mask is a protocol violation.
    let (mut peer, id) = server.open_raw_hostile("/hostile/b").await?;
    peer.send_bytes(&[0x81, 0x02, b'h', b'i']).await?;
    let close = peer.read_close().await?;
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert_eq!(
        watcher.recv_text().await?,
        format!("closed {id} 1002 protocol error")
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_peer_is_pinged_then_closed_and_an_answering_one_stays() -> Result<()> {
    let server = Server::hostile_and_echo("ping-interval-ms = 200, idle-timeout-ms = 800").await?;
    let (mut silent, id) = server.open_raw_hostile("/hostile/silent").await?;
    let (mut alive, _) = server.open_hostile("/hostile/alive").await?;

    // `alive` reads (so its client library answers the pings) until the notice comes.
    assert_eq!(
        alive.recv_text().await?,
        format!("closed {id} 1006 idle timeout")
    );
    // What the silent peer was sent meanwhile: at least one ping, then a close frame.
    let mut opcodes = Vec::new();
    let close = loop {
        let frame = silent.read_frame().await?.context("no close frame")?;
        opcodes.push(frame.opcode);
        if frame.opcode == opcode::CLOSE {
            break frame;
        }
    };
    assert!(
        opcodes.contains(&opcode::PING),
        "no ping before: {opcodes:?}"
    );
    assert_eq!(close.close_code(), Some(1001));
    assert_eq!(close.close_reason(), "idle timeout");
    assert!(
        silent.read_frame().await?.is_none(),
        "the socket stays open"
    );

    // The answering peer outlived the idle timeout and is still served.
    assert_eq!(alive.request("still here").await?, "still here");
    Ok(())
}

#[tokio::test]
async fn connections_past_a_route_or_server_cap_get_503() -> Result<()> {
    let routes = format!(
        "[limits]\nmax-connections = 3\n\n{}",
        routes_toml(&[
            Route::to(&guests().echo)
                .at("/capped/*")
                .limits("max-connections = 2"),
            Route::to(&guests().echo).at("/echo/*"),
        ])
    );
    let server = Server::start(&routes).await?;
    let first = server.connect("/capped/1").await?;
    let mut second = server.connect("/capped/2").await?;

    let refused = server
        .attempt(&HttpRequest::upgrade("/capped/3"))
        .await?
        .err()
        .context("a third connection to the capped route was accepted")?;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.body_text(),
        "route `/capped/*` is at its connection limit\n"
    );

    // The server-wide cap counts every route.
    let _third = server.connect("/echo/3").await?;
    let refused = server
        .attempt(&HttpRequest::upgrade("/echo/4"))
        .await?
        .err()
        .context("a fourth connection to the server was accepted")?;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.body_text(),
        "the server is at its connection limit\n"
    );

    // A closed connection frees its place.
    first.close(1000, "").await?;
    let mut again = reconnect(&server, "/capped/5").await?;
    assert_eq!(again.request("in").await?, "in");
    assert_eq!(second.request("still").await?, "still");
    Ok(())
}

/// Connects to `path`, retrying while the server still counts a connection that is
/// closing (its task ends just after the closing handshake).
async fn reconnect(server: &Server, path: &str) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match server.attempt(&HttpRequest::upgrade(path)).await? {
            Ok((_, client)) => return Ok(client),
            Err(refused) if refused.status == 503 => {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the place was never freed (hang guard)"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(refused) => anyhow::bail!("unexpected refusal {refused:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_memory_stays_bounded() -> Result<()> {
    let server = Server::hostile_and_echo(FLOOD_DEADLINE).await?;
    let (mut watcher, _) = server.open_hostile("/hostile/w").await?;
    // The raw peer reads nothing after its greeting.
    let (mut stuck, id) = server.open_raw_hostile("/hostile/stuck").await?;
    let before = server.rss_kib()?;

    // 2000 × 64 KiB = 125 MiB, far past the default 4 MiB outbound queue.
    stuck.send_frame(opcode::TEXT, b"flood 2000 65536").await?;
    let report = watcher.recv_text().await?;
    let (queued, refused) = flood_counts(&report)?;
    let grown_kib = server.rss_kib()?.saturating_sub(before);
    assert!(
        refused > 0,
        "the controller could queue all of it: {report}"
    );
    // What was taken: the queue's 4 MiB plus what the kernel's socket buffers hold.
    assert!(
        queued * 64 < 48 * 1024,
        "{queued} messages queued: {report}"
    );
    assert!(
        grown_kib < 96 * 1024,
        "the server grew by {grown_kib} KiB for a client that never reads"
    );

    // Other clients are unaffected, on this route and on others.
    let mut echo = server.connect("/echo/x").await?;
    assert_eq!(echo.request("unaffected").await?, "unaffected");
    assert_eq!(watcher.request("me too").await?, "me too");
    // The slow client is closed by the policy (its close frame cannot even reach it).
    assert_eq!(
        watcher.recv_text().await?,
        format!("closed {id} 1008 outbound queue full")
    );
    Ok(())
}

/// The `flooded {queued} {refused}` report.
fn flood_counts(report: &str) -> Result<(u64, u64)> {
    let mut words = report
        .strip_prefix("flooded ")
        .with_context(|| format!("expected a flood report, got {report:?}"))?
        .split(' ');
    let mut next = || -> Result<u64> { Ok(words.next().context("short report")?.parse()?) };
    Ok((next()?, next()?))
}

#[tokio::test]
async fn drop_oldest_keeps_a_slow_client_open_with_the_newest_messages() -> Result<()> {
    let server = Server::hostile_and_echo(&format!(
        "slow-client = \"drop-oldest\", outbound-queue-messages = 16, {FLOOD_DEADLINE}"
    ))
    .await?;
    let (mut watcher, _) = server.open_hostile("/hostile/w").await?;
    let (mut slow, _) = server.open_hostile("/hostile/slow").await?;

    // `slow` reads nothing until the flood is over.
    slow.send_text("flood 500 65536").await?;
    assert_eq!(watcher.recv_text().await?, "flooded 500 0");
    let mut received = Vec::new();
    while received.last() != Some(&499) {
        let message = slow.recv_binary().await?;
        received.push(u32::from_be_bytes(message[..4].try_into()?));
    }
    assert!(
        received.len() < 500,
        "nothing was dropped: {} received",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "out of order: {received:?}"
    );
    assert_eq!(slow.request("still open").await?, "still open");
    Ok(())
}

#[tokio::test]
async fn a_stalled_controller_stops_reading_its_clients() -> Result<()> {
    let server = Server::hostile_and_echo(
        "call-deadline-ms = 3000, inbound-queue-messages = 4, inbound-queue-bytes = 1048576",
    )
    .await?;
    let (mut spinner, _) = server.open_hostile("/hostile/spin").await?;
    let (mut sender, _) = server.open_hostile("/hostile/send").await?;

    // The controller is busy for the whole deadline...
    spinner.send_text("spin").await?;
    assert_eq!(sender.recv_text().await?, "spinning");
    // ...while another client tries to push 200 × 256 KiB = 50 MiB at it.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let push = tokio::spawn(async move {
        let payload = vec![7u8; 256 << 10];
        for _ in 0..200 {
            sender.send_binary(&payload).await?;
            counter.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(sender)
    });
    // Counted well inside the 3 s stall: once the deadline cuts the spin, the queue
    // drains and the rest flows at once, so a count taken after the trap would race it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_stalled = sent.load(Ordering::Relaxed);
    assert_eq!(spinner.recv_close().await?.0, 1011);
    // The queue's 4 messages plus socket buffers, not all 200.
    assert!(
        while_stalled < 100,
        "{while_stalled} of 200 messages were taken while the controller was stalled"
    );
    // Once the controller runs again, everything arrives.
    let mut sender = push.await??;
    assert_eq!(sender.request("count").await?, "200");
    Ok(())
}
