//! `wshost token` (development only) mints a JWT that a routes file's `bearer` filter
//! accepts: the rooms of examples/routes.toml open with it, issuer and audience are
//! added when the filter requires them, and RS256 filters need the private key.

use std::ffi::OsStr;

use anyhow::{Result, ensure};
use serde_json::Value;

use crate::harness::{
    HttpRequest, RoutesDir, SECRET, Server, fixture, guests, workspace_root, wshost,
};

/// Runs `wshost token ARGS` and returns the token (or the error text).
async fn token(args: &[&str]) -> Result<Result<String, String>> {
    let mut all: Vec<&OsStr> = vec!["token".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    let output = wshost(&all).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Ok(if output.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    })
}

#[tokio::test]
async fn a_minted_token_opens_the_examples_room_it_names() -> Result<()> {
    let routes = workspace_root().join("examples/routes.toml");
    let routes_arg = routes.to_string_lossy().into_owned();
    let minted = token(&[&routes_arg, "--sub", "ann", "--claim", "room=blue"]).await?;
    let minted = minted.map_err(anyhow::Error::msg)?;
    let server = Server::start_file(&routes).await?;
    let bearer = |path: &str| {
        HttpRequest::upgrade(path).header("Authorization", &format!("Bearer {minted}"))
    };
    let (_, mut client) = server.upgrade(&bearer("/rooms/blue")).await?;
    assert_eq!(client.recv_text().await?, "hello ann, this is room blue");
    let other = server.http(&bearer("/rooms/red")).await?;
    assert_eq!(other.status, 403, "{other:?}");
    Ok(())
}

#[tokio::test]
async fn issuer_audience_and_json_claims_are_carried() -> Result<()> {
    let dir = RoutesDir::new(&format!(
        r#"
[filters.login]
kind = "bearer"
algorithm = "HS256"
secret-file = "secret.txt"
issuer = "https://id.example"
audience = "wshost"
claims = ["roles"]
required = true

[filters.rsa]
kind = "bearer"
algorithm = "RS256"
public-key-file = "rsa.pem"

[[route]]
match = "/p/*"
filters = ["login", {{ kind = "authorize", claims = {{ roles = ["admin"] }} }}]
controller = "{}"
"#,
        guests().probe.display()
    ))?;
    dir.write("secret.txt", SECRET.as_bytes())?;
    dir.write("rsa.pem", &std::fs::read(fixture("rsa-public.pem"))?)?;
    let routes = dir.routes().to_string_lossy().into_owned();

    let ambiguous = token(&[&routes, "--sub", "x"]).await?.unwrap_err();
    ensure!(ambiguous.contains("--filter"), "{ambiguous}");
    let rsa = token(&[&routes, "--sub", "x", "--filter", "rsa"])
        .await?
        .unwrap_err();
    ensure!(rsa.contains("--private-key"), "{rsa}");
    let private = fixture("rsa-private.pem").to_string_lossy().into_owned();
    let rsa_args = [
        &routes[..],
        "--sub",
        "x",
        "--filter",
        "rsa",
        "--private-key",
        &private,
    ];
    ensure!(token(&rsa_args).await?.is_ok());

    let minted = token(&[
        &routes,
        "--filter",
        "login",
        "--sub",
        "ann",
        "--claim",
        r#"roles=["user","admin"]"#,
    ])
    .await?
    .map_err(anyhow::Error::msg)?;
    let server = Server::start_in(dir).await?;
    let request = HttpRequest::upgrade("/p/x").header("Authorization", &format!("Bearer {minted}"));
    let (_, mut client) = server.upgrade(&request).await?;
    client.recv_text().await?;
    let info: Value = serde_json::from_str(&client.probe_request("info-json").await?)?;
    assert_eq!(info["attributes"]["user"], "ann");
    assert_eq!(info["attributes"]["claims.roles"], r#"["user","admin"]"#);
    Ok(())
}
