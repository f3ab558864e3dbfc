//! The data of one controller instance's wasmtime `Store`: the WASI sandbox, resource
//! limits, the connection table, the instance's timers, and the per-call deadline.
//!
//! The connection table outlives instances (it moves to the replacement after a trap or
//! a reload); the timers and the WASI context do not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::TimersHost;
use super::stdio::{GuestOutput, Stream};
use super::{ConnectionId, ConnectionInfo, OutboundHandle};

/// Store data of one controller instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) name: Arc<str>,
    /// Connections open on this controller; survives instance replacement.
    pub(crate) conns: BTreeMap<ConnectionId, ConnEntry>,
    /// This instance's timers.
    pub(crate) timers: Timers,
    /// When the current export call started and how long it may run; `None` between
    /// calls.
    call: Option<(std::time::Instant, Duration)>,
    /// The connection whose event the current call handles (0: none), shared with the
    /// guest's stdout/stderr so their lines name it.
    calling: Arc<AtomicU64>,
    /// The span of the connection whose `on-close` (and `on-last-close`) is running: it
    /// has left the table by then.
    pub(crate) leaving: Option<tracing::Span>,
}

/// One connection as the controller sees it.
pub(crate) struct ConnEntry {
    pub(crate) info: Arc<ConnectionInfo>,
    pub(crate) outbound: OutboundHandle,
    pub(crate) span: tracing::Span,
    /// Deadline of calls for this connection's events (its route's `call-deadline-ms`).
    pub(crate) deadline: Duration,
    /// The controller called `close`: no longer listed, sent to, or given messages.
    pub(crate) closing: bool,
}

/// Pending timers of one instance.
#[derive(Default)]
pub(crate) struct Timers {
    next_id: u64,
    pending: BTreeMap<u64, Timer>,
}

struct Timer {
    due: Instant,
    period: Option<Duration>,
}

impl Timers {
    /// When the earliest timer is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|t| t.due).min()
    }

    /// Takes the ids of the timers due at `now`, in due order, rescheduling the
    /// repeating ones (from `now` if they fell behind, so a slow guest is not flooded).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<u64> {
        let mut due: Vec<(Instant, u64)> = self
            .pending
            .iter()
            .filter(|(_, t)| t.due <= now)
            .map(|(id, t)| (t.due, *id))
            .collect();
        due.sort();
        for (_, id) in &due {
            let timer = self.pending.get_mut(id).expect("listed above");
            match timer.period {
                Some(period) => timer.due = (timer.due + period).max(now),
                None => {
                    self.pending.remove(id);
                }
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

impl TimersHost for HostState {
    fn set_timer(&mut self, delay_ms: u64, repeat: bool) -> u64 {
        let delay = Duration::from_millis(delay_ms);
        let timers = &mut self.timers;
        timers.next_id += 1;
        let id = timers.next_id;
        let period = repeat.then(|| delay.max(Duration::from_millis(1)));
        timers.pending.insert(
            id,
            Timer {
                due: Instant::now() + delay,
                period,
            },
        );
        id
    }

    fn cancel_timer(&mut self, id: u64) -> bool {
        self.timers.pending.remove(&id).is_some()
    }
}

impl HostState {
    /// Fresh state with the WASI sandbox: no files, no environment, no network, guest
    /// stdout/stderr to the log; linear memory capped at `memory_bytes`.
    pub(crate) fn new(name: Arc<str>, memory_bytes: usize) -> Self {
        let calling = Arc::new(AtomicU64::new(0));
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(
                name.clone(),
                Stream::Stdout,
                calling.clone(),
            ))
            .stderr(GuestOutput::new(
                name.clone(),
                Stream::Stderr,
                calling.clone(),
            ))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            name,
            conns: BTreeMap::new(),
            timers: Timers::default(),
            call: None,
            calling,
            leaving: None,
        }
    }

    /// Called at each epoch tick while the guest runs: yield to the runtime, or trap
    /// once the call has run past its deadline.
    pub(crate) fn on_epoch_tick(&self) -> wasmtime::Result<UpdateDeadline> {
        match self.call {
            Some((started, deadline)) if started.elapsed() > deadline => {
                Err(DeadlineExceeded(deadline).into())
            }
            _ => Ok(UpdateDeadline::Yield(1)),
        }
    }

    /// Names the connection whose event the next call handles (`None`: no connection).
    pub(crate) fn set_calling(&mut self, conn: Option<ConnectionId>) {
        self.calling.store(conn.unwrap_or(0), Ordering::Relaxed);
    }

    /// The span of the connection whose event is being handled, if any: the context of
    /// what the guest logs. (Calls do not enter it: entering a span per call costs more
    /// than the rest of a small message's handling, and most calls log nothing.)
    pub(crate) fn calling_span(&self) -> Option<&tracing::Span> {
        let id = self.calling.load(Ordering::Relaxed);
        match self.conns.get(&id) {
            Some(entry) => Some(&entry.span),
            None if id != 0 => self.leaving.as_ref(),
            None => None,
        }
    }
}

/// Arms `deadline` for the export call about to start.
pub(crate) fn start_call(store: &mut Store<HostState>, deadline: Duration) {
    store.data_mut().call = Some((std::time::Instant::now(), deadline));
    store.set_epoch_deadline(1);
}

/// Disarms it after the call.
pub(crate) fn end_call(store: &mut Store<HostState>) {
    store.data_mut().call = None;
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trap raised when an export call runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("call ran longer than its {0:?} deadline")]
pub(crate) struct DeadlineExceeded(Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_and_repeating_timers() {
        let mut state = HostState::new("t".into(), 1 << 20);
        let once = state.set_timer(10, false);
        let every = state.set_timer(5, true);
        let t0 = Instant::now();
        assert_eq!(state.timers.take_due(t0), Vec::<u64>::new());
        assert_eq!(
            state.timers.take_due(t0 + Duration::from_millis(5)),
            [every]
        );
        assert_eq!(
            state.timers.take_due(t0 + Duration::from_millis(10)),
            [once, every]
        );
        assert!(state.cancel_timer(every));
        assert!(!state.cancel_timer(once), "a fired one-shot timer is gone");
        assert_eq!(state.timers.next_due(), None);
    }
}
