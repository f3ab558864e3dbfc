//! Figure (j)'s instruction counts: a server run under `valgrind --tool=callgrind` for
//! two amounts of the same work ([`CONNS`] connections × [`FEW`], then × [`MANY`] round
//! trips of 32 bytes; fewer with `--quick`), the difference of the two totals divided by the difference in
//! messages. Startup, compilation, connecting and closing are the same in both runs
//! and cancel out; what is left is the server's instructions per echoed message, all
//! threads together, a figure that the other builders on this machine cannot disturb.
//!
//! The server is started once under callgrind before counting, so that wasmtime's
//! compiled-code cache holds code for the CPU valgrind presents (its CPUID differs from
//! the host's): both counted runs then load from the cache rather than compiling, and
//! Cranelift's run-to-run variation stays out of the difference. The process is
//! stopped with SIGTERM (wshost shuts down; the bench's own servers return from
//! `main`) so that callgrind writes its counts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::load;
use crate::servers::{Running, Wrap};

/// Connections in each counted run.
pub(crate) const CONNS: usize = 10;

/// Round trips per connection in the short and the long run.
pub(crate) const FEW: usize = 200;
pub(crate) const MANY: usize = 1_200;

/// How long a server under callgrind may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether valgrind can be run at all; the reason if not.
pub(crate) fn unavailable() -> Option<String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("`valgrind --version` failed: {output:?}")),
        Err(error) => Some(format!("cannot run valgrind: {error}")),
    }
}

/// Instructions per echoed message of the server that `start` launches (under the
/// callgrind wrapper it is given); `dir` holds the counts.
pub(crate) fn instructions_per_message(
    start: impl Fn(&Wrap) -> Result<Running>,
    dir: &Path,
    (few, many): (usize, usize),
    runtime: &tokio::runtime::Runtime,
) -> Result<f64> {
    // Warm the compiled-code cache under valgrind.
    let warm = start(&Wrap::Callgrind(dir.join("callgrind.warm")))?;
    warm.terminate(EXIT_TIMEOUT)?;
    let mut totals = Vec::new();
    for rounds in [few, many] {
        let out = dir.join(format!("callgrind.{rounds}"));
        let server = start(&Wrap::Callgrind(out.clone()))?;
        let (addr, path) = (server.addr, server.echo_path);
        runtime.block_on(load::ping_pong_rounds(addr, path, CONNS, rounds))?;
        let name = server.name.clone();
        server.terminate(EXIT_TIMEOUT)?;
        totals.push(total(&out).with_context(|| format!("{name} under callgrind"))?);
    }
    let messages = (CONNS * (many - few)) as f64;
    Ok((totals[1] as f64 - totals[0] as f64) / messages)
}

/// The instructions callgrind counted in its output file `path` (its `totals:` line, or
/// `summary:` in older formats).
fn total(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("callgrind wrote no `{}`", path.display()))?;
    for key in ["totals:", "summary:"] {
        if let Some(line) = text.lines().find(|l| l.starts_with(key)) {
            let first = line[key.len()..].split_whitespace().next();
            return Ok(first.context("empty totals")?.parse()?);
        }
    }
    bail!("no `totals:` line in `{}`", path.display())
}
