//! Real reverse proxies in front of wshost: nginx and Apache httpd (Debian packages
//! `nginx` and `apache2`, installed by `.ci/peers`), each on a free loopback port and
//! running the shipped site configuration from `deploy/` with only its port, wshost's
//! address and its idle timeout changed, inside a minimal main configuration whose pid
//! file, logs, locks and temporary files live in a fresh temporary directory. Stopped
//! (SIGTERM, SIGKILL if that does not end it) when dropped; only the processes started
//! here are ever signalled. Clients reach the proxy from [`CLIENT_IP`], another loopback
//! address than the proxy's own, so that wshost's view of the client address can be
//! told apart from the proxy's. A missing binary fails the test that needs it; nothing is
//! skipped.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Client, HANG_GUARD, HttpRequest, HttpResponse, Server, workspace_root};

/// The address clients connect to the proxy from: not the proxy's own 127.0.0.1, which is
/// what wshost sees as the TCP peer.
pub(crate) const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// How many free ports [`Proxy::start`] tries when another process takes the one it
/// picked between picking and binding it.
const PORT_ATTEMPTS: usize = 5;

/// Where Debian's apache2 package keeps its modules.
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// Which proxy, and which form of its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    /// nginx with deploy/nginx.conf.
    Nginx,
    /// Apache httpd with deploy/apache.conf as shipped: mod_proxy_http's
    /// `upgrade=websocket` (Apache 2.4.47 and later).
    Apache,
    /// Apache httpd with deploy/apache.conf's form for Apache before 2.4.47
    /// (`-D WSHOST_WSTUNNEL`: mod_rewrite sends handshakes to mod_proxy_wstunnel). Since
    /// 2.4.47 mod_proxy_wstunnel hands `ws://` over to mod_proxy_http unless
    /// `ProxyWebsocketFallbackToProxyHttp Off`, which is given on the command line (the
    /// shipped file stays as it is) so that mod_proxy_wstunnel does the tunnelling itself,
    /// as on those versions.
    ApacheWstunnel,
}

impl ProxyKind {
    /// Whether the proxy closes an open WebSocket that is idle for its timeout. The legacy
    /// mod_proxy_wstunnel tunnel has no idle timeout.
    pub(crate) fn closes_idle_tunnels(self) -> bool {
        self != Self::ApacheWstunnel
    }

    fn binary(self) -> &'static str {
        match self {
            Self::Nginx => "/usr/sbin/nginx",
            Self::Apache | Self::ApacheWstunnel => "/usr/sbin/apache2",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Apache | Self::ApacheWstunnel => "apache2",
        }
    }
}

/// A proxy process in front of a wshost, killed when dropped. Its log is printed when it
/// is dropped, which the test harness shows only for failing tests.
pub(crate) struct Proxy {
    kind: ProxyKind,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    dir: TempDir,
}

impl Proxy {
    /// Starts `kind` on a free port, proxying to `upstream` (a wshost), closing idle
    /// WebSockets after `idle_timeout_secs`, and waits until it accepts connections.
    pub(crate) async fn start(
        kind: ProxyKind,
        upstream: SocketAddr,
        idle_timeout_secs: u32,
    ) -> Result<Self> {
        let binary = Path::new(kind.binary());
        assert!(
            binary.is_file(),
            "{} is missing: run .ci/peers (it installs the Debian package {}) before the \
             proxy tests",
            binary.display(),
            kind.package()
        );
        let dir = tempfile::tempdir().context("creating the proxy's directory")?;
        // The proxies' workers drop root for an unprivileged user, which must still get
        // at what is in here (lock files, temporary files).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let mut proxy = Self {
            kind,
            port: 0,
            child: None,
            log: Arc::default(),
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("picking a port")?;
            proxy.port = listener.local_addr()?.port();
            drop(listener);
            proxy.configure(upstream, idle_timeout_secs)?;
            match proxy.run().await? {
                Ok(()) => return Ok(proxy),
                // Most likely another process took the port in between: pick another one.
                Err(status) => proxy.note(&format!("{kind:?} exited ({status})")),
            }
        }
        bail!(
            "{kind:?} did not start on any of {PORT_ATTEMPTS} free ports; its log:\n{}",
            proxy.log()
        )
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Writes the main configuration and the site from `deploy/` for the current port.
    fn configure(&self, upstream: SocketAddr, idle_timeout_secs: u32) -> Result<()> {
        let dir = self.dir.path();
        let site = dir.join("wshost-site.conf");
        let upstream = upstream.to_string();
        let main = match self.kind {
            ProxyKind::Nginx => {
                let shipped = deploy_file("nginx.conf")?;
                let listen = format!("listen 127.0.0.1:{};", self.port);
                let timeout = format!("proxy_read_timeout {idle_timeout_secs}s;");
                std::fs::write(
                    &site,
                    substitute(
                        "deploy/nginx.conf",
                        &shipped,
                        &[
                            ("listen 80;", &listen),
                            ("127.0.0.1:23080", &upstream),
                            ("proxy_read_timeout 120s;", &timeout),
                        ],
                    )?,
                )?;
                nginx_main(dir, &site)
            }
            ProxyKind::Apache | ProxyKind::ApacheWstunnel => {
                let shipped = deploy_file("apache.conf")?;
                let vhost = format!("<VirtualHost *:{}>", self.port);
                let timeout = format!("Timeout {idle_timeout_secs}");
                std::fs::write(
                    &site,
                    substitute(
                        "deploy/apache.conf",
                        &shipped,
                        &[
                            ("<VirtualHost *:80>", &vhost),
                            ("127.0.0.1:23080", &upstream),
                            ("Timeout 120", &timeout),
                        ],
                    )?,
                )?;
                apache_main(dir, &site, self.port)?
            }
        };
        std::fs::write(dir.join("main.conf"), main).context("writing the main configuration")?;
        Ok(())
    }

    /// Spawns the proxy and waits until it accepts connections (`Ok`) or exits (`Err`
    /// with its status, e.g. when the port is taken).
    async fn run(&mut self) -> Result<Result<(), std::process::ExitStatus>> {
        let dir = self.dir.path();
        let main = dir.join("main.conf");
        let mut command = Command::new(self.kind.binary());
        match self.kind {
            ProxyKind::Nginx => {
                command
                    .arg("-p")
                    .arg(dir)
                    .args(["-e", "stderr", "-c"])
                    .arg(&main)
                    .args(["-g", "daemon off;"]);
            }
            ProxyKind::Apache => {
                command.arg("-f").arg(&main).arg("-DFOREGROUND");
            }
            ProxyKind::ApacheWstunnel => {
                command.arg("-f").arg(&main).args([
                    "-DFOREGROUND",
                    "-DWSHOST_WSTUNNEL",
                    "-c",
                    "ProxyWebsocketFallbackToProxyHttp Off",
                ]);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", self.kind.binary()))?;
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as _),
            child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = self.log.clone();
            std::thread::spawn(move || collect(pipe, &log));
        }
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the proxy")? {
                return Ok(Err(status));
            }
            if TcpStream::connect(self.addr()).await.is_ok() {
                self.child = Some(child);
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                stop(&mut child);
                bail!(
                    "{:?} did not accept connections on {} (hang guard); its log:\n{}",
                    self.kind,
                    self.addr(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a WebSocket connection to `path` through the proxy, offering `protocols`,
    /// and returns the client with the `101` response.
    pub(crate) async fn connect(
        &self,
        path: &str,
        protocols: &[&str],
    ) -> Result<(Client, HttpResponse)> {
        let mut request = HttpRequest::upgrade(path);
        if !protocols.is_empty() {
            request = request.header("Sec-WebSocket-Protocol", &protocols.join(", "));
        }
        match self.attempt(&request).await? {
            Ok((response, client)) => Ok((client, response)),
            Err(response) => bail!("expected an upgrade on {path}, got {response:?}"),
        }
    }

    /// Sends `request` from [`CLIENT_IP`] through the proxy. Returns the `101` (whose
    /// accept key is checked) and the client if the upgrade went through, or the complete
    /// refusal. The proxy keeps the connection open after a refusal, so the body is read
    /// by its `Content-Length`.
    pub(crate) async fn attempt(
        &self,
        request: &HttpRequest,
    ) -> Result<Result<(HttpResponse, Client), HttpResponse>> {
        let exchange = async {
            let tcp = Server::connect_to_from(self.addr(), CLIENT_IP).await?;
            let (mut tcp, head) = Server::send_head_on(tcp, request).await?;
            let (mut response, _) = HttpResponse::parse_head(&head)?;
            if response.status == 101 {
                let key = request.get("sec-websocket-key").context("no key")?;
                let accept = derive_accept_key(key.as_bytes());
                ensure!(
                    response.header("sec-websocket-accept") == Some(accept.as_str()),
                    "bad Sec-WebSocket-Accept in {response:?}"
                );
                let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
                return anyhow::Ok(Ok((response, Client::new(ws))));
            }
            match response.header("content-length") {
                Some(len) => {
                    response.body = vec![0; len.parse()?];
                    tcp.read_exact(&mut response.body).await?;
                }
                None => {
                    tcp.read_to_end(&mut response.body).await?;
                }
            }
            anyhow::Ok(Err(response))
        };
        timeout(HANG_GUARD, exchange)
            .await
            .context("the proxy did not answer (hang guard)")?
    }

    /// Everything the proxy wrote so far (its error log), with the harness's own notes.
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

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
        // Captured by the test harness: shown only when the test fails.
        eprintln!(
            "---- {:?} log (port {}) ----\n{}",
            self.kind,
            self.port,
            self.log()
        );
    }
}

/// Stops a proxy this harness started: SIGTERM to its main process, which stops its
/// workers, and SIGKILL if it is still there after the hang guard. Waits for it.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + HANG_GUARD;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The text of `deploy/NAME`, a shipped configuration.
pub(crate) fn deploy_file(name: &str) -> Result<String> {
    let path = workspace_root().join("deploy").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// `text` (the file `name`) with each `(from, to)` replaced; every `from` must be there, so
/// that a change to the shipped file that the tests would silently stop exercising fails
/// here instead.
pub(crate) fn substitute(name: &str, text: &str, changes: &[(&str, &str)]) -> Result<String> {
    let mut out = text.to_owned();
    for (from, to) in changes {
        ensure!(
            out.contains(from),
            "{name} no longer contains `{from}`, which the proxy tests replace: update \
             tests/harness/proxy.rs along with it"
        );
        out = out.replace(from, to);
    }
    Ok(out)
}

/// The main nginx configuration around the site `site`: everything nginx writes stays
/// in `dir`, the log goes to stderr.
fn nginx_main(dir: &Path, site: &Path) -> String {
    let dir = dir.display();
    format!(
        "pid {dir}/nginx.pid;
error_log stderr info;
worker_processes 1;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {site};
}}
",
        site = site.display()
    )
}

/// The main Apache configuration around the site `site` (what Debian's apache2.conf,
/// ports.conf and mods-enabled/ would hold): the modules the site needs, the listening
/// port, and the pid file, locks and runtime files in `dir`; the log goes to stderr.
/// Apache refuses to serve as root, so when the tests run as root its workers run as
/// Debian's `www-data`.
fn apache_main(dir: &Path, site: &Path, port: u16) -> Result<String> {
    let is_root = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0;
    let user = if is_root {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let modules: String = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("proxy_module", "mod_proxy.so"),
        ("proxy_http_module", "mod_proxy_http.so"),
        ("proxy_wstunnel_module", "mod_proxy_wstunnel.so"),
        ("rewrite_module", "mod_rewrite.so"),
    ]
    .iter()
    .map(|(name, file)| format!("LoadModule {name} {APACHE_MODULES}/{file}\n"))
    .collect();
    let dir = dir.display();
    Ok(format!(
        "ServerRoot \"{dir}\"
DefaultRuntimeDir \"{dir}\"
PidFile \"{dir}/httpd.pid\"
Mutex \"file:{dir}\" default
ErrorLog /dev/stderr
LogLevel info
ServerName localhost
{user}{modules}Listen 127.0.0.1:{port}
Include \"{site}\"
",
        site = site.display()
    ))
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
