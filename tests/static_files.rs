//! `static-dir`: plain GET/HEAD requests that are not upgrades, to paths no route
//! matches, are answered from a directory (types, validators, `304`, `index.html`,
//! redirects), and nothing outside it, hidden or listed is ever served. Upgrades and
//! route paths keep their WebSocket answers.

use anyhow::{Context, Result, ensure};

use crate::harness::{HttpRequest, HttpResponse, Route, RoutesDir, Server, guests, routes_toml};

const INDEX: &str = "<!doctype html><title>home</title>\n";
const APP_JS: &str = "console.log('hi');\n";

/// A server with the echo controller at /ws/* and `static-dir = "www"`, holding:
/// index.html, app.js, style.css, big.bin (3 MiB), sub/index.html, empty/, .hidden,
/// .git/config, a FIFO `pipe`, and symlinks `in.js` (to app.js), `config.txt` (to
/// .git/config) and `out.txt` (to secret.txt beside routes.toml, outside www).
async fn server() -> Result<Server> {
    let mut routes = "static-dir = \"www\"\n".to_owned();
    routes.push_str(&routes_toml(&[Route::to(&guests().echo).at("/ws/*")]));
    let dir = RoutesDir::new(&routes)?;
    dir.write("secret.txt", b"secret\n")?;
    let www = dir.path().join("www");
    for sub in ["sub", "empty", ".git"] {
        std::fs::create_dir_all(www.join(sub))?;
    }
    let files: [(&str, &[u8]); 6] = [
        ("index.html", INDEX.as_bytes()),
        ("app.js", APP_JS.as_bytes()),
        ("style.css", b"body { margin: 0 }\n"),
        ("sub/index.html", b"<p>sub</p>\n"),
        (".hidden", b"hidden\n"),
        (".git/config", b"[core]\n"),
    ];
    for (name, contents) in files {
        std::fs::write(www.join(name), contents)?;
    }
    std::fs::write(www.join("big.bin"), big())?;
    let fifo = std::process::Command::new("mkfifo")
        .arg(www.join("pipe"))
        .status()?;
    ensure!(fifo.success(), "mkfifo: {fifo}");
    std::os::unix::fs::symlink(www.join("app.js"), www.join("in.js"))?;
    std::os::unix::fs::symlink(www.join(".git/config"), www.join("config.txt"))?;
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("out.txt"))?;
    Server::start_in(dir).await
}

/// 3 MiB that are not all alike, so a misplaced piece shows.
fn big() -> Vec<u8> {
    (0..3 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

async fn get(server: &Server, target: &str) -> Result<HttpResponse> {
    server.http(&HttpRequest::plain("GET", target)).await
}

fn expect(response: &HttpResponse, status: u16) -> Result<()> {
    ensure!(
        response.status == status,
        "expected {status}, got {} {:?} ({response:?})",
        response.status,
        response.body_text()
    );
    ensure!(
        response.header("x-content-type-options") == Some("nosniff"),
        "no nosniff in {response:?}"
    );
    ensure!(
        response.header("connection") == Some("close"),
        "no `Connection: close` in {response:?}"
    );
    Ok(())
}

#[tokio::test]
async fn files_are_served_with_type_length_and_validators() -> Result<()> {
    let server = server().await?;
    for (path, body, kind) in [
        ("/app.js", APP_JS.as_bytes(), "javascript; charset=utf-8"),
        (
            "/style.css",
            b"body { margin: 0 }\n",
            "text/css; charset=utf-8",
        ),
        ("/index.html", INDEX.as_bytes(), "text/html; charset=utf-8"),
    ] {
        let response = get(&server, path).await?;
        expect(&response, 200)?;
        ensure!(
            response.body == body,
            "{path}: body {:?}",
            response.body_text()
        );
        let content_type = response.header("content-type").context("no type")?;
        ensure!(content_type.ends_with(kind), "{path}: {content_type}");
        ensure!(response.header("etag").is_some_and(|t| t.starts_with('"')));
        ensure!(
            response
                .header("last-modified")
                .is_some_and(|d| d.ends_with(" GMT"))
        );
        ensure!(response.header("cache-control") == Some("no-cache"));
    }
    Ok(())
}

#[tokio::test]
async fn directories_serve_their_index_and_are_never_listed() -> Result<()> {
    let server = server().await?;
    let root = get(&server, "/").await?;
    expect(&root, 200)?;
    ensure!(root.body_text() == INDEX);
    let sub = get(&server, "/sub/").await?;
    expect(&sub, 200)?;
    ensure!(sub.body_text() == "<p>sub</p>\n");
    // Without the slash: a redirect, so the page's relative links work; the query stays.
    let redirect = get(&server, "/sub?x=1").await?;
    expect(&redirect, 301)?;
    ensure!(
        redirect.header("location") == Some("/sub/?x=1"),
        "{redirect:?}"
    );
    expect(&get(&server, "/empty/").await?, 404)?;
    expect(&get(&server, "/nothing-here.html").await?, 404)?;
    expect(&get(&server, "/app.js/").await?, 404)?;
    // Not a regular file (opening a FIFO would wait for a writer forever).
    expect(&get(&server, "/pipe").await?, 404)?;
    Ok(())
}

#[tokio::test]
async fn conditional_requests_get_304() -> Result<()> {
    let server = server().await?;
    let first = get(&server, "/app.js").await?;
    let etag = first.header("etag").context("no etag")?;
    let date = first.header("last-modified").context("no last-modified")?;
    for (name, value) in [
        ("If-None-Match", etag.to_owned()),
        ("If-None-Match", format!("\"other\", W/{etag}")),
        ("If-Modified-Since", date.to_owned()),
    ] {
        let request = HttpRequest::plain("GET", "/app.js").header(name, &value);
        let response = server.http(&request).await?;
        expect(&response, 304)?;
        ensure!(response.body.is_empty(), "304 with a body: {response:?}");
        ensure!(response.header("etag") == Some(etag));
    }
    // A tag that does not match wins over a date that would.
    let request = HttpRequest::plain("GET", "/app.js")
        .header("If-None-Match", "\"stale\"")
        .header("If-Modified-Since", date);
    let response = server.http(&request).await?;
    expect(&response, 200)?;
    ensure!(response.body == APP_JS.as_bytes());
    Ok(())
}

#[tokio::test]
async fn head_sends_the_headers_only() -> Result<()> {
    let server = server().await?;
    let Err(response) = server
        .attempt(&HttpRequest::plain("HEAD", "/big.bin"))
        .await?
    else {
        anyhow::bail!("HEAD was upgraded");
    };
    expect(&response, 200)?;
    ensure!(response.header("content-length") == Some(&*big().len().to_string()));
    ensure!(
        response.body.is_empty(),
        "HEAD with a body of {}",
        response.body.len()
    );
    Ok(())
}

#[tokio::test]
async fn large_files_are_streamed_whole() -> Result<()> {
    let server = server().await?;
    let response = get(&server, "/big.bin").await?;
    expect(&response, 200)?;
    ensure!(response.header("content-type") == Some("application/octet-stream"));
    ensure!(
        response.body == big(),
        "{} bytes, not the file",
        response.body.len()
    );
    Ok(())
}

#[tokio::test]
async fn nothing_outside_the_directory_is_served() -> Result<()> {
    let server = server().await?;
    // A symlink inside the directory is followed; one pointing outside is not there.
    expect(&get(&server, "/in.js").await?, 200)?;
    let out = get(&server, "/out.txt").await?;
    expect(&out, 404)?;
    ensure!(!out.body_text().contains("secret"));
    // `..` never climbs above the directory: these name www/secret.txt, which does not exist.
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
    ] {
        expect(&get(&server, path).await?, 404)?;
    }
    // An encoded slash is refused when the request is read, before any file is looked at.
    let slash = get(&server, "/sub%2Findex.html").await?;
    ensure!(slash.status == 400, "{slash:?}");
    Ok(())
}

#[tokio::test]
async fn hidden_files_are_not_served() -> Result<()> {
    let server = server().await?;
    // Nor through a symlink with a visible name.
    for path in [
        "/.hidden",
        "/.git/config",
        "/.git/",
        "/%2Ehidden",
        "/config.txt",
    ] {
        expect(&get(&server, path).await?, 404)?;
    }
    Ok(())
}

#[tokio::test]
async fn other_methods_are_refused_with_allow() -> Result<()> {
    let server = server().await?;
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let response = server
            .http(&HttpRequest::plain(method, "/index.html"))
            .await?;
        expect(&response, 405)?;
        ensure!(
            response.header("allow") == Some("GET, HEAD"),
            "{response:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn upgrades_and_route_paths_keep_their_websocket_answers() -> Result<()> {
    let server = server().await?;
    // A route path without an upgrade: the WebSocket answer, not a file lookup.
    let plain = get(&server, "/ws/x").await?;
    ensure!(plain.status == 426, "{plain:?}");
    // An upgrade is routed as before: echo at /ws/*, 404 for a path that is a file.
    let mut client = server.connect("/ws/x").await?;
    client.send_text("hello").await?;
    ensure!(client.recv_text().await? == "hello");
    let Err(refused) = server.attempt(&HttpRequest::upgrade("/index.html")).await? else {
        anyhow::bail!("an upgrade to a file's path was accepted");
    };
    ensure!(refused.status == 404, "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn a_missing_static_dir_is_a_config_error() -> Result<()> {
    let mut routes = "static-dir = \"nowhere\"\n".to_owned();
    routes.push_str(&routes_toml(&[Route::to(&guests().echo).at("/ws/*")]));
    let dir = RoutesDir::new(&routes)?;
    let output = crate::harness::check(&dir.routes()).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "check accepted it: {stderr}");
    let at = format!("{}:1:", dir.routes().display());
    ensure!(
        stderr.contains(&at) && stderr.contains("`static-dir`: `nowhere`"),
        "{stderr}"
    );
    Ok(())
}
