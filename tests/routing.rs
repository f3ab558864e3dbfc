//! Routes are tried in file order; the first whose glob matches the path wins. Globs are
//! fnmatch-style (`*`, `?`, `[...]`), a route without `match` matches every path, and
//! every controller file is one instance whatever the number of routes naming it.

use anyhow::{Context, Result};

use crate::harness::{HttpRequest, Route, Server, guests, info_value, parse_info, routes_toml};

/// The `attr.route` a probe connection to `path` reports.
async fn route_of(server: &Server, path: &str) -> Result<String> {
    let (mut client, _) = server.connect_probe(path).await?;
    let text = client.probe_request("info").await?;
    let route = info_value(&parse_info(&text), "attr.route").map(str::to_owned);
    route.with_context(|| format!("no attr.route in {text:?}"))
}

#[tokio::test]
async fn each_route_reaches_its_controller() -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(&guests().echo).at("/echo/*"),
        Route::to(&guests().probe).at("/probe/*"),
    ]))
    .await?;
    // probe greets a new connection with `open {id}`...
    let (mut probe, _) = server.connect_probe("/probe/x").await?;
    assert_eq!(probe.request("count").await?, "1");
    // ...echo does not: the first message an echo client gets is its own.
    let mut echo = server.connect("/echo/x").await?;
    assert_eq!(echo.request("count").await?, "count");
    Ok(())
}

#[tokio::test]
async fn the_first_matching_route_wins() -> Result<()> {
    let probe = &guests().probe;
    let server = Server::start(&routes_toml(&[
        Route::to(probe).at("/x/*").named("wide"),
        Route::to(probe).at("/x/y").named("narrow"),
        Route::to(probe).at("/z").named("z-first"),
        Route::to(probe).at("/*").named("z-second"),
    ]))
    .await?;
    assert_eq!(route_of(&server, "/x/y").await?, "wide");
    assert_eq!(route_of(&server, "/z").await?, "z-first");
    assert_eq!(route_of(&server, "/other").await?, "z-second");
    Ok(())
}

#[tokio::test]
async fn question_mark_matches_one_character() -> Result<()> {
    let server = Server::start(&routes_toml(&[Route::to(&guests().probe)
        .at("/q/?")
        .named("one-char")]))
    .await?;
    assert_eq!(route_of(&server, "/q/a").await?, "one-char");
    for path in ["/q/", "/q/ab"] {
        let response = server.http(&HttpRequest::upgrade(path)).await?;
        assert_eq!(response.status, 404, "{path}: {response:?}");
    }
    Ok(())
}

#[tokio::test]
async fn brackets_match_a_character_class() -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(&guests().probe).at("/r/[ab]c").named("class"),
        Route::to(&guests().probe).at("/r/[0-9]").named("range"),
    ]))
    .await?;
    assert_eq!(route_of(&server, "/r/ac").await?, "class");
    assert_eq!(route_of(&server, "/r/bc").await?, "class");
    assert_eq!(route_of(&server, "/r/7").await?, "range");
    for path in ["/r/cc", "/r/x"] {
        let response = server.http(&HttpRequest::upgrade(path)).await?;
        assert_eq!(response.status, 404, "{path}: {response:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_route_without_match_catches_the_rest() -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(&guests().probe).at("/known/*").named("known"),
        Route::to(&guests().probe).named("rest"),
    ]))
    .await?;
    assert_eq!(route_of(&server, "/known/a").await?, "known");
    assert_eq!(route_of(&server, "/").await?, "rest");
    assert_eq!(route_of(&server, "/anything/else/at/all").await?, "rest");
    Ok(())
}

#[tokio::test]
async fn route_name_defaults_to_the_pattern() -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(&guests().probe).at("/p/*"),
        Route::to(&guests().probe),
    ]))
    .await?;
    assert_eq!(route_of(&server, "/p/a").await?, "/p/*");
    assert_eq!(route_of(&server, "/q").await?, "*");
    Ok(())
}

#[tokio::test]
async fn stars_capture_into_match_attributes() -> Result<()> {
    let server = Server::start(&routes_toml(&[
        Route::to(&guests().probe).at("/one/*"),
        Route::to(&guests().probe).at("/two/*/x/*"),
    ]))
    .await?;

    let (mut client, _) = server.connect_probe("/one/room/42").await?;
    let info = parse_info(&client.request("info").await?);
    // `*` also matches '/'.
    assert_eq!(info_value(&info, "attr.match.1"), Some("room/42"));
    assert_eq!(info_value(&info, "attr.match.2"), None);

    let (mut client, _) = server.connect_probe("/two/a/x/b?q=1").await?;
    let info = parse_info(&client.request("info").await?);
    assert_eq!(info_value(&info, "attr.match.1"), Some("a"));
    assert_eq!(info_value(&info, "attr.match.2"), Some("b"));
    Ok(())
}

#[tokio::test]
async fn one_controller_file_is_one_instance_across_routes() -> Result<()> {
    let probe = &guests().probe;
    let server = Server::start(&routes_toml(&[
        Route::to(probe).at("/first/*").named("first"),
        Route::to(probe).at("/second/*").named("second"),
    ]))
    .await?;
    let (mut one, id_one) = server.connect_probe("/first/a").await?;
    let (mut two, id_two) = server.connect_probe("/second/b").await?;
    // `count` counts the instance's on-message calls: both routes feed the same one.
    assert_eq!(one.request("count").await?, "1");
    assert_eq!(two.request("count").await?, "2");
    assert_eq!(one.request("count").await?, "3");
    let mut ids = [id_one, id_two];
    ids.sort_unstable();
    let expected = format!("{},{}", ids[0], ids[1]);
    assert_eq!(two.request("connections").await?, expected);
    Ok(())
}
