//! The shipped examples/routes.toml works: `wshost check` builds and compiles its
//! controllers and prints its route table, and `wshost run` serves echo and chat from it,
//! wherever cargo is told to put its build output (`CARGO_TARGET_DIR`); the cluster
//! example's routes files check too.

use anyhow::{Context, Result};

use crate::harness::{HttpRequest, Lang, Server, chat, check, guests, target_dir, workspace_root};

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

/// examples/cluster's three nodes pass `wshost check` (which does not need NATS) and, as
/// its README says, differ only in `listen` and the cluster `name`.
#[tokio::test]
async fn check_accepts_the_cluster_examples() -> Result<()> {
    let dir = workspace_root().join("examples").join("cluster");
    let mut normalised = Vec::new();
    for (node, port) in [("a", 23081), ("b", 23082), ("c", 23083)] {
        let routes = dir.join(format!("node-{node}.toml"));
        let output = check(&routes).await?;
        assert!(
            output.status.success(),
            "wshost check {} failed:\n{}",
            routes.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut table: toml::Table = std::fs::read_to_string(&routes)?.parse()?;
        assert_eq!(
            table
                .remove("listen")
                .and_then(|v| v.as_str().map(str::to_owned)),
            Some(format!("127.0.0.1:{port}"))
        );
        let cluster = table
            .get_mut("cluster")
            .and_then(toml::Value::as_table_mut)
            .context("no [cluster]")?;
        assert_eq!(
            cluster
                .remove("name")
                .and_then(|v| v.as_str().map(str::to_owned)),
            Some(format!("node-{node}"))
        );
        normalised.push(table);
    }
    assert!(normalised.windows(2).all(|w| w[0] == w[1]));
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

    // The chat page is served from the same origin, and its `?name=` names the member.
    let page = server.http(&HttpRequest::plain("GET", "/")).await?;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body_text().contains("chat.js"), "{page:?}");
    for file in ["/chat.js", "/chat.css"] {
        let response = server.http(&HttpRequest::plain("GET", file)).await?;
        assert_eq!(response.status, 200, "{file}: {response:?}");
    }
    let (mut named, _) = server
        .connect_with_protocols("/chat/lobby?name=ada", &["chat"])
        .await?;
    assert_eq!(named.recv_text().await?, "welcome ada; 2 online");
    assert_eq!(chat.recv_text().await?, "ada joined");
    Ok(())
}

/// examples/chat-js/routes.toml and examples/chat-py/routes.toml run their language's
/// chat through their own `build` line (a no-op here: the component is already built,
/// and building it first keeps two installs from racing) and serve the room, with
/// `?name=` naming a member, and the chat page.
#[tokio::test]
async fn the_javascript_and_python_chats_run_from_their_own_routes_files() -> Result<()> {
    for (lang, example) in [(Lang::JavaScript, "chat-js"), (Lang::Python, "chat-py")] {
        chat(lang);
        let routes = workspace_root()
            .join("examples")
            .join(example)
            .join("routes.toml");
        let server = Server::start_file(&routes).await?;
        let (mut first, _) = server
            .connect_with_protocols("/chat/lobby", &["chat"])
            .await?;
        let welcome = first.recv_text().await?;
        assert!(welcome.ends_with("; 1 online"), "{example}: {welcome:?}");
        let (mut second, _) = server
            .connect_with_protocols("/chat/lobby?name=ada", &["chat"])
            .await?;
        assert_eq!(second.recv_text().await?, "welcome ada; 2 online");
        assert_eq!(first.recv_text().await?, "ada joined");
        let page = server.http(&HttpRequest::plain("GET", "/")).await?;
        assert_eq!(page.status, 200, "{example}: {page:?}");
    }
    Ok(())
}

/// With `CARGO_TARGET_DIR` elsewhere, the examples' build lines build there and wshost
/// loads from there (`{cargo-target-dir}` in the routes file), not from a stale
/// `../target`.
#[tokio::test]
async fn the_examples_follow_cargo_target_dir() -> Result<()> {
    guests(); // this build's output, to seed the other directory with
    let elsewhere = tempfile::tempdir()?;
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(target_dir().join("release"))
        .arg(target_dir().join("wasm32-wasip2"))
        .arg(elsewhere.path())
        .status()?;
    anyhow::ensure!(copied.success(), "seeding the other target directory");
    let built = elsewhere.path().join("wasm32-wasip2/release");
    for example in ["echo.wasm", "chat.wasm"] {
        std::fs::remove_file(built.join(example))?;
    }
    let routes = workspace_root().join("examples").join("routes.toml");
    let target = elsewhere.path().to_string_lossy().into_owned();
    let server = Server::start_file_with_env(&routes, &[("CARGO_TARGET_DIR", &target)]).await?;
    assert!(
        built.join("echo.wasm").is_file(),
        "echo was not built there"
    );
    let loaded = server
        .log_line("the echo controller loaded", |l| {
            l.contains("controller loaded") && l.contains("echo.wasm")
        })
        .await?;
    assert!(loaded.contains(&target), "{loaded}");
    let mut echo = server.connect("/echo/x").await?;
    assert_eq!(echo.request("hello").await?, "hello");
    Ok(())
}

/// `wshost check --json`: one object with the routes, the controllers and their costs,
/// and the global filters, for programs (the bench reads it).
#[tokio::test]
async fn check_json_describes_routes_controllers_and_filters() -> Result<()> {
    let routes = workspace_root().join("examples").join("routes.toml");
    let output =
        crate::harness::wshost(&["check".as_ref(), "--json".as_ref(), routes.as_os_str()]).await?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let text = std::fs::read_to_string(&routes)?;
    let names: Vec<String> = report["routes"]
        .as_array()
        .context("routes")?
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, route_names(&text)?);
    for controller in report["controllers"].as_array().context("controllers")? {
        assert!(
            controller["bytes"].as_u64().unwrap_or(0) > 0,
            "{controller}"
        );
        assert!(controller["compile_ms"].is_number(), "{controller}");
        assert!(controller["instantiate_ms"].is_number(), "{controller}");
    }
    let rooms = report["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "rooms"))
        .context("the rooms route")?;
    assert_eq!(rooms["filters"], serde_json::json!(["bearer"]));
    assert!(
        report["filters"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["kind"] == "origin")),
        "{report}"
    );
    Ok(())
}

/// Compiling takes seconds for JavaScript and Python: `wshost check` says what it is
/// doing for each controller, as log lines when stderr is not a terminal, and with a
/// spinner (name, size, elapsed time) on a terminal (`script` gives it one).
#[tokio::test]
async fn long_steps_show_progress() -> Result<()> {
    let routes = workspace_root().join("examples").join("routes.toml");
    let output = check(&routes).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for controller in ["echo", "chat", "auth", "ticker"] {
        assert!(
            stderr.lines().any(|l| l.contains("compiling")
                && l.contains(&format!("controller={controller}"))
                && l.contains("bytes=")),
            "{stderr}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("checked") && l.contains(&format!("controller={controller}"))),
            "{stderr}"
        );
    }
    let command = format!(
        "{} check {}",
        env!("CARGO_BIN_EXE_wshost"),
        routes.display()
    );
    let on_terminal = tokio::time::timeout(
        crate::harness::STARTUP_GUARD,
        tokio::process::Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("WSHOST_CACHE_DIR", "off")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    anyhow::ensure!(on_terminal.status.success(), "{on_terminal:?}");
    let drawn = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(
        drawn.contains("compiling echo ("),
        "no spinner in:\n{drawn}"
    );
    Ok(())
}
