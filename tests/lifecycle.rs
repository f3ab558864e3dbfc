//! Lifecycle hooks: `init` gets the routes' `[route.config]` and the server parameters,
//! and `on-first-open` / `on-last-close` bracket a controller's connections, in the
//! seed's order. The lifecycle test controller records each hook in a log that a later
//! connection reads back with `events`.

use anyhow::{Result, ensure};

use crate::harness::{Server, guests};

fn routes() -> String {
    format!(
        r#"
[controllers.life]
wasm = "{}"

[[route]]
name = "life"
match = "/life/*"
controller = "life"

[route.config]
greeting = "hi"
rate = 5
"#,
        guests().lifecycle_v1.display()
    )
}

/// The recorded events, as (kind, rest) pairs.
async fn events(server: &Server) -> Result<Vec<(String, String)>> {
    let mut reader = server.connect("/life/reader").await?;
    let log = reader.request("events").await?;
    Ok(log
        .split(';')
        .map(|e| {
            let (kind, rest) = e.split_once(' ').unwrap_or((e, ""));
            (kind.to_owned(), rest.to_owned())
        })
        .collect())
}

fn kinds(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test]
async fn one_client_is_bracketed_by_first_open_and_last_close() -> Result<()> {
    let server = Server::start(&routes()).await?;
    let a = server.connect("/life/a").await?;
    a.close(1000, "done").await?;

    let events = events(&server).await?;
    assert_eq!(
        kinds(&events),
        [
            "init",
            "first-open",
            "open",
            "close",
            "last-close",
            "first-open",
            "open"
        ],
        "{events:?}"
    );
    let a_id = &events[1].1;
    assert_eq!(&events[2].1, a_id);
    assert_eq!(events[3].1, format!("{a_id} 1000"));
    assert_eq!(&events[4].1, a_id);
    Ok(())
}

#[tokio::test]
async fn several_clients_get_first_open_once_and_last_close_once() -> Result<()> {
    let server = Server::start(&routes()).await?;
    let mut a = server.connect("/life/a").await?;
    assert_eq!(a.request("x").await?, "v1:x");
    let mut b = server.connect("/life/b").await?;
    assert_eq!(b.request("x").await?, "v1:x");
    b.close(1000, "").await?;
    a.close(1000, "").await?;

    let events = events(&server).await?;
    assert_eq!(
        kinds(&events),
        [
            "init",
            "first-open",
            "open",
            "open",
            "close",
            "close",
            "last-close",
            "first-open",
            "open"
        ],
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn init_receives_the_route_config_and_server_params() -> Result<()> {
    let server = Server::start(&routes()).await?;
    let events = events(&server).await?;
    let init = &events[0];
    ensure!(init.0 == "init", "{events:?}");
    let mut config: Vec<&str> = init.1.split(',').collect();
    config.sort_unstable();
    assert_eq!(config, ["greeting=hi", "rate=5"]);

    let mut client = server.connect("/life/p").await?;
    let params = client.request("params").await?;
    assert_eq!(
        params,
        format!(
            "listen={} version={} controller=life routes=life:/life/*",
            server.addr(),
            env!("CARGO_PKG_VERSION")
        )
    );
    Ok(())
}
