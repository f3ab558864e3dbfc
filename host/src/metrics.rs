//! Metrics and health: the counters, gauges and histograms wshost keeps when routes.toml
//! names a `metrics` address, and the listener on that address ([`endpoint`]) that
//! serves them in the Prometheus text format at `/metrics`, beside `/healthz` and
//! `/readyz` for load balancers and orchestrators.
//!
//! The listener is a socket of its own, never the WebSocket port, and it starts before
//! the controllers load: `/healthz` answers at once, `/readyz` answers 503 until the
//! server accepts connections, and 503 again once a graceful shutdown has begun.
//!
//! The message path never writes a cache line another connection writes, and never
//! looks a label up: each connection counts its traffic in its own [`Traffic`], written
//! by its task alone, and a scrape adds up the open connections' counts and what closed
//! ones left behind ([`traffic`]). The actor of each controller keeps the handles of its
//! series in a [`ControllerMeter`], made once. Without a `metrics` address none of this
//! exists: connections and controllers hold `None` and count nothing.
//!
//! Every series, with its labels and type, is listed in `docs/metrics.md`; a unit test
//! below keeps that page and [`SERIES`] equal.

mod controller;
mod endpoint;
mod traffic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::Route;
use crate::request::Request;

pub use controller::{ControllerMeter, MessagePath};
pub use traffic::{ConnMeter, Traffic};

use controller::Instances;
use traffic::{ROUTE_COUNTERS, Routes};

/// The gauges per controller, computed from its running instances: name, help, and the
/// value in `(timers, memory)`.
type InstanceGauge = (&'static str, &'static str, fn((u64, u64)) -> u64);

const INSTANCE_GAUGES: [InstanceGauge; 2] = [
    (
        "timers",
        "Pending timers of a controller's running instances.",
        |(timers, _)| timers,
    ),
    (
        "instance_memory_bytes",
        "Bytes of linear memory and table elements of a controller's running instances (what `memory-bytes` caps, per instance).",
        |(_, memory)| memory,
    ),
];

/// Every series wshost exports (without the `_total`, `_bucket`, `_sum` and `_count`
/// suffixes the format adds), with its type and labels: what `docs/metrics.md` lists.
pub const SERIES: &[(&str, &str, &[&str])] = &[
    ("wshost_connections_open", "gauge", &["route"]),
    ("wshost_upgrades", "counter", &["route"]),
    ("wshost_refusals", "counter", &["route", "status"]),
    ("wshost_received_messages", "counter", &["route"]),
    ("wshost_received_bytes", "counter", &["route"]),
    ("wshost_sent_messages", "counter", &["route"]),
    ("wshost_sent_bytes", "counter", &["route"]),
    ("wshost_inbound_backpressure", "counter", &["route"]),
    ("wshost_outbound_overflows", "counter", &["route"]),
    ("wshost_outbound_dropped", "counter", &["route"]),
    (
        "wshost_guest_call_duration_seconds",
        "histogram",
        &["controller", "export"],
    ),
    (
        "wshost_controller_messages",
        "counter",
        &["controller", "path"],
    ),
    ("wshost_traps", "counter", &["controller", "export"]),
    ("wshost_instance_restarts", "counter", &["controller"]),
    ("wshost_reloads", "counter", &["controller", "result"]),
    ("wshost_routes_reloads", "counter", &["result"]),
    ("wshost_timers", "gauge", &["controller"]),
    ("wshost_instance_memory_bytes", "gauge", &["controller"]),
    ("wshost_cluster_connected", "gauge", &[]),
    ("wshost_cluster_dropped", "counter", &["reason"]),
    ("wshost_cluster_topics_followed", "gauge", &[]),
];

/// Upper bounds of the guest call duration buckets, in seconds: from 5 µs (a small
/// `on-message`) to 10 s (past any sensible `call-deadline-ms`).
const CALL_BUCKETS: [f64; 19] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The `metrics` address could not be bound.
    #[error("cannot listen for metrics on `{addr}`: {source}")]
    Bind {
        /// The `metrics` address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where the server is in its life, as `/readyz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Loading controllers: not accepting connections yet.
    Starting,
    /// Accepting connections.
    Ready,
    /// Shutting down: new requests get 503.
    Draining,
}

/// The labels of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    /// The route the request asked for, or empty when it matched none.
    route: String,
    status: u16,
}

/// The labels of a controller's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

/// The labels of a series per controller export.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExportLabels {
    controller: String,
    export: String,
}

/// The labels of the messages a controller took by one path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PathLabels {
    controller: String,
    path: &'static str,
}

/// The labels of a controller reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    controller: String,
    result: &'static str,
}

/// The labels of a routes.toml reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// The metrics of one server, and its readiness.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    phase: AtomicU8,
    /// The series computed at each scrape: route traffic and the cluster's state.
    live: Arc<Live>,
    refusals: Family<RefusalLabels, Counter>,
    calls: Family<ExportLabels, Histogram, fn() -> Histogram>,
    messages: Family<PathLabels, Counter>,
    traps: Family<ExportLabels, Counter>,
    restarts: Family<ControllerLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    routes_reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    /// Binds the `metrics` address and starts answering on it; `/readyz` answers 503
    /// until [`Metrics::ready`].
    pub async fn listen(addr: SocketAddr) -> Result<Arc<Self>, MetricsError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let metrics = Arc::new(Self::new());
        let bound = listener.local_addr().unwrap_or(addr);
        // Tests and scripts read the bound port (with `:0`) from this event.
        tracing::info!(addr = %bound, "metrics listening");
        endpoint::spawn(listener, metrics.clone());
        Ok(metrics)
    }

    /// Metrics with every series registered and none counted yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wshost");
        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(live.clone()));
        // `register` ends each help text with a period itself.
        let refusals = Family::default();
        registry.register(
            "refusals",
            "Requests answered with an HTTP error instead of an upgrade, by the route they asked for (empty: none) and status",
            refusals.clone(),
        );
        let calls = Family::new_with_constructor(call_histogram as fn() -> Histogram);
        registry.register(
            "guest_call_duration_seconds",
            "How long each call into a controller's export took",
            calls.clone(),
        );
        let messages = Family::default();
        registry.register(
            "controller_messages",
            "Data messages handed to a controller's on-message, by path: inline (called by the connection's own task while the controller was free) or queued (through the controller's event queue)",
            messages.clone(),
        );
        let traps = Family::default();
        registry.register(
            "traps",
            "Calls into a controller that trapped (panic, deadline, memory cap)",
            traps.clone(),
        );
        let restarts = Family::default();
        registry.register(
            "instance_restarts",
            "Fresh instances made after a trap",
            restarts.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Hot reloads of a controller, swapped in (ok) or refused (failed)",
            reloads.clone(),
        );
        let routes_reloads = Family::default();
        registry.register(
            "routes_reloads",
            "Reloads of routes.toml, applied (ok) or refused (failed)",
            routes_reloads.clone(),
        );
        Self {
            registry,
            phase: AtomicU8::new(Phase::Starting as u8),
            live,
            refusals,
            calls,
            messages,
            traps,
            restarts,
            reloads,
            routes_reloads,
        }
    }

    /// Every series in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The server accepts connections: `/readyz` answers 200.
    pub fn ready(&self) {
        self.phase.store(Phase::Ready as u8, Ordering::Release);
    }

    /// A graceful shutdown began: `/readyz` answers 503 from now on.
    pub fn draining(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Shows every route of the current routes.toml, with zeros until it has traffic.
    pub fn declare_routes(&self, routes: &[Route]) {
        self.live
            .routes
            .declare(routes.iter().map(|r| r.name.as_str()));
    }

    /// Registers an upgraded connection of `route`; its counts are summed with the
    /// route's until the returned meter is dropped, and kept in the route's totals after.
    pub fn connection(
        &self,
        route: &str,
        id: u64,
        outbound: &crate::controller::OutboundHandle,
    ) -> ConnMeter {
        self.live.routes.open(route, id, outbound)
    }

    /// Counts a refused upgrade request; `route` is the one it asked for, if any.
    pub fn refused(&self, route: Option<&str>, status: u16) {
        self.refusals
            .get_or_create(&RefusalLabels {
                route: route.unwrap_or_default().to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a trap of `controller` in `export`.
    pub(crate) fn trapped(&self, controller: &str, export: &str) {
        self.traps
            .get_or_create(&ExportLabels {
                controller: controller.to_owned(),
                export: export.to_owned(),
            })
            .inc();
    }

    /// Counts a fresh instance of `controller` made after a trap.
    pub(crate) fn restarted(&self, controller: &str) {
        self.restarts
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .inc();
    }

    /// Counts a hot reload of `controller`: swapped in, or refused.
    pub(crate) fn reloaded(&self, controller: &str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                controller: controller.to_owned(),
                result: result(ok),
            })
            .inc();
    }

    /// Counts a routes.toml reload: applied, or refused.
    pub(crate) fn routes_reloaded(&self, ok: bool) {
        self.routes_reloads
            .get_or_create(&ResultLabels { result: result(ok) })
            .inc();
    }

    /// Shows the state of the cluster connection from now on.
    pub fn watch_cluster(&self, probe: crate::cluster::Probe) {
        let _ = self.live.cluster.set(probe);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The route `request` asks for (by its path and offered sub-protocols), to count its
/// refusal under; `None` when no route would serve it.
pub(crate) fn requested_route<'r>(routes: &'r [Route], request: &Request) -> Option<&'r str> {
    let offered: Vec<&str> = request.header_items("sec-websocket-protocol").collect();
    crate::routing::select(routes, &request.path, &offered)
        .ok()
        .map(|selected| routes[selected.route].name.as_str())
}

/// The series computed at each scrape.
#[derive(Debug, Default)]
struct Live {
    routes: Arc<Routes>,
    instances: Instances,
    cluster: OnceLock<crate::cluster::Probe>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let routes = self.routes.totals();
        {
            let mut metric = encoder.encode_descriptor(
                "connections_open",
                "Upgraded connections open now.",
                None,
                MetricType::Gauge,
            )?;
            for (route, open, _) in &routes {
                let labels = [("route", &**route)];
                ConstGauge::new(*open as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in ROUTE_COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (route, _, totals) in &routes {
                let labels = [("route", &**route)];
                ConstCounter::new(value(totals)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let instances = self.instances.totals();
        for (name, help, value) in INSTANCE_GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (controller, totals) in &instances {
                let labels = [("controller", controller.as_str())];
                let value = i64::try_from(value(*totals)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        let Some(probe) = self.cluster.get() else {
            return Ok(());
        };
        let status = probe.status();
        let metric = encoder.encode_descriptor(
            "cluster_connected",
            "1 while the NATS connection of `[cluster]` is up, else 0.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(status.connected)).encode(metric)?;
        {
            let mut metric = encoder.encode_descriptor(
                "cluster_dropped",
                "Publications that reached this node's subscribers only, by why they did not reach NATS.",
                None,
                MetricType::Counter,
            )?;
            for (reason, dropped) in status.dropped {
                let labels = [("reason", reason)];
                ConstCounter::new(dropped).encode(metric.encode_family(&labels)?)?;
            }
        }
        let metric = encoder.encode_descriptor(
            "cluster_topics_followed",
            "Topics this node is subscribed to in NATS (those with local subscribers).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(status.topics_followed as i64).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_every_series_that_needs_no_cluster() {
        let metrics = Arc::new(Metrics::new());
        metrics.refused(Some("echo"), 403);
        metrics.trapped("probe", "on-message");
        metrics.restarted("probe");
        metrics.reloaded("probe", true);
        metrics.routes_reloaded(false);
        let mut meter = ControllerMeter::new(metrics.clone(), "probe");
        meter.called("on-message", std::time::Instant::now());
        meter.message(MessagePath::Inline);
        meter.instance(1, 65536);
        let text = metrics.render();
        for (name, kind, _) in SERIES {
            if name.starts_with("wshost_cluster_") {
                assert!(!text.contains(name), "{name} without a cluster:\n{text}");
                continue;
            }
            let shown = match *kind {
                "counter" => format!("# TYPE {name}_total counter"),
                _ => format!("# TYPE {name} {kind}"),
            };
            assert!(text.contains(&shown), "no `{shown}` in:\n{text}");
        }
    }

    #[test]
    fn the_metrics_page_lists_every_series_with_its_type_and_labels() {
        let page = include_str!("../../docs/metrics.md");
        for (name, kind, labels) in SERIES {
            let shown = match *kind {
                "counter" => format!("{name}_total"),
                _ => (*name).to_owned(),
            };
            let labels = if labels.is_empty() {
                "—".to_owned()
            } else {
                labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let row = format!("| `{shown}` | {kind} | {labels} |");
            assert!(page.contains(&row), "docs/metrics.md has no row `{row}`");
        }
    }

    #[test]
    fn refusals_count_under_the_route_asked_for() {
        let config = crate::config::Config::parse(
            std::path::Path::new("/srv/routes.toml"),
            "[[route]]\nname = \"chat\"\nmatch = \"/chat/*\"\nprotocols = [\"chat\"]\ncontroller = \"c.wasm\"\n",
        )
        .unwrap();
        let mut request = Request::get(&[("sec-websocket-protocol", "chat")]);
        request.path = "/chat/lobby".to_owned();
        assert_eq!(requested_route(&config.routes, &request), Some("chat"));
        request.path = "/nowhere".to_owned();
        assert_eq!(requested_route(&config.routes, &request), None);
    }
}
