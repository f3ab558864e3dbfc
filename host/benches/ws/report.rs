//! Collects the samples and writes them out: a Markdown table (min / median / max per
//! figure, runtime setting and server, plus the ratio to the native baseline in the same
//! setting where there is one), the derived efficiency rows (native CPU per message ÷
//! the server's, run by run), the cost ladder's own table (figure (j), each rung against
//! the one below), and an SVG bar chart of the throughput figures relative to native.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::rungs::Rung;
use crate::servers::{Cores, NATIVE};

/// The measured figures, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Figure {
    PingPong1,
    PingPong1P50,
    PingPong1P99,
    PingPong1Cpu,
    PingPong1Efficiency,
    PingPong100,
    PingPong100P99,
    PingPong100Cpu,
    PingPong100Efficiency,
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
    Ladder,
    LadderCpu,
    LadderInstructions,
}

impl Figure {
    fn title(self) -> &'static str {
        match self {
            Self::PingPong1 => "(a) ping-pong, 1 connection, 32 B text",
            Self::PingPong1P50 => "(a) latency p50",
            Self::PingPong1P99 => "(a) latency p99",
            Self::PingPong1Cpu => "(a) server CPU per message",
            Self::PingPong1Efficiency => "(a) efficiency: native CPU/msg ÷ server CPU/msg",
            Self::PingPong100 => "(b) ping-pong, 100 connections",
            Self::PingPong100P99 => "(b) latency p99",
            Self::PingPong100Cpu => "(b) server CPU per message",
            Self::PingPong100Efficiency => "(b) efficiency: native CPU/msg ÷ server CPU/msg",
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
            Self::Ladder => "(j) cost ladder: 32 B ping-pong, 100 connections",
            Self::LadderCpu => "(j) cost ladder: server CPU per message",
            Self::LadderInstructions => {
                "(j) cost ladder: instructions per message (callgrind, all threads)"
            }
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
                | Self::Ladder
        )
    }

    /// The derived efficiency figure of a CPU-per-message figure.
    fn efficiency(self) -> Option<Self> {
        match self {
            Self::PingPong1Cpu => Some(Self::PingPong1Efficiency),
            Self::PingPong100Cpu => Some(Self::PingPong100Efficiency),
            _ => None,
        }
    }
}

/// A figure's row title: the figure, and the runtime setting when it has one.
fn title(figure: Figure, cores: Option<Cores>) -> String {
    let setting = match cores {
        Some(Cores::One) => ", server on 1 core",
        Some(Cores::All) => ", server on all cores",
        None => "",
    };
    format!("{}{setting}", figure.title())
}

/// Samples of one figure, setting and server: the unit, and the values in run order.
type Samples = BTreeMap<(Figure, Option<Cores>, String), (String, Vec<f64>)>;

/// Every sample of one run of the bench.
pub(crate) struct Report {
    runs: usize,
    samples: Samples,
    order: Vec<String>,
    /// What the report should say it left out or shortened, and why.
    notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(runs: usize) -> Self {
        Self {
            runs,
            samples: BTreeMap::new(),
            order: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A sample of a figure that has no runtime setting (the server on core 0).
    pub(crate) fn add(&mut self, figure: Figure, server: &str, unit: &str, value: f64) {
        self.add_at(figure, None, server, unit, value);
    }

    /// A sample of a figure measured with the server on `cores`.
    pub(crate) fn add_at(
        &mut self,
        figure: Figure,
        cores: Option<Cores>,
        server: &str,
        unit: &str,
        value: f64,
    ) {
        if !self.order.iter().any(|s| s == server) {
            self.order.push(server.to_owned());
        }
        self.samples
            .entry((figure, cores, server.to_owned()))
            .or_insert_with(|| (unit.to_owned(), Vec::new()))
            .1
            .push(value);
    }

    /// A line for the report's notes (what was shortened or could not be measured).
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn median(&self, figure: Figure, cores: Option<Cores>, server: &str) -> Option<f64> {
        median_of(&self.samples, figure, cores, server)
    }

    /// The samples with the derived efficiency rows added: for each run, native's CPU
    /// per message ÷ the server's, in the same setting (runs are interleaved, so run
    /// `i` of each server ran at about the same time).
    fn with_efficiency(&self) -> Samples {
        let mut samples = self.samples.clone();
        for ((figure, cores, server), (_, values)) in &self.samples {
            let Some(efficiency) = figure.efficiency() else {
                continue;
            };
            let native = self.samples.get(&(*figure, *cores, NATIVE.to_owned()));
            let Some((_, native)) = native.filter(|_| server != NATIVE) else {
                continue;
            };
            let ratios = if native.len() == values.len() {
                native.iter().zip(values).map(|(n, v)| n / v).collect()
            } else {
                let n = median_of(&self.samples, *figure, *cores, NATIVE).unwrap_or(0.0);
                let v = median_of(&self.samples, *figure, *cores, server).unwrap_or(1.0);
                vec![n / v]
            };
            samples.insert(
                (efficiency, *cores, server.clone()),
                ("×".to_owned(), ratios),
            );
        }
        samples
    }

    pub(crate) fn write(&self, dir: &Path, took: Duration) -> Result<()> {
        let mut md = format!(
            "Measured by `cargo bench -p wshost --bench ws` ({} run(s) per figure, took {:.0} s). \
             Client on core 1, loopback. \"server on 1 core\": the server pinned to core 0 \
             (one tokio worker); \"server on all cores\": free on every core, the \
             client's included (a multi-worker runtime); rows without either: on core 0. \
             CPU per message: the server's threads' time on a CPU (`/proc/PID/task/*/schedstat`) \
             over the timed window ÷ the messages echoed in it. Efficiency: native's CPU per \
             message ÷ the server's, run by run, same setting (≥ 1 would beat native). \
             The machine is shared: trust CPU per message and instructions over rates.\n\n\
             | figure | server | min | median | max | unit | vs native (median) |\n\
             |---|---|---:|---:|---:|---|---:|\n",
            self.runs,
            took.as_secs_f64()
        );
        let samples = self.with_efficiency();
        for ((figure, cores, server), (unit, values)) in &samples {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let median = v[v.len() / 2];
            let ratio = match self.median(*figure, *cores, NATIVE) {
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
                title(*figure, *cores),
                fmt(v[0]),
                fmt(median),
                fmt(v[v.len() - 1]),
            );
        }
        md.push_str(&self.ladder());
        if !self.notes.is_empty() {
            md.push_str("\nNotes:\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
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
        let cores = self.setting_of(figure);
        let native = self.median(figure, cores, NATIVE)?;
        Some(self.median(figure, cores, server)? / native)
    }

    /// The setting the chart shows a figure in: on 1 core when it has settings.
    fn setting_of(&self, figure: Figure) -> Option<Cores> {
        let pinned = self
            .samples
            .keys()
            .any(|(f, c, _)| *f == figure && *c == Some(Cores::One));
        pinned.then_some(Cores::One)
    }

    /// Figure (j) as its own table: each rung's medians and what it adds to the rung
    /// below; then any other build measured the same way (`--compare`), against
    /// `wshost`.
    fn ladder(&self) -> String {
        let mut names: Vec<String> = Rung::ALL.iter().map(|r| r.name().to_owned()).collect();
        let others = self.samples.keys().filter(|(f, _, s)| {
            matches!(
                f,
                Figure::Ladder | Figure::LadderCpu | Figure::LadderInstructions
            ) && !names.contains(s)
        });
        let mut others: Vec<String> = others.map(|(_, _, s)| s.clone()).collect();
        others.sort();
        others.dedup();
        if !self.samples.keys().any(|(f, _, _)| *f == Figure::Ladder) && others.is_empty() {
            return String::new();
        }
        let columns = [
            (Figure::Ladder, Some(Cores::One)),
            (Figure::LadderCpu, Some(Cores::One)),
            (Figure::Ladder, Some(Cores::All)),
            (Figure::LadderCpu, Some(Cores::All)),
            (Figure::LadderInstructions, None),
        ];
        let mut md = String::from(
            "\n### (j) cost ladder: 32 B ping-pong on 100 connections, medians\n\n\
             Each rung adds one thing to the rung above it in the table; \"+\" columns are the \
             difference from that rung (for `--compare` builds: from `wshost`). \
             Instructions: callgrind, all server threads, (10 connections × 1,200 − × 200 round \
             trips) ÷ 10,000 messages.\n\n\
             | rung | adds | msgs/s, 1 core | CPU/msg µs, 1 core | + | msgs/s, all cores | \
             CPU/msg µs, all cores | + | instructions/msg | + |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut below: Option<String> = None;
        names.append(&mut others);
        for name in &names {
            let rung = Rung::ALL.into_iter().find(|r| r.name() == name);
            let base = match rung {
                Some(_) => below.clone(),
                None => Some(Rung::Wshost.name().to_owned()),
            };
            let adds = rung.map_or("another build (`--compare`)", Rung::adds);
            let mut row = format!("| {name} | {adds} |");
            for (figure, cores) in columns {
                let value = self.median(figure, cores, name);
                let _ = write!(row, " {} |", value.map(fmt).unwrap_or_default());
                if figure != Figure::Ladder {
                    let step = value
                        .zip(base.as_deref().and_then(|b| self.median(figure, cores, b)))
                        .map(|(v, b)| Signed(v - b).to_string())
                        .unwrap_or_default();
                    let _ = write!(row, " {step} |");
                }
            }
            md.push_str(&row);
            md.push('\n');
            if rung.is_some() {
                below = Some(name.clone());
            }
        }
        md
    }
}

/// The median of one figure's samples for `server` in `cores`.
fn median_of(samples: &Samples, figure: Figure, cores: Option<Cores>, server: &str) -> Option<f64> {
    let (_, values) = samples.get(&(figure, cores, server.to_owned()))?;
    let mut v = values.clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// A difference, formatted as [`fmt`] does with its sign.
struct Signed(f64);

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0.0 { "−" } else { "+" };
        write!(f, "{sign}{}", fmt(self.0.abs()))
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
