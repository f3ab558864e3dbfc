//! The handles of one controller's series, held by its actor: made once, so a call into
//! the guest costs a histogram observation and two gauge stores, no label lookup.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{ControllerLabels, ExportLabels, Metrics};

/// The exports whose calls are timed; `on-message` first, since it is by far the most
/// frequent and [`ControllerMeter::called`] finds an export by a scan of this list.
const EXPORTS: [&str; 9] = [
    "on-message",
    "on-open",
    "on-close",
    "on-error",
    "on-timer",
    "on-handshake",
    "on-first-open",
    "on-last-close",
    "on-shutdown",
];

/// One controller's series, as its actor updates them.
#[derive(Debug)]
pub struct ControllerMeter {
    metrics: Arc<Metrics>,
    name: String,
    /// Parallel to [`EXPORTS`]; made at an export's first call, so the exports a
    /// component lacks show no series.
    calls: [Option<Histogram>; EXPORTS.len()],
    timers: Gauge,
    memory: Gauge,
}

impl ControllerMeter {
    /// The handles of controller `name`'s series.
    pub fn new(metrics: Arc<Metrics>, name: &str) -> Self {
        let labels = ControllerLabels {
            controller: name.to_owned(),
        };
        let timers = metrics.timers.get_or_create_owned(&labels);
        let memory = metrics.memory.get_or_create_owned(&labels);
        Self {
            metrics,
            name: name.to_owned(),
            calls: Default::default(),
            timers,
            memory,
        }
    }

    /// The controller's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metrics these handles belong to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A call into `export` that started at `started` has returned (or trapped).
    pub fn called(&mut self, export: &str, started: Instant) {
        let took = started.elapsed().as_secs_f64();
        let Some(i) = EXPORTS.iter().position(|e| *e == export) else {
            return;
        };
        let histogram = self.calls[i].get_or_insert_with(|| {
            self.metrics.calls.get_or_create_owned(&ExportLabels {
                controller: self.name.clone(),
                export: export.to_owned(),
            })
        });
        histogram.observe(took);
    }

    /// The current instance has `timers` pending timers and `memory` bytes of memories
    /// and tables.
    pub fn instance(&self, timers: usize, memory: usize) {
        self.timers.set(i64::try_from(timers).unwrap_or(i64::MAX));
        self.memory.set(i64::try_from(memory).unwrap_or(i64::MAX));
    }
}

/// A controller whose actor has ended holds no instance: its gauges fall to zero (a
/// controller of the same name that is still running sets them again at its next call).
impl Drop for ControllerMeter {
    fn drop(&mut self) {
        self.instance(0, 0);
    }
}
