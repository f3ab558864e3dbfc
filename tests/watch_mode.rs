//! `wshost run --watch`: a change under a controller's `watch` paths re-runs its build
//! command, and the rebuilt file is hot-reloaded under the open connections. The build
//! here is a plain copy, standing in for `cargo build`. Controllers a routes.toml reload
//! adds are watched as well.

use std::path::PathBuf;

use anyhow::Result;

use crate::harness::{HANG_GUARD, RoutesDir, Server, guests};

/// A controller's "sources" (`src/controller.txt`) and its "compiler output"
/// (`next.wasm`, which the build command `cp next.wasm ctl.wasm` installs).
struct Sources {
    next: PathBuf,
    source: PathBuf,
}

impl Sources {
    /// Sources of version one in `dir`.
    fn new(dir: &RoutesDir) -> Result<Self> {
        dir.write("next.wasm", &std::fs::read(&guests().lifecycle_v1)?)?;
        std::fs::create_dir(dir.routes().with_file_name("src"))?;
        let source = dir.write("src/controller.txt", b"version one")?;
        Ok(Self {
            next: dir.routes().with_file_name("next.wasm"),
            source,
        })
    }

    /// Makes the compiler output version two, edits a source (only that triggers the
    /// build), and waits for the rebuild.
    async fn edit_to_v2(&self, server: &Server) -> Result<()> {
        std::fs::write(&self.next, std::fs::read(&guests().lifecycle_v2)?)?;
        std::fs::write(&self.source, b"version two")?;
        server
            .log_line("about the rebuild", |l| {
                l.contains("rebuilt after a source change")
            })
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_source_change_rebuilds_and_reloads_the_controller() -> Result<()> {
    let dir = RoutesDir::new(
        r#"
[controllers.ctl]
wasm = "ctl.wasm"
build = "cp next.wasm ctl.wasm"
watch = ["src"]

[[route]]
controller = "ctl"
"#,
    )?;
    let sources = Sources::new(&dir)?;
    let server = Server::start_watching(dir).await?;
    let mut client = server.connect("/x").await?;
    assert_eq!(client.request("a").await?, "v1:a");

    sources.edit_to_v2(&server).await?;
    server
        .log_line("about the reload", |l| l.contains("reloaded"))
        .await?;
    assert_eq!(client.request("b").await?, "v2:b");
    Ok(())
}

#[tokio::test]
async fn controllers_added_by_a_routes_reload_are_watched_too() -> Result<()> {
    let dir = RoutesDir::new(&format!(
        r#"
[[route]]
match = "/echo/*"
controller = "{}"
"#,
        guests().echo.display()
    ))?;
    let sources = Sources::new(&dir)?;
    let routes = dir.routes();
    let server = Server::start_watching(dir).await?;

    let mut with_ctl = std::fs::read_to_string(&routes)?;
    with_ctl.push_str(
        r#"
[controllers.ctl]
wasm = "ctl.wasm"
build = "cp next.wasm ctl.wasm"
watch = ["src"]

[[route]]
match = "/ctl/*"
controller = "ctl"
"#,
    );
    std::fs::write(&routes, with_ctl)?;
    server
        .log_line("about the routes reload", |l| l.contains("routes reloaded"))
        .await?;
    let mut client = server.connect("/ctl/x").await?;
    assert_eq!(client.request("a").await?, "v1:a");

    sources.edit_to_v2(&server).await?;
    // The swap happens behind the events already queued: ask until the new version
    // answers (each answer comes from one version or the other).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let reply = client.request("b").await?;
        if reply == "v2:b" {
            break;
        }
        assert_eq!(reply, "v1:b");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reloaded (hang guard)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
