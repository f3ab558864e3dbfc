//! Filter order and scope: global `[[filter]]` entries (only for paths their `match`
//! accepts) run before the route's own filters, in file order, and the first refusal
//! wins; a route's filters never run for a request another route serves.

use anyhow::Result;

use crate::harness::{HttpRequest, RoutesDir, Server, guests};

async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[controllers.probe]
wasm = "{}"

[[filter]]
match = "/both/*"
kind = "deny"
status = 418
body = "global first"

[[filter]]
match = "/both/*"
kind = "deny"
status = 419
body = "global second"

[[filter]]
match = "/blocked/*"
kind = "deny"
body = "blocked globally"

[[route]]
match = "/both/*"
filters = [{{ kind = "deny", status = 451, body = "route" }}]
controller = "probe"

[[route]]
match = "/two/*"
filters = [{{ kind = "deny", status = 452, body = "first" }}, {{ kind = "deny", status = 453, body = "second" }}]
controller = "probe"

[[route]]
match = "/shared/*"
protocols = ["special"]
filters = [{{ kind = "deny", body = "special route only" }}]
controller = "probe"

[[route]]
match = "*"
controller = "probe"
"#,
        guests().probe.display()
    ))?;
    Server::start_in(dir).await
}

async fn status_and_body(server: &Server, request: HttpRequest) -> Result<(u16, String)> {
    Ok(match server.attempt(&request).await? {
        Ok((response, _)) => (response.status, String::new()),
        Err(response) => (response.status, response.body_text().trim().to_owned()),
    })
}

#[tokio::test]
async fn global_filters_run_first_in_file_order() -> Result<()> {
    let server = server().await?;
    let got = status_and_body(&server, HttpRequest::upgrade("/both/x")).await?;
    assert_eq!(got, (418, "global first".to_owned()));
    Ok(())
}

#[tokio::test]
async fn a_route_runs_its_filters_in_order() -> Result<()> {
    let server = server().await?;
    let got = status_and_body(&server, HttpRequest::upgrade("/two/x")).await?;
    assert_eq!(got, (452, "first".to_owned()));
    Ok(())
}

#[tokio::test]
async fn a_global_filter_applies_only_where_its_match_does() -> Result<()> {
    let server = server().await?;
    let got = status_and_body(&server, HttpRequest::upgrade("/blocked/x")).await?;
    assert_eq!(got, (403, "blocked globally".to_owned()));
    let got = status_and_body(&server, HttpRequest::upgrade("/open/x")).await?;
    assert_eq!(got.0, 101);
    Ok(())
}

#[tokio::test]
async fn a_routes_filters_do_not_run_for_requests_another_route_serves() -> Result<()> {
    let server = server().await?;
    // Offering `special` picks the filtered route...
    let special = HttpRequest::upgrade("/shared/x").header("Sec-WebSocket-Protocol", "special");
    let got = status_and_body(&server, special).await?;
    assert_eq!(got, (403, "special route only".to_owned()));
    // ...offering nothing falls through to the catch-all, whose request that filter
    // must not see (the seed ran it anyway).
    let got = status_and_body(&server, HttpRequest::upgrade("/shared/x")).await?;
    assert_eq!(got.0, 101);
    Ok(())
}
