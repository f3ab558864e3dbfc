//! The `wshost` command line: `run` serves a routes.toml, `check` validates one, `new`
//! starts a controller project, `token` mints a development JWT.

mod progress;
mod scaffold;
mod token;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use wshost::config::Config;
use wshost::controller::Runtime;

/// A WebSocket server whose application logic lives in WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines (stderr) are written: `text` for people, `json` for programs (one
    /// object per line, with the fields of the connection's span).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `TIME LEVEL span{fields}: target: message key=value ...`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the message and the
    /// event's fields at the top level, and `spans` (outermost first) with theirs.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a routes.toml.
    Run {
        /// The routes file.
        routes: PathBuf,
        /// Listen here instead of the file's `listen` (e.g. `127.0.0.1:0`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Development loop: also watch each controller's `watch` sources and re-run its
        /// `build` command when they change (the rebuilt file is then hot-reloaded).
        #[arg(long)]
        watch: bool,
    },
    /// Validate a routes.toml: parse it, load its TLS certificate and key if any, build
    /// and compile every controller, check each fits the controller world, and print the
    /// route table.
    Check {
        /// The routes file.
        routes: PathBuf,
        /// Print one JSON object (routes, controllers with their size, compile and
        /// instantiate figures, filters) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Start a controller project in a new directory NAME: source with every event
    /// stubbed, its build step, a routes.toml for `wshost run --watch NAME/routes.toml`,
    /// the WIT, and a README.
    New {
        /// The language: rust, js or python.
        #[arg(value_enum)]
        lang: scaffold::Lang,
        /// The project's name (lower-case letters, digits, `-`): its directory, and the
        /// controller's name.
        name: String,
        /// Also stub the optional hooks: the handshake check, lifecycle, timers and
        /// state handoff (world `controller-full`).
        #[arg(long)]
        hooks: bool,
    },
    /// Development only: print a JWT that a routes.toml's `bearer` filter accepts (signed
    /// with its HS256 secret, or `--private-key` for RS256/ES256), with its issuer and
    /// audience and the given claims.
    Token {
        /// The routes file.
        routes: PathBuf,
        /// The subject (`sub`), which the filter makes the `user` attribute by default.
        #[arg(long)]
        sub: String,
        /// An extra claim, NAME=VALUE (VALUE as JSON if it parses, else a string);
        /// repeatable.
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
        /// The `[filters.NAME]` to mint for, when the file has several bearer filters.
        #[arg(long)]
        filter: Option<String>,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// PEM private key matching an RS256/ES256 filter's public key.
        #[arg(long)]
        private_key: Option<PathBuf>,
    },
}

/// glibc's malloc gives the top of a heap back to the kernel once more than
/// `trim_threshold` of it is free (`madvise`), and the next large allocation faults
/// fresh, zeroed pages in. Large messages allocate and free buffers of their size every
/// time, so that was up to a fifth of the server's time on 1 MiB messages (figure (c):
/// 1,071–1,083 MB/s against 1,628–1,747 with these limits, same build, same warm server;
/// docs/internals/optimisation-log.md). The limits keep up to 64 MiB of freed memory
/// per arena for reuse, and serve allocations up to 32 MiB from the heaps instead of
/// fresh mappings. Left alone when `GLIBC_TUNABLES` is set: the operator decides.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_heap() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    // SAFETY: `mallopt` only sets malloc's parameters; it is called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_heap() {}

fn main() -> ExitCode {
    keep_freed_heap();
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match cli.log_format {
        LogFormat::Text if terminal => registry
            .with(logs.with_ansi(true))
            .with(progress::Spinners::default())
            .init(),
        LogFormat::Text => registry.with(logs.with_ansi(false)).init(),
        LogFormat::Json => registry
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                routes,
                listen,
                watch,
            } => run(routes, listen, watch).await,
            Command::Check { routes, json } => check(routes, json).await,
            Command::New { lang, name, hooks } => new_project(lang, name, hooks),
            Command::Token {
                routes,
                sub,
                claims,
                filter,
                ttl_secs,
                private_key,
            } => token::mint(&token::Request {
                routes,
                filter,
                sub,
                claims,
                ttl_secs,
                private_key,
            })
            .map(|token| println!("{token}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_project(lang: scaffold::Lang, name: String, hooks: bool) -> anyhow::Result<()> {
    let dir = scaffold::create(&scaffold::Options {
        lang,
        name,
        parent: PathBuf::from("."),
        hooks,
    })?;
    println!(
        "created {0}; run it with: wshost run --watch {0}/routes.toml",
        dir.display()
    );
    Ok(())
}

async fn run(routes: PathBuf, listen: Option<SocketAddr>, watch: bool) -> anyhow::Result<()> {
    let mut config = Config::load(&routes)?;
    let addr = listen.unwrap_or(config.listen);
    // Bound before the controllers load, so their `init` learns the real address (with
    // `:0`, the port); connections arriving meanwhile wait in the backlog.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on `{addr}`"))?;
    let bound = listener.local_addr()?;
    config.listen = bound;
    let server = wshost::Server::start(config).await?;
    let _routes_watch = wshost::reconfigure::watch_routes(server.clone())
        .map_err(
            |error| tracing::warn!(%error, "cannot watch the routes file; edits need a restart"),
        )
        .ok();
    if watch {
        server
            .watch_sources()
            .context("cannot watch controller sources")?;
    }
    // The one line on stdout: scripts and tests read the bound port from it.
    let scheme = if server.is_tls() { "wss" } else { "ws" };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "wshost listening on {scheme}://{bound}")?;
    stdout.flush()?;
    tracing::info!(%bound, tls = server.is_tls(), "listening");
    // The first signal starts a graceful shutdown; a second one ends the process at once.
    let (first, stop) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = first.send(());
        shutdown_signal().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    server
        .serve(listener, async {
            let _ = stop.await;
        })
        .await;
    Ok(())
}

async fn check(routes: PathBuf, json: bool) -> anyhow::Result<()> {
    let config = Config::load(&routes)?;
    let runtime = Runtime::new(config.listen.to_string())?;
    let mut costs = Vec::new();
    for spec in &config.controllers {
        let cost = runtime.check(spec).await?;
        // Each controller as it finishes: a JavaScript or Python one takes seconds.
        tracing::info!(
            controller = %spec.name,
            bytes = cost.wasm_bytes,
            compile_ms = cost.compile.as_millis() as u64,
            from_cache = cost.from_cache,
            "checked"
        );
        costs.push((spec, cost));
    }
    if json {
        println!("{}", check_json(&routes, &config, &costs));
        return Ok(());
    }
    println!("{} is valid; listen = {}", routes.display(), config.listen);
    if let Some(tls) = &config.tls {
        println!(
            "tls: {} certificate(s) from {}, key from {}",
            tls.pair.chain().len(),
            tls.cert_file.display(),
            tls.key_file.display()
        );
    }
    println!(
        "{:<16} {:>12} {:>12} {:>14} wasm",
        "controller", "bytes", "compile ms", "instantiate ms"
    );
    for (spec, cost) in costs {
        println!(
            "{:<16} {:>12} {:>12} {:>14.3} {}",
            spec.name,
            cost.wasm_bytes,
            format!(
                "{:.1}{}",
                cost.compile.as_secs_f64() * 1e3,
                if cost.from_cache { " (cached)" } else { "" }
            ),
            cost.instantiate.as_secs_f64() * 1e3,
            spec.wasm.display()
        );
    }
    println!(
        "{:<24} {:<16} {:<20} controller",
        "route", "match", "protocols"
    );
    for route in &config.routes {
        let controller = &config.controllers[route.controller];
        println!(
            "{:<24} {:<16} {:<20} {} ({})",
            route.name,
            route.pattern.as_ref().map_or("*", |p| p.as_str()),
            if route.protocols.is_empty() {
                "-".to_owned()
            } else {
                route.protocols.join(",")
            },
            controller.name,
            controller.wasm.display()
        );
    }
    Ok(())
}

/// What `check --json` prints.
fn check_json(
    routes: &std::path::Path,
    config: &Config,
    costs: &[(
        &wshost::config::ControllerSpec,
        wshost::controller::LoadCost,
    )],
) -> serde_json::Value {
    let controllers: Vec<serde_json::Value> = costs
        .iter()
        .map(|(spec, cost)| {
            serde_json::json!({
                "name": spec.name,
                "wasm": spec.wasm,
                "bytes": cost.wasm_bytes,
                "compile_ms": cost.compile.as_secs_f64() * 1e3,
                "from_cache": cost.from_cache,
                "instantiate_ms": cost.instantiate.as_secs_f64() * 1e3,
            })
        })
        .collect();
    let route_list: Vec<serde_json::Value> = config
        .routes
        .iter()
        .map(|route| {
            serde_json::json!({
                "name": route.name,
                "match": route.pattern.as_ref().map(|p| p.as_str()),
                "protocols": route.protocols,
                "controller": config.controllers[route.controller].name,
                "filters": route.filters.iter().map(|f| f.kind()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let filters: Vec<serde_json::Value> = config
        .filters
        .iter()
        .map(|g| {
            serde_json::json!({
                "match": g.pattern.as_ref().map(|p| p.as_str()),
                "kind": g.filter.kind(),
            })
        })
        .collect();
    let tls = config.tls.as_ref().map(|tls| {
        serde_json::json!({
            "cert_file": tls.cert_file,
            "key_file": tls.key_file,
            "chain": tls.pair.chain().len(),
        })
    });
    serde_json::json!({
        "routes_file": routes,
        "listen": config.listen.to_string(),
        "tls": tls,
        "controllers": controllers,
        "routes": route_list,
        "filters": filters,
    })
}

/// Completes on SIGINT (ctrl-c) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
