//! Running the real `wshost` binary: `check` to completion, or `run` as a [`Server`] on
//! port 0 whose log is collected, with ways to reach it over WebSocket and raw HTTP.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Client, HANG_GUARD, HttpRequest, HttpResponse, RoutesDir, STARTUP_GUARD};

/// The wshost binary under test.
fn wshost_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wshost")
}

/// Runs `wshost ARGS...` to completion and returns its exit status and output.
pub(crate) async fn wshost(args: &[&OsStr]) -> Result<Output> {
    let child = tokio::process::Command::new(wshost_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(STARTUP_GUARD, child)
        .await
        .context("wshost did not exit (hang guard)")?
        .context("running wshost")
}

/// Runs `wshost check ROUTES`.
pub(crate) async fn check(routes: &Path) -> Result<Output> {
    wshost(&["check".as_ref(), routes.as_os_str()]).await
}

/// Runs `wshost run ROUTES --listen 127.0.0.1:0` to completion: for routes files it
/// must refuse to start.
pub(crate) async fn run_to_exit(routes: &Path) -> Result<Output> {
    wshost(&[
        "run".as_ref(),
        routes.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await
}

/// A running `wshost run` process, killed when dropped. Its stderr (the log) is collected
/// so that tests can wait for log lines; it is printed when the value is dropped, which the
/// test harness shows only for failing tests.
pub(crate) struct Server {
    child: Child,
    addr: SocketAddr,
    /// The listening line said `wss://`.
    tls: bool,
    log: watch::Receiver<String>,
    stderr_done: mpsc::Receiver<()>,
    _dir: Option<RoutesDir>,
}

impl Server {
    /// Writes `routes` to a routes.toml in a fresh directory and runs wshost on it.
    pub(crate) async fn start(routes: &str) -> Result<Self> {
        let dir = RoutesDir::new(routes)?;
        let mut server = Self::start_file(&dir.routes()).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Runs wshost on the routes.toml of an already prepared directory.
    pub(crate) async fn start_in(dir: RoutesDir) -> Result<Self> {
        Self::start_in_with_env(dir, &[]).await
    }

    /// Like [`Server::start_in`], with extra environment variables for the server.
    pub(crate) async fn start_in_with_env(dir: RoutesDir, env: &[(&str, &str)]) -> Result<Self> {
        let mut server = Self::spawn(&dir.routes(), env, &[]).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Runs `wshost run ROUTES --listen 127.0.0.1:0` and waits for its listening line.
    pub(crate) async fn start_file(routes: &Path) -> Result<Self> {
        Self::spawn(routes, &[], &[]).await
    }

    /// [`Self::start_file`] with extra environment variables for the server.
    pub(crate) async fn start_file_with_env(routes: &Path, env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn(routes, env, &[]).await
    }

    /// Runs `wshost run ROUTES --listen ADDR` on a given address (e.g. the one a server
    /// that was stopped had, to restart it under clients that reconnect).
    pub(crate) async fn start_file_on(routes: &Path, addr: SocketAddr) -> Result<Self> {
        Self::spawn_on(routes, &addr.to_string(), &[], &[]).await
    }

    /// Runs `wshost run --watch` (the development loop) on a prepared directory.
    pub(crate) async fn start_watching(dir: RoutesDir) -> Result<Self> {
        let mut server = Self::spawn(&dir.routes(), &[], &["--watch"]).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Runs `wshost run --watch ROUTES` with extra environment variables.
    pub(crate) async fn start_file_watching(routes: &Path, env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn(routes, env, &["--watch"]).await
    }

    async fn spawn(routes: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<Self> {
        Self::spawn_on(routes, "127.0.0.1:0", env, args).await
    }

    async fn spawn_on(
        routes: &Path,
        listen: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self> {
        // Logs as JSON, so tests assert on fields ([`Self::log_event`]), unless the test
        // asks for another format.
        let format: &[&str] = if args.contains(&"--log-format") {
            &[]
        } else {
            &["--log-format", "json"]
        };
        let mut child = Command::new(wshost_bin())
            .arg("run")
            .arg(routes)
            .args(["--listen", listen])
            .args(format)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning wshost")?;

        let (log_tx, log) = watch::channel(String::new());
        let (done_tx, stderr_done) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_tx.send_modify(|log| {
                    log.push_str(&line);
                    log.push('\n');
                });
            }
            let _ = done_tx.send(());
        });

        let (first_tx, first_line) = oneshot::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            if stdout.read_line(&mut line).is_ok() && !line.is_empty() {
                let _ = first_tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });

        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            log,
            stderr_done,
            _dir: None,
        };
        let line = match timeout(STARTUP_GUARD, first_line).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                // stdout closed without the line: the server exited; say why.
                let status = server.child.wait().context("waiting for wshost")?;
                let _ = server.stderr_done.recv_timeout(HANG_GUARD);
                bail!(
                    "wshost exited ({status}) without printing its listening line; stderr:\n{}",
                    server.log()
                );
            }
            Err(_) => bail!(
                "wshost printed no listening line (hang guard); stderr:\n{}",
                server.log()
            ),
        };
        let listening = line.trim_end().strip_prefix("wshost listening on ");
        let (tls, addr) = match listening {
            Some(rest) => match rest.strip_prefix("wss://") {
                Some(addr) => (true, addr),
                None => (false, rest.strip_prefix("ws://").unwrap_or(rest)),
            },
            None => bail!("unexpected first stdout line {line:?}"),
        };
        server.tls = tls;
        server.addr = addr
            .parse()
            .with_context(|| format!("bad address in listening line {line:?}"))?;
        Ok(server)
    }

    /// Sends signal `name` (`TERM`, `INT`, or `KILL` for a crash) to the server process.
    pub(crate) fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        ensure!(status.success(), "kill -{name} failed: {status}");
        Ok(())
    }

    /// Waits (at most the hang guard) for the server process to exit; returns its status.
    pub(crate) async fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for wshost")? {
                return Ok(status);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "wshost did not exit (hang guard); stderr:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the server wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        self.log.borrow().clone()
    }

    /// Waits until the server's stderr has a line for which `pred` holds and returns it.
    pub(crate) async fn log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let mut log = self.log.clone();
        let found = timeout(HANG_GUARD, log.wait_for(|log| log.lines().any(&pred))).await;
        match found {
            Ok(Ok(log)) => Ok(log
                .lines()
                .find(|line| pred(line))
                .expect("wait_for checked it")
                .to_owned()),
            _ => Err(anyhow!(
                "no stderr line {what} (hang guard); stderr:\n{}",
                self.log()
            )),
        }
    }

    /// Waits until the server logs an event (a JSON log line) for which `pred` holds and
    /// returns it. Fields are at the top level (`message` included); the spans the
    /// event was in are in `spans`, outermost first.
    pub(crate) async fn log_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let matches = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| pred(&event))
        };
        let line = self.log_line(what, matches).await?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Runs `wshost run ROUTES` logging in the text format people read.
    pub(crate) async fn start_text(routes: &str) -> Result<Self> {
        let dir = RoutesDir::new(routes)?;
        let mut server = Self::spawn(&dir.routes(), &[], &["--log-format", "text"]).await?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Waits until at least `n` stderr lines satisfy `pred`.
    pub(crate) async fn log_count(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut log = self.log.clone();
        let found = timeout(
            HANG_GUARD,
            log.wait_for(|log| log.lines().filter(|l| pred(l)).count() >= n),
        )
        .await;
        ensure!(
            matches!(found, Ok(Ok(_))),
            "fewer than {n} stderr lines {what} (hang guard); stderr:\n{}",
            self.log()
        );
        Ok(())
    }

    /// The server's resident memory in KiB (VmRSS), read from /proc.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the server's /proc status")?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS line")?;
        let kib = line.split_whitespace().nth(1).context("empty VmRSS line")?;
        Ok(kib.parse()?)
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory of the server's routes.toml, when the harness made it.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(RoutesDir::path)
    }

    /// Whether the server said it listens for `wss://` rather than `ws://`.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }

    /// Opens a WebSocket connection to `path` (which may carry a query).
    pub(crate) async fn connect(&self, path: &str) -> Result<Client> {
        Ok(self.connect_with_protocols(path, &[]).await?.0)
    }

    /// Opens a WebSocket connection to `path` offering `protocols` (in that order) and
    /// returns the client with the server's chosen sub-protocol header, if any.
    pub(crate) async fn connect_with_protocols(
        &self,
        path: &str,
        protocols: &[&str],
    ) -> Result<(Client, Option<String>)> {
        let mut request = format!("ws://{}{path}", self.addr).into_client_request()?;
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", "))?,
            );
        }
        let handshake = async {
            let tcp = TcpStream::connect(self.addr).await?;
            anyhow::Ok(tokio_tungstenite::client_async(request, tcp).await?)
        };
        let (ws, response) = timeout(HANG_GUARD, handshake)
            .await
            .context("handshake (hang guard)")?
            .with_context(|| format!("WebSocket handshake on {path}"))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()?;
        Ok((Client::new(ws), protocol))
    }

    /// Sends `request` on a fresh TCP connection and reads the whole answer, until the
    /// server closes the connection.
    pub(crate) async fn http(&self, request: &HttpRequest) -> Result<HttpResponse> {
        let exchange = async {
            let mut tcp = TcpStream::connect(self.addr).await?;
            tcp.write_all(request.to_string().as_bytes()).await?;
            let mut bytes = Vec::new();
            tcp.read_to_end(&mut bytes).await?;
            anyhow::Ok(bytes)
        };
        let bytes = timeout(HANG_GUARD, exchange)
            .await
            .context("the server neither answered nor closed the connection (hang guard)")??;
        let (mut response, head_len) = HttpResponse::parse_head(&bytes)?;
        response.body = bytes[head_len..].to_vec();
        if let Some(len) = response.header("content-length") {
            ensure!(
                len.parse::<usize>()? == response.body.len(),
                "content-length {len} but {} body bytes",
                response.body.len()
            );
        }
        Ok(response)
    }

    /// Sends `request` on a fresh connection and reads the response head byte by byte,
    /// so that nothing after it is consumed.
    async fn send_head(&self, request: &HttpRequest) -> Result<(TcpStream, Vec<u8>)> {
        let tcp = TcpStream::connect(self.addr).await?;
        Self::send_head_on(tcp, request).await
    }

    /// Connects from loopback address `from` (any of 127.0.0.0/8), so that the server
    /// sees another client address.
    pub(crate) async fn connect_from(&self, from: IpAddr) -> Result<TcpStream> {
        Self::connect_to_from(self.addr, from).await
    }

    /// Connects to `addr` from loopback address `from` (the server's, or a proxy's in
    /// front of it).
    pub(super) async fn connect_to_from(addr: SocketAddr, from: IpAddr) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        Ok(socket.connect(addr).await?)
    }

    /// Sends `request` on `tcp` and reads the response head byte by byte, so that nothing
    /// after it is consumed.
    pub(super) async fn send_head_on(
        mut tcp: TcpStream,
        request: &HttpRequest,
    ) -> Result<(TcpStream, Vec<u8>)> {
        tcp.write_all(request.to_string().as_bytes()).await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await?);
        }
        Ok((tcp, head))
    }

    /// Sends `request`, expects `101`, and returns the bare upgraded socket.
    pub(crate) async fn upgrade_raw(
        &self,
        request: &HttpRequest,
    ) -> Result<(TcpStream, HttpResponse)> {
        let (tcp, head) = timeout(HANG_GUARD, self.send_head(request))
            .await
            .context("handshake (hang guard)")??;
        let (response, _) = HttpResponse::parse_head(&head)?;
        ensure!(response.status == 101, "expected 101, got {response:?}");
        Ok((tcp, response))
    }

    /// Sends `request`; returns the 101 and the client if the server upgraded, or the
    /// complete refusal (read until the server closes) if it did not.
    pub(crate) async fn attempt(
        &self,
        request: &HttpRequest,
    ) -> Result<Result<(HttpResponse, Client), HttpResponse>> {
        self.attempt_from(Ipv4Addr::LOCALHOST.into(), request).await
    }

    /// [`Self::attempt`] from loopback address `from`.
    pub(crate) async fn attempt_from(
        &self,
        from: IpAddr,
        request: &HttpRequest,
    ) -> Result<Result<(HttpResponse, Client), HttpResponse>> {
        let exchange = async {
            let tcp = self.connect_from(from).await?;
            let (mut tcp, head) = Self::send_head_on(tcp, request).await?;
            let (mut response, _) = HttpResponse::parse_head(&head)?;
            if response.status == 101 {
                let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
                return anyhow::Ok(Ok((response, Client::new(ws))));
            }
            tcp.read_to_end(&mut response.body).await?;
            anyhow::Ok(Err(response))
        };
        timeout(HANG_GUARD, exchange)
            .await
            .context("the server neither answered nor closed the connection (hang guard)")?
    }

    /// Performs the opening handshake of `request` by hand (so that no client-side check
    /// gets in the way), expects `101 Switching Protocols` with a correct accept key, and
    /// returns the response head with a WebSocket client on the connection.
    pub(crate) async fn upgrade(&self, request: &HttpRequest) -> Result<(HttpResponse, Client)> {
        let key = request
            .get("sec-websocket-key")
            .context("the request has no key")?;
        let accept = derive_accept_key(key.as_bytes());
        let (tcp, response) = self.upgrade_raw(request).await?;
        ensure!(
            response.header("sec-websocket-accept") == Some(accept.as_str()),
            "bad Sec-WebSocket-Accept in {response:?}"
        );
        let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
        Ok((response, Client::new(ws)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the reader see the end of the pipe, so the printed log is complete.
        let _ = self.stderr_done.recv_timeout(HANG_GUARD);
        // Captured by the test harness: shown only when the test fails.
        eprintln!("---- wshost stderr ----\n{}", self.log());
    }
}
