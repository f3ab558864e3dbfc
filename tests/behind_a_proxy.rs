//! wshost behind the real nginx and Apache httpd, each running the configuration shipped
//! in `deploy/` (wshost's side from deploy/routes.toml, the proxy's from
//! deploy/nginx.conf or deploy/apache.conf in both its forms) with only ports, addresses
//! and timeouts changed: echo and chat work through it, including 1 MiB messages both
//! ways; the controller sees the client's address and not the proxy's, whatever
//! forwarding headers the client sends itself; close codes and reasons pass both ways;
//! filter refusals reach the client with their status, headers and body; plain requests
//! (static files) still work; wshost's pings keep an idle connection open past the
//! proxy's idle timeout (and without them the proxy cuts it); and a graceful shutdown's
//! close 1001 reaches the client.
//!
//! The proxy's idle timeout is made short and wshost's ping interval shorter still, so
//! that a connection can stay idle for several of the proxy's timeouts in a few seconds.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::harness::{
    CLIENT_IP, Client, Closed, HttpRequest, HttpResponse, Proxy, ProxyKind, RoutesDir, Server,
    deploy_file, guests, info_value, parse_closed, parse_info, substitute,
};

/// The proxy's idle timeout in the tests (120 s in deploy/).
const PROXY_TIMEOUT_SECS: u32 = 3;

/// wshost's ping interval in the tests (30 s in deploy/routes.toml), well below
/// [`PROXY_TIMEOUT_SECS`].
const PING_INTERVAL_MS: u32 = 500;

/// The static page wshost serves at `/`.
const INDEX: &str = "<!doctype html><title>wshost behind a proxy</title>\n";

/// A wshost and the proxy in front of it. The proxy is dropped (stopped) first.
struct Stack {
    proxy: Proxy,
    server: Server,
}

/// Starts wshost with deploy/routes.toml and these routes, all to test controllers:
/// `/echo/*`; `/chat/*` (sub-protocol `chat`, a room per path); `/probe/*`; `/quiet/*` (the
/// probe, never pinged); `/origin/*` (only `https://example.com`); `/deny/*`; `/bearer/*`
/// (a token required, `tok-ada` for `ada`); and a static page at `/`. Then starts `kind`
/// in front of it.
async fn stack(kind: ProxyKind) -> Result<Stack> {
    let wshost_side = substitute(
        "deploy/routes.toml",
        &deploy_file("routes.toml")?,
        &[(
            "ping-interval-ms = 30000",
            &format!("ping-interval-ms = {PING_INTERVAL_MS}"),
        )],
    )?;
    let guests = guests();
    let dir = RoutesDir::new(&format!(
        r#"static-dir = "www"
{wshost_side}

[[route]]
match = "/echo/*"
controller = "{echo}"

[[route]]
match = "/chat/*"
protocols = ["chat"]
topic = "chat/{{1}}"
controller = "{chat}"

[[route]]
match = "/probe/*"
controller = "{probe}"

[[route]]
match = "/quiet/*"
controller = "{probe}"
limits = {{ ping-interval-ms = 0 }}

[[route]]
match = "/origin/*"
filters = [{{ kind = "origin", allow = ["https://example.com"] }}]
controller = "{probe}"

[[route]]
match = "/deny/*"
filters = [{{ kind = "deny" }}]
controller = "{probe}"

[[route]]
match = "/bearer/*"
filters = [{{ kind = "bearer", tokens-file = "tokens.txt", required = true }}]
controller = "{probe}"
"#,
        echo = guests.echo.display(),
        chat = guests.chat.display(),
        probe = guests.probe.display(),
    ))?;
    dir.write("tokens.txt", b"tok-ada ada\n")?;
    std::fs::create_dir(dir.path().join("www")).context("creating www/")?;
    dir.write("www/index.html", INDEX.as_bytes())?;
    let server = Server::start_in(dir).await?;
    let proxy = Proxy::start(kind, server.addr(), PROXY_TIMEOUT_SECS).await?;
    Ok(Stack { proxy, server })
}

/// Sends `request` (an upgrade to the probe) through the proxy and returns the probe's
/// `info`, parsed.
async fn probe_info(proxy: &Proxy, request: &HttpRequest) -> Result<Vec<(String, String)>> {
    match proxy.attempt(request).await? {
        Ok((_, mut client)) => {
            client.expect_open().await?;
            Ok(parse_info(&client.probe_request("info").await?))
        }
        Err(response) => bail!("expected an upgrade, got {response:?}"),
    }
}

/// Expects `request` to be refused through the proxy with `status` and `body`.
async fn refused(
    proxy: &Proxy,
    request: &HttpRequest,
    status: u16,
    body: &str,
) -> Result<HttpResponse> {
    match proxy.attempt(request).await? {
        Ok((response, _)) => bail!("expected {status}, but the upgrade succeeded: {response:?}"),
        Err(response) => {
            assert_eq!(response.status, status, "{response:?}");
            assert_eq!(response.body_text().trim(), body, "{response:?}");
            Ok(response)
        }
    }
}

async fn echo_works_with_a_mebibyte_each_way(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let (mut client, _) = stack.proxy.connect("/echo/x", &[]).await?;
    assert_eq!(client.request("hello, proxy ✓").await?, "hello, proxy ✓");
    client.send_binary(&[0, 1, 2, 0xff]).await?;
    assert_eq!(client.recv_binary().await?, [0, 1, 2, 0xff]);

    let bytes: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    client.send_binary(&bytes).await?;
    let back = client.recv_binary().await?;
    assert!(
        back == bytes,
        "1 MiB binary came back as {} bytes",
        back.len()
    );
    let unit = "wshost ✓ ü 0123456789\n";
    let text = unit.repeat((1 << 20) / unit.len() + 1);
    let back = client.request(&text).await?;
    assert!(back == text, "1 MiB text came back as {} bytes", back.len());
    client.close(1000, "bye").await
}

/// Joins `/chat/ROOM` through the proxy and returns the client and its welcome.
async fn join(proxy: &Proxy, room: &str) -> Result<(Client, String)> {
    let (mut client, response) = proxy.connect(&format!("/chat/{room}"), &["chat"]).await?;
    assert_eq!(
        response.header("sec-websocket-protocol"),
        Some("chat"),
        "the chosen sub-protocol comes back through the proxy: {response:?}"
    );
    let welcome = client.recv_text().await?;
    Ok((client, welcome))
}

async fn chat_members_hear_each_other(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let (mut a, welcome) = join(&stack.proxy, "room").await?;
    let name_a = welcome
        .strip_prefix("welcome ")
        .and_then(|rest| rest.strip_suffix("; 1 online"))
        .with_context(|| format!("welcome {welcome:?}"))?
        .to_owned();
    let (mut b, welcome) = join(&stack.proxy, "room").await?;
    let name_b = welcome
        .strip_prefix("welcome ")
        .and_then(|rest| rest.strip_suffix("; 2 online"))
        .with_context(|| format!("welcome {welcome:?}"))?
        .to_owned();
    assert_eq!(a.recv_text().await?, format!("{name_b} joined"));
    a.send_text("hello b").await?;
    assert_eq!(b.recv_text().await?, format!("{name_a}: hello b"));
    b.send_binary(&[7, 8, 9]).await?;
    assert_eq!(a.recv_binary().await?, [7, 8, 9]);
    b.close(1000, "").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b} left"));
    Ok(())
}

async fn the_controller_sees_the_client_address_not_the_proxys(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    // The proxy connects to wshost from 127.0.0.1, its clients from CLIENT_IP.
    let client = CLIENT_IP.to_string();
    let info = probe_info(&stack.proxy, &HttpRequest::upgrade("/probe/a")).await?;
    assert_eq!(
        info_value(&info, "remote"),
        Some(client.as_str()),
        "{info:?}"
    );
    assert_eq!(
        info_value(&info, "header.x-forwarded-for"),
        Some(client.as_str()),
        "{info:?}"
    );
    // A client's own forwarding headers do not change the address it is known by: the
    // proxy appends the address it sees, which is the one wshost takes, and `Forwarded`
    // is not the configured header.
    let spoofed = HttpRequest::upgrade("/probe/b")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Forwarded", "for=7.7.7.7");
    let info = probe_info(&stack.proxy, &spoofed).await?;
    assert_eq!(
        info_value(&info, "remote"),
        Some(client.as_str()),
        "{info:?}"
    );
    assert_eq!(
        info_value(&info, "header.x-forwarded-for"),
        Some(format!("6.6.6.6, {client}").as_str()),
        "{info:?}"
    );
    assert_eq!(
        info_value(&info, "header.forwarded"),
        Some("for=7.7.7.7"),
        "{info:?}"
    );
    Ok(())
}

async fn close_codes_and_reasons_pass_both_ways(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let (mut watcher, _) = stack.proxy.connect("/probe/watcher", &[]).await?;
    watcher.expect_open().await?;

    // The controller closes: its code and reason reach the client.
    let (mut closed_by_server, _) = stack.proxy.connect("/probe/a", &[]).await?;
    let a = closed_by_server.expect_open().await?;
    closed_by_server
        .send_text("close 4002 closed by the controller")
        .await?;
    assert_eq!(
        closed_by_server.recv_close().await?,
        (4002, "closed by the controller".to_owned())
    );
    let expected = Closed {
        id: a,
        code: 4002,
        reason: "closed by the controller".to_owned(),
    };
    assert_eq!(parse_closed(&watcher.recv_text().await?)?, expected);

    // The client closes: its code and reason reach the controller's on-close.
    let (mut closing, _) = stack.proxy.connect("/probe/b", &[]).await?;
    let b = closing.expect_open().await?;
    closing.close(4001, "gone fishing ✓").await?;
    let expected = Closed {
        id: b,
        code: 4001,
        reason: "gone fishing ✓".to_owned(),
    };
    assert_eq!(parse_closed(&watcher.recv_text().await?)?, expected);
    Ok(())
}

async fn filter_refusals_reach_the_client_with_their_status(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let proxy = &stack.proxy;
    let from = |origin: &str| HttpRequest::upgrade("/origin/x").header("Origin", origin);
    refused(
        proxy,
        &from("https://evil.example"),
        403,
        "Origin not allowed",
    )
    .await?;
    let info = probe_info(proxy, &from("https://example.com")).await?;
    assert_eq!(
        info_value(&info, "header.origin"),
        Some("https://example.com")
    );

    refused(proxy, &HttpRequest::upgrade("/deny/x"), 403, "Forbidden").await?;

    let response = refused(
        proxy,
        &HttpRequest::upgrade("/bearer/x"),
        401,
        "a bearer token is required",
    )
    .await?;
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    let bearer = |token: &str| {
        HttpRequest::upgrade("/bearer/x").header("Authorization", &format!("Bearer {token}"))
    };
    let response = refused(
        proxy,
        &bearer("tok-eve"),
        401,
        "invalid token: unknown token",
    )
    .await?;
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    // The Authorization header gets through the proxy.
    let info = probe_info(proxy, &bearer("tok-ada")).await?;
    assert_eq!(info_value(&info, "attr.user"), Some("ada"), "{info:?}");
    Ok(())
}

async fn plain_requests_get_through_too(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let page = stack
        .proxy
        .attempt(&HttpRequest::plain("GET", "/"))
        .await?
        .err()
        .context("a plain GET was upgraded")?;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.body_text(), INDEX);
    let missing = stack
        .proxy
        .attempt(&HttpRequest::plain("GET", "/nothing-here"))
        .await?
        .err()
        .context("a plain GET was upgraded")?;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.body_text().trim(), "no file at `/nothing-here`");
    Ok(())
}

async fn pings_keep_an_idle_connection_open_past_the_proxy_timeout(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let (mut client, _) = stack.proxy.connect("/echo/idle", &[]).await?;
    assert_eq!(client.request("before").await?, "before");
    let idle = Duration::from_secs(3 * u64::from(PROXY_TIMEOUT_SECS));
    let pings = client.idle(idle).await?;
    assert!(pings > 0, "no ping came through the proxy");
    assert_eq!(client.request("after").await?, "after");
    Ok(())
}

/// The counterpart of [`pings_keep_an_idle_connection_open_past_the_proxy_timeout`]: on a
/// route that is never pinged, the proxy's idle timeout is real and cuts the connection
/// (wshost sees it end without a close frame). The legacy mod_proxy_wstunnel tunnel has no
/// idle timeout: there the connection stays open.
async fn without_pings_the_proxy_timeout_decides(kind: ProxyKind) -> Result<()> {
    let stack = stack(kind).await?;
    let (mut client, _) = stack.proxy.connect("/quiet/x", &[]).await?;
    client.expect_open().await?;
    if kind.closes_idle_tunnels() {
        client.expect_cut().await?;
        let closed = stack
            .server
            .log_event("closing the connection the proxy cut", |e| {
                e["message"] == "closed"
            })
            .await?;
        assert_eq!(closed["code"], 1006, "{closed}");
    } else {
        let idle = Duration::from_secs(3 * u64::from(PROXY_TIMEOUT_SECS));
        assert_eq!(client.idle(idle).await?, 0, "the route is never pinged");
        let info = parse_info(&client.probe_request("info").await?);
        assert_eq!(info_value(&info, "path"), Some("/quiet/x"));
    }
    Ok(())
}

async fn a_graceful_shutdowns_1001_reaches_the_client(kind: ProxyKind) -> Result<()> {
    let mut stack = stack(kind).await?;
    let (mut client, _) = stack.proxy.connect("/echo/x", &[]).await?;
    assert_eq!(client.request("hi").await?, "hi");
    // Never reads again, so never answers the close frame: the drain goes on (until
    // shutdown-timeout-ms, 10 s) while the next request comes in.
    let (mut silent, _) = stack.proxy.connect("/echo/silent", &[]).await?;
    assert_eq!(silent.request("hi").await?, "hi");

    stack.server.signal("TERM")?;
    assert_eq!(
        client.recv_close().await?,
        (1001, "server shutting down".to_owned())
    );
    refused(
        &stack.proxy,
        &HttpRequest::upgrade("/echo/late"),
        503,
        "server shutting down",
    )
    .await?;
    // The proxy closes its side to wshost when the client goes, which ends the drain.
    silent.drop_tcp();
    let status = stack.server.wait_exit().await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

/// One `#[tokio::test]` per scenario for the proxy `$kind`.
macro_rules! proxy_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;
            proxy_tests!(@each $kind;
                echo_works_with_a_mebibyte_each_way,
                chat_members_hear_each_other,
                the_controller_sees_the_client_address_not_the_proxys,
                close_codes_and_reasons_pass_both_ways,
                filter_refusals_reach_the_client_with_their_status,
                plain_requests_get_through_too,
                pings_keep_an_idle_connection_open_past_the_proxy_timeout,
                without_pings_the_proxy_timeout_decides,
                a_graceful_shutdowns_1001_reaches_the_client,
            );
        }
    };
    (@each $kind:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() -> Result<()> {
                super::$scenario($kind).await
            }
        )*
    };
}

proxy_tests!(nginx, ProxyKind::Nginx);
proxy_tests!(apache, ProxyKind::Apache);
proxy_tests!(apache_wstunnel, ProxyKind::ApacheWstunnel);
