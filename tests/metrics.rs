//! The metrics port (routes.toml `metrics`): after known traffic, `/metrics` holds exactly
//! the upgrades, refusals, messages, bytes, traps and restarts that happened, per route
//! and per controller; slow clients and a stalled controller show as overflows, drops and
//! backpressure; the cluster's NATS state shows when `[cluster]` is set; `/healthz` and
//! `/readyz` answer probes, `/readyz` with 503 once a graceful shutdown began; other
//! paths are 404; a bad or taken `metrics` address stops the start with its file, line
//! and key, or the address.
//!
//! Scrapes go through a real HTTP client and a Prometheus text-format parser (see the
//! harness). Every wait is a bounded poll of the metrics, never a sleep.

use anyhow::{Result, ensure};

use crate::harness::{
    HANG_GUARD, HttpRequest, Nats, Route, RoutesDir, Scrape, Server, check, controller_toml,
    guests, routes_toml, run_to_exit,
};

/// Listens for metrics on a free port.
const METRICS: &str = "metrics = \"127.0.0.1:0\"\n";

/// The counter series per route, each with the value it must have.
fn route_counts(scrape: &Scrape, route: &str, expected: &[(&str, f64)]) -> Result<()> {
    for (series, value) in expected {
        let name = format!("wshost_{series}");
        let got = scrape.value(&name, &[("route", route)])?;
        ensure!(
            got == *value,
            "{name}{{route={route:?}}} is {got}, expected {value}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn known_traffic_shows_as_exact_counts_per_route_and_controller() -> Result<()> {
    let routes = format!(
        "{METRICS}{}{}{}",
        controller_toml("echo", &guests().echo),
        controller_toml("prober", &guests().probe),
        routes_toml(&[
            Route::to_controller("echo").named("echo").at("/echo/*"),
            Route::to_controller("echo")
                .named("guarded")
                .at("/guarded/*")
                .filters(r#"{ kind = "deny" }"#),
            Route::to_controller("prober").named("probe").at("/probe/*"),
        ])
    );
    let server = Server::start(&routes).await?;

    // Three echo clients, each a 5-byte text and a 3-byte binary message, answered.
    let mut echoes = Vec::new();
    for i in 0..3 {
        let mut client = server.connect(&format!("/echo/{i}")).await?;
        assert_eq!(client.request("hello").await?, "hello");
        client.send_binary(&[1, 2, 3]).await?;
        assert_eq!(client.recv_binary().await?, [1, 2, 3]);
        echoes.push(client);
    }
    let open = server.scrape().await?;
    route_counts(
        &open,
        "echo",
        &[("connections_open", 3.0), ("upgrades_total", 3.0)],
    )?;

    // Two refusals by the deny filter (403), one for a path no route has (404).
    for _ in 0..2 {
        let refused = server.http(&HttpRequest::upgrade("/guarded/x")).await?;
        assert_eq!(refused.status, 403, "{refused:?}");
    }
    let refused = server.http(&HttpRequest::upgrade("/nowhere")).await?;
    assert_eq!(refused.status, 404, "{refused:?}");

    // Two probe clients make the probe trap, one after the other.
    let mut greetings = 0;
    for i in 0..2 {
        let (mut probe, id) = server.connect_probe(&format!("/probe/{i}")).await?;
        greetings += format!("open {id}").len();
        probe.send_text("panic").await?;
        assert_eq!(probe.recv_close().await?.0, 1011);
    }

    for client in echoes {
        client.close(1000, "done").await?;
    }
    // A connection's counts move to its route's totals when it ends; once none is
    // open, every count is final.
    let scrape = server
        .scrape_until("no connection open", |s| {
            Ok(s.total("wshost_connections_open") == 0.0)
        })
        .await?;

    route_counts(
        &scrape,
        "echo",
        &[
            ("connections_open", 0.0),
            ("upgrades_total", 3.0),
            ("received_messages_total", 6.0),
            ("received_bytes_total", 24.0),
            ("sent_messages_total", 6.0),
            ("sent_bytes_total", 24.0),
            ("inbound_backpressure_total", 0.0),
            ("outbound_overflows_total", 0.0),
            ("outbound_dropped_total", 0.0),
        ],
    )?;
    route_counts(
        &scrape,
        "probe",
        &[
            ("upgrades_total", 2.0),
            ("received_messages_total", 2.0),
            ("received_bytes_total", 10.0),
            ("sent_messages_total", 2.0),
            ("sent_bytes_total", greetings as f64),
        ],
    )?;
    route_counts(
        &scrape,
        "guarded",
        &[("upgrades_total", 0.0), ("received_messages_total", 0.0)],
    )?;

    let refusals = |route: &str, status: &str| {
        scrape.value(
            "wshost_refusals_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(refusals("guarded", "403")?, 2.0);
    assert_eq!(refusals("", "404")?, 1.0);
    assert_eq!(scrape.total("wshost_refusals_total"), 3.0);

    let prober = [("controller", "prober"), ("export", "on-message")];
    assert_eq!(scrape.value("wshost_traps_total", &prober)?, 2.0);
    assert_eq!(scrape.total("wshost_traps_total"), 2.0);
    assert_eq!(
        scrape.value(
            "wshost_instance_restarts_total",
            &[("controller", "prober")]
        )?,
        2.0
    );
    // Trapped calls are timed too.
    let calls = "wshost_guest_call_duration_seconds";
    assert_eq!(scrape.observations(calls, &prober)?, 2.0);
    let probe_opens = [("controller", "prober"), ("export", "on-open")];
    assert_eq!(scrape.observations(calls, &probe_opens)?, 2.0);
    let echo_messages = [("controller", "echo"), ("export", "on-message")];
    assert_eq!(scrape.observations(calls, &echo_messages)?, 6.0);
    // The echo has no lifecycle exports: the host skips them, and times nothing.
    let echo_first_open = [("controller", "echo"), ("export", "on-first-open")];
    ensure!(
        scrape.observations(calls, &echo_first_open).is_err(),
        "an export the component lacks is timed"
    );

    let echo = [("controller", "echo")];
    assert_eq!(scrape.value("wshost_timers", &echo)?, 0.0);
    let memory = scrape.value("wshost_instance_memory_bytes", &echo)?;
    ensure!(memory > 0.0, "the echo instance has no memory: {memory}");
    ensure!(
        !scrape.has("wshost_cluster_connected"),
        "cluster series without a [cluster]"
    );
    Ok(())
}

#[tokio::test]
async fn slow_clients_show_as_overflows_and_drops() -> Result<()> {
    // Under `close`, a client that never reads overflows its queue once and is closed.
    let server = Server::start(&format!(
        "{METRICS}{}",
        routes_toml(&[Route::to(&guests().hostile)
            .named("flood")
            .at("/flood/*")
            .limits("outbound-queue-messages = 16, call-deadline-ms = 20000")])
    ))
    .await?;
    let (mut watcher, _) = server.open_hostile("/flood/watcher").await?;
    let (mut stuck, id) = server.open_raw_hostile("/flood/stuck").await?;
    stuck
        .send_frame(crate::harness::opcode::TEXT, b"flood 200 65536")
        .await?;
    assert!(watcher.recv_text().await?.starts_with("flooded "));
    assert_eq!(
        watcher.recv_text().await?,
        format!("closed {id} 1008 outbound queue full")
    );
    let scrape = server.scrape().await?;
    route_counts(
        &scrape,
        "flood",
        &[
            ("outbound_overflows_total", 1.0),
            ("outbound_dropped_total", 0.0),
        ],
    )?;
    drop(stuck);

    // Under `drop-oldest`, every message of the flood is either dropped or delivered.
    let server = Server::start(&format!(
        "{METRICS}{}",
        routes_toml(&[Route::to(&guests().hostile)
            .named("flood")
            .at("/flood/*")
            .limits(
                "slow-client = \"drop-oldest\", outbound-queue-messages = 16, call-deadline-ms = 20000"
            )])
    ))
    .await?;
    let (mut watcher, _) = server.open_hostile("/flood/watcher").await?;
    let (mut slow, _) = server.open_hostile("/flood/slow").await?;
    slow.send_text("flood 500 65536").await?;
    assert_eq!(watcher.recv_text().await?, "flooded 500 0");
    let mut delivered = 0;
    loop {
        let message = slow.recv_binary().await?;
        delivered += 1;
        if message[..4] == 499u32.to_be_bytes() {
            break;
        }
    }
    ensure!(delivered < 500, "nothing was dropped");
    let scrape = server.scrape().await?;
    route_counts(
        &scrape,
        "flood",
        &[
            ("outbound_dropped_total", f64::from(500 - delivered)),
            ("outbound_overflows_total", 0.0),
        ],
    )?;
    Ok(())
}

#[tokio::test]
async fn a_stalled_controller_shows_as_backpressure() -> Result<()> {
    // A queue of 4 events; the deadline outlasts the test, so the stall holds.
    let server = Server::start(&format!(
        "{METRICS}{}",
        routes_toml(&[Route::to(&guests().hostile)
            .named("stall")
            .at("/stall/*")
            .limits("call-deadline-ms = 60000, inbound-queue-messages = 4")])
    ))
    .await?;
    let (mut spinner, _) = server.open_hostile("/stall/spin").await?;
    let (mut sender, _) = server.open_hostile("/stall/send").await?;
    spinner.send_text("spin").await?;
    assert_eq!(sender.recv_text().await?, "spinning");
    // Four fill the queue; the fifth waits, and the connection stops reading.
    for _ in 0..5 {
        sender.send_binary(&[0; 16]).await?;
    }
    let scrape = server
        .scrape_until("the fifth message waiting", |s| {
            Ok(s.value("wshost_inbound_backpressure_total", &[("route", "stall")])? >= 1.0)
        })
        .await?;
    route_counts(
        &scrape,
        "stall",
        &[
            ("inbound_backpressure_total", 1.0),
            ("received_messages_total", 6.0),
            ("received_bytes_total", 4.0 + 5.0 * 16.0),
        ],
    )?;
    Ok(())
}

#[tokio::test]
async fn the_clusters_nats_state_shows() -> Result<()> {
    let mut nats = Nats::start().await?;
    let routes = format!(
        "{METRICS}[cluster]\nservers = [\"{}\"]\nname = \"node-a\"\n\n{}",
        nats.url(),
        routes_toml(&[Route::to(&guests().probe).named("probe").at("/probe")])
    );
    let server = Server::start(&routes).await?;
    server
        .log_event("saying it connected to NATS", |e| {
            e["message"] == "cluster connected"
        })
        .await?;
    let scrape = server
        .scrape_until("the cluster connected", |s| {
            Ok(s.value("wshost_cluster_connected", &[])? == 1.0)
        })
        .await?;
    assert_eq!(scrape.value("wshost_cluster_topics_followed", &[])?, 0.0);

    let (mut probe, _) = server.connect_probe("/probe").await?;
    assert_eq!(probe.request("sub room").await?, "subscribed room");
    server
        .scrape_until("the topic followed", |s| {
            Ok(s.value("wshost_cluster_topics_followed", &[])? == 1.0)
        })
        .await?;

    nats.stop()?;
    server
        .log_event("saying it lost NATS", |e| {
            e["message"] == "cluster disconnected"
        })
        .await?;
    server
        .scrape_until("the cluster disconnected", |s| {
            Ok(s.value("wshost_cluster_connected", &[])? == 0.0)
        })
        .await?;
    // The probe is subscribed itself, so it hears its publication before the reply.
    probe.send_text("pub room hi").await?;
    assert_eq!(probe.recv_text().await?, "hi");
    assert_eq!(probe.recv_text().await?, "published 1");
    let scrape = server
        .scrape_until("the publication dropped", |s| {
            Ok(dropped(s, "disconnected")? == 1.0)
        })
        .await?;
    assert_eq!(dropped(&scrape, "buffer_full")?, 0.0);
    assert_eq!(dropped(&scrape, "refused")?, 0.0);
    Ok(())
}

/// The cluster's dropped publications for `reason`.
fn dropped(scrape: &Scrape, reason: &str) -> Result<f64> {
    scrape.value("wshost_cluster_dropped_total", &[("reason", reason)])
}

#[tokio::test]
async fn readyz_turns_503_when_a_graceful_shutdown_begins() -> Result<()> {
    let routes = format!(
        "{METRICS}shutdown-timeout-ms = 60000\n{}",
        routes_toml(&[Route::to(&guests().lifecycle_v1).at("/life/*")])
    );
    let server = Server::start(&routes).await?;
    // Ready once the server accepts connections, a moment after its listening line.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let ready = server.metrics_request("GET", "/readyz").await?;
        if ready.status == 200 {
            assert_eq!(ready.body, "ready\n");
            break;
        }
        assert_eq!(
            (ready.status, ready.body.as_str()),
            (503, "starting: loading controllers\n")
        );
        ensure!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered 200 (hang guard)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let alive = server.metrics_request("GET", "/healthz").await?;
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));

    // A client that never answers its close frame keeps the drain going.
    let mut silent = server.connect("/life/silent").await?;
    assert_eq!(silent.request("hi").await?, "v1:hi");
    server.signal("TERM")?;
    server
        .log_line("announcing the shutdown", |l| l.contains("shutting down"))
        .await?;
    let draining = server.metrics_request("GET", "/readyz").await?;
    assert_eq!(
        (draining.status, draining.body.as_str()),
        (503, "shutting down\n")
    );
    let alive = server.metrics_request("GET", "/healthz").await?;
    assert_eq!(alive.status, 200, "still alive while draining");
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn the_metrics_port_serves_three_paths_only() -> Result<()> {
    let server = Server::start(&format!(
        "{METRICS}{}",
        routes_toml(&[Route::to(&guests().echo).at("/echo/*")])
    ))
    .await?;
    let metrics = server.metrics_request("GET", "/metrics").await?;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for path in ["/", "/metrics/", "/echo/x", "/health"] {
        let answer = server.metrics_request("GET", path).await?;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    let post = server.metrics_request("POST", "/metrics").await?;
    assert_eq!(post.status, 405, "{post:?}");
    // Nor is the WebSocket port a metrics port.
    let ws_port = server.http(&HttpRequest::plain("GET", "/metrics")).await?;
    assert_eq!(ws_port.status, 404, "{ws_port:?}");
    Ok(())
}

#[tokio::test]
async fn a_bad_metrics_address_names_file_line_and_key() -> Result<()> {
    let routes = format!(
        "# metrics on the next line\nmetrics = \"9090\"\n{}",
        routes_toml(&[Route::to_controller("x.wasm")])
    );
    let dir = RoutesDir::new(&routes)?;
    let output = check(&dir.routes()).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let at = format!("{}:2:", dir.routes().display());
    ensure!(stderr.contains(&at), "expected {at:?} in:\n{stderr}");
    ensure!(
        stderr.contains("`metrics`: `9090` is not an `ip:port` address"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_start() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let routes = format!(
        "metrics = \"{addr}\"\n{}",
        routes_toml(&[Route::to(&guests().echo).at("/echo/*")])
    );
    let dir = RoutesDir::new(&routes)?;
    let routes = dir.routes();
    let output = run_to_exit(&routes).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    ensure!(
        stderr.contains(&format!("cannot listen for metrics on `{addr}`")),
        "{stderr}"
    );
    drop(taken);
    Ok(())
}
