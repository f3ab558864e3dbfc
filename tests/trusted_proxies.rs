//! `Forwarded` / `X-Forwarded-For` decide the client address only when the TCP peer is a
//! trusted proxy; the address shows in `connection-info` and keys the rate limits.

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
    let forwarded = HttpRequest::upgrade("/p/x").header(
        "Forwarded",
        r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#,
    );
    assert_eq!(remote(&server, forwarded).await?, "[2001:db8::1]:4711");
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
