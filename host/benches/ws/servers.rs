//! The servers under test, each a separate process pinned to core 0 and bound to
//! 127.0.0.1 on a free port: wshost (release build) with the wasm controllers, a native
//! tokio-tungstenite echo (this binary re-run with `--native-echo`), Node's `ws` and
//! Python's `websockets`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A server process, killed when dropped.
pub(crate) struct Running {
    /// The name in the report.
    pub(crate) name: &'static str,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The path its echo is served on.
    pub(crate) echo_path: &'static str,
    /// How long from spawn to the listening line.
    pub(crate) started_in: Duration,
    child: Child,
}

impl Running {
    /// The process's resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("empty VmRSS")?
            .parse()?)
    }
}

impl Running {
    /// CPU time the process has used so far (user + system), in seconds.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14.
        let rest = stat.rsplit_once(") ").context("malformed stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
        Ok(ticks / 100.0)
    }
}

/// What `wshost check` reported for one controller.
pub(crate) struct CheckCost {
    pub(crate) compile_ms: f64,
    pub(crate) instantiate_ms: f64,
}

/// Runs `wshost check --json` on `routes` with the compiled-code cache in `cache` and
/// reads its first controller's costs.
pub(crate) fn check(routes: &Path, cache: &Path) -> Result<CheckCost> {
    let output = Command::new(env!("CARGO_BIN_EXE_wshost"))
        .args(["check", "--json"])
        .arg(routes)
        .env("WSHOST_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "wshost check failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let controller = &report["controllers"][0];
    let figure = |key: &str| {
        controller[key]
            .as_f64()
            .with_context(|| format!("no `{key}`"))
    };
    Ok(CheckCost {
        compile_ms: figure("compile_ms")?,
        instantiate_ms: figure("instantiate_ms")?,
    })
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` pinned to core 0 and waits for a stdout line holding its port or
/// address (`listening PORT`, `wshost listening on ws://ADDR`).
fn spawn(
    name: &'static str,
    echo_path: &'static str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<Running> {
    let started = Instant::now();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let started_in = started.elapsed();
    let word = line.split_whitespace().last().unwrap_or_default();
    let addr = match word.strip_prefix("ws://") {
        Some(addr) => addr.parse()?,
        None => match word.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => bail!("{name} printed {line:?} instead of its port"),
        },
    };
    Ok(Running {
        name,
        addr,
        echo_path,
        started_in,
        child,
    })
}

/// wshost serving `routes` (echo on `/echo/*`, chat on `/chat/*`).
pub(crate) fn wshost(routes: &Path, cache_dir: Option<&Path>) -> Result<Running> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_wshost"));
    let cache = cache_dir.map_or_else(|| PathBuf::from("off"), Path::to_owned);
    let routes = routes.to_str().context("routes path is not UTF-8")?;
    spawn(
        "wshost (wasm echo)",
        "/echo/bench",
        &bin,
        &["run", routes, "--listen", "127.0.0.1:0"],
        &[("WSHOST_CACHE_DIR", &cache)],
    )
}

/// The native tokio-tungstenite echo: the ceiling.
pub(crate) fn native() -> Result<Running> {
    let me = std::env::current_exe()?;
    spawn(
        "native tokio-tungstenite",
        "/",
        &me,
        &["--native-echo"],
        &[],
    )
}

/// Node's `ws`.
pub(crate) fn node(peers: &Path, scripts: &Path) -> Result<Running> {
    spawn(
        "node ws",
        "/",
        Path::new("node"),
        &[scripts
            .join("node_echo.js")
            .to_str()
            .context("path is not UTF-8")?],
        &[("NODE_PATH", &peers.join("node_modules"))],
    )
}

/// Python's `websockets`.
pub(crate) fn python(peers: &Path, scripts: &Path) -> Result<Running> {
    spawn(
        "python websockets",
        "/",
        &peers.join("venv").join("bin").join("python"),
        &[scripts
            .join("python_echo.py")
            .to_str()
            .context("path is not UTF-8")?],
        &[],
    )
}

/// `--native-echo`: a plain tokio-tungstenite echo server with the same crate versions
/// and read buffer as wshost, no wasm, no limits. Prints `listening PORT`.
pub(crate) fn native_echo_main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?.port());
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                // The same read buffer as wshost (tungstenite's 128 KiB default is
                // zeroed on every read and held by every connection).
                let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                while let Some(Ok(message)) = stream.next().await {
                    if (message.is_text() || message.is_binary())
                        && sink.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    })
}
