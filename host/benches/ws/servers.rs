//! The servers under test, each a separate process bound to 127.0.0.1 on a free port,
//! either pinned to core 0 ([`Cores::One`]: one tokio worker) or free on every core
//! ([`Cores::All`]: as many workers as cores, one of them shared with the client): wshost
//! (release build, or another build given by `--compare`) with the wasm controllers, a
//! native tokio-tungstenite echo (this binary re-run with `--native-echo`), the cost
//! ladder's rungs (`--rung`), Node's `ws` and Python's `websockets`; and, for figure
//! (i), a NATS server (`nats-server`, pinned to core 0) that several wshost nodes share.
//! Any of them can run under callgrind instead ([`Wrap::Callgrind`]), for figure (j).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a server may take to print its listening line: the JavaScript and Python
/// chat controllers compile for ~9 s without a cache.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which cores a server may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cores {
    /// Pinned to core 0: a one-worker tokio runtime.
    One,
    /// Free on every online core (the client's core 1 included): a multi-worker runtime.
    All,
}

impl Cores {
    /// The `taskset -c` list.
    fn list(self) -> String {
        match self {
            Self::One => "0".to_owned(),
            // The bench pins itself to core 1 and children inherit that: name them all.
            Self::All => std::fs::read_to_string("/sys/devices/system/cpu/online")
                .map_or_else(|_| "0-1".to_owned(), |s| s.trim().to_owned()),
        }
    }
}

/// How a server process is started.
#[derive(Debug, Clone)]
pub(crate) enum Wrap {
    /// As it is, under `taskset`.
    Plain(Cores),
    /// Under `valgrind --tool=callgrind`, writing its counts to the path (on core 0).
    Callgrind(PathBuf),
}

/// A server process, killed when dropped.
pub(crate) struct Running {
    /// The name in the report.
    pub(crate) name: String,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The path its echo is served on.
    pub(crate) echo_path: &'static str,
    /// How long from spawn to the listening line.
    pub(crate) started_in: Duration,
    child: Child,
    /// Its stderr (an unnamed temporary file), for the error when it fails to start and
    /// for its warnings afterwards.
    stderr: File,
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
        cpu_seconds(self.child.id())
    }

    /// Its process id (of the server itself: `taskset` execs it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far (at `RUST_LOG=warn` for wshost: its
    /// warnings and errors).
    pub(crate) fn stderr(&self) -> Result<String> {
        read_all(&self.stderr)
    }

    /// Asks the process to exit (SIGTERM) and waits up to `timeout` for it, so that a
    /// server under callgrind writes its counts.
    pub(crate) fn terminate(mut self, timeout: Duration) -> Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM; its stderr:\n{}",
                    self.name,
                    tail(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// CPU time process `pid` has used so far (user + system), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14.
    let rest = stat.rsplit_once(") ").context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Ok(ticks / 100.0)
}

/// CPU time the threads of process `pid` have used so far, in seconds, with nanosecond
/// resolution: the sum of `/proc/PID/task/*/schedstat` (time on a CPU, user and system).
/// [`cpu_seconds`] counts in 10 ms ticks, too coarse for one connection's ping-pong
/// over a few seconds; this one misses the threads that exit in between (none of the
/// servers here starts or ends threads while serving a steady load).
pub(crate) fn thread_cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended since the listing is simply not counted.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        let first = stat.split_whitespace().next().context("empty schedstat")?;
        ns += first.parse::<u64>()?;
    }
    Ok(ns as f64 / 1e9)
}

/// The whole content of `file` (a process's stderr), from its start.
fn read_all(file: &File) -> Result<String> {
    let mut file = file.try_clone()?;
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last lines of a process's stderr, for an error message.
fn tail(file: &File) -> String {
    let text = read_all(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
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

/// Spawns `command` as `wrap` says and waits for a stdout line holding its port or
/// address (`listening PORT`, `wshost listening on ws://ADDR`).
fn spawn(
    name: impl Into<String>,
    echo_path: &'static str,
    wrap: &Wrap,
    (program, args): (&Path, &[&str]),
    env: &[(&str, &Path)],
) -> Result<Running> {
    let name = name.into();
    let started = Instant::now();
    let stderr = tempfile::tempfile()?;
    let mut command = Command::new("taskset");
    match wrap {
        Wrap::Plain(cores) => command.args(["-c", &cores.list()]),
        Wrap::Callgrind(out) => command
            .args(["-c", "0", "valgrind", "--tool=callgrind"])
            // wasmtime writes machine code into memory it then runs.
            .arg("--smc-check=all-non-file")
            .arg(format!("--callgrind-out-file={}", out.display())),
    };
    let mut child = command
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let line = first_line(stdout, START_TIMEOUT);
    let started_in = started.elapsed();
    let label = name.clone();
    let running = |addr| Running {
        name,
        addr,
        echo_path,
        started_in,
        child,
        stderr,
    };
    let Some(line) = line else {
        let failed = running(SocketAddr::from(([127, 0, 0, 1], 0)));
        bail!(
            "{label} did not print its address within {START_TIMEOUT:?}; its stderr:\n{}",
            tail(&failed.stderr)
        );
    };
    let word = line.split_whitespace().last().unwrap_or_default();
    let addr = match word.strip_prefix("ws://") {
        Some(addr) => addr.parse()?,
        None => match word.parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => {
                let failed = running(SocketAddr::from(([127, 0, 0, 1], 0)));
                bail!(
                    "{label} printed {line:?} instead of its port; its stderr:\n{}",
                    tail(&failed.stderr)
                );
            }
        },
    };
    Ok(running(addr))
}

/// The first line `from` gives within `timeout`; `None` if it ends or stays silent.
fn first_line(from: impl Read + Send + 'static, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(from).read_line(&mut line);
        let _ = tx.send(read.ok().filter(|n| *n > 0).map(|_| line));
    });
    rx.recv_timeout(timeout).ok().flatten()
}

/// The name of this tree's wshost in the report.
pub(crate) const WSHOST: &str = "wshost (wasm echo)";

/// wshost (this tree's build) serving `routes` (echo on `/echo/*`, chat on `/chat/*`),
/// pinned to core 0.
pub(crate) fn wshost(routes: &Path, cache_dir: Option<&Path>) -> Result<Running> {
    let bin = Path::new(env!("CARGO_BIN_EXE_wshost"));
    wshost_build(bin, WSHOST, routes, cache_dir, &Wrap::Plain(Cores::One))
}

/// wshost binary `bin` serving `routes`, named `name`, started as `wrap` says.
pub(crate) fn wshost_build(
    bin: &Path,
    name: &str,
    routes: &Path,
    cache_dir: Option<&Path>,
    wrap: &Wrap,
) -> Result<Running> {
    let cache = cache_dir.map_or_else(|| PathBuf::from("off"), Path::to_owned);
    let routes = routes.to_str().context("routes path is not UTF-8")?;
    spawn(
        name,
        "/echo/bench",
        wrap,
        (bin, &["run", routes, "--listen", "127.0.0.1:0"]),
        &[("WSHOST_CACHE_DIR", &cache)],
    )
}

/// A rung of the cost ladder (this binary re-run with `--rung`), `echo.wasm` for the
/// rungs that call the guest, wasmtime's compiled-code cache in `cache`.
pub(crate) fn rung(name: &str, echo: &Path, cache: &Path, wrap: &Wrap) -> Result<Running> {
    let me = std::env::current_exe()?;
    let echo = echo.to_str().context("path is not UTF-8")?;
    spawn(
        name,
        "/",
        wrap,
        (&me, &["--rung", name, echo]),
        &[("WSHOST_CACHE_DIR", cache)],
    )
}

/// A `nats-server` process, killed when dropped.
pub(crate) struct Nats {
    /// Its client URL, `nats://127.0.0.1:PORT`.
    pub(crate) url: String,
    child: Child,
    stderr: File,
}

impl Nats {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its warnings and errors so far (slow consumers, for one).
    pub(crate) fn warnings(&self) -> Result<Vec<String>> {
        Ok(read_all(&self.stderr)?
            .lines()
            .filter(|l| l.contains("[WRN]") || l.contains("[ERR]"))
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to do when `nats-server` cannot start.
const NATS_HINT: &str = "figure (i) needs a NATS server: install nats-server (Debian package \
                         `nats-server`) or set NATS_SERVER to its path";

/// Starts `nats-server` (from `PATH`, or `NATS_SERVER`) pinned to core 0 on 127.0.0.1
/// and a port of its choosing, and waits until it says it is ready.
pub(crate) fn nats() -> Result<Nats> {
    let program = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
    let stderr = tempfile::tempfile()?;
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&program)
        // `-p -1`: a random free port, which it logs.
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("cannot start `{}`; {NATS_HINT}", program.to_string_lossy()))?;
    let mut nats = Nats {
        url: String::new(),
        child,
        stderr,
    };
    // It logs `Listening for client connections on 127.0.0.1:PORT`, then `Server is
    // ready`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = read_all(&nats.stderr)?;
        let port = log
            .lines()
            .find_map(|l| l.split_once("Listening for client connections on "))
            .and_then(|(_, addr)| addr.trim().rsplit_once(':'))
            .map(|(_, port)| port.to_owned());
        if let (Some(port), true) = (port, log.contains("Server is ready")) {
            nats.url = format!("nats://127.0.0.1:{port}");
            return Ok(nats);
        }
        if let Some(status) = nats.child.try_wait()? {
            bail!("nats-server exited ({status}) before it was ready; {NATS_HINT}:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("nats-server was not ready within 10 s; {NATS_HINT}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The name of the native echo in the report.
pub(crate) const NATIVE: &str = "native tokio-tungstenite";

/// The native tokio-tungstenite echo: the ceiling.
pub(crate) fn native(wrap: &Wrap) -> Result<Running> {
    let me = std::env::current_exe()?;
    spawn(NATIVE, "/", wrap, (&me, &["--native-echo"]), &[])
}

/// Node's `ws`, pinned to core 0.
pub(crate) fn node(peers: &Path, scripts: &Path) -> Result<Running> {
    let script = scripts.join("node_echo.js");
    spawn(
        "node ws",
        "/",
        &Wrap::Plain(Cores::One),
        (
            Path::new("node"),
            &[script.to_str().context("path is not UTF-8")?],
        ),
        &[("NODE_PATH", &peers.join("node_modules"))],
    )
}

/// Python's `websockets`, pinned to core 0.
pub(crate) fn python(peers: &Path, scripts: &Path) -> Result<Running> {
    let script = scripts.join("python_echo.py");
    spawn(
        "python websockets",
        "/",
        &Wrap::Plain(Cores::One),
        (
            &peers.join("venv").join("bin").join("python"),
            &[script.to_str().context("path is not UTF-8")?],
        ),
        &[],
    )
}

/// `--native-echo`: a plain tokio-tungstenite echo server with the same crate versions
/// and read buffer as wshost, no wasm, no limits. Prints `listening PORT`; returns on
/// SIGTERM (so that callgrind writes its counts).
pub(crate) fn native_echo_main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?.port());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = term.recv() => return Ok(()),
            };
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
