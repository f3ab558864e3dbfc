//! Editing routes.toml while clients are connected: added routes start serving, changed
//! routes apply to new connections (a changed `[route.config]` re-runs the controller's
//! `init` in place), removed routes close their connections with 1001 "route removed",
//! and a broken file is refused while the old routes keep serving. A reload is atomic: a
//! controller that fails to load leaves every running one untouched.

use anyhow::Result;

use crate::harness::{HttpRequest, RoutesDir, Server, guests};

fn routes(body: &str) -> String {
    format!(
        r#"
[controllers.life]
wasm = "{}"
[controllers.probe]
wasm = "{}"
[controllers.echo]
wasm = "{}"
{body}
"#,
        guests().lifecycle_v1.display(),
        guests().probe.display(),
        guests().echo.display()
    )
}

const BEFORE: &str = r#"
[[route]]
name = "a"
match = "/a/*"
controller = "life"

[[route]]
name = "b"
match = "/b/*"
controller = "probe"
"#;

const AFTER: &str = r#"
[[route]]
name = "a"
match = "/a/*"
controller = "life"
[route.config]
mode = "new"

[[route]]
name = "c"
match = "/c/*"
controller = "echo"
"#;

#[tokio::test]
async fn add_change_and_remove_routes_while_clients_are_connected() -> Result<()> {
    let dir = RoutesDir::new(&routes(BEFORE))?;
    let routes_file = dir.routes();
    let server = Server::start_in(dir).await?;
    let mut a = server.connect("/a/1").await?;
    assert_eq!(a.request("x").await?, "v1:x");
    let mut b = server.connect("/b/1").await?;
    b.recv_text().await?; // the probe's "open N"

    std::fs::write(&routes_file, routes(AFTER))?;
    server
        .log_line("about the routes reload", |l| l.contains("routes reloaded"))
        .await?;

    // Removed: its connection is closed, new requests find no route.
    assert_eq!(b.recv_close().await?, (1001, "route removed".to_owned()));
    assert_eq!(
        server.http(&HttpRequest::upgrade("/b/2")).await?.status,
        404
    );
    // Changed: the open connection stays, and the controller was re-initialised with
    // the new config.
    assert_eq!(a.request("y").await?, "v1:y");
    let events = a.request("events").await?;
    assert!(events.starts_with("init mode=new"), "{events}");
    // Added: serves right away.
    let mut c = server.connect("/c/1").await?;
    assert_eq!(c.request("echo me").await?, "echo me");
    Ok(())
}

#[tokio::test]
async fn a_broken_routes_file_is_refused_and_the_old_routes_stay() -> Result<()> {
    let dir = RoutesDir::new(&routes(BEFORE))?;
    let routes_file = dir.routes();
    let server = Server::start_in(dir).await?;
    let mut a = server.connect("/a/1").await?;

    std::fs::write(
        &routes_file,
        routes("[[route]]\ncontroller = \"life\"\ncolour = 1\n"),
    )?;
    let line = server
        .log_line("refusing the file", |l| l.contains("routes.toml refused"))
        .await?;
    assert!(line.contains("colour"), "{line}");
    assert_eq!(a.request("still").await?, "v1:still");
    let mut b = server.connect("/b/2").await?;
    assert!(b.recv_text().await?.starts_with("open "));
    Ok(())
}

#[tokio::test]
async fn a_reload_that_fails_on_a_later_controller_changes_nothing() -> Result<()> {
    let dir = RoutesDir::new(&routes(BEFORE))?;
    let routes_file = dir.routes();
    dir.write("broken.wasm", b"\0asm but not really")?;
    let server = Server::start_in(dir).await?;
    let mut a = server.connect("/a/1").await?;
    assert_eq!(a.request("x").await?, "v1:x");

    // Route `a` gets new `init` arguments, and a new route's controller cannot load.
    let mut broken = routes(AFTER);
    broken.push_str("\n[[route]]\nname = \"d\"\nmatch = \"/d/*\"\ncontroller = \"broken.wasm\"\n");
    std::fs::write(&routes_file, broken)?;
    let line = server
        .log_line("refusing the file", |l| l.contains("routes.toml refused"))
        .await?;
    assert!(line.contains("broken"), "{line}");

    // The kept controller was told nothing: still its first `init`, old routes serve.
    let events = a.request("events").await?;
    assert!(!events.contains("mode=new"), "{events}");
    let mut b = server.connect("/b/2").await?;
    assert!(b.recv_text().await?.starts_with("open "));
    assert_eq!(
        server.http(&HttpRequest::upgrade("/c/1")).await?.status,
        404
    );
    Ok(())
}
