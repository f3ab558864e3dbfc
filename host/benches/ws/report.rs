//! Collects the samples and writes them out: a Markdown table (min / median / max per
//! figure and server, plus the ratio to the native baseline where there is one) and an
//! SVG bar chart of the throughput figures relative to native.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

/// The measured figures, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Figure {
    PingPong1,
    PingPong1P50,
    PingPong1P99,
    PingPong100,
    PingPong100P99,
    Stream,
    Broadcast,
    IdleMemory,
    Handshakes,
    Reload,
    ColdStart,
    LangSize,
    LangCompile,
    LangInstantiate,
    LangStart,
    LangRelay,
    LangRelayCpu,
    FanOut,
    FanOutP50,
    FanOutP99,
    FanOutFirstLocal,
    FanOutFirstRemote,
    FanOutCpu,
    FanOutNatsCpu,
    FanOutNodeCpu,
    FanOutOtherNodeCpu,
    FanOutClientCpu,
}

impl Figure {
    fn title(self) -> &'static str {
        match self {
            Self::PingPong1 => "(a) ping-pong, 1 connection, 32 B text",
            Self::PingPong1P50 => "(a) latency p50",
            Self::PingPong1P99 => "(a) latency p99",
            Self::PingPong100 => "(b) ping-pong, 100 connections",
            Self::PingPong100P99 => "(b) latency p99",
            Self::Stream => "(c) 1 MiB binary messages, 1 connection",
            Self::Broadcast => "(d) broadcast to 1,000 connections (chat controller)",
            Self::IdleMemory => "(e) server memory per idle connection (10,000 open)",
            Self::Handshakes => "(f) opening + closing handshakes, 16 at a time",
            Self::Reload => "(g) hot reload: file renamed → first reply from the new version",
            Self::ColdStart => "(g) start to listening (echo + chat)",
            Self::LangSize => "(h) chat controller: .wasm size",
            Self::LangCompile => "(h) chat controller: compile (`wshost check`)",
            Self::LangInstantiate => "(h) chat controller: instantiate",
            Self::LangStart => "(h) chat controller: start to listening",
            Self::LangRelay => "(h) chat relay, 1 message in flight, p50",
            Self::LangRelayCpu => "(h) chat relay: server CPU per relayed message",
            Self::FanOut => {
                "(i) fan-out of one publisher's 32 B binary messages, 1,000 subscribers per node"
            }
            Self::FanOutP50 => "(i) publish → deliver, one message in flight, p50",
            Self::FanOutP99 => "(i) publish → deliver, one message in flight, p99",
            Self::FanOutFirstLocal => "(i) publish → first delivery on the publisher's node, p50",
            Self::FanOutFirstRemote => "(i) publish → first delivery on another node, p50",
            Self::FanOutCpu => "(i) server CPU per delivery (wshost nodes + NATS)",
            Self::FanOutNatsCpu => "(i) of which NATS",
            Self::FanOutNodeCpu => "(i) CPU per local delivery: the publisher's node",
            Self::FanOutOtherNodeCpu => "(i) CPU per local delivery: a node without the publisher",
            Self::FanOutClientCpu => "(i) client CPU per delivery (1 core: 1,000 to 3,000 sockets)",
        }
    }

    /// Whether a bigger number is better (for the ratio column).
    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Self::PingPong1
                | Self::PingPong100
                | Self::Stream
                | Self::Broadcast
                | Self::Handshakes
                | Self::FanOut
        )
    }
}

/// Every sample of one run of the bench.
pub(crate) struct Report {
    runs: usize,
    samples: BTreeMap<(Figure, String), (String, Vec<f64>)>,
    order: Vec<String>,
}

const NATIVE: &str = "native tokio-tungstenite";

impl Report {
    pub(crate) fn new(runs: usize) -> Self {
        Self {
            runs,
            samples: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, figure: Figure, server: &str, unit: &str, value: f64) {
        if !self.order.iter().any(|s| s == server) {
            self.order.push(server.to_owned());
        }
        self.samples
            .entry((figure, server.to_owned()))
            .or_insert_with(|| (unit.to_owned(), Vec::new()))
            .1
            .push(value);
    }

    fn median(&self, figure: Figure, server: &str) -> Option<f64> {
        let (_, values) = self.samples.get(&(figure, server.to_owned()))?;
        let mut v = values.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    pub(crate) fn write(&self, dir: &Path, took: Duration) -> Result<()> {
        let mut md = format!(
            "Measured by `cargo bench -p wshost --bench ws` ({} run(s) per figure, took {:.0} s). \
             Servers on core 0, client on core 1, loopback.\n\n\
             | figure | server | min | median | max | unit | vs native (median) |\n\
             |---|---|---:|---:|---:|---|---:|\n",
            self.runs,
            took.as_secs_f64()
        );
        for ((figure, server), (unit, values)) in &self.samples {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let median = v[v.len() / 2];
            let ratio = match self.median(*figure, NATIVE) {
                Some(native) if server != NATIVE && native > 0.0 => {
                    let r = if figure.higher_is_better() {
                        median / native
                    } else {
                        native / median
                    };
                    format!("{r:.2}×")
                }
                _ => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {server} | {} | {} | {} | {unit} | {ratio} |",
                figure.title(),
                fmt(v[0]),
                fmt(median),
                fmt(v[v.len() - 1]),
            );
        }
        std::fs::write(dir.join("results.md"), md)?;
        std::fs::write(dir.join("chart.svg"), self.chart())?;
        Ok(())
    }

    /// Grouped bars: throughput figures, each server's median relative to native.
    fn chart(&self) -> String {
        let figures = [
            (Figure::PingPong1, "(a) 1-conn ping-pong"),
            (Figure::PingPong100, "(b) 100-conn ping-pong"),
            (Figure::Stream, "(c) 1 MiB stream"),
            (Figure::Handshakes, "(f) handshakes"),
        ];
        // The servers with a bar: not the other figures' series (languages, setups),
        // which would take legend entries and bar width.
        let servers: Vec<&String> = self
            .order
            .iter()
            .filter(|s| figures.iter().any(|(f, _)| self.relative(*f, s).is_some()))
            // Variants of wshost (cache, metrics) have rows in the table, not bars here.
            .filter(|s| !s.starts_with("wshost, "))
            .collect();
        let colors = ["#2b6cb0", "#718096", "#38a169", "#d69e2e", "#e53e3e"];
        let (w, h, left, bottom, top) = (760.0, 360.0, 60.0, 60.0, 40.0);
        let group = (w - left - 20.0) / figures.len() as f64;
        let bar = group * 0.8 / servers.len().max(1) as f64;
        let max = figures
            .iter()
            .flat_map(|(f, _)| servers.iter().filter_map(|s| self.relative(*f, s)))
            .fold(1.0f64, f64::max)
            * 1.1;
        let y = |v: f64| h - bottom - (v / max) * (h - bottom - top);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"20\" font-size=\"14\">Throughput relative to native tokio-tungstenite (median, higher is better)</text>\n"
        );
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5] {
            if tick > max {
                break;
            }
            let ty = y(tick);
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
                w - 20.0,
                left - 6.0,
                ty + 4.0,
                tick * 100.0
            );
        }
        for (g, (figure, label)) in figures.iter().enumerate() {
            let gx = left + g as f64 * group + group * 0.1;
            for (i, server) in servers.iter().enumerate() {
                if let Some(v) = self.relative(*figure, server) {
                    let x = gx + i as f64 * bar;
                    let _ = writeln!(
                        svg,
                        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                        y(v),
                        bar * 0.9,
                        h - bottom - y(v),
                        colors[i % colors.len()]
                    );
                }
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                gx + group * 0.4,
                h - bottom + 16.0
            );
        }
        for (i, server) in servers.iter().enumerate() {
            let lx = left + i as f64 * 170.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{server}</text>",
                h - 24.0,
                colors[i % colors.len()],
                lx + 16.0,
                h - 14.0
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    fn relative(&self, figure: Figure, server: &str) -> Option<f64> {
        let native = self.median(figure, NATIVE)?;
        Some(self.median(figure, server)? / native)
    }
}

/// A number with sensible precision for the table.
fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
