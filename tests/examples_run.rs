//! The shipped examples/routes.toml works: `wshost check` builds and compiles its
//! controllers and prints its route table, and `wshost run` serves echo and chat from it.

use anyhow::{Context, Result};

use crate::harness::{Server, check, workspace_root};

/// The name `wshost check` shows for each route of a routes.toml: `name`, else `match`,
/// else `*`.
fn route_names(routes: &str) -> Result<Vec<String>> {
    let table: toml::Table = routes.parse()?;
    let routes = table
        .get("route")
        .and_then(toml::Value::as_array)
        .context("no [[route]] in examples/routes.toml")?;
    Ok(routes
        .iter()
        .map(|route| {
            let field = |key| route.get(key).and_then(toml::Value::as_str);
            field("name").or(field("match")).unwrap_or("*").to_owned()
        })
        .collect())
}

#[tokio::test]
async fn check_accepts_the_examples_and_prints_their_routes() -> Result<()> {
    let routes = workspace_root().join("examples").join("routes.toml");
    let text = std::fs::read_to_string(&routes)
        .with_context(|| format!("reading {}", routes.display()))?;
    let names = route_names(&text)?;
    assert!(
        names.len() >= 2,
        "expected the echo and chat routes: {names:?}"
    );

    let output = check(&routes).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "wshost check failed ({}):\n{stderr}",
        output.status
    );
    for name in &names {
        assert!(
            stdout.contains(name.as_str()),
            "route {name:?} missing from:\n{stdout}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn run_serves_echo_and_chat_from_the_examples() -> Result<()> {
    let server = Server::start_file(&workspace_root().join("examples").join("routes.toml")).await?;

    let mut echo = server.connect("/echo/anything").await?;
    assert_eq!(echo.request("hello").await?, "hello");

    let (mut chat, protocol) = server
        .connect_with_protocols("/chat/lobby", &["chat"])
        .await?;
    assert_eq!(protocol.as_deref(), Some("chat"));
    let welcome = chat.recv_text().await?;
    assert!(
        welcome.starts_with("welcome ") && welcome.ends_with("; 1 online"),
        "{welcome:?}"
    );
    Ok(())
}
