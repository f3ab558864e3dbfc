//! `wshost run --watch`: a change under a controller's `watch` paths re-runs its build
//! command, and the rebuilt file is hot-reloaded under the open connections. The build
//! here is a plain copy, standing in for `cargo build`. Controllers a routes.toml reload
//! adds are watched as well.

use anyhow::Result;

use crate::harness::{HANG_GUARD, RoutesDir, Server, guests};

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
    dir.write("next.wasm", &std::fs::read(&guests().lifecycle_v1)?)?;
    std::fs::create_dir(dir.routes().with_file_name("src"))?;
    dir.write("src/controller.txt", b"version one")?;
    let next = dir.routes().with_file_name("next.wasm");
    let source = dir.routes().with_file_name("src").join("controller.txt");
    let server = Server::start_watching(dir).await?;
    let mut client = server.connect("/x").await?;
    assert_eq!(client.request("a").await?, "v1:a");

    // The "compiler output" changes, but only a source edit triggers the build.
    std::fs::write(&next, std::fs::read(&guests().lifecycle_v2)?)?;
    std::fs::write(&source, b"version two")?;
    server
        .log_line("about the rebuild", |l| {
            l.contains("rebuilt after a source change")
        })
        .await?;
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
    dir.write("next.wasm", &std::fs::read(&guests().lifecycle_v1)?)?;
    std::fs::create_dir(dir.routes().with_file_name("src"))?;
    dir.write("src/controller.txt", b"version one")?;
    let routes = dir.routes();
    let next = dir.routes().with_file_name("next.wasm");
    let source = dir.routes().with_file_name("src").join("controller.txt");
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

    std::fs::write(&next, std::fs::read(&guests().lifecycle_v2)?)?;
    std::fs::write(&source, b"version two")?;
    server
        .log_line("about the rebuild", |l| {
            l.contains("rebuilt after a source change")
        })
        .await?;
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
