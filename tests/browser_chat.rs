//! The chat page (examples/chat/www) in a real browser: two pages chat through the real
//! wshost and the Rust chat controller, see each other join and leave and the online
//! count, keep their connections across a hot reload of the controller, and reconnect on
//! their own when the server is restarted on the same port.
//!
//! tests/browser/chat.py drives the system Chromium with Playwright (both installed by
//! `.ci/peers`; missing either fails the test) and asks this side, line by line, to
//! reload the controller and to stop and start the server. Screenshots go to
//! `target/browser-screenshots/` (under `CARGO_TARGET_DIR` when set).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

use crate::harness::{
    HANG_GUARD, Lang, RoutesDir, STARTUP_GUARD, Server, chat, chromium, python, workspace_root,
};

/// Longest the script may take for one step (it bounds its own waits at 30 s).
const STEP_GUARD: Duration = Duration::from_secs(90);

/// Where screenshots go.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    workspace_root().join(target).join("browser-screenshots")
}

/// Appends an empty custom section (id 0, name `pad`), so the component is a new file
/// with the same behaviour: what a rebuild that changed nothing visible writes.
fn touched(wasm: &[u8]) -> Vec<u8> {
    let mut bytes = wasm.to_vec();
    bytes.extend_from_slice(&[0, 4, 3, b'p', b'a', b'd']);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_through_a_reload_and_a_restart() -> Result<()> {
    let page_dir = workspace_root().join("examples").join("chat").join("www");
    let routes = format!(
        "static-dir = {:?}\n\n[[route]]\nname = \"chat\"\nmatch = \"/chat/*\"\nprotocols = [\"chat\"]\ncontroller = \"chat.wasm\"\ntopic = \"chat/{{1}}\"\nfilters = [{{ kind = \"query\", name = \"name\", attribute = \"user\" }}]\n",
        page_dir.display().to_string()
    );
    let dir = RoutesDir::new(&routes)?;
    let original = std::fs::read(chat(Lang::Rust)).context("reading the chat controller")?;
    let wasm = dir.write("chat.wasm", &original)?;
    let mut server = Some(Server::start_file(&dir.routes()).await?);
    let addr = server.as_ref().expect("started").addr();

    let shots = screenshot_dir();
    let mut script = tokio::process::Command::new(python())
        .arg(
            workspace_root()
                .join("tests")
                .join("browser")
                .join("chat.py"),
        )
        .arg(format!("http://{addr}"))
        .arg(chromium())
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting tests/browser/chat.py")?;
    let mut to_script = script.stdin.take().context("stdin is piped")?;
    let mut lines = BufReader::new(script.stdout.take().context("stdout is piped")?).lines();
    let mut stderr = script.stderr.take().context("stderr is piped")?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let started = Instant::now();
    let mut steps = Vec::new();
    loop {
        let line = timeout(STEP_GUARD, lines.next_line())
            .await
            .context("tests/browser/chat.py said nothing (hang guard)")??;
        let Some(line) = line else {
            let status = timeout(HANG_GUARD, script.wait()).await??;
            let errors = timeout(HANG_GUARD, errors).await??;
            let log = server.as_ref().map(Server::log).unwrap_or_default();
            bail!(
                "tests/browser/chat.py ended ({status}) before `ok`:\n{errors}\nserver log:\n{log}"
            );
        };
        steps.push((line.clone(), started.elapsed()));
        match line.as_str() {
            "ok" => break,
            "step reload" => {
                let live = server.as_ref().context("no server")?;
                std::fs::write(wasm.with_extension("tmp"), touched(&original))?;
                std::fs::rename(wasm.with_extension("tmp"), &wasm)?;
                live.log_line("reloading the controller", |l| l.contains("reloaded"))
                    .await?;
            }
            "step kill" => {
                // Dropping the server kills the process (SIGKILL): the pages see their
                // connections drop without a close frame, as after a crash.
                drop(server.take());
            }
            "step start" => {
                server = Some(
                    timeout(STARTUP_GUARD, Server::start_file_on(&dir.routes(), addr))
                        .await
                        .context("restarting the server (hang guard)")??,
                );
            }
            other => bail!("unexpected line from tests/browser/chat.py: {other:?}"),
        }
        to_script.write_all(b"done\n").await?;
        to_script.flush().await?;
    }
    let status = timeout(HANG_GUARD, script.wait()).await??;
    ensure!(status.success(), "tests/browser/chat.py: {status}");
    for (step, at) in &steps {
        eprintln!("{at:>9.2?} {step}");
    }
    for shot in ["chat-ada.png", "chat-offline.png", "chat-after-leave.png"] {
        ensure!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
    Ok(())
}
