//! `cargo bench -p wshost --bench ws`: wshost against a native tokio-tungstenite echo
//! server, Node's `ws` and Python's `websockets`, measured in one run by the same
//! tokio-tungstenite client, servers pinned to core 0 and the client to core 1, all on
//! 127.0.0.1. Each figure is repeated (3 runs; `--quick`: 1 run, shorter) and reported
//! as min / median / max in `target/bench/results.md`, with a chart in
//! `target/bench/chart.svg`. Not a test: nothing here passes or fails on a number.
//!
//! Figures: (a) ping-pong of 32-byte text on 1 connection, (b) on 100 connections,
//! (c) 1 MiB binary messages streamed through 1 connection, (d) broadcast by the chat
//! controller to 1,000 connections, (e) memory per idle connection (10,000 open),
//! (f) opening + closing handshakes per second, (g) hot-reload latency and cold start
//! with and without the compiled-code cache, (h) the chat controller in Rust, JavaScript
//! and Python: size, compile and instantiate time, start with and without the cache,
//! and the latency and server CPU of a relayed chat line, (i) fan-out through a topic:
//! one publisher, 1,000 subscribers on one node (plain `broadcast`, then a `topic`
//! route), on each of 3 nodes that share the topic through NATS, and on a node the
//! publisher is not on (needs `nats-server`).

mod fanout;
mod load;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use report::{Figure, Report};
use servers::Running;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--native-echo") {
        return servers::native_echo_main();
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        // `--load ADDR PATH CONNS SECS`: only figure (a)/(b) against a running server,
        // for profiling it.
        let arg = |k: usize| args.get(i + k).context("--load ADDR PATH CONNS SECS");
        let (addr, path) = (arg(1)?.parse()?, arg(2)?.clone());
        let (conns, secs) = (arg(3)?.parse()?, arg(4)?.parse()?);
        let runtime = tokio::runtime::Runtime::new()?;
        let result = runtime.block_on(load::ping_pong(
            addr,
            &path,
            conns,
            32,
            Duration::from_secs(secs),
        ))?;
        println!("{result:?}");
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--load-broadcast") {
        // `--load-broadcast ADDR`: only figure (d) against a running server.
        let addr = args.get(i + 1).context("--load-broadcast ADDR")?.parse()?;
        let runtime = tokio::runtime::Runtime::new()?;
        let rate = runtime.block_on(load::broadcast(addr, 1_000, 20, 30))?;
        println!("{rate:.0} deliveries/s");
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--load-fanout") {
        // `--load-fanout ADDR[,ADDR...] SECS`: only figure (i) against running servers
        // (1,000 subscribers on each, the publisher on the first).
        let usage = "--load-fanout ADDR[,ADDR...] SECS";
        let nodes = args.get(i + 1).context(usage)?.split(',');
        let nodes = nodes.map(str::parse).collect::<Result<Vec<_>, _>>()?;
        let secs = args.get(i + 2).context(usage)?.parse()?;
        let runtime = tokio::runtime::Runtime::new()?;
        let subscribers: Vec<_> = nodes.iter().map(|&addr| (addr, 1_000)).collect();
        let result = runtime.block_on(fanout::fan_out(
            nodes[0],
            &subscribers,
            Duration::from_secs(secs),
            100,
            &[],
            None,
        ))?;
        println!("{result:?}");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    // The client on core 1; servers are started on core 0.
    let pinned = Command::new("taskset")
        .args(["-pc", "1", &std::process::id().to_string()])
        .output()?;
    ensure!(pinned.status.success(), "taskset failed: {pinned:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let scripts = root.join("host").join("benches").join("peers");
    let status = Command::new("bash")
        .arg(scripts.join("setup.sh"))
        .status()?;
    ensure!(status.success(), "installing the peer servers failed");
    let peers = target.join("peers").join("bench");
    let guests = build_guests(&root, &target)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runs = if quick { 1 } else { 3 };
    let secs = Duration::from_secs(if quick { 1 } else { 3 });
    let mut report = Report::new(runs);
    let started = Instant::now();

    let work = tempfile::tempdir()?;
    let routes = work.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "# Streaming 1 MiB messages with 4 in flight needs more than the default 4 MiB\n# outbound queue per connection.\n[limits]\noutbound-queue-bytes = 16777216\n# The load comes from one address, opening up to 10,000 connections at once.\nmax-handshakes-per-address = 1000000\n\n[[route]]\nmatch = \"/echo/*\"\ncontroller = {:?}\n\n[[route]]\nmatch = \"/chat/*\"\nprotocols = [\"chat\"]\ncontroller = {:?}\n",
            guests.echo, guests.chat
        ),
    )?;

    let servers: Vec<Box<dyn Fn() -> Result<Running>>> = vec![
        Box::new(|| servers::wshost(&routes, None)),
        Box::new(servers::native),
        Box::new(|| servers::node(&peers, &scripts)),
        Box::new(|| servers::python(&peers, &scripts)),
    ];
    for start in &servers {
        let server = start()?;
        eprintln!("== {}", server.name);
        let (addr, path) = (server.addr, server.echo_path);
        for _ in 0..runs {
            let a = runtime.block_on(load::ping_pong(addr, path, 1, 32, secs))?;
            report.add(Figure::PingPong1, server.name, "msgs/s", a.msgs_per_s);
            report.add(Figure::PingPong1P50, server.name, "µs", a.p50_us);
            report.add(Figure::PingPong1P99, server.name, "µs", a.p99_us);
            let b = runtime.block_on(load::ping_pong(addr, path, 100, 32, secs))?;
            report.add(Figure::PingPong100, server.name, "msgs/s", b.msgs_per_s);
            report.add(Figure::PingPong100P99, server.name, "µs", b.p99_us);
            let c = runtime.block_on(load::stream(addr, path, 1 << 20, 4, secs))?;
            report.add(Figure::Stream, server.name, "MB/s", c);
            let f = runtime.block_on(load::handshakes(addr, path, 16, secs))?;
            report.add(Figure::Handshakes, server.name, "handshakes/s", f);
        }
        drop(server);
        // A fresh process per run: freed memory stays with the allocator, so a second
        // run on the same process would measure nothing.
        let n = if quick { 2_000 } else { 10_000 };
        for _ in 0..runs {
            let fresh = start()?;
            let (addr, path) = (fresh.addr, fresh.echo_path);
            let e = runtime.block_on(load::idle_memory(addr, path, n, || fresh.rss_kib()))?;
            report.add(Figure::IdleMemory, fresh.name, "KiB/conn", e);
        }
    }

    // (b) again with routes.toml's `metrics` on, each run beside one with it off, so the
    // two rows differ by the cost of counting and little else.
    let metered = work.path().join("routes-metrics.toml");
    let text = std::fs::read_to_string(&routes)?;
    std::fs::write(&metered, format!("metrics = \"127.0.0.1:0\"\n{text}"))?;
    for _ in 0..runs {
        for (file, name) in [
            (&routes, "wshost, metrics off"),
            (&metered, "wshost, metrics on"),
        ] {
            let mut server = servers::wshost(file, None)?;
            server.name = name;
            let b = runtime.block_on(load::ping_pong(
                server.addr,
                server.echo_path,
                100,
                32,
                secs,
            ))?;
            report.add(Figure::PingPong100, name, "msgs/s", b.msgs_per_s);
            report.add(Figure::PingPong100P99, name, "µs", b.p99_us);
        }
    }

    // (d) broadcast, wshost's chat controller only (the fan-out is the host's job).
    {
        let server = servers::wshost(&routes, None)?;
        for _ in 0..runs {
            let d = runtime.block_on(load::broadcast(server.addr, 1_000, 20, 10))?;
            report.add(Figure::Broadcast, server.name, "deliveries/s", d);
        }
    }

    // (i) fan-out through a topic.
    for _ in 0..runs {
        let paced = if quick { 50 } else { 200 };
        for (name, r) in fan_out_figure(work.path(), &guests, secs, paced, &runtime)? {
            add_fan_out(&mut report, name, &r);
        }
    }

    // (g) hot reload and cold start.
    for _ in 0..runs {
        let ms = runtime.block_on(reload_latency(&guests))?;
        report.add(Figure::Reload, "wshost (wasm echo)", "ms", ms);
        let cache = tempfile::tempdir()?;
        let cold = servers::wshost(&routes, Some(cache.path()))?.started_in;
        let warm = servers::wshost(&routes, Some(cache.path()))?.started_in;
        report.add(
            Figure::ColdStart,
            "wshost, no cache",
            "ms",
            cold.as_secs_f64() * 1e3,
        );
        report.add(
            Figure::ColdStart,
            "wshost, cached",
            "ms",
            warm.as_secs_f64() * 1e3,
        );
    }

    // (h) the chat controller in each language: size, compile and instantiate, start
    // with and without the cache (the (g) target for Python/JS), cost of a relayed line.
    for (lang, wasm) in build_chats(&root, &target)? {
        let dir = tempfile::tempdir()?;
        let routes = dir.path().join("routes.toml");
        std::fs::write(
            &routes,
            format!(
                "[[route]]\nmatch = \"/chat/*\"\nprotocols = [\"chat\"]\ncontroller = {:?}\n",
                wasm.display().to_string()
            ),
        )?;
        let size = std::fs::metadata(&wasm)?.len() as f64;
        report.add(Figure::LangSize, lang, "KiB", size / 1024.0);
        for _ in 0..runs {
            let cache = tempfile::tempdir()?;
            let cold = servers::check(&routes, cache.path())?;
            let warm = servers::check(&routes, cache.path())?;
            let no_cache = format!("{lang}, no cache");
            let cached = format!("{lang}, cached");
            report.add(Figure::LangCompile, &no_cache, "ms", cold.compile_ms);
            report.add(Figure::LangCompile, &cached, "ms", warm.compile_ms);
            report.add(Figure::LangInstantiate, lang, "ms", warm.instantiate_ms);
            let empty = tempfile::tempdir()?;
            let started = servers::wshost(&routes, Some(empty.path()))?.started_in;
            report.add(
                Figure::LangStart,
                &no_cache,
                "ms",
                started.as_secs_f64() * 1e3,
            );
            let server = servers::wshost(&routes, Some(cache.path()))?;
            let started = server.started_in;
            report.add(
                Figure::LangStart,
                &cached,
                "ms",
                started.as_secs_f64() * 1e3,
            );
            let cpu = server.cpu_seconds()?;
            let (rate, p50) = runtime.block_on(load::relay(server.addr, secs))?;
            let cpu = server.cpu_seconds()? - cpu;
            report.add(Figure::LangRelay, lang, "µs", p50);
            let per_message = cpu / (rate * secs.as_secs_f64()) * 1e6;
            report.add(Figure::LangRelayCpu, lang, "µs", per_message);
        }
    }

    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    report.write(&out, started.elapsed())?;
    eprintln!("{}", std::fs::read_to_string(out.join("results.md"))?);
    Ok(())
}

/// Figure (i)'s rows for one run of one setup.
fn add_fan_out(report: &mut Report, name: &str, r: &fanout::FanOut) {
    report.add(Figure::FanOut, name, "deliveries/s", r.deliveries_per_s);
    report.add(Figure::FanOutP50, name, "µs", r.p50_us);
    report.add(Figure::FanOutP99, name, "µs", r.p99_us);
    if let Some(local) = r.first_local_p50_us {
        report.add(Figure::FanOutFirstLocal, name, "µs", local);
    }
    if let Some(remote) = r.first_remote_p50_us {
        report.add(Figure::FanOutFirstRemote, name, "µs", remote);
    }
    // CPU per delivery, µs: all server processes, NATS, then each node per delivery to
    // its own subscribers.
    let per = |cpu_s: f64, deliveries: u64| cpu_s / deliveries as f64 * 1e6;
    let nats = r.nats_cpu_s.unwrap_or_default();
    let total = r.nodes.iter().map(|n| n.cpu_s).sum::<f64>() + nats;
    report.add(Figure::FanOutCpu, name, "µs", per(total, r.deliveries));
    if r.nats_cpu_s.is_some() {
        report.add(Figure::FanOutNatsCpu, name, "µs", per(nats, r.deliveries));
    }
    let serving = r.nodes.iter().filter(|n| n.deliveries > 0);
    let (with, without): (Vec<&fanout::NodeUse>, Vec<_>) = serving.partition(|n| n.publisher);
    for (figure, nodes) in [
        (Figure::FanOutNodeCpu, with),
        (Figure::FanOutOtherNodeCpu, without),
    ] {
        if !nodes.is_empty() {
            let each = nodes.iter().map(|n| per(n.cpu_s, n.deliveries));
            report.add(figure, name, "µs", each.sum::<f64>() / nodes.len() as f64);
        }
    }
    let client = per(r.client_cpu_s, r.deliveries);
    report.add(Figure::FanOutClientCpu, name, "µs", client);
}

/// Figure (i)'s routes: the chat controller on `/chat/*`, with `topic = "chat/{1}"` if
/// `topic`, in the cluster of NATS server `url` as node `name` if given.
fn fan_out_routes(chat: &Path, topic: bool, cluster: Option<(&str, &str)>) -> String {
    let mut toml = String::from(
        "[limits]\n\
         # 3,000 connections from one address, opened 100 at a time.\n\
         max-handshakes-per-address = 1000000\n\
         # Every member hears every other member join: up to 3,000 notices queued at\n\
         # once, more than the default 1,024 messages per connection.\n\
         outbound-queue-messages = 16384\n\n\
         [[route]]\n\
         match = \"/chat/*\"\n\
         protocols = [\"chat\"]\n",
    );
    if topic {
        toml.push_str("topic = \"chat/{1}\"\n");
    }
    toml.push_str(&format!("controller = {:?}\n", chat.display().to_string()));
    if let Some((url, name)) = cluster {
        toml.push_str(&format!(
            "\n[cluster]\nservers = [{url:?}]\nname = {name:?}\nrequired = true\n"
        ));
    }
    toml
}

/// Figure (i), one run: the chat controller fanning one publisher's messages out to
/// 1,000 subscribers on one node with plain `broadcast`, then through a `topic` route;
/// then, with a NATS server, to 1,000 on each of 3 nodes (the publisher on the first),
/// and to 1,000 on a node that the publisher is not on (2 nodes: the publisher alone on
/// one, so that the other's fan-out runs beside no other busy node). Every process
/// (NATS and the nodes) on core 0 with the other servers.
fn fan_out_figure(
    dir: &Path,
    guests: &Guests,
    secs: Duration,
    paced: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, fanout::FanOut)>> {
    let mut results = Vec::new();
    for (name, topic) in [
        ("wshost, 1 node, broadcast", false),
        ("wshost, 1 node, topic", true),
    ] {
        let file = dir.join("fan-out.toml");
        std::fs::write(&file, fan_out_routes(&guests.chat, topic, None))?;
        let server = servers::wshost(&file, None)?;
        let subscribers = [(server.addr, 1_000)];
        let pids = [server.pid()];
        let run = fanout::fan_out(server.addr, &subscribers, secs, paced, &pids, None);
        results.push((name, runtime.block_on(run)?));
    }
    for (name, subscribers) in [
        ("wshost, 3 nodes + NATS", &[1_000, 1_000, 1_000][..]),
        ("wshost, 2 nodes + NATS, all remote", &[0, 1_000][..]),
    ] {
        let nats = servers::nats()?;
        let mut nodes = Vec::new();
        for i in 1..=subscribers.len() {
            let name = format!("node-{i}");
            let file = dir.join(format!("{name}.toml"));
            let cluster = Some((nats.url.as_str(), name.as_str()));
            std::fs::write(&file, fan_out_routes(&guests.chat, true, cluster))?;
            nodes.push(servers::wshost(&file, None)?);
        }
        let addrs: Vec<_> = nodes
            .iter()
            .map(|n| n.addr)
            .zip(subscribers.iter().copied())
            .collect();
        let pids: Vec<u32> = nodes.iter().map(servers::Running::pid).collect();
        let run = fanout::fan_out(addrs[0].0, &addrs, secs, paced, &pids, Some(nats.pid()));
        results.push((name, runtime.block_on(run)?));
        for node in &nodes {
            for line in node.stderr()?.lines() {
                eprintln!("(i) {name}: node: {line}");
            }
        }
        for line in nats.warnings()? {
            eprintln!("(i) {name}: nats-server: {line}");
        }
    }
    Ok(results)
}

/// The components the bench serves.
struct Guests {
    echo: PathBuf,
    chat: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
}

fn build_guests(root: &Path, target: &Path) -> Result<Guests> {
    let dir = target.join("wasm32-wasip2").join("release");
    let build = |args: &[&str]| -> Result<()> {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args(args)
            .current_dir(root)
            .status()?;
        ensure!(status.success(), "building the guests failed");
        Ok(())
    };
    build(&["-p", "echo", "-p", "chat"])?;
    let variants = target.join("bench").join("variants");
    std::fs::create_dir_all(&variants)?;
    build(&["-p", "lifecycle"])?;
    std::fs::copy(dir.join("lifecycle.wasm"), variants.join("v1.wasm"))?;
    build(&["-p", "lifecycle", "--features", "v2"])?;
    std::fs::copy(dir.join("lifecycle.wasm"), variants.join("v2.wasm"))?;
    Ok(Guests {
        echo: dir.join("echo.wasm"),
        chat: dir.join("chat.wasm"),
        v1: variants.join("v1.wasm"),
        v2: variants.join("v2.wasm"),
    })
}

/// The chat example in each language: Rust (built with the other guests), JavaScript and
/// Python (their build.sh installs the pinned toolchain and builds).
fn build_chats(root: &Path, target: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let dir = target.join("wasm32-wasip2").join("release");
    let mut chats = vec![("Rust", dir.join("chat.wasm"))];
    for (lang, example) in [("JavaScript", "chat-js"), ("Python", "chat-py")] {
        let script = root.join("examples").join(example).join("build.sh");
        let status = Command::new("bash").arg(&script).status()?;
        ensure!(status.success(), "{} failed", script.display());
        chats.push((lang, dir.join(format!("{example}.wasm"))));
    }
    Ok(chats)
}

/// Milliseconds from a new `.wasm` being renamed into place to the first reply from the
/// new version, median of 5 swaps on a connection kept open throughout.
async fn reload_latency(guests: &Guests) -> Result<f64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir()?;
    let live = dir.path().join("ctl.wasm");
    std::fs::copy(&guests.v1, &live)?;
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "[[route]]\ncontroller = \"ctl.wasm\"\n")?;
    let cache = dir.path().join("cache");
    let server = servers::wshost(&routes, Some(&cache))?;
    let mut ws = load::connect(server.addr, "/r", None).await?;
    let mut samples = Vec::new();
    for i in 0..5 {
        let (file, prefix) = if i % 2 == 0 {
            (&guests.v2, "v2:")
        } else {
            (&guests.v1, "v1:")
        };
        let staged = dir.path().join("staged.wasm");
        std::fs::copy(file, &staged)?;
        let written = Instant::now();
        std::fs::rename(&staged, &live)?;
        loop {
            ws.send(Message::text("x")).await?;
            let reply = loop {
                match ws.next().await.context("connection ended")?? {
                    Message::Text(t) => break t,
                    _ => continue,
                }
            };
            if reply.starts_with(prefix) {
                break;
            }
            ensure!(
                written.elapsed() < Duration::from_secs(10),
                "the reload never showed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(written.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}
