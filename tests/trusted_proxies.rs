//! `Forwarded` / `X-Forwarded-For` decide the client address only when the TCP peer is a
//! trusted proxy, and then only the one header `forwarded-header` names; the address
//! shows in `connection-info` and keys the rate limits (IPv6 by /64).

use anyhow::Result;
use serde_json::Value;

use crate::harness::{HttpRequest, RoutesDir, Server, guests};

async fn server(trusted: &str) -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
{trusted}

[[route]]
match = "/p/*"
controller = "{probe}"

[[route]]
match = "/limited/*"
filters = [{{ kind = "rate-limit", max = 1 }}]
controller = "{probe}"
"#,
        probe = guests().probe.display()
    ))?;
    Server::start_in(dir).await
}

/// The `remote_addr` the probe sees for `request`.
async fn remote(server: &Server, request: HttpRequest) -> Result<String> {
    let (_, mut client) = server.upgrade(&request).await?;
    client.recv_text().await?;
    let info: Value = serde_json::from_str(&client.probe_request("info-json").await?)?;
    Ok(info["remote_addr"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() -> Result<()> {
    let server = server("").await?;
    let request = HttpRequest::upgrade("/p/x").header("X-Forwarded-For", "1.2.3.4");
    let addr = remote(&server, request).await?;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Ok(())
}

#[tokio::test]
async fn trusted_proxies_give_the_client_address() -> Result<()> {
    let server = server(r#"trusted-proxies = ["127.0.0.1", "10.0.0.0/8"]"#).await?;
    let xff = HttpRequest::upgrade("/p/x").header("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.7");
    assert_eq!(remote(&server, xff).await?, "1.2.3.4");
    Ok(())
}

#[tokio::test]
async fn rate_limits_count_per_forwarded_client() -> Result<()> {
    let server = server(r#"trusted-proxies = ["127.0.0.1"]"#).await?;
    let from = |ip: &str| HttpRequest::upgrade("/limited/x").header("X-Forwarded-For", ip);
    assert!(server.attempt(&from("1.1.1.1")).await?.is_ok());
    let refused = server
        .attempt(&from("1.1.1.1"))
        .await?
        .err()
        .map(|r| r.status);
    assert_eq!(refused, Some(429));
    assert!(
        server.attempt(&from("2.2.2.2")).await?.is_ok(),
        "another client"
    );
    Ok(())
}

#[tokio::test]
async fn a_clients_own_forwarded_header_does_not_beat_the_proxys_x_forwarded_for() -> Result<()> {
    // What nginx passes on for a client that sent its own `Forwarded`: that header
    // untouched, and `X-Forwarded-For` with the address nginx saw.
    let server = server(r#"trusted-proxies = ["127.0.0.1"]"#).await?;
    let spoofed = || {
        HttpRequest::upgrade("/p/x")
            .header("Forwarded", "for=6.6.6.6")
            .header("X-Forwarded-For", "198.51.100.7")
    };
    assert_eq!(remote(&server, spoofed()).await?, "198.51.100.7");
    // Nor can it pick another client's rate-limit bucket, or escape its own.
    let limited = |forwarded: &str| {
        HttpRequest::upgrade("/limited/x")
            .header("Forwarded", forwarded)
            .header("X-Forwarded-For", "198.51.100.7")
    };
    assert!(server.attempt(&limited("for=1.1.1.1")).await?.is_ok());
    let again = server.attempt(&limited("for=2.2.2.2")).await?;
    assert_eq!(again.err().map(|r| r.status), Some(429));
    Ok(())
}

#[tokio::test]
async fn with_forwarded_configured_x_forwarded_for_is_ignored() -> Result<()> {
    let server = server(
        r#"trusted-proxies = ["127.0.0.1"]
forwarded-header = "forwarded""#,
    )
    .await?;
    let request = HttpRequest::upgrade("/p/x")
        .header("X-Forwarded-For", "6.6.6.6")
        .header(
            "Forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#,
        );
    assert_eq!(remote(&server, request).await?, "[2001:db8::1]:4711");
    let only_xff = HttpRequest::upgrade("/p/x").header("X-Forwarded-For", "6.6.6.6");
    let addr = remote(&server, only_xff).await?;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Ok(())
}

#[tokio::test]
async fn rate_limits_key_ipv6_clients_by_their_64_and_mapped_ipv4_as_ipv4() -> Result<()> {
    let server = server(r#"trusted-proxies = ["127.0.0.1"]"#).await?;
    let from = |ip: &str| HttpRequest::upgrade("/limited/x").header("X-Forwarded-For", ip);
    let status = |r: Result<_, crate::harness::HttpResponse>| r.err().map(|r| r.status);
    assert!(server.attempt(&from("2001:db8:1:2::1")).await?.is_ok());
    assert_eq!(
        status(server.attempt(&from("2001:db8:1:2:ffff::9")).await?),
        Some(429),
        "another address in the same /64"
    );
    assert!(
        server.attempt(&from("2001:db8:1:3::1")).await?.is_ok(),
        "another /64"
    );
    assert!(server.attempt(&from("192.0.2.1")).await?.is_ok());
    assert_eq!(
        status(server.attempt(&from("::ffff:192.0.2.1")).await?),
        Some(429),
        "IPv4-mapped is the same client"
    );
    Ok(())
}
