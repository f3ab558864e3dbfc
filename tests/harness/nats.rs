//! A real NATS server for the cluster tests: `nats-server` (Debian package `nats-server`,
//! installed by `.ci/peers`) on a free loopback port, killed when dropped. It can be
//! stopped and started again on the same port, so tests can take the cluster's message
//! bus away under running wshost nodes and give it back. A missing binary fails the test
//! that needs it; nothing is skipped.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;

use super::HANG_GUARD;

/// How many free ports [`Nats::start`] tries when another process takes the one it picked
/// between picking and binding it.
const PORT_ATTEMPTS: usize = 5;

/// The `nats-server` executable: the first one in `PATH`, else /usr/sbin (where the
/// Debian package puts it, often outside a user's `PATH`).
fn nats_server() -> &'static Path {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nats-server"))
            .find(|bin| bin.is_file())
    });
    match found {
        Some(bin) => bin,
        None => panic!(
            "nats-server is neither in PATH nor in /usr/sbin: run .ci/peers (it installs the \
             Debian package nats-server) before the cluster tests"
        ),
    }
}

/// A `nats-server` process listening on `127.0.0.1:PORT` (or, once stopped, the port it
/// will listen on again), killed when dropped. Its log is printed when it is dropped,
/// which the test harness shows only for failing tests.
pub(crate) struct Nats {
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Nats {
    /// Starts a server on a free port and waits until it accepts connections.
    pub(crate) async fn start() -> Result<Self> {
        for _ in 0..PORT_ATTEMPTS {
            let mut nats = Self::not_started()?;
            match nats.run().await? {
                Ok(()) => return Ok(nats),
                // Most likely another process took the port in between: pick another one.
                Err(status) => nats.note(&format!("nats-server exited ({status})")),
            }
        }
        bail!("nats-server did not start on any of {PORT_ATTEMPTS} free ports")
    }

    /// Picks a free port for a server but does not start it (a cluster whose NATS is not
    /// there yet); [`Nats::restart`] starts it.
    pub(crate) fn not_started() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("picking a port")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        Ok(Self {
            port,
            child: None,
            log: Arc::default(),
        })
    }

    /// The URL wshost nodes are given: `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port, stable across [`Nats::stop`] and [`Nats::restart`].
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: its clients see the connection drop, as in a crash) and
    /// waits for it to exit. Stopping a stopped server does nothing.
    pub(crate) fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing nats-server")?;
            child.wait().context("waiting for nats-server")?;
        }
        Ok(())
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    /// The port may linger for a moment after [`Nats::stop`], so a server that cannot bind
    /// it is started again until the hang guard runs out.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match self.run().await? {
                Ok(()) => return Ok(()),
                Err(status) if Instant::now() < deadline => {
                    self.note(&format!("nats-server exited ({status}); starting it again"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => bail!(
                    "nats-server exited ({status}) and could not be started again on port {}; \
                     its log:\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    /// Spawns the server on the port and waits until it accepts connections (`Ok`) or
    /// exits (`Err` with its status, e.g. when the port is taken).
    async fn run(&mut self) -> Result<Result<(), std::process::ExitStatus>> {
        let mut child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", nats_server().display()))?;
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as _),
            child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = self.log.clone();
            std::thread::spawn(move || collect(pipe, &log));
        }
        match self.wait_ready(&mut child).await? {
            Some(status) => Ok(Err(status)),
            None => {
                self.child = Some(child);
                Ok(Ok(()))
            }
        }
    }

    /// Waits until `child` accepts TCP connections on the port (`None`) or exits (its
    /// status).
    async fn wait_ready(&self, child: &mut Child) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + HANG_GUARD;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = child.try_wait().context("waiting for nats-server")? {
                return Ok(Some(status));
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "nats-server did not accept connections on {addr} (hang guard); its \
                     log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the server processes wrote so far, with the harness's own notes.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("the log lock").clone()
    }

    fn note(&self, line: &str) {
        let mut log = self.log.lock().expect("the log lock");
        log.push_str("[harness] ");
        log.push_str(line);
        log.push('\n');
    }
}

/// Appends everything `pipe` yields to `log`, until it closes.
fn collect(mut pipe: impl Read, log: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        log.lock()
            .expect("the log lock")
            .push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.stop();
        // Captured by the test harness: shown only when the test fails.
        eprintln!(
            "---- nats-server log (port {}) ----\n{}",
            self.port,
            self.log()
        );
    }
}
