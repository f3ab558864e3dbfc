//! `wshost new LANG NAME` writes a project that works outside this repository: each
//! template, generated into a temporary directory, builds through its own routes.toml,
//! serves (a welcome, then echo), and under `run --watch` is rebuilt and hot-reloaded
//! after an edit while its clients stay connected; with `--hooks`, the handshake check,
//! lifecycle hooks and timers work in every language. Rust projects build into a
//! `CARGO_TARGET_DIR`, which their routes file follows.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::harness::{HttpRequest, Lang, STARTUP_GUARD, Server, chat};

/// Runs `wshost new ARGS` in `dir` (bounded by the startup guard).
async fn run_new(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshost"))
        .arg("new")
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(STARTUP_GUARD, command)
        .await
        .context("wshost new did not exit (hang guard)")?
        .context("running wshost new")
}

/// Runs `wshost new ARGS` in `dir` and expects it to succeed.
async fn new_project(dir: &Path, args: &[&str]) -> Result<()> {
    let output = run_new(dir, args).await?;
    ensure!(
        output.status.success(),
        "wshost new {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Generates, serves and edits one project; `source` is the file to edit.
async fn generate_serve_and_reload(lang: &str, name: &str, source: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("cargo-target");
    let target = target.to_string_lossy().into_owned();
    new_project(dir.path(), &[lang, name]).await?;
    let routes = dir.path().join(name).join("routes.toml");
    let server = Server::start_file_watching(&routes, &[("CARGO_TARGET_DIR", &target)]).await?;

    let mut first = server.connect("/").await?;
    assert_eq!(first.recv_text().await?, format!("welcome to {name}"));
    assert_eq!(first.request("ping").await?, "ping");

    let path = dir.path().join(name).join(source);
    let text = std::fs::read_to_string(&path)?;
    ensure!(text.contains("welcome to "), "{source} has no welcome line");
    std::fs::write(&path, text.replace("welcome to ", "welcome back to "))?;
    // Rebuilt (Rust: cargo; JS/Python: componentize, ~15 s) and hot-reloaded: a new
    // client gets the new welcome; the first client never noticed.
    let deadline = tokio::time::Instant::now() + STARTUP_GUARD;
    loop {
        let mut next = server.connect("/").await?;
        let welcome = next.recv_text().await?;
        if welcome == format!("welcome back to {name}") {
            break;
        }
        assert_eq!(welcome, format!("welcome to {name}"));
        // The first client keeps talking meanwhile: the old version serves it during the
        // rebuild, and it does not sit idle past the routes' idle timeout while a slow
        // machine compiles.
        assert_eq!(first.request("ping").await?, "ping");
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never reloaded (startup guard):\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(first.request("still here").await?, "still here");
    first.close(1000, "bye").await?;
    let log = server.log();
    ensure!(!log.contains("controller trapped"), "{log}");
    if lang == "rust" {
        ensure!(
            Path::new(&target)
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", name.replace('-', "_")))
                .is_file(),
            "the Rust build did not follow CARGO_TARGET_DIR"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_rust_project_builds_serves_and_reloads() -> Result<()> {
    generate_serve_and_reload("rust", "my-ctl", "src/lib.rs").await
}

#[tokio::test]
async fn a_javascript_project_builds_serves_and_reloads() -> Result<()> {
    chat(Lang::JavaScript); // npm's cache is warm, and two installs never race
    generate_serve_and_reload("js", "js-ctl", "js-ctl.js").await
}

#[tokio::test]
async fn a_python_project_builds_serves_and_reloads() -> Result<()> {
    chat(Lang::Python);
    generate_serve_and_reload("python", "py-ctl", "app.py").await
}

/// A `--hooks` project: its handshake hook admits and refuses, its lifecycle hooks and
/// timer run, nothing traps.
async fn hooks_project_serves(lang: &str, name: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    new_project(dir.path(), &[lang, name, "--hooks"]).await?;
    let server = Server::start_file(&dir.path().join(name).join("routes.toml")).await?;
    let mut client = server.connect("/").await?;
    assert_eq!(client.recv_text().await?, format!("welcome to {name}"));
    assert_eq!(client.request("ping").await?, "ping");
    let refused = server
        .http(&HttpRequest::upgrade("/").header("X-Refuse", "1"))
        .await?;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body_text().trim(), format!("refused by {name}"));
    client.close(1000, "bye").await?;
    // on-last-close cancels the timer; a fresh client starts it again.
    let mut again = server.connect("/").await?;
    assert_eq!(again.recv_text().await?, format!("welcome to {name}"));
    let log = server.log();
    ensure!(!log.contains("controller trapped"), "{log}");
    ensure!(log.contains("starting on"), "init did not run:\n{log}");
    Ok(())
}

#[tokio::test]
async fn a_rust_project_with_every_hook_serves() -> Result<()> {
    hooks_project_serves("rust", "hooked").await
}

#[tokio::test]
async fn a_javascript_project_with_every_hook_serves() -> Result<()> {
    chat(Lang::JavaScript);
    hooks_project_serves("js", "js-hooked").await
}

#[tokio::test]
async fn a_python_project_with_every_hook_serves() -> Result<()> {
    chat(Lang::Python);
    hooks_project_serves("python", "py-hooked").await
}

#[tokio::test]
async fn bad_names_and_existing_directories_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for bad in ["My", "1x", "a_b", "x-", "../up"] {
        let output = run_new(dir.path(), &["rust", bad]).await?;
        ensure!(!output.status.success(), "{bad} was accepted");
    }
    new_project(dir.path(), &["python", "taken"]).await?;
    let again = run_new(dir.path(), &["js", "taken"]).await?;
    ensure!(!again.status.success());
    ensure!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    Ok(())
}
