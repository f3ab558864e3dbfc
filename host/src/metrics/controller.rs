//! The handles of one controller's series, held by its actor: made once, so a call into
//! the guest costs a histogram observation and two plain stores, no label lookup.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{ExportLabels, Metrics, PathLabels};

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

/// How a data message reached a controller's `on-message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagePath {
    /// Called by the connection's own task, the controller being free.
    Inline,
    /// Through the controller's event queue and its actor.
    Queued,
}

impl MessagePath {
    fn label(self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::Queued => "queued",
        }
    }
}

/// One controller's series, as whoever holds its lock updates them.
#[derive(Debug)]
pub struct ControllerMeter {
    metrics: Arc<Metrics>,
    name: String,
    /// Parallel to [`EXPORTS`]; made at an export's first call, so the exports a
    /// component lacks show no series.
    calls: [Option<Histogram>; EXPORTS.len()],
    /// The messages counters, by [`MessagePath`] (inline, queued).
    messages: [Counter; 2],
    /// The current instance's timers and memory, listed for scrapes until the meter is
    /// dropped.
    instance: Arc<InstanceCells>,
}

/// The timers and memory of one actor's current instance, written by the actor alone
/// (plain stores) and read by scrapes.
#[derive(Debug, Default)]
pub(super) struct InstanceCells {
    pub(super) controller: String,
    pub(super) timers: AtomicU64,
    pub(super) memory: AtomicU64,
}

/// The instance cells of every running actor. Two actors of one name (a routes.toml
/// reload that moved a controller to a new file, while the old one still serves its
/// last connections) are summed: both instances exist.
#[derive(Debug, Default)]
pub(super) struct Instances(Mutex<Vec<Arc<InstanceCells>>>);

impl Instances {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<InstanceCells>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each controller with the timers and memory of its running instances.
    pub(super) fn totals(&self) -> BTreeMap<String, (u64, u64)> {
        let mut totals = BTreeMap::new();
        for cells in self.lock().iter() {
            let total: &mut (u64, u64) = totals.entry(cells.controller.clone()).or_default();
            total.0 += cells.timers.load(Ordering::Relaxed);
            total.1 += cells.memory.load(Ordering::Relaxed);
        }
        totals
    }
}

impl ControllerMeter {
    /// The handles of controller `name`'s series.
    pub fn new(metrics: Arc<Metrics>, name: &str) -> Self {
        let instance = Arc::new(InstanceCells {
            controller: name.to_owned(),
            ..InstanceCells::default()
        });
        metrics.live.instances.lock().push(instance.clone());
        let messages = [MessagePath::Inline, MessagePath::Queued].map(|path| {
            metrics.messages.get_or_create_owned(&PathLabels {
                controller: name.to_owned(),
                path: path.label(),
            })
        });
        Self {
            metrics,
            name: name.to_owned(),
            calls: Default::default(),
            messages,
            instance,
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

    /// A data message reached `on-message` by `path`.
    pub fn message(&self, path: MessagePath) {
        self.messages[path as usize].inc();
    }

    /// The current instance has `timers` pending timers and `memory` bytes of memories
    /// and tables.
    pub fn instance(&self, timers: usize, memory: usize) {
        self.instance.timers.store(timers as u64, Ordering::Relaxed);
        self.instance.memory.store(memory as u64, Ordering::Relaxed);
    }
}

/// An actor that has ended holds no instance: it leaves the list.
impl Drop for ControllerMeter {
    fn drop(&mut self) {
        self.metrics
            .live
            .instances
            .lock()
            .retain(|cells| !Arc::ptr_eq(cells, &self.instance));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_of_one_name_are_summed_until_their_actors_end() {
        let metrics = Arc::new(Metrics::new());
        let old = ControllerMeter::new(metrics.clone(), "chat");
        let new = ControllerMeter::new(metrics.clone(), "chat");
        let other = ControllerMeter::new(metrics.clone(), "echo");
        old.instance(2, 1000);
        new.instance(1, 500);
        other.instance(0, 70);
        let totals = metrics.live.instances.totals();
        assert_eq!(totals["chat"], (3, 1500));
        assert_eq!(totals["echo"], (0, 70));
        drop(old);
        drop(other);
        let totals = metrics.live.instances.totals();
        assert_eq!(totals["chat"], (1, 500));
        assert!(!totals.contains_key("echo"), "{totals:?}");
    }
}
