//! `wss://` without a proxy: routes.toml's `[tls]` names a certificate chain and key,
//! made here by a certificate authority that exists only in the test, and a real client
//! (tokio-rustls, trusting that authority only) connects. Echo and chat work over TLS
//! 1.3 and 1.2; a client that trusts another authority refuses the server; plain HTTP,
//! an unknown server name and a silent socket are dropped while the server goes on; the
//! TLS handshake counts against the handshake timeout and the half-open limits; the
//! certificate is replaced under live connections (by rename and by a Kubernetes-style
//! symlink swap), and a broken replacement is refused with the old one still served.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::rustls::{ProtocolVersion, version};

use crate::harness::{
    HANG_GUARD, HttpRequest, Route, RoutesDir, Server, ServerCert, TestCa, TlsClient, check,
    guests, peer_certificate, routes_toml, tls_connect,
};

/// The `[tls]` table naming `cert.pem` and `key.pem` beside routes.toml.
const TLS_TABLE: &str = "[tls]\ncert-file = \"cert.pem\"\nkey-file = \"key.pem\"\n";

/// Echo at /echo/*, chat at /chat/* (sub-protocol `chat`, a room per path).
fn routes() -> String {
    routes_toml(&[
        Route::to(&guests().echo).at("/echo/*"),
        Route::to(&guests().chat)
            .at("/chat/*")
            .protocols(&["chat"])
            .topic("chat/{1}"),
    ])
}

/// A routes directory with `top` (top-level keys), `[tls]` and the routes, holding
/// `cert` as cert.pem and key.pem.
fn tls_dir(top: &str, cert: &ServerCert) -> Result<RoutesDir> {
    let dir = RoutesDir::new(&format!("{top}{TLS_TABLE}{}", routes()))?;
    dir.write("cert.pem", cert.cert_pem.as_bytes())?;
    dir.write("key.pem", cert.key_pem.as_bytes())?;
    Ok(dir)
}

/// A TLS server (with `top` as its top-level keys and `env` in its environment) serving
/// a certificate with serial 1 from a new authority; returns the server, the
/// authority, and the certificate.
async fn tls_server_with(top: &str, env: &[(&str, &str)]) -> Result<(Server, TestCa, ServerCert)> {
    let ca = TestCa::new("wshost test CA")?;
    let cert = ca.issue(1)?;
    let server = Server::start_in_with_env(tls_dir(top, &cert)?, env).await?;
    ensure!(server.is_tls(), "the listening line did not say wss://");
    Ok((server, ca, cert))
}

async fn tls_server() -> Result<(Server, TestCa, ServerCert)> {
    tls_server_with("", &[]).await
}

/// The server's directory (routes.toml's).
fn dir_of(server: &Server) -> Result<PathBuf> {
    Ok(server
        .dir()
        .context("the server has no routes directory")?
        .to_owned())
}

/// Writes `contents` to `dir/name` the way certificate tools do: a new file, renamed over
/// the old one.
fn replace(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let staged = dir.join(format!(".{name}.new"));
    std::fs::write(&staged, contents)?;
    std::fs::rename(&staged, dir.join(name))?;
    Ok(())
}

/// The certificate a new `wss://` client sees, after checking the connection echoes.
async fn served_certificate(server: &Server, ca: &TestCa) -> Result<Vec<u8>> {
    let mut client = server.connect_wss("/echo/probe", ca.client()?).await?;
    assert_eq!(
        client.request("which certificate?").await?,
        "which certificate?"
    );
    let cert = peer_certificate(client.stream()).context("no server certificate")?;
    Ok(cert.to_vec())
}

async fn join_chat(server: &Server, ca: &TestCa) -> Result<(TlsClient, String)> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let mut client = server
        .connect_wss_over(tcp, "/chat/room", ca.client()?, "localhost", &["chat"])
        .await?;
    let welcome = client.recv_text().await?;
    let name = welcome
        .strip_prefix("welcome ")
        .and_then(|rest| rest.split_once("; "))
        .with_context(|| format!("unexpected welcome {welcome:?}"))?
        .0
        .to_owned();
    Ok((client, name))
}

#[tokio::test]
async fn echo_and_chat_work_over_wss() -> Result<()> {
    let (server, ca, cert) = tls_server().await?;
    let mut echo = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(echo.request("hello over TLS").await?, "hello over TLS");
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    echo.send_binary(&big).await?;
    assert!(echo.recv_binary().await? == big, "1 MiB came back altered");
    let (_, tls) = echo.stream().get_ref();
    assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        peer_certificate(echo.stream()).as_deref(),
        Some(&cert.der[..])
    );

    let (mut a, name_a) = join_chat(&server, &ca).await?;
    let (mut b, name_b) = join_chat(&server, &ca).await?;
    assert_eq!(a.recv_text().await?, format!("{name_b} joined"));
    a.send_text("hi from a").await?;
    assert_eq!(b.recv_text().await?, format!("{name_a}: hi from a"));
    b.close(1000, "bye").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b} left"));
    echo.close(1000, "done").await?;
    Ok(())
}

#[tokio::test]
async fn tls_1_2_clients_are_served_too() -> Result<()> {
    let (server, ca, _) = tls_server().await?;
    let mut client = server
        .connect_wss("/echo/x", ca.client_with(&[&version::TLS12])?)
        .await?;
    assert_eq!(client.request("1.2").await?, "1.2");
    let (_, tls) = client.stream().get_ref();
    assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    Ok(())
}

#[tokio::test]
async fn a_client_that_trusts_another_authority_refuses_the_server() -> Result<()> {
    let (server, ca, _) = tls_server().await?;
    let stranger = TestCa::new("some other CA")?;
    let error = server
        .connect_wss("/echo/x", stranger.client()?)
        .await
        .err()
        .context("a client trusting another CA accepted the server")?;
    let shown = format!("{error:#}");
    assert!(shown.contains("UnknownIssuer"), "{shown}");
    // The server goes on serving the clients that trust it.
    let mut client = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(client.request("still serving").await?, "still serving");
    Ok(())
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_told_to_use_wss() -> Result<()> {
    let (server, ca, _) = tls_server_with("", &[("RUST_LOG", "info,wshost=debug")]).await?;
    let answer = server.http(&HttpRequest::upgrade("/echo/x")).await?;
    assert_eq!(answer.status, 400, "{answer:?}");
    let body = String::from_utf8_lossy(&answer.body);
    assert!(body.contains("wss://"), "{body}");
    server
        .log_event("the plain request dropped at debug", |e| {
            e["level"] == "DEBUG"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("dropped: not TLS"))
        })
        .await?;
    let mut client = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(client.request("still serving").await?, "still serving");
    Ok(())
}

#[tokio::test]
async fn a_server_name_the_certificate_does_not_cover_is_refused() -> Result<()> {
    let (server, ca, _) = tls_server_with("", &[("RUST_LOG", "info,wshost=debug")]).await?;
    let tcp = TcpStream::connect(server.addr()).await?;
    let refused = tls_connect(tcp, ca.client()?, "other.example").await;
    ensure!(refused.is_err(), "a handshake for other.example succeeded");
    server
        .log_event("the unknown name logged at debug", |e| {
            e["level"] == "DEBUG" && e["server_name"] == "other.example"
        })
        .await?;
    // No name at all (a client connecting to an IP address) gets the certificate.
    let tcp = TcpStream::connect(server.addr()).await?;
    let by_ip = tls_connect(tcp, ca.client()?, "127.0.0.1").await?;
    assert!(peer_certificate(&by_ip).is_some());
    let mut client = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(client.request("still serving").await?, "still serving");
    Ok(())
}

#[tokio::test]
async fn static_files_are_served_over_https() -> Result<()> {
    let ca = TestCa::new("wshost test CA")?;
    let cert = ca.issue(1)?;
    let dir = tls_dir("static-dir = \"www\"\n", &cert)?;
    std::fs::create_dir(dir.path().join("www"))?;
    dir.write("www/index.html", b"<p>over TLS</p>")?;
    let server = Server::start_in(dir).await?;
    let tcp = TcpStream::connect(server.addr()).await?;
    let mut tls = tls_connect(tcp, ca.client()?, "localhost").await?;
    tls.write_all(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(HANG_GUARD, tls.read_to_end(&mut answer))
        .await
        .context("hang guard")??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("<p>over TLS</p>"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn the_tls_handshake_counts_against_the_handshake_timeout() -> Result<()> {
    let (server, ca, _) = tls_server_with("handshake-timeout-ms = 300\n", &[]).await?;
    // Connects and says nothing: dropped, no TLS handshake.
    let mut silent = TcpStream::connect(server.addr()).await?;
    let mut bytes = Vec::new();
    tokio::time::timeout(HANG_GUARD, silent.read_to_end(&mut bytes))
        .await
        .context("a silent socket was kept open (hang guard)")??;
    assert!(bytes.is_empty(), "a silent socket was sent {bytes:?}");
    server
        .log_event("the silent socket dropped", |e| {
            e["message"] == "dropped: no TLS handshake within the handshake timeout"
        })
        .await?;
    // Finishes the TLS handshake, then says nothing: dropped by the same timeout.
    let tcp = TcpStream::connect(server.addr()).await?;
    let mut tls = tls_connect(tcp, ca.client()?, "localhost").await?;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, tls.read_to_end(&mut bytes))
        .await
        .context("a socket without a request was kept open (hang guard)")?;
    assert!(bytes.is_empty(), "{read:?} {bytes:?}");
    server
        .log_event("the socket without a request dropped", |e| {
            e["message"] == "dropped: no complete request within the handshake timeout"
        })
        .await?;
    let mut client = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(client.request("in time").await?, "in time");
    Ok(())
}

#[tokio::test]
async fn silent_tls_sockets_hold_their_address_handshake_places() -> Result<()> {
    let top = "handshake-timeout-ms = 60000\n[limits]\nmax-handshakes-per-address = 2\n";
    let ca = TestCa::new("wshost test CA")?;
    let cert = ca.issue(1)?;
    let dir = tls_dir(top, &cert)?;
    let server = Server::start_in(dir).await?;
    let ip = |text: &str| -> IpAddr { text.parse().expect("an address") };
    let mut silent = JoinSet::new();
    for _ in 0..3 {
        let mut tcp = server.connect_from(ip("127.0.0.1")).await?;
        silent.spawn(async move {
            let mut bytes = Vec::new();
            let read = tcp.read_to_end(&mut bytes).await;
            (read.is_ok(), bytes)
        });
    }
    // The third is past the cap: closed at once, unanswered (no HTTP before TLS).
    let (_, bytes) = tokio::time::timeout(HANG_GUARD, silent.join_next())
        .await
        .context("the socket past the cap was kept (hang guard)")?
        .context("no socket")??;
    assert!(bytes.is_empty(), "{bytes:?}");
    // Another address still gets in, while the two silent sockets keep their places.
    let tcp = server.connect_from(ip("127.0.0.2")).await?;
    let mut client = server
        .connect_wss_over(tcp, "/echo/x", ca.client()?, "localhost", &[])
        .await?;
    assert_eq!(client.request("other address").await?, "other address");
    assert_eq!(silent.len(), 2);
    assert!(
        silent.try_join_next().is_none(),
        "a silent socket within the cap was closed"
    );
    Ok(())
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_and_keeps_the_open_ones() -> Result<()> {
    let (server, ca, first) = tls_server().await?;
    let dir = dir_of(&server)?;
    let mut open = server.connect_wss("/echo/open", ca.client()?).await?;
    assert_eq!(open.request("before").await?, "before");
    assert_eq!(served_certificate(&server, &ca).await?, first.der.to_vec());

    let second = ca.issue(2)?;
    replace(&dir, "key.pem", &second.key_pem)?;
    replace(&dir, "cert.pem", &second.cert_pem)?;
    server
        .log_event("the certificate reloaded", |e| {
            e["message"] == "TLS certificate reloaded; new connections get the new one"
        })
        .await?;
    assert_eq!(served_certificate(&server, &ca).await?, second.der.to_vec());
    // The connection opened before the swap goes on.
    assert_eq!(open.request("after").await?, "after");
    open.close(1000, "done").await?;
    Ok(())
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_picked_up() -> Result<()> {
    use std::os::unix::fs::symlink;
    let ca = TestCa::new("wshost test CA")?;
    let first = ca.issue(1)?;
    // A secret volume: cert.pem -> ..data/cert.pem, ..data -> ..v1.
    let dir = RoutesDir::new(&format!("{TLS_TABLE}{}", routes()))?;
    std::fs::create_dir(dir.path().join("..v1"))?;
    dir.write("..v1/cert.pem", first.cert_pem.as_bytes())?;
    dir.write("..v1/key.pem", first.key_pem.as_bytes())?;
    symlink("..v1", dir.path().join("..data"))?;
    symlink("..data/cert.pem", dir.path().join("cert.pem"))?;
    symlink("..data/key.pem", dir.path().join("key.pem"))?;
    let root = dir.path().to_owned();
    let server = Server::start_in(dir).await?;
    let mut open = server.connect_wss("/echo/open", ca.client()?).await?;
    assert_eq!(served_certificate(&server, &ca).await?, first.der.to_vec());

    let second = ca.issue(2)?;
    std::fs::create_dir(root.join("..v2"))?;
    std::fs::write(root.join("..v2/cert.pem"), &second.cert_pem)?;
    std::fs::write(root.join("..v2/key.pem"), &second.key_pem)?;
    symlink("..v2", root.join("..data_tmp"))?;
    std::fs::rename(root.join("..data_tmp"), root.join("..data"))?;
    server
        .log_event("the certificate reloaded", |e| {
            e["message"] == "TLS certificate reloaded; new connections get the new one"
        })
        .await?;
    assert_eq!(served_certificate(&server, &ca).await?, second.der.to_vec());
    assert_eq!(open.request("after the swap").await?, "after the swap");

    // The watch followed the swap: a third version, written in place, is seen too.
    let third = ca.issue(3)?;
    replace(&root.join("..v2"), "key.pem", &third.key_pem)?;
    replace(&root.join("..v2"), "cert.pem", &third.cert_pem)?;
    server
        .log_count("reloaded twice", 2, |line| {
            line.contains("TLS certificate reloaded; new connections get the new one")
        })
        .await?;
    assert_eq!(served_certificate(&server, &ca).await?, third.der.to_vec());
    Ok(())
}

#[tokio::test]
async fn a_broken_replacement_is_refused_and_the_old_certificate_stays() -> Result<()> {
    let (server, ca, first) = tls_server().await?;
    let dir = dir_of(&server)?;
    // A new certificate without its key: the old key does not belong to it.
    let second = ca.issue(2)?;
    replace(&dir, "cert.pem", &second.cert_pem)?;
    let refused = server
        .log_event("the pair refused", |e| {
            e["level"] == "ERROR"
                && e["message"] == "TLS certificate refused; the old one is still served"
        })
        .await?;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("does not belong"), "{refused}");
    assert!(
        error.contains("key.pem") && error.contains("cert.pem"),
        "{refused}"
    );
    assert_eq!(served_certificate(&server, &ca).await?, first.der.to_vec());

    // Its key arrives: now the pair loads.
    replace(&dir, "key.pem", &second.key_pem)?;
    server
        .log_event("the certificate reloaded", |e| {
            e["message"] == "TLS certificate reloaded; new connections get the new one"
        })
        .await?;
    assert_eq!(served_certificate(&server, &ca).await?, second.der.to_vec());

    // A file that is not PEM at all is refused the same way.
    replace(&dir, "cert.pem", "not a certificate")?;
    server
        .log_count("refused twice", 2, |line| {
            line.contains("TLS certificate refused; the old one is still served")
        })
        .await?;
    assert_eq!(served_certificate(&server, &ca).await?, second.der.to_vec());
    Ok(())
}

#[tokio::test]
async fn tls_settings_need_a_restart_but_the_routes_reload() -> Result<()> {
    let (server, ca, _) = tls_server().await?;
    let dir = dir_of(&server)?;
    // Without `[tls]` and with the echo route renamed: the routes change, TLS stays.
    let routes = routes_toml(&[Route::to(&guests().echo).at("/echo/*").named("echo-2")]);
    replace(&dir, "routes.toml", &routes)?;
    server
        .log_event("the TLS change refused", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("`[tls]` changes need a restart"))
        })
        .await?;
    server
        .log_event("the routes reloaded", |e| e["message"] == "routes reloaded")
        .await?;
    let mut client = server.connect_wss("/echo/x", ca.client()?).await?;
    assert_eq!(client.request("still TLS").await?, "still TLS");
    Ok(())
}

/// Runs `wshost check` on `dir`'s routes.toml; returns (success, stdout, stderr).
async fn check_dir(dir: &RoutesDir) -> Result<(bool, String, String)> {
    let output = check(&dir.routes()).await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn check_loads_the_pair_and_names_what_is_wrong() -> Result<()> {
    let ca = TestCa::new("wshost test CA")?;
    let cert = ca.issue(1)?;
    let dir = tls_dir("", &cert)?;
    let (ok, stdout, stderr) = check_dir(&dir).await?;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("tls: 1 certificate(s) from "), "{stdout}");

    // The line of the faulty key, and why. (The table starts on line 1.)
    let other = ca.issue(2)?;
    dir.write("key.pem", other.key_pem.as_bytes())?;
    let (ok, _, stderr) = check_dir(&dir).await?;
    assert!(!ok);
    assert!(
        stderr.contains("routes.toml:1:1: `tls`: the private key in"),
        "{stderr}"
    );
    assert!(stderr.contains("does not belong"), "{stderr}");

    dir.write(
        "key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )?;
    let (ok, _, stderr) = check_dir(&dir).await?;
    assert!(!ok);
    assert!(stderr.contains("routes.toml:3:"), "{stderr}");
    assert!(stderr.contains("`tls.key-file`"), "{stderr}");

    std::fs::remove_file(dir.path().join("cert.pem"))?;
    let (ok, _, stderr) = check_dir(&dir).await?;
    assert!(!ok);
    assert!(stderr.contains("routes.toml:2:"), "{stderr}");
    assert!(stderr.contains("`tls.cert-file`: cannot read"), "{stderr}");

    let half = RoutesDir::new(&format!("[tls]\ncert-file = \"cert.pem\"\n{}", routes()))?;
    let (ok, _, stderr) = check_dir(&half).await?;
    assert!(!ok);
    assert!(stderr.contains("`tls.key-file` is missing"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn run_refuses_to_start_with_a_broken_pair() -> Result<()> {
    let ca = TestCa::new("wshost test CA")?;
    let cert = ca.issue(1)?;
    let dir = tls_dir("", &cert)?;
    dir.write("key.pem", ca.issue(2)?.key_pem.as_bytes())?;
    let error = match Server::start_in(dir).await {
        Ok(_) => anyhow::bail!("wshost started with a key that does not match"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("does not belong"), "{error}");
    Ok(())
}
