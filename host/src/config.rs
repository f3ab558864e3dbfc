//! routes.toml: the raw serde shape, and its validation into the typed [`Config`] the
//! server runs from.
//!
//! Parsing is strict (`deny_unknown_fields`) so a typo is an error, not a silently ignored
//! key. Every error names the file, the line and column, and the key, and shows the
//! offending line. Relative paths are relative to the routes file's directory.
//!
//! ```toml
//! listen = "127.0.0.1:23080"           # default 127.0.0.1:23080; `--listen` overrides
//! trusted-proxies = ["10.0.0.0/8"]     # default none: forwarding headers are ignored
//! forwarded-header = "x-forwarded-for" # or "forwarded": the one header they write
//! static-dir = "www"                   # default none: only WebSocket routes are served;
//!                                      # an existing directory whose files answer plain
//!                                      # GET/HEAD requests to paths no route matches
//! metrics = "127.0.0.1:9090"           # default none: no metrics listener; else its own
//!                                      # `ip:port` for /metrics, /healthz, /readyz
//!
//! [controllers.echo]                   # optional: a named controller
//! wasm = "{cargo-target-dir}/wasm32-wasip2/release/echo.wasm"  # or a plain path
//! build = "cargo build --release --target wasm32-wasip2 -p echo"   # optional
//! watch = ["echo/src"]                 # optional: sources that re-run `build` (--watch)
//!
//! [[route]]
//! name = "echo"                        # default: the `match` pattern, or `*`
//! match = "/echo/*"                    # default: every path
//! protocols = ["chat"]                 # default: none required
//! controller = "echo"                  # a [controllers.NAME], or a path to a .wasm file
//! topic = "chat/{1}"                   # optional: subscribe its connections to a topic
//!
//! [cluster]                            # optional: topics across nodes (crate::cluster)
//! servers = ["nats://127.0.0.1:4222"]
//!
//! [tls]                                # optional: wss:// (crate::tls)
//! cert-file = "fullchain.pem"
//! key-file = "privkey.pem"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cluster::{ClusterConfig, RawCluster};
use crate::filter::Filter;
use crate::filter::proxy::{Cidr, ForwardedHeader};
use crate::limits::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES_PER_ADDRESS, Limits, RawLimits, Sandbox,
};
use crate::pattern::PathPattern;
use crate::tls::TlsConfig;
use crate::tls::config::RawTls;
use crate::topics::TopicTemplate;

/// The address wshost listens on when routes.toml and the command line name none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:23080";

/// Largest request head accepted by default, like the seed's 16 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Default time a client has to send its complete request head, in milliseconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Default longest wait for connections to close on shutdown, in milliseconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// A validated routes.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The routes file itself (as given on the command line).
    pub path: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Every controller some route uses, each file once.
    pub controllers: Vec<ControllerSpec>,
    /// Routes in file order; the first that accepts a request serves it.
    pub routes: Vec<Route>,
    /// Global `[[filter]]` entries, in file order.
    pub filters: Vec<GlobalFilter>,
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header those proxies write the client's address into.
    pub forwarded_header: ForwardedHeader,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time a client has to send its complete request head.
    pub handshake_timeout: Duration,
    /// Longest a graceful shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    /// The top-level `[limits]`, applied to every route that does not override them.
    pub limits: Arc<Limits>,
    /// Most connections (open or in their handshake) the server holds at once.
    pub max_connections: usize,
    /// Most sockets one client address (an IPv6 /64) may have in their handshake at
    /// once; trusted proxies are exempt.
    pub max_handshakes_per_address: usize,
    /// `static-dir`, canonical (symlinks resolved): the directory served to plain
    /// requests (see [`crate::static_files`]); `None` serves no files.
    pub static_dir: Option<PathBuf>,
    /// `[cluster]`: topics across nodes through NATS; `None` is a single node.
    pub cluster: Option<ClusterConfig>,
    /// `[tls]`: the certificate and key clients connect with (`wss://`); `None` serves
    /// plain `ws://`.
    pub tls: Option<TlsConfig>,
    /// `metrics`: where the metrics and health listener ([`crate::metrics`]) listens;
    /// `None` (the default) counts nothing and opens no port.
    pub metrics: Option<SocketAddr>,
}

/// A `[[filter]]` entry: a filter and the paths it applies to.
#[derive(Debug, Clone)]
pub struct GlobalFilter {
    /// Paths the filter applies to; `None` is every path.
    pub pattern: Option<PathPattern>,
    /// The filter (shared, so its state, e.g. a rate limit's, is one).
    pub filter: Arc<Filter>,
}

/// One controller: a component file and, optionally, how to build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSpec {
    /// The name used in logs: the `[controllers.NAME]` key, or the file stem.
    pub name: String,
    /// Absolute path of the `.wasm` component.
    pub wasm: PathBuf,
    /// Shell command run before loading, if any.
    pub build: Option<BuildCommand>,
    /// Source files or directories whose changes re-run `build` under `run --watch`.
    pub watch: Vec<PathBuf>,
    /// The merged `config` tables of the routes using this controller, for `init`.
    pub config: Vec<(String, String)>,
    /// (name, pattern) of the routes using this controller.
    pub routes: Vec<(String, String)>,
    /// Deadline, memory cap and queue sizes: the widest of its routes' limits.
    pub sandbox: Sandbox,
}

/// A shell command that produces a controller's `.wasm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCommand {
    /// Run with `sh -c`.
    pub command: String,
    /// Working directory: the routes file's directory.
    pub workdir: PathBuf,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name for logs and the `route` attribute.
    pub name: String,
    /// Path pattern; `None` matches every path.
    pub pattern: Option<PathPattern>,
    /// Sub-protocols the route accepts; empty means "any or none, none chosen".
    pub protocols: Vec<String>,
    /// Index into [`Config::controllers`].
    pub controller: usize,
    /// The route's own filters, run after the global ones.
    pub filters: Vec<Arc<Filter>>,
    /// The limits of this route's connections: `[limits]` with `[route.limits]` on top.
    pub limits: Arc<Limits>,
    /// Most connections this route holds at once; `None` is only the server's cap.
    pub max_connections: Option<usize>,
    /// `topic`: the topic each connection is subscribed to, made from its captures.
    pub topic: Option<TopicTemplate>,
}

/// A routes.toml that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The routes file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but its content is wrong.
    #[error("{}:{line}:{column}: {message}\n{snippet}", path.display())]
    Invalid {
        /// The routes file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
        /// The offending line with a caret under the column.
        snippet: Snippet,
    },
}

/// A source line with a caret, shown under a config error.
#[derive(Debug, Clone)]
pub struct Snippet {
    line: usize,
    text: String,
    column: usize,
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        writeln!(f, "{} | {}", self.line, self.text)?;
        write!(f, "{:gutter$} | {:>col$}", "", "^", col = self.column)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    forwarded_header: ForwardedHeader,
    max_header_bytes: Option<Spanned<u64>>,
    handshake_timeout_ms: Option<Spanned<u64>>,
    shutdown_timeout_ms: Option<u64>,
    static_dir: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    controllers: BTreeMap<String, Spanned<RawController>>,
    #[serde(default)]
    filters: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default, rename = "filter")]
    global_filters: Vec<Spanned<toml::Table>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    cluster: Option<Spanned<RawCluster>>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    wasm: Spanned<String>,
    build: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    protocols: Option<Spanned<Vec<String>>>,
    controller: Spanned<String>,
    #[serde(default)]
    filters: Vec<Spanned<toml::Value>>,
    config: Option<Spanned<BTreeMap<String, toml::Value>>>,
    limits: Option<Spanned<RawLimits>>,
    topic: Option<Spanned<String>>,
}

impl RawConfig {
    const KEYS: &[&str] = &[
        "listen",
        "trusted-proxies",
        "forwarded-header",
        "max-header-bytes",
        "handshake-timeout-ms",
        "shutdown-timeout-ms",
        "static-dir",
        "metrics",
        "limits",
        "controllers",
        "filters",
        "filter",
        "route",
        "cluster",
        "tls",
    ];
}

impl RawController {
    const KEYS: &[&str] = &["wasm", "build", "watch"];
}

impl RawRoute {
    const KEYS: &[&str] = &[
        "name",
        "match",
        "protocols",
        "controller",
        "filters",
        "config",
        "limits",
        "topic",
    ];
}

/// Every key routes.toml accepts, as `(table, keys)`: the top level, `[controllers.NAME]`,
/// `[[route]]`, `[limits]` (also `[route.limits]`), `[[filter]]`, then each filter kind
/// (`kind = "..."`, in `[[filter]]`, `[filters.NAME]` or a route's `filters`).
///
/// Unit tests keep these lists equal to what the parser accepts, and the integration test
/// `tests/docs.rs` checks that `docs/reference/routes-toml.md` documents every one.
pub fn keys() -> Vec<(&'static str, &'static [&'static str])> {
    let mut tables = vec![
        ("top level", RawConfig::KEYS),
        ("[controllers.NAME]", RawController::KEYS),
        ("[[route]]", RawRoute::KEYS),
        ("[limits]", RawLimits::KEYS),
        ("[[filter]]", &["match", "kind"][..]),
        ("[cluster]", RawCluster::KEYS),
        ("[tls]", RawTls::KEYS),
    ];
    tables.extend_from_slice(crate::filter::KEYS);
    tables
}

/// The keys serde accepts for `T`, read from its `deny_unknown_fields` error.
#[cfg(test)]
pub(crate) fn accepted_keys<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    let Err(error) = toml::from_str::<T>("surely-not-a-key = 0") else {
        panic!("an unknown key was accepted");
    };
    let message = error.message().to_owned();
    let (_, expected) = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-field error: {message}"));
    let mut keys: Vec<&'static str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| &*k.to_owned().leak())
        .collect();
    keys.sort_unstable();
    keys
}

impl Config {
    /// Reads and validates the routes file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as the content of the routes file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |span: Range<usize>, message: String| invalid(path, text, span.start, message);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start);
            invalid(path, text, start, toml_message(&e))
        })?;
        let base = absolute(path.parent().unwrap_or(Path::new(".")));

        let listen = match &raw.listen {
            None => DEFAULT_LISTEN.parse().expect("the default address parses"),
            Some(l) => l.get_ref().parse().map_err(|e| {
                at(
                    l.span(),
                    format!(
                        "`listen`: `{}` is not an `ip:port` address: {e}",
                        l.get_ref()
                    ),
                )
            })?,
        };

        let metrics = match &raw.metrics {
            None => None,
            Some(m) => Some(
                metrics_addr(m.get_ref(), listen)
                    .map_err(|why| at(m.span(), format!("`metrics`: `{}` {why}", m.get_ref())))?,
            ),
        };

        let static_dir =
            match &raw.static_dir {
                None => None,
                Some(dir) => Some(static_dir(&base, dir.get_ref()).map_err(|m| {
                    at(dir.span(), format!("`static-dir`: `{}` {m}", dir.get_ref()))
                })?),
            };

        let mut named = BTreeMap::new();
        let mut controllers: Vec<ControllerSpec> = Vec::new();
        for (name, c) in &raw.controllers {
            let wasm = resolve_wasm(&base, &c.get_ref().wasm).map_err(|m| {
                at(
                    c.get_ref().wasm.span(),
                    format!("`controllers.{name}.wasm`: {m}"),
                )
            })?;
            let build = c.get_ref().build.clone().map(|command| BuildCommand {
                command,
                workdir: base.clone(),
            });
            let index = intern(&mut controllers, name, wasm, build);
            controllers[index].watch = c
                .get_ref()
                .watch
                .iter()
                .map(|w| normalize(&base.join(w)))
                .collect();
            named.insert(name.clone(), index);
        }

        for (key, value) in [
            ("max-header-bytes", &raw.max_header_bytes),
            ("handshake-timeout-ms", &raw.handshake_timeout_ms),
        ] {
            if let Some(v) = value.as_ref().filter(|v| *v.get_ref() == 0) {
                return Err(at(
                    v.span(),
                    format!("`{key}` must be at least 1 (0 would refuse every client)"),
                ));
            }
        }

        let no_limits = RawLimits::default();
        let (global_limits, global_span) = raw
            .limits
            .as_ref()
            .map_or((&no_limits, 0..0), |l| (l.get_ref(), l.span()));
        let limits = Arc::new(
            global_limits
                .apply(&Limits::default())
                .map_err(|m| at(global_span.clone(), format!("`limits`: {m}")))?,
        );
        let max_connections = global_limits
            .max_connections()
            .map_err(|m| at(global_span.clone(), format!("`limits`: {m}")))?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let max_handshakes_per_address = global_limits
            .max_handshakes_per_address()
            .map_err(|m| at(global_span.clone(), format!("`limits`: {m}")))?
            .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_ADDRESS);

        let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
        for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
            let parsed = cidr
                .get_ref()
                .parse()
                .map_err(|e| at(cidr.span(), format!("`trusted-proxies[{i}]`: {e}")))?;
            trusted_proxies.push(parsed);
        }

        let mut named_filters = BTreeMap::new();
        for (name, value) in &raw.filters {
            let filter = Filter::from_toml(value.get_ref().clone(), &base)
                .map_err(|m| at(value.span(), format!("`filters.{name}`: {m}")))?;
            named_filters.insert(name.clone(), Arc::new(filter));
        }
        let mut filters = Vec::with_capacity(raw.global_filters.len());
        for (i, entry) in raw.global_filters.iter().enumerate() {
            let mut table = entry.get_ref().clone();
            let pattern = match table.remove("match") {
                None => None,
                Some(toml::Value::String(p)) => Some(PathPattern::new(&p).map_err(|e| {
                    at(
                        entry.span(),
                        format!("`filter[{i}].match`: bad pattern `{p}`: {e}"),
                    )
                })?),
                Some(_) => {
                    return Err(at(
                        entry.span(),
                        format!("`filter[{i}].match` must be a string"),
                    ));
                }
            };
            let filter = Filter::from_toml(toml::Value::Table(table), &base)
                .map_err(|m| at(entry.span(), format!("`filter[{i}]`: {m}")))?;
            filters.push(GlobalFilter {
                pattern,
                filter: Arc::new(filter),
            });
        }

        if raw.routes.is_empty() {
            return Err(at(
                0..0,
                "no `[[route]]`: add at least one route with a `controller`".to_owned(),
            ));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            let r = r.get_ref();
            let key = |k: &str| format!("`route[{i}].{k}`");
            let pattern = match &r.pattern {
                None => None,
                Some(p) => Some(PathPattern::new(p.get_ref()).map_err(|e| {
                    at(
                        p.span(),
                        format!("{}: bad pattern `{}`: {e}", key("match"), p.get_ref()),
                    )
                })?),
            };
            let controller_ref = r.controller.get_ref();
            let controller = match named.get(controller_ref) {
                Some(&index) => index,
                None if controller_ref.ends_with(".wasm") => {
                    let wasm = resolve_wasm(&base, &r.controller).map_err(|m| {
                        at(r.controller.span(), format!("{}: {m}", key("controller")))
                    })?;
                    let stem = wasm.file_stem().map_or_else(
                        || controller_ref.clone(),
                        |s| s.to_string_lossy().into_owned(),
                    );
                    intern(&mut controllers, &stem, wasm, None)
                }
                None => {
                    return Err(at(
                        r.controller.span(),
                        format!(
                            "{}: unknown controller `{controller_ref}`: define `[controllers.{controller_ref}]` or give a path ending in `.wasm`",
                            key("controller")
                        ),
                    ));
                }
            };
            let protocols = r.protocols.as_ref().map_or(&[][..], |p| p.get_ref());
            if let Some(bad) = protocols.iter().find(|p| !is_token(p)) {
                let span = r.protocols.as_ref().map_or(0..0, Spanned::span);
                return Err(at(
                    span,
                    format!(
                        "{}: `{bad}` is not a valid sub-protocol token",
                        key("protocols")
                    ),
                ));
            }
            let mut route_filters = Vec::with_capacity(r.filters.len());
            for (j, f) in r.filters.iter().enumerate() {
                let key = key(&format!("filters[{j}]"));
                let filter = match f.get_ref() {
                    toml::Value::String(name) => {
                        named_filters.get(name).cloned().ok_or_else(|| {
                            at(
                                f.span(),
                                format!(
                                    "{key}: unknown filter `{name}`: define `[filters.{name}]`"
                                ),
                            )
                        })?
                    }
                    value => Arc::new(
                        Filter::from_toml(value.clone(), &base)
                            .map_err(|m| at(f.span(), format!("{key}: {m}")))?,
                    ),
                };
                route_filters.push(filter);
            }
            let name = r.name.clone().unwrap_or_else(|| {
                r.pattern
                    .as_ref()
                    .map_or_else(|| "*".to_owned(), |p| p.get_ref().clone())
            });
            let spec = &mut controllers[controller];
            spec.routes.push((
                name.clone(),
                r.pattern
                    .as_ref()
                    .map_or_else(|| "*".to_owned(), |p| p.get_ref().clone()),
            ));
            if let Some(table) = &r.config {
                for (k, v) in table.get_ref() {
                    let value = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_) => v.to_string(),
                        _ => {
                            return Err(at(
                                table.span(),
                                format!(
                                    "{}: `{k}` must be a string, number or boolean",
                                    key("config")
                                ),
                            ));
                        }
                    };
                    match spec.config.iter().find(|(existing, _)| existing == k) {
                        Some((_, old)) if *old != value => {
                            return Err(at(
                                table.span(),
                                format!(
                                    "{}: `{k}` = `{value}` conflicts with `{old}` from another route of controller `{}`",
                                    key("config"),
                                    spec.name
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => spec.config.push((k.clone(), value)),
                    }
                }
            }
            let (route_limits, route_max) = match &r.limits {
                None => (limits.clone(), None),
                Some(own) => {
                    let bad = |m: String| at(own.span(), format!("{}: {m}", key("limits")));
                    let merged = own.get_ref().apply(&limits).map_err(bad)?;
                    let max = own.get_ref().max_connections().map_err(bad)?;
                    if own.get_ref().max_handshakes_per_address.is_some() {
                        return Err(bad("`max-handshakes-per-address` applies before routing; set it in the top-level `[limits]`".to_owned()));
                    }
                    (Arc::new(merged), max)
                }
            };
            let topic = match &r.topic {
                None => None,
                Some(t) => {
                    let stars = pattern.as_ref().map_or(0, PathPattern::stars);
                    Some(TopicTemplate::new(t.get_ref(), stars).map_err(|m| {
                        at(t.span(), format!("{}: `{}` {m}", key("topic"), t.get_ref()))
                    })?)
                }
            };
            routes.push(Route {
                name,
                pattern,
                protocols: protocols.to_vec(),
                controller,
                filters: route_filters,
                limits: route_limits,
                max_connections: route_max,
                topic,
            });
        }
        // Keep only controllers that some route uses: an unused `[controllers.x]` is not
        // loaded (but still validated above).
        let used: Vec<usize> = (0..controllers.len())
            .filter(|i| routes.iter().any(|r| r.controller == *i))
            .collect();
        let controllers_used = used
            .iter()
            .map(|&i| {
                let mut spec = controllers[i].clone();
                let mut own = routes.iter().filter(|r| r.controller == i);
                let first = own.next().expect("used by some route");
                spec.sandbox = Sandbox::of(&first.limits);
                own.for_each(|r| spec.sandbox.widen(&r.limits));
                spec
            })
            .collect();
        for route in &mut routes {
            route.controller = used
                .iter()
                .position(|&i| i == route.controller)
                .expect("used");
        }

        let cluster = raw
            .cluster
            .as_ref()
            .map(|table| table.get_ref().validate(table.span(), &base))
            .transpose()
            .map_err(|(span, m)| at(span, m))?;

        let tls = raw
            .tls
            .as_ref()
            .map(|table| table.get_ref().validate(table.span(), &base))
            .transpose()
            .map_err(|(span, m)| at(span, m))?;

        Ok(Self {
            path: path.to_owned(),
            listen,
            controllers: controllers_used,
            routes,
            filters,
            trusted_proxies,
            forwarded_header: raw.forwarded_header,
            max_header_bytes: raw.max_header_bytes.map_or(DEFAULT_MAX_HEADER_BYTES, |v| {
                usize::try_from(*v.get_ref()).unwrap_or(usize::MAX)
            }),
            handshake_timeout: Duration::from_millis(
                raw.handshake_timeout_ms
                    .map_or(DEFAULT_HANDSHAKE_TIMEOUT_MS, |v| *v.get_ref()),
            ),
            shutdown_timeout: Duration::from_millis(
                raw.shutdown_timeout_ms
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            ),
            limits,
            max_connections,
            max_handshakes_per_address,
            static_dir,
            cluster,
            tls,
            metrics,
        })
    }
}

/// The `metrics` address `value`, or why it cannot be used: it must be an `ip:port` of
/// its own, so the metrics are never served on the WebSocket port.
fn metrics_addr(value: &str, listen: SocketAddr) -> Result<SocketAddr, String> {
    let addr: SocketAddr = value
        .parse()
        .map_err(|e| format!("is not an `ip:port` address: {e}"))?;
    if addr == listen && addr.port() != 0 {
        return Err(
            "is the WebSocket `listen` address; give the metrics a port of their own".to_owned(),
        );
    }
    Ok(addr)
}

/// The canonical path of the `static-dir` value `dir` (relative to `base`), or why it
/// cannot be served.
fn static_dir(base: &Path, dir: &str) -> Result<PathBuf, String> {
    if dir.is_empty() {
        return Err("is empty: name a directory".to_owned());
    }
    let path = base.join(dir);
    let canonical = std::fs::canonicalize(&path)
        .map_err(|e| format!("cannot be opened ({}): {e}", path.display()))?;
    if !canonical.is_dir() {
        return Err(format!("is not a directory ({})", canonical.display()));
    }
    Ok(canonical)
}

/// Adds a controller unless one with the same file exists; returns its index.
fn intern(
    controllers: &mut Vec<ControllerSpec>,
    name: &str,
    wasm: PathBuf,
    build: Option<BuildCommand>,
) -> usize {
    if let Some(i) = controllers.iter().position(|c| c.wasm == wasm) {
        if controllers[i].build.is_none() {
            controllers[i].build = build;
        }
        return i;
    }
    controllers.push(ControllerSpec {
        name: name.to_owned(),
        wasm,
        build,
        watch: Vec::new(),
        config: Vec::new(),
        routes: Vec::new(),
        sandbox: Sandbox::default(),
    });
    controllers.len() - 1
}

fn resolve_wasm(base: &Path, value: &Spanned<String>) -> Result<PathBuf, String> {
    let v = value.get_ref();
    if v.is_empty() {
        return Err("the path is empty".to_owned());
    }
    if let Some(rest) = v.strip_prefix(CARGO_TARGET_DIR) {
        let rest = rest.trim_start_matches('/');
        return Ok(normalize(&cargo_target_dir(base)?.join(rest)));
    }
    if v.contains(CARGO_TARGET_DIR) {
        return Err(format!("`{CARGO_TARGET_DIR}` may only start the path"));
    }
    Ok(normalize(&base.join(v)))
}

/// The placeholder a `wasm` path may start with for "wherever cargo puts its build
/// output": `CARGO_TARGET_DIR`, `build.target-dir` in a cargo config, or the
/// workspace's `target/`.
pub const CARGO_TARGET_DIR: &str = "{cargo-target-dir}";

/// The target directory of the cargo workspace `dir` is in, as `cargo build` run there
/// would use it (`cargo metadata` knows every way it can be configured).
fn cargo_target_dir(dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let failed = |why: String| {
        format!(
            "`{CARGO_TARGET_DIR}`: cannot ask cargo for its target directory in `{}`: {why}",
            dir.display()
        )
    };
    let output = std::process::Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(stderr.trim().to_owned()));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| failed(e.to_string()))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| failed("no `target_directory` in its answer".to_owned()))
}

/// Makes `path` absolute against the current directory without touching the file
/// system beyond that (the file may not exist before its build command runs).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    normalize(&joined)
}

/// Removes `.` and resolves `..` lexically, so two spellings of one file compare equal.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// RFC 7230 token characters, which RFC 6455 requires of sub-protocol names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The message of a toml error, with the key path it was found under when the
/// message itself does not name it.
fn toml_message(e: &toml::de::Error) -> String {
    let mut bare = e.clone();
    bare.set_input(None);
    // Without input, Display is "message\nin `a.b`\n".
    let shown = bare.to_string();
    let mut lines = shown.lines();
    let message = lines.next().unwrap_or_default().to_owned();
    match lines.next().and_then(|l| l.strip_prefix("in ")) {
        Some(keys) => format!("{message} (in {keys})"),
        None => message,
    }
}

fn invalid(path: &Path, text: &str, offset: usize, message: String) -> ConfigError {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message,
        snippet: Snippet {
            line,
            text: line_text,
            column,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/srv/app/routes.toml"), text)
    }

    fn error(text: &str) -> (usize, String) {
        match parse(text).unwrap_err() {
            ConfigError::Invalid { line, message, .. } => (line, message),
            other @ ConfigError::Read { .. } => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn full_file_is_validated_into_typed_routes() {
        let c = parse(
            r#"
listen = "127.0.0.1:9000"
[controllers.echo]
wasm = "build/echo.wasm"
build = "make echo"
[[route]]
match = "/echo/*"
controller = "echo"
[[route]]
name = "chat"
match = "/chat/*"
protocols = ["chat", "chat.v2"]
controller = "./build/../build/chat.wasm"
[[route]]
controller = "build/echo.wasm"
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            c.controllers.len(),
            2,
            "echo.wasm named twice is one controller"
        );
        assert_eq!(c.controllers[0].name, "echo");
        assert_eq!(
            c.controllers[0].wasm,
            PathBuf::from("/srv/app/build/echo.wasm")
        );
        assert_eq!(
            c.controllers[0].build.as_ref().unwrap().workdir,
            PathBuf::from("/srv/app")
        );
        assert_eq!(c.controllers[1].name, "chat");
        assert_eq!(
            c.controllers[1].wasm,
            PathBuf::from("/srv/app/build/chat.wasm")
        );
        assert_eq!(c.routes[0].name, "/echo/*");
        assert_eq!(c.routes[1].name, "chat");
        assert_eq!(c.routes[1].protocols, ["chat", "chat.v2"]);
        assert_eq!(c.routes[2].name, "*");
        assert!(c.routes[2].pattern.is_none());
        assert_eq!(c.routes[2].controller, c.routes[0].controller);
    }

    #[test]
    fn static_dir_must_be_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let routes = dir.path().join("routes.toml");
        let load = |value: &str| {
            let text =
                format!("# first\nstatic-dir = {value:?}\n[[route]]\ncontroller = \"a.wasm\"\n");
            Config::parse(&routes, &text)
        };
        let c = load("www").unwrap();
        assert_eq!(
            c.static_dir,
            Some(dir.path().join("www").canonicalize().unwrap())
        );
        for (value, why) in [
            ("missing", "cannot be opened"),
            ("file", "is not a directory"),
            ("", "is empty"),
        ] {
            let Err(ConfigError::Invalid { line, message, .. }) = load(value) else {
                panic!("`{value}` was accepted");
            };
            assert_eq!(line, 2, "{message}");
            assert!(message.starts_with("`static-dir`: "), "{message}");
            assert!(message.contains(why), "{message}");
        }
        assert!(
            parse("[[route]]\ncontroller = \"a.wasm\"\n")
                .unwrap()
                .static_dir
                .is_none()
        );
    }

    #[test]
    fn default_listen_address() {
        let c = parse("[[route]]\ncontroller = \"a.wasm\"\n").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn metrics_is_off_by_default_and_an_address_of_its_own() {
        let route = "[[route]]\ncontroller = \"a.wasm\"\n";
        assert_eq!(parse(route).unwrap().metrics, None);
        let c = parse(&format!("metrics = \"127.0.0.1:9090\"\n{route}")).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9090".parse().unwrap()));
        // Port 0 twice is two ports.
        let text = format!("listen = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\n{route}");
        assert!(parse(&text).is_ok());
        for (value, why) in [
            ("9090", "is not an `ip:port` address"),
            ("localhost:9090", "is not an `ip:port` address"),
            (DEFAULT_LISTEN, "is the WebSocket `listen` address"),
        ] {
            let (line, message) = error(&format!("# metrics\nmetrics = {value:?}\n{route}"));
            assert_eq!(line, 2, "{message}");
            assert!(message.starts_with("`metrics`: "), "{message}");
            assert!(message.contains(why), "{value}: {message}");
        }
    }

    #[test]
    fn zero_header_limit_or_handshake_timeout_is_refused_at_its_line() {
        for key in ["max-header-bytes", "handshake-timeout-ms"] {
            let text = format!(
                "# {key} = 0 in a comment\n{key} = 0\n[[route]]\ncontroller = \"e.wasm\"\n"
            );
            let Err(ConfigError::Invalid { line, message, .. }) =
                Config::parse(Path::new("routes.toml"), &text)
            else {
                panic!("{key} = 0 was accepted");
            };
            assert_eq!(line, 2, "{message}");
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, message) = error("[[route]]\ncontroller = \"a.wasm\"\ncolour = \"red\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("unknown field `colour`"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let (line, message) = error("listen = 5\n[[route]]\ncontroller = \"a.wasm\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("listen"), "{message}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let (line, _) = error("[[route]]\ncontroller = \"a.wasm\nmatch = 1\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn bad_values_name_their_key() {
        let (line, message) = error("listen = \"nowhere\"\n[[route]]\ncontroller = \"a.wasm\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("`listen`"), "{message}");

        let (line, message) = error("[[route]]\nmatch = \"/[x\"\ncontroller = \"a.wasm\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("`route[0].match`"), "{message}");

        let (line, message) = error("[[route]]\nmatch = \"/x\"\ncontroller = \"nope\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("`route[0].controller`"), "{message}");
        assert!(message.contains("unknown controller `nope`"), "{message}");

        let (_, message) = error("[[route]]\nprotocols = [\"a b\"]\ncontroller = \"a.wasm\"\n");
        assert!(message.contains("`route[0].protocols`"), "{message}");
    }

    #[test]
    fn the_security_keys_refuse_bad_values_at_their_line() {
        let route = "[[route]]\ncontroller = \"a.wasm\"\n";
        let (line, message) = error(&format!("forwarded-header = \"xff\"\n{route}"));
        assert_eq!(line, 1);
        assert!(
            message.contains("xff") && message.contains("x-forwarded-for"),
            "{message}"
        );
        let (_, message) = error(&format!(
            "[limits]\nmax-handshakes-per-address = 0\n{route}"
        ));
        assert!(
            message.contains("`max-handshakes-per-address` must be at least 1"),
            "{message}"
        );
        let (_, message) = error(&format!(
            "{route}[route.limits]\nmax-handshakes-per-address = 4\n"
        ));
        assert!(message.contains("top-level `[limits]`"), "{message}");
        for (keys, why) in [
            ("ipv6-prefix = 0", "`ipv6-prefix`"),
            ("ipv6-prefix = 129", "`ipv6-prefix`"),
            ("max-clients = 0", "`max-clients`"),
        ] {
            let (_, message) = error(&format!(
                "[[route]]\ncontroller = \"a.wasm\"\nfilters = [{{ kind = \"rate-limit\", max = 1, {keys} }}]\n"
            ));
            assert!(message.contains(why), "{keys}: {message}");
        }
    }

    #[test]
    fn the_cargo_target_dir_placeholder_needs_a_cargo_project() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[route]]\ncontroller = \"{cargo-target-dir}/a.wasm\"\n";
        let error = Config::parse(&dir.path().join("routes.toml"), text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot ask cargo for its target directory"),
            "{error}"
        );
    }

    #[test]
    fn the_cargo_target_dir_placeholder_starts_a_path_only() {
        let (_, message) = error("[[route]]\ncontroller = \"x/{cargo-target-dir}/a.wasm\"\n");
        assert!(message.contains("may only start the path"), "{message}");
    }

    #[test]
    fn missing_controller_key_and_no_routes_are_errors() {
        let (_, message) = error("[[route]]\nmatch = \"/x\"\n");
        assert!(message.contains("missing field `controller`"), "{message}");
        let (_, message) = error("listen = \"127.0.0.1:1\"\n");
        assert!(message.contains("no `[[route]]`"), "{message}");
    }

    #[test]
    fn key_lists_match_what_serde_accepts() {
        fn sorted(keys: &[&'static str]) -> Vec<&'static str> {
            let mut keys = keys.to_vec();
            keys.sort_unstable();
            keys
        }
        assert_eq!(sorted(RawConfig::KEYS), accepted_keys::<RawConfig>());
        assert_eq!(
            sorted(RawController::KEYS),
            accepted_keys::<RawController>()
        );
        assert_eq!(sorted(RawRoute::KEYS), accepted_keys::<RawRoute>());
        assert_eq!(sorted(RawLimits::KEYS), accepted_keys::<RawLimits>());
        assert_eq!(sorted(RawTls::KEYS), accepted_keys::<RawTls>());
    }

    #[test]
    fn snippet_points_at_the_column() {
        let e = parse("[[route]]\ncontroller = \"a.wasm\"\n  colour = 1\n").unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("/srv/app/routes.toml:3:3: "), "{shown}");
        assert!(shown.ends_with("3 |   colour = 1\n  |   ^"), "{shown}");
    }
}

#[cfg(test)]
mod fuzz;
