//! Test-only peers from the package registries (today: kosoku, the Autobahn TestSuite
//! runner), installed once per test process by `.ci/peers` into `target/peers/`. A peer
//! that cannot be installed fails the tests that need it; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, ensure};

use super::workspace_root;

/// The `kosoku` executable, installing it first if needed.
pub(crate) fn kosoku() -> &'static Path {
    static KOSOKU: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match KOSOKU.get_or_init(|| install().map_err(|e| format!("{e:#}"))) {
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
    let kosoku = root
        .join(target)
        .join("peers")
        .join("venv")
        .join("bin")
        .join("kosoku");
    ensure!(
        kosoku.is_file(),
        ".ci/peers did not install {}",
        kosoku.display()
    );
    Ok(kosoku)
}
