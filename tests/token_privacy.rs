//! A bearer token is for the host: once the filter has consumed it, neither the
//! controller's `connection-info` nor its handshake hook sees it (the `Authorization`
//! header, the `access_token` query parameter, the `bearer.` sub-protocol entry), and a
//! request target that fails to parse is logged with its query redacted.

use anyhow::Result;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{HttpRequest, RoutesDir, SECRET, Server, claims, guests, jwt};

/// `/p/*` to the probe, `/h/*` to the probe with its handshake hook, both behind the
/// same bearer filter.
async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[filters.login]
kind = "bearer"
algorithm = "HS256"
secret-file = "secret.txt"

[[route]]
match = "/p/*"
protocols = ["chat"]
filters = ["login"]
controller = "{}"

[[route]]
match = "/h/*"
protocols = ["chat"]
filters = ["login"]
controller = "{}"
"#,
        guests().probe.display(),
        guests().probe_hook.display()
    ))?;
    dir.write("secret.txt", SECRET.as_bytes())?;
    Server::start_in(dir).await
}

/// The connection info the probe reports for `request`.
async fn info(server: &Server, request: &HttpRequest) -> Result<Value> {
    let (_, mut client) = server.upgrade(request).await?;
    client.recv_text().await?; // "open N"
    Ok(serde_json::from_str(
        &client.probe_request("info-json").await?,
    )?)
}

#[tokio::test]
async fn consumed_tokens_are_not_shown_to_the_controller() -> Result<()> {
    let server = server().await?;
    let token = jwt(Algorithm::HS256, &claims("ann", json!({})));
    for path in ["/p/x", "/h/x"] {
        // One token in each place the filter looks: the first one found is used, and
        // every one of them is removed.
        let request = HttpRequest::upgrade(&format!("{path}?a=1&access_token={token}&b=2"))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Sec-WebSocket-Protocol", &format!("chat, bearer.{token}"))
            .header("X-Other", "kept");
        let info = info(&server, &request).await?;
        assert_eq!(info["attributes"]["user"], "ann", "{info}");
        let text = info.to_string();
        assert!(!text.contains(&token), "{path}: the token leaked: {text}");
        assert_eq!(info["query"], "a=1&b=2", "{info}");
        let headers = &info["headers"];
        assert!(
            headers
                .as_array()
                .is_some_and(|h| h.iter().any(|p| p[0] == "x-other")),
            "{info}"
        );
        assert!(
            !text.contains("authorization"),
            "{path}: the Authorization header is still there: {text}"
        );
        if path == "/h/x" {
            // What the handshake hook was given, as it recorded it.
            assert_eq!(info["attributes"]["hook.query"], "a=1&b=2", "{info}");
            let seen = info["attributes"]["hook.headers"]
                .as_str()
                .unwrap_or_default();
            assert!(seen.contains("x-other") && seen.contains("chat"), "{seen}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_malformed_target_is_logged_without_its_query() -> Result<()> {
    let server = server().await?;
    let secret = "s3cr3t-t0ken";
    let response = server
        .http(&HttpRequest::upgrade(&format!(
            "chat?access_token={secret}"
        )))
        .await?;
    assert_eq!(response.status, 400, "{response:?}");
    let line = server
        .log_line("the refusal", |l| l.contains("malformed request target"))
        .await?;
    assert!(line.contains("redacted"), "{line}");
    assert!(!server.log().contains(secret), "{}", server.log());
    assert!(!response.body_text().contains(secret));
    Ok(())
}
