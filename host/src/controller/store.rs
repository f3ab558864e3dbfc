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
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::TimersHost;
use super::limiter::Budget;
use super::stdio::{GuestOutput, Stream};
use super::timers::Timers;
use super::{ConnectionId, ConnectionInfo, OutboundHandle};
use crate::limits::Sandbox;
use crate::topics::Hub;

/// Store data of one controller instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance limits.
    pub(crate) limits: Budget,
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
    /// The connection whose `on-close` (and `on-last-close`) is running: it has left
    /// the table by then, but its span and `topic` still apply to the call.
    pub(crate) leaving: Option<ConnEntry>,
    /// The process's topics.
    pub(crate) hub: Arc<Hub>,
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

impl TimersHost for HostState {
    fn set_timer(&mut self, delay_ms: u64, repeat: bool) -> Result<u64, String> {
        let delay = Duration::from_millis(delay_ms);
        self.timers
            .set(Instant::now(), delay, repeat)
            .map_err(|e| e.to_string())
    }

    fn cancel_timer(&mut self, id: u64) -> bool {
        self.timers.cancel(id)
    }
}

impl HostState {
    /// Fresh state with the WASI sandbox: no files, no environment, no network, guest
    /// stdout/stderr to the log; memories and tables within `sandbox.memory_bytes`,
    /// at most `sandbox.max_timers` timers.
    pub(crate) fn new(name: Arc<str>, sandbox: &Sandbox, hub: Arc<Hub>) -> Self {
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
            limits: Budget::new(sandbox.memory_bytes),
            name,
            conns: BTreeMap::new(),
            timers: Timers::new(sandbox.max_timers),
            call: None,
            calling,
            leaving: None,
            hub,
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

    /// Whether an export call started and did not end: between [`start_call`] and
    /// [`end_call`], or after a call whose future was dropped before it returned.
    pub(crate) fn in_call(&self) -> bool {
        self.call.is_some()
    }

    /// Names the connection whose event the next call handles (`None`: no connection).
    pub(crate) fn set_calling(&mut self, conn: Option<ConnectionId>) {
        self.calling.store(conn.unwrap_or(0), Ordering::Relaxed);
    }

    /// The span of the connection whose event is being handled, if any: the context of
    /// what the guest logs. (Calls do not enter it: entering a span per call costs more
    /// than the rest of a small message's handling, and most calls log nothing.)
    pub(crate) fn calling_span(&self) -> Option<&tracing::Span> {
        self.calling_entry().map(|entry| &entry.span)
    }

    /// The connection whose event is being handled, if any (also during its `on-close`).
    pub(crate) fn calling_entry(&self) -> Option<&ConnEntry> {
        let id = self.calling.load(Ordering::Relaxed);
        match self.conns.get(&id) {
            Some(entry) => Some(entry),
            None if id != 0 => self.leaving.as_ref().filter(|e| e.info.id == id),
            None => None,
        }
    }
}

/// Arms `deadline` for the export call about to start; returns when it started.
pub(crate) fn start_call(store: &mut Store<HostState>, deadline: Duration) -> std::time::Instant {
    let started = std::time::Instant::now();
    store.data_mut().call = Some((started, deadline));
    store.set_epoch_deadline(1);
    started
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
    fn set_timer_past_the_cap_is_an_error_the_guest_sees() {
        let sandbox = Sandbox {
            max_timers: 2,
            ..Sandbox::default()
        };
        let mut state = HostState::new("t".into(), &sandbox, Arc::default());
        let first = state.set_timer(10, false).unwrap();
        state.set_timer(10, true).unwrap();
        let error = state.set_timer(10, false).unwrap_err();
        assert!(error.contains("max-timers"), "{error}");
        assert!(state.cancel_timer(first));
        assert!(state.set_timer(10, false).is_ok());
    }
}
