//! Building the guest controllers (echo, chat, probe) once per test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};

use super::workspace_root;

/// The compiled guest controllers (components), built once per test process.
#[derive(Debug)]
pub(crate) struct Guests {
    /// examples/echo.
    pub(crate) echo: PathBuf,
    /// examples/chat.
    pub(crate) chat: PathBuf,
    /// examples/test-controllers/probe.
    pub(crate) probe: PathBuf,
}

/// Builds echo, chat and probe for wasm32-wasip2 (once; later calls return the same paths).
///
/// The build uses the workspace's own target directory (`CARGO_TARGET_DIR` or
/// `<root>/target`): the outer `cargo test` only holds the lock of the host profile's
/// directory, and the guests live under `wasm32-wasip2/release`, so the nested build does
/// not wait on it.
pub(crate) fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Result<Guests, String>> = OnceLock::new();
    match GUESTS.get_or_init(|| build_guests().map_err(|e| format!("{e:#}"))) {
        Ok(guests) => guests,
        Err(e) => panic!("building the guest controllers failed: {e}"),
    }
}

fn build_guests() -> Result<Guests> {
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "echo",
            "-p",
            "chat",
            "-p",
            "probe",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    ensure!(
        output.status.success(),
        "cargo build of the guests failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = target_dir.join("wasm32-wasip2").join("release");
    let guests = Guests {
        echo: dir.join("echo.wasm"),
        chat: dir.join("chat.wasm"),
        probe: dir.join("probe.wasm"),
    };
    for path in [&guests.echo, &guests.chat, &guests.probe] {
        ensure!(
            path.is_file(),
            "the guest build did not produce {}",
            path.display()
        );
    }
    Ok(guests)
}
