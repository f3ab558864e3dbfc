//! `wshost run --watch`: a change under a controller's `watch` paths re-runs its build
//! command, and the rebuilt file is hot-reloaded under the open connections. The build
//! here is a plain copy, standing in for `cargo build`.

use anyhow::Result;

use crate::harness::{RoutesDir, Server, guests};

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
