//! Hot reload: replacing a controller's `.wasm` swaps the new version in without closing,
//! losing or reordering anything; state crosses over through snapshot/restore; a file
//! that is not a component, is built against another WIT version, or whose `init`
//! refuses to start, leaves the old version serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, ensure};
use tokio::sync::watch;

use crate::harness::{HANG_GUARD, RoutesDir, Server, guests};

/// A server whose only route serves `ctl.wasm`, a copy of lifecycle v1 in the test's own
/// directory (so the test may replace it).
async fn server() -> Result<(Server, PathBuf)> {
    let dir = RoutesDir::new("[[route]]\nmatch = \"/r/*\"\ncontroller = \"ctl.wasm\"\n")?;
    let ctl = dir.write("ctl.wasm", &std::fs::read(&guests().lifecycle_v1)?)?;
    let server = Server::start_in(dir).await?;
    Ok((server, ctl))
}

/// Replaces `target` atomically (write beside it, then rename), as build tools do.
fn replace(target: &Path, contents: &[u8]) -> Result<()> {
    let tmp = target.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, target).context("renaming over the controller")
}

fn reloaded(line: &str) -> bool {
    line.contains("reloaded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_busy_clients_ride_through_ten_reloads() -> Result<()> {
    const CLIENTS: usize = 20;
    const SWAPS: usize = 10;
    let (server, ctl) = server().await?;
    let v1 = std::fs::read(&guests().lifecycle_v1)?;
    let v2 = std::fs::read(&guests().lifecycle_v2)?;

    // The version the coordinator last swapped in, and how many clients have seen it.
    let (version_tx, version_rx) = watch::channel("v1");
    let seen = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut client = server.connect(&format!("/r/{i}")).await?;
        let mut version = version_rx.clone();
        let seen = seen.clone();
        clients.push(tokio::spawn(async move {
            let mut acknowledged = "v1";
            let mut rounds = 0usize;
            loop {
                let request = format!("c{i}-{rounds}");
                let reply = client.request(&request).await?;
                let (got, echoed) = reply.split_once(':').context("a `vN:` reply")?;
                ensure!(echoed == request, "client {i}: sent {request}, got {reply}");
                let current = *version.borrow_and_update();
                if got == current && acknowledged != current {
                    acknowledged = current;
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                rounds += 1;
                if current == "done" {
                    return Ok::<_, anyhow::Error>((client, rounds));
                }
            }
        }));
    }

    for swap in 1..=SWAPS {
        let (name, bytes) = if swap % 2 == 1 {
            ("v2", &v2)
        } else {
            ("v1", &v1)
        };
        seen.store(0, Ordering::SeqCst);
        replace(&ctl, bytes)?;
        server.log_count("about reloads", swap, reloaded).await?;
        version_tx.send_replace(name);
        // Every client must get an answer from the new version before the next swap.
        let deadline = std::time::Instant::now() + HANG_GUARD;
        while seen.load(Ordering::SeqCst) < CLIENTS {
            ensure!(
                std::time::Instant::now() < deadline,
                "clients never saw {name}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    version_tx.send_replace("done");
    let mut kept = Vec::new();
    for client in clients {
        let (mut client, rounds) = client.await??;
        ensure!(rounds > SWAPS, "a client made only {rounds} round trips");
        // Still the same, open connection.
        assert_eq!(client.request("last").await?, "v1:last");
        kept.push(client);
    }
    ensure!(
        !server.log().contains("closed code"),
        "no connection may close during the reloads; log:\n{}",
        server.log()
    );
    Ok(())
}

#[tokio::test]
async fn state_crosses_a_reload_through_snapshot_and_restore() -> Result<()> {
    let (server, ctl) = server().await?;
    let mut client = server.connect("/r/a").await?;
    assert_eq!(client.request("count").await?, "1");
    assert_eq!(client.request("count").await?, "2");
    replace(&ctl, &std::fs::read(&guests().lifecycle_v2)?)?;
    server.log_count("about the reload", 1, reloaded).await?;
    assert_eq!(client.request("x").await?, "v2:x");
    assert_eq!(client.request("count").await?, "3");
    Ok(())
}

#[tokio::test]
async fn a_garbage_file_is_refused_and_the_old_version_keeps_serving() -> Result<()> {
    let (server, ctl) = server().await?;
    let mut client = server.connect("/r/a").await?;
    assert_eq!(client.request("x").await?, "v1:x");
    replace(&ctl, b"this is not wasm")?;
    let line = server
        .log_line("refusing the reload", |l| l.contains("reload refused"))
        .await?;
    assert!(line.contains("not a WebAssembly component"), "{line}");
    assert_eq!(client.request("y").await?, "v1:y");
    Ok(())
}

#[tokio::test]
async fn a_version_whose_init_refuses_is_refused() -> Result<()> {
    let (server, ctl) = server().await?;
    let mut client = server.connect("/r/a").await?;
    assert_eq!(client.request("count").await?, "1");
    replace(&ctl, &std::fs::read(&guests().lifecycle_bad_init)?)?;
    let line = server
        .log_line("refusing the reload", |l| l.contains("reload refused"))
        .await?;
    assert!(line.contains("this build refuses to start"), "{line}");
    assert_eq!(client.request("y").await?, "v1:y");
    assert_eq!(
        client.request("count").await?,
        "2",
        "the old instance and its state"
    );
    Ok(())
}

#[tokio::test]
async fn a_version_whose_init_traps_is_refused() -> Result<()> {
    let (server, ctl) = server().await?;
    let mut client = server.connect("/r/a").await?;
    assert_eq!(client.request("x").await?, "v1:x");
    replace(&ctl, &std::fs::read(&guests().lifecycle_trap_init)?)?;
    let line = server
        .log_line("refusing the reload", |l| l.contains("reload refused"))
        .await?;
    assert!(line.contains("failed to instantiate"), "{line}");
    assert_eq!(client.request("y").await?, "v1:y");
    Ok(())
}

#[tokio::test]
async fn a_component_of_another_wit_version_is_refused() -> Result<()> {
    let (server, ctl) = server().await?;
    let mut client = server.connect("/r/a").await?;
    assert_eq!(client.request("x").await?, "v1:x");
    replace(&ctl, &std::fs::read(&guests().old_wit)?)?;
    let line = server
        .log_line("refusing the reload", |l| l.contains("reload refused"))
        .await?;
    assert!(
        line.contains("built against wshost:controller@0.1.0")
            && line.contains("this wshost speaks wshost:controller@0.2.0"),
        "{line}"
    );
    // The old version serves on, and new clients get in (the old-version component's
    // hook would refuse them).
    assert_eq!(client.request("y").await?, "v1:y");
    let mut newcomer = server.connect("/r/b").await?;
    assert_eq!(newcomer.request("z").await?, "v1:z");
    Ok(())
}
