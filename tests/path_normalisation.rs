//! Paths are normalised before filters and routing: `//`, `/./`, `/x/../` and
//! percent-encoded unreserved characters cannot walk `/admin/x` past a `deny` on
//! `/admin/*` into a catch-all route; an encoded `/` or `\` is refused with 400; the
//! controller sees the normalised path.

use anyhow::Result;
use serde_json::Value;

use crate::harness::{HttpRequest, RoutesDir, Server, guests};

async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[[filter]]
match = "/private/*"
kind = "deny"

[[filter]]
match = "/staff/*"
kind = "origin"
allow = ["https://staff.example"]

[[route]]
match = "/admin/*"
filters = [{{ kind = "deny", status = 403, body = "admins only" }}]
controller = "{probe}"

[[route]]
match = "*"
controller = "{probe}"
"#,
        probe = guests().probe.display()
    ))?;
    Server::start_in(dir).await
}

#[tokio::test]
async fn spellings_of_a_denied_path_are_denied() -> Result<()> {
    let server = server().await?;
    for target in [
        "/admin/x",
        "//admin/x",
        "/./admin/x",
        "/chat/../admin/x",
        "/../admin/x",
        "/%61dmin/x",
        "/%61%64%6D%69%6E/x",
        "/a/%2e%2e/admin/x",
        "/admin//x",
        "/private/x",
        "//private/x",
        "/x/../private/y",
        "/%70rivate/y",
    ] {
        let response = server.http(&HttpRequest::upgrade(target)).await?;
        assert_eq!(response.status, 403, "{target}: {response:?}");
    }
    for target in ["/staff/x", "//staff/x", "/./staff/x", "/%73taff/x"] {
        let evil = HttpRequest::upgrade(target).header("Origin", "https://evil.example");
        let response = server.http(&evil).await?;
        assert_eq!(response.status, 403, "{target}: {response:?}");
        let staff = HttpRequest::upgrade(target).header("Origin", "https://staff.example");
        assert!(server.attempt(&staff).await?.is_ok(), "{target}");
    }
    for ambiguous in [
        "/admin%2Fx",
        "/admin%2fx",
        "/x%5Cy",
        "/a\\b",
        "/%00",
        "/bad%zz",
    ] {
        let response = server.http(&HttpRequest::upgrade(ambiguous)).await?;
        assert_eq!(response.status, 400, "{ambiguous}: {response:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_controller_sees_the_normalised_path() -> Result<()> {
    let server = server().await?;
    let (_, mut client) = server
        .upgrade(&HttpRequest::upgrade("//rooms/./a/../%62lue%20sky?x=1"))
        .await?;
    client.recv_text().await?;
    let info: Value = serde_json::from_str(&client.probe_request("info-json").await?)?;
    assert_eq!(info["path"], "/rooms/blue%20sky");
    assert_eq!(info["query"], "x=1");
    Ok(())
}
