//! `cargo bench -p wshost --bench ws`: wshost against a native tokio-tungstenite echo
//! server, Node's `ws` and Python's `websockets`, and the cost ladder in between,
//! measured in one run by the same tokio-tungstenite client on core 1, all on
//! 127.0.0.1. Each figure is repeated (3 runs, run by run across the servers; `--quick`:
//! 1 run, shorter) and reported as min / median / max in `target/bench/results.md`,
//! with a chart in `target/bench/chart.svg`. Not a test: nothing here passes or fails
//! on a number.
//!
//! The echo figures run twice per server: pinned to core 0 ("server on 1 core": a
//! one-worker tokio runtime, where wshost's connection task → controller task hop is a
//! same-thread wake-up and costs little) and free on every core ("server on all cores":
//! a multi-worker runtime as wshost is deployed, sharing the client's core, where the
//! hop is a cross-thread wake-up). (a) and (b) also give the server's CPU time per
//! echoed message, and the efficiency native CPU/msg ÷ server CPU/msg, the terms of
//! issue 17's targets.
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
//! publisher is not on (needs `nats-server`), (j) the cost ladder: native → wshost's
//! connection-task shape → + the WIT conversion → + the guest call → + the hop →
//! wshost, each rung's msgs/s and CPU per message in both settings and its
//! instructions per message under callgrind (see [`rungs`] and [`callgrind`]).
//!
//! Options, after `--`: `--quick`; `--no-callgrind` (skip (j)'s instruction counts,
//! the slowest part); `--compare PATH[=LABEL]` (repeatable): another wshost binary,
//! measured beside this tree's in the same runs — (a) and (b) in both settings with CPU
//! per message, (e), and its instructions per message — in rows named `wshost (LABEL)`,
//! to A/B a change against, say, main's release build. Single-figure modes for
//! profiling: `--load ADDR PATH CONNS SECS`, `--load-stream ADDR PATH SECS`,
//! `--load-broadcast ADDR`, `--load-fanout
//! ADDR[,ADDR...] SECS` against running servers; `--native-echo` and `--rung NAME
//! [ECHO_WASM]` serve one echo.
//!
//! The machine these numbers come from is usually shared: rates and latencies move
//! with whatever else runs, CPU per message much less, instructions per message not at
//! all. Compare builds by the latter two.

mod callgrind;
mod fanout;
mod load;
mod report;
mod rungs;
mod servers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use report::{Figure, Report};
use rungs::Rung;
use servers::{Cores, Running, WSHOST, Wrap};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--native-echo") {
        return servers::native_echo_main();
    }
    if let Some(i) = args.iter().position(|a| a == "--rung") {
        // `--rung NAME [ECHO_WASM]`: one of the cost ladder's servers.
        let name = args.get(i + 1).context("--rung NAME [ECHO_WASM]")?;
        return rungs::rung_main(name, args.get(i + 2).map(Path::new));
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
            None,
        ))?;
        println!("{result:?}");
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--load-stream") {
        // `--load-stream ADDR PATH SECS`: only figure (c) against a running server.
        let arg = |k: usize| args.get(i + k).context("--load-stream ADDR PATH SECS");
        let (addr, path, secs) = (arg(1)?.parse()?, arg(2)?.clone(), arg(3)?.parse()?);
        let runtime = tokio::runtime::Runtime::new()?;
        let rate = runtime.block_on(load::stream(
            addr,
            &path,
            1 << 20,
            4,
            Duration::from_secs(secs),
        ))?;
        println!("{rate:.0} MB/s");
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
    let callgrind_on = !args.iter().any(|a| a == "--no-callgrind");
    let compares = compare_args(&args)?;
    // The client on core 1; servers are started on core 0 or on every core.
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
    let secs = Duration::from_secs(if quick { 1 } else { 2 });
    let mut report = Report::new(runs);
    let started = Instant::now();
    if !quick {
        report.note(
            "(a) to (f) and (j) measure 2 s per run (3 s before issue 17), to keep the whole \
             run near 15 minutes with every figure on both runtime settings.",
        );
    }

    let work = tempfile::tempdir()?;
    let routes = work.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "# Streaming 1 MiB messages with 4 in flight needs more than the default 4 MiB\n# outbound queue per connection.\n[limits]\noutbound-queue-bytes = 16777216\n# The load comes from one address, opening up to 10,000 connections at once.\nmax-handshakes-per-address = 1000000\n\n[[route]]\nmatch = \"/echo/*\"\ncontroller = {:?}\n\n[[route]]\nmatch = \"/chat/*\"\nprotocols = [\"chat\"]\ncontroller = {:?}\n",
            guests.echo, guests.chat
        ),
    )?;
    // The ladder's guest rungs load echo.wasm through wasmtime's compiled-code cache.
    let ladder_cache = work.path().join("ladder-cache");
    let wshost_bin = Path::new(env!("CARGO_BIN_EXE_wshost"));

    let mut contenders = vec![
        Contender {
            start: Box::new(|cores: Cores| {
                servers::wshost_build(wshost_bin, WSHOST, &routes, None, &Wrap::Plain(cores))
            }),
            settings: &[Cores::One, Cores::All],
            all_figures: true,
        },
        Contender {
            start: Box::new(|cores: Cores| servers::native(&Wrap::Plain(cores))),
            settings: &[Cores::One, Cores::All],
            all_figures: true,
        },
        Contender {
            start: Box::new(|_: Cores| servers::node(&peers, &scripts)),
            settings: &[Cores::One],
            all_figures: true,
        },
        Contender {
            start: Box::new(|_: Cores| servers::python(&peers, &scripts)),
            settings: &[Cores::One],
            all_figures: true,
        },
    ];
    for (bin, name) in &compares {
        contenders.push(Contender {
            start: Box::new(|cores: Cores| {
                servers::wshost_build(bin, name, &routes, None, &Wrap::Plain(cores))
            }),
            settings: &[Cores::One, Cores::All],
            all_figures: false,
        });
    }
    if !compares.is_empty() {
        report.note(
            "`--compare` builds run (a), (b), (e) and (j)'s instructions only, beside this \
             tree's wshost in the same runs.",
        );
    }
    report.note(
        "Node and Python run on 1 core only (single-threaded event loops; the targets \
         compare wshost with native in both settings).",
    );

    // Run by run, every server in turn, so that each run of each server meets about the
    // same background load (this machine is shared) and the efficiency of run i pairs
    // servers measured at about the same time.
    for run in 0..runs {
        for contender in &contenders {
            for &cores in contender.settings {
                let server = (contender.start)(cores)?;
                eprintln!("== {} ({cores:?}), run {}", server.name, run + 1);
                measure_echo(
                    &mut report,
                    &server,
                    cores,
                    contender.all_figures,
                    secs,
                    &runtime,
                )?;
            }
            // (e): a fresh process per run: freed memory stays with the allocator, so a
            // second run on the same process would measure nothing.
            let n = if quick { 2_000 } else { 10_000 };
            let fresh = (contender.start)(Cores::One)?;
            let (addr, path) = (fresh.addr, fresh.echo_path);
            let e = runtime.block_on(load::idle_memory(addr, path, n, || fresh.rss_kib()))?;
            report.add(Figure::IdleMemory, &fresh.name, "KiB/conn", e);
        }
        // (j) the rungs between native and wshost (those two come from (b)).
        for cores in [Cores::One, Cores::All] {
            for rung in [Rung::Shape, Rung::Wit, Rung::Guest, Rung::Hop] {
                let wrap = Wrap::Plain(cores);
                let server = servers::rung(rung.name(), &guests.echo, &ladder_cache, &wrap)?;
                eprintln!("== rung {} ({cores:?}), run {}", rung.name(), run + 1);
                let pid = Some(server.pid());
                let (addr, path) = (server.addr, server.echo_path);
                let b = runtime.block_on(load::ping_pong(addr, path, 100, 32, secs, pid))?;
                add_ladder(&mut report, cores, rung.name(), &b);
            }
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
            let server = servers::wshost(file, None)?;
            let (addr, path) = (server.addr, server.echo_path);
            let b = runtime.block_on(load::ping_pong(addr, path, 100, 32, secs, None))?;
            let one = Some(Cores::One);
            report.add_at(Figure::PingPong100, one, name, "msgs/s", b.msgs_per_s);
            report.add_at(Figure::PingPong100P99, one, name, "µs", b.p99_us);
        }
    }

    // (d) broadcast, wshost's chat controller only (the fan-out is the host's job).
    for cores in [Cores::One, Cores::All] {
        let wrap = Wrap::Plain(cores);
        let server = servers::wshost_build(wshost_bin, WSHOST, &routes, None, &wrap)?;
        for _ in 0..runs {
            let d = runtime.block_on(load::broadcast(server.addr, 1_000, 20, 10))?;
            report.add_at(Figure::Broadcast, Some(cores), WSHOST, "deliveries/s", d);
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
        for run in 0..runs {
            let cache = tempfile::tempdir()?;
            let cold = servers::check(&routes, cache.path())?;
            let warm = servers::check(&routes, cache.path())?;
            let no_cache = format!("{lang}, no cache");
            let cached = format!("{lang}, cached");
            report.add(Figure::LangCompile, &no_cache, "ms", cold.compile_ms);
            report.add(Figure::LangCompile, &cached, "ms", warm.compile_ms);
            report.add(Figure::LangInstantiate, lang, "ms", warm.instantiate_ms);
            // Starting without a cache compiles again (up to ~20 s for JavaScript and
            // Python, the same work as the `check` above): once is enough.
            if run == 0 {
                let empty = tempfile::tempdir()?;
                let started = servers::wshost(&routes, Some(empty.path()))?.started_in;
                report.add(
                    Figure::LangStart,
                    &no_cache,
                    "ms",
                    started.as_secs_f64() * 1e3,
                );
            }
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

    report.note(
        "(h) start to listening without a cache: 1 run (it compiles again, like `check` \
         without a cache, which keeps its runs).",
    );

    // (j) instructions per message under callgrind, last: it is slow and needs nothing
    // from the other figures.
    if !callgrind_on {
        report.note("(j) instructions: not measured (`--no-callgrind`).");
    } else if let Some(why) = callgrind::unavailable() {
        report.note(format!("(j) instructions: not measured: {why}."));
    } else {
        let echo_routes = work.path().join("routes-echo.toml");
        std::fs::write(
            &echo_routes,
            format!(
                "[[route]]\nmatch = \"/echo/*\"\ncontroller = {:?}\n",
                guests.echo
            ),
        )?;
        let cache = work.path().join("callgrind-cache");
        let mut builds: Vec<(String, &Path)> = vec![(Rung::Wshost.name().to_owned(), wshost_bin)];
        builds.extend(
            compares
                .iter()
                .map(|(bin, name)| (name.clone(), bin.as_path())),
        );
        let mut jobs: Vec<(String, Starter<'_>)> = Vec::new();
        let (echo, cache) = (guests.echo.as_path(), cache.as_path());
        for rung in Rung::ALL {
            let name = rung.name().to_owned();
            match rung {
                Rung::Native => jobs.push((name, Box::new(servers::native))),
                Rung::Wshost => {}
                _ => jobs.push((
                    name,
                    Box::new(move |wrap: &Wrap| servers::rung(rung.name(), echo, cache, wrap)),
                )),
            }
        }
        for (name, bin) in builds {
            let routes = &echo_routes;
            let label = name.clone();
            jobs.push((
                name,
                Box::new(move |wrap: &Wrap| {
                    servers::wshost_build(bin, &label, routes, Some(cache), wrap)
                }),
            ));
        }
        let (few, many) = if quick {
            (50, 300)
        } else {
            (callgrind::FEW, callgrind::MANY)
        };
        for (name, start) in &jobs {
            eprintln!("== callgrind: {name}");
            let dir = tempfile::tempdir()?;
            let counted = Instant::now();
            match callgrind::instructions_per_message(start, dir.path(), (few, many), &runtime) {
                Ok(per) => {
                    report.add(Figure::LadderInstructions, name, "instructions", per);
                    eprintln!("   {per:.0} instructions/msg ({:.0?})", counted.elapsed());
                }
                Err(error) => {
                    eprintln!("   failed: {error:#}");
                    report.note(format!(
                        "(j) instructions of `{name}`: callgrind failed: {error:#}"
                    ));
                }
            }
        }
    }

    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    report.write(&out, started.elapsed())?;
    eprintln!("{}", std::fs::read_to_string(out.join("results.md"))?);
    Ok(())
}

/// Starts a server as the [`Wrap`] says.
type Starter<'a> = Box<dyn Fn(&Wrap) -> Result<Running> + 'a>;

/// A server to measure with the echo figures, and how.
struct Contender<'a> {
    /// Starts it with the given cores.
    start: Box<dyn Fn(Cores) -> Result<Running> + 'a>,
    /// The runtime settings it is measured in.
    settings: &'static [Cores],
    /// Whether (c) and (f) too, or only (a) and (b).
    all_figures: bool,
}

/// Figures (a), (b) with the server's CPU per message, and (c), (f) when `all`, of one
/// running server; (b) feeds the ladder's `native` and `wshost` rungs (and a
/// `--compare` build's row).
fn measure_echo(
    report: &mut Report,
    server: &Running,
    cores: Cores,
    all: bool,
    secs: Duration,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let (addr, path, name) = (server.addr, server.echo_path, server.name.as_str());
    let at = Some(cores);
    let pid = Some(server.pid());
    let a = runtime.block_on(load::ping_pong(addr, path, 1, 32, secs, pid))?;
    report.add_at(Figure::PingPong1, at, name, "msgs/s", a.msgs_per_s);
    report.add_at(Figure::PingPong1P50, at, name, "µs", a.p50_us);
    report.add_at(Figure::PingPong1P99, at, name, "µs", a.p99_us);
    if let Some(cpu) = a.cpu_us_per_msg {
        report.add_at(Figure::PingPong1Cpu, at, name, "µs", cpu);
    }
    let b = runtime.block_on(load::ping_pong(addr, path, 100, 32, secs, pid))?;
    report.add_at(Figure::PingPong100, at, name, "msgs/s", b.msgs_per_s);
    report.add_at(Figure::PingPong100P99, at, name, "µs", b.p99_us);
    if let Some(cpu) = b.cpu_us_per_msg {
        report.add_at(Figure::PingPong100Cpu, at, name, "µs", cpu);
    }
    match name {
        servers::NATIVE => add_ladder(report, cores, Rung::Native.name(), &b),
        WSHOST => add_ladder(report, cores, Rung::Wshost.name(), &b),
        _ if name.starts_with("wshost (") => add_ladder(report, cores, name, &b),
        _ => {}
    }
    if all {
        let c = runtime.block_on(load::stream(addr, path, 1 << 20, 4, secs))?;
        report.add_at(Figure::Stream, at, name, "MB/s", c);
        let f = runtime.block_on(load::handshakes(addr, path, 16, secs))?;
        report.add_at(Figure::Handshakes, at, name, "handshakes/s", f);
    }
    Ok(())
}

/// One run of 32-byte ping-pong on 100 connections as a row of the cost ladder.
fn add_ladder(report: &mut Report, cores: Cores, name: &str, b: &load::PingPong) {
    report.add_at(Figure::Ladder, Some(cores), name, "msgs/s", b.msgs_per_s);
    if let Some(cpu) = b.cpu_us_per_msg {
        report.add_at(Figure::LadderCpu, Some(cores), name, "µs", cpu);
    }
}

/// `--compare PATH[=LABEL]` (repeatable): other wshost binaries and their names in the
/// report, `wshost (LABEL)` (the path when there is no label).
fn compare_args(args: &[String]) -> Result<Vec<(PathBuf, String)>> {
    let mut builds = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if arg != "--compare" {
            continue;
        }
        let value = args
            .get(i + 1)
            .context("--compare PATH_TO_WSHOST[=LABEL]")?;
        let (path, label) = value.split_once('=').unwrap_or((value, value));
        let path = PathBuf::from(path);
        ensure!(path.is_file(), "--compare: no file `{}`", path.display());
        builds.push((path, format!("wshost ({label})")));
    }
    Ok(builds)
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
