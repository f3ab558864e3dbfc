//! Test-only peers from the package registries (kosoku, the Autobahn TestSuite runner;
//! Playwright, which drives the system Chromium for the browser tests), installed once
//! per test process by `.ci/peers` into `target/peers/` (Chromium with apt). A peer that
//! cannot be installed fails the tests that need it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};

use super::workspace_root;

/// The `kosoku` executable, installing the peers first if needed.
pub(crate) fn kosoku() -> &'static Path {
    static KOSOKU: OnceLock<PathBuf> = OnceLock::new();
    KOSOKU.get_or_init(|| venv_bin("kosoku"))
}

/// The Python of the peers' venv (it has Playwright), installing the peers first if
/// needed.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv_bin("python"))
}

/// The system Chromium the browser tests drive (`.ci/peers` installs it).
pub(crate) fn chromium() -> &'static Path {
    venv();
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.is_file(),
        ".ci/peers did not install {}",
        chromium.display()
    );
    chromium
}

/// `NAME` in the venv's bin directory, which must exist.
fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.is_file(),
        ".ci/peers did not install {}",
        path.display()
    );
    path
}

/// The peers' venv, installed once per test process.
fn venv() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(|| install().map_err(|e| format!("{e:#}"))) {
        Ok(path) => path,
        Err(e) => panic!("installing the test peers failed: {e}"),
    }
}

fn install() -> Result<PathBuf> {
    let root = workspace_root();
    let output = Command::new("bash")
        .arg(root.join(".ci").join("peers"))
        .arg("kosoku") // the chat tests build (and install) the controller toolchains
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .context("running .ci/peers")?;
    ensure!(
        output.status.success(),
        ".ci/peers failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(root.join(target).join("peers").join("venv"))
}
