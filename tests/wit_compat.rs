//! Components built against the WIT as it was before the `topics` interface keep loading
//! and working: examples/test-controllers/pinned-wit carries that WIT verbatim (commit
//! e11b960) with its own bindings, so it does not import `topics` at all, and every
//! export it has still runs. Components built against today's WIT (the probe, which
//! imports `topics`) load beside it.

use std::path::Path;

use anyhow::{Result, anyhow};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::harness::{Route, Server, guests, routes_toml};

const TOPICS: &str = "wshost:controller/topics@0.2.0";

/// The names of the interfaces (and functions) the component at `wasm` imports.
fn imports(wasm: &Path) -> Result<Vec<String>> {
    let engine = Engine::default();
    let component = Component::from_file(&engine, wasm)
        .map_err(|e| anyhow!("compiling {}: {e:#}", wasm.display()))?;
    let imports = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok(imports)
}

#[test]
fn the_pinned_component_does_not_import_topics_and_the_probe_does() -> Result<()> {
    let pinned = imports(&guests().pinned_wit)?;
    assert!(
        pinned.iter().any(|i| i == "wshost:controller/host@0.2.0"),
        "{pinned:?}"
    );
    assert!(
        !pinned
            .iter()
            .any(|i| i.starts_with("wshost:controller/topics")),
        "{pinned:?}"
    );
    let probe = imports(&guests().probe)?;
    assert!(probe.iter().any(|i| i == TOPICS), "{probe:?}");
    Ok(())
}

/// The pinned component on `/pinned/*` (its connections subscribed to `room/{1}`) and the
/// probe on `/probe`, in one server.
async fn server() -> Result<Server> {
    Server::start(&routes_toml(&[
        Route::to(&guests().pinned_wit)
            .at("/pinned/*")
            .topic("room/{1}"),
        Route::to(&guests().probe).at("/probe"),
    ]))
    .await
}

#[tokio::test]
async fn a_component_built_before_topics_echoes_hooks_and_ticks() -> Result<()> {
    let server = server().await?;
    let mut pinned = server.connect("/pinned/a").await?;
    assert_eq!(pinned.request("hello ✓").await?, "pinned:hello ✓");
    // Its handshake hook ran and added the attribute it reads back.
    assert_eq!(pinned.request("attr").await?, "attr yes");
    // Its timer import and on-timer export work.
    assert_eq!(pinned.request("timer").await?, "tick");
    pinned.send_binary(&[0, 1, 255]).await?;
    assert_eq!(pinned.recv_binary().await?, [0, 1, 255]);
    Ok(())
}

#[tokio::test]
async fn a_component_built_with_topics_loads_beside_it() -> Result<()> {
    let server = server().await?;
    let (mut probe, _) = server.connect_probe("/probe").await?;
    assert_eq!(probe.request("sub room/b").await?, "subscribed room/b");
    assert_eq!(probe.request("subs").await?, "room/b");
    let mut pinned = server.connect("/pinned/a").await?;
    assert_eq!(pinned.request("still").await?, "pinned:still");
    Ok(())
}

#[tokio::test]
async fn a_route_topic_subscribes_a_component_that_does_not_import_topics() -> Result<()> {
    let server = server().await?;
    let mut pinned = server.connect("/pinned/a").await?;
    // A round trip, so the connection is open (and subscribed) before anyone publishes.
    assert_eq!(pinned.request("attr").await?, "attr yes");
    let (mut probe, _) = server.connect_probe("/probe").await?;
    assert_eq!(probe.request("presence room/a").await?, "presence 1 ");
    assert_eq!(probe.request("pub room/a hi").await?, "published 1");
    assert_eq!(pinned.recv_text().await?, "hi");
    Ok(())
}
