//! A controller's [`Core`]: its wasmtime `Store` and instance and everything handling an
//! event needs, behind the controller's one lock, and how each event becomes calls into
//! the guest.
//!
//! Whoever holds the lock calls one export at a time: the actor task for queued events
//! and timers ([`super::actor`]), or a connection task for its own data message when the
//! controller was free ([`super::ControllerHandle::call_inline`]). The lock is what keeps
//! an instance from being entered twice, so the guest needs no locks and the connection
//! table lives in the store data without a mutex of its own.
//!
//! When an export traps, the connection whose event caused it gets 1011 at once and the
//! instance is marked broken (a trapped instance can never be entered again). The actor
//! replaces it before anything enters it again, with a fresh instance from the same
//! `InstancePre` that inherits the connection table, so every other connection stays
//! open; a controller that keeps trapping is restarted with growing backoff (events wait
//! in its queue, and its clients' sockets stop being read) instead of in a hot loop. The
//! replacement runs on the actor even when the trap happened on a connection's task, so
//! that task is free to write its 1011 and close. A call whose future was dropped before
//! it returned (only possible when the runtime itself shuts down: no task that calls is
//! ever aborted) leaves its store marked as in a call, and counts as broken the same way.
//!
//! A hot reload swaps in a new version the same way, between two events, carrying guest
//! state across when both versions support `snapshot`/`restore`.
//!
//! Every call runs under a deadline (the connection's route's `call-deadline-ms`, or the
//! controller's widest for calls that belong to no connection); the epoch ticker makes
//! a long call yield to the runtime every tick, so a spinning guest delays nobody else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wasmtime::Store;

use super::bindings::{HandshakeRequest, HandshakeResponse, WitMessageRef};
use super::component::{Instance, Loaded, pairs};
use super::engine::Runtime;
use super::store::{ConnEntry, HostState, end_call, start_call};
use super::{ConnectionId, ConnectionInfo, Event, Outbound, Reload};
use crate::metrics::{ControllerMeter, MessagePath};
use crate::request::{Attributes, CloseReason, Rejection};

mod swap;

/// Close reason sent with 1011 when the controller trapped on the connection's event.
const TRAP_REASON: &str = "controller error";

/// Traps within this window count towards the restart backoff.
const TRAP_WINDOW: Duration = Duration::from_secs(60);

/// Traps in the window that restart at once; each further one doubles the wait.
const FREE_RESTARTS: usize = 3;

/// The first backoff wait, and the longest.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One export call.
enum Call {
    FirstOpen(ConnectionId),
    Open(ConnectionId),
    /// A data message, lent to the guest as it came off the socket.
    Message(ConnectionId, Message),
    Error(ConnectionId, String),
    Close(ConnectionId, u16, String),
    LastClose(ConnectionId),
    Timer(u64),
    Shutdown,
}

impl Call {
    fn export(&self) -> &'static str {
        match self {
            Self::FirstOpen(_) => "on-first-open",
            Self::Open(_) => "on-open",
            Self::Message(..) => "on-message",
            Self::Error(..) => "on-error",
            Self::Close(..) => "on-close",
            Self::LastClose(_) => "on-last-close",
            Self::Timer(_) => "on-timer",
            Self::Shutdown => "on-shutdown",
        }
    }

    /// The connection whose event this is, if any: it is the one closed on a trap.
    fn connection(&self) -> Option<ConnectionId> {
        match self {
            Self::FirstOpen(id)
            | Self::Open(id)
            | Self::Message(id, _)
            | Self::Error(id, _)
            | Self::Close(id, ..)
            | Self::LastClose(id) => Some(*id),
            Self::Timer(_) | Self::Shutdown => None,
        }
    }
}

/// What handling an event needs: the instance and its store, and the controller's
/// bookkeeping around calls. One per controller, behind its lock.
pub(crate) struct Core {
    runtime: Runtime,
    loaded: Loaded,
    store: Store<HostState>,
    instance: Instance,
    /// Shared with the handles: whether the current version has a handshake hook.
    handshake_hook: Arc<AtomicBool>,
    /// When the recent traps happened (within [`TRAP_WINDOW`]).
    traps: VecDeque<Instant>,
    /// The controller's span. The actor enters it for everything but the events of
    /// single messages, whose calls log under their connection's span (see
    /// [`HostState::calling_span`]): entering a span per message costs more than the
    /// rest of a small message's trip.
    span: tracing::Span,
    /// The handles of the controller's series, when the server keeps metrics.
    meter: Option<ControllerMeter>,
    /// A call trapped: the instance must not be entered again before the actor
    /// replaced it.
    broken: bool,
    /// When the actor's timer sleep ends (`None`: it waits for events only), as it last
    /// read it under the lock: a call that sets an earlier timer must wake it.
    actor_wakes_at: Option<Instant>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("controller", &self.loaded.name)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The core of a freshly loaded controller: its first instance (retried until it
    /// starts, see [`instantiate_with_retry`]).
    pub(crate) async fn start(
        runtime: Runtime,
        loaded: Loaded,
        handshake_hook: Arc<AtomicBool>,
        span: tracing::Span,
    ) -> Self {
        let meter = meter(&runtime, &loaded.name);
        let (store, instance) = instantiate_with_retry(&runtime, &loaded, BTreeMap::new()).await;
        let core = Self {
            runtime,
            loaded,
            store,
            instance,
            handshake_hook,
            traps: VecDeque::new(),
            span,
            meter,
            broken: false,
            actor_wakes_at: None,
        };
        core.observe_instance();
        core
    }

    /// The controller's span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// When the earliest timer is due; recorded as the time the actor sleeps until.
    pub(crate) fn next_timer(&mut self) -> Option<Instant> {
        self.actor_wakes_at = self.store.data().timers.next_due();
        self.actor_wakes_at
    }

    /// Whether the actor must look at the core before its next sleep ends: the instance
    /// needs replacing, or a timer is now due before the actor would wake.
    pub(crate) fn wants_actor(&self) -> bool {
        if self.needs_fresh_instance() {
            return true;
        }
        match (self.store.data().timers.next_due(), self.actor_wakes_at) {
            (Some(due), Some(wakes)) => due < wakes,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Calls `on-timer` for every timer due now.
    pub(crate) async fn fire_due_timers(&mut self) {
        let due = self.store.data_mut().timers.take_due(Instant::now());
        for id in due {
            self.call(Call::Timer(id)).await;
        }
    }

    /// Whether the instance must be replaced before it is entered again: a call trapped,
    /// or a call's future was dropped before the call returned.
    fn needs_fresh_instance(&self) -> bool {
        self.broken || self.store.data().in_call()
    }

    /// Replaces the instance if it must be (see [`Core::needs_fresh_instance`]).
    pub(crate) async fn ensure_instance(&mut self) {
        if self.needs_fresh_instance() {
            self.replace_instance().await;
        }
    }

    /// `on-message` for a data message from connection `id`, called by its own task.
    /// Gives the message back when it must take the queue instead: the connection is not
    /// in the table yet (its `Open` is still queued, and nothing may overtake it) or no
    /// longer (a trap closed it), or the instance waits for the actor to replace it.
    pub(crate) async fn message_inline(
        &mut self,
        id: ConnectionId,
        message: Message,
    ) -> Result<(), Message> {
        if self.needs_fresh_instance() {
            return Err(message);
        }
        match self.store.data().conns.get(&id) {
            None => return Err(message),
            Some(entry) if entry.closing => return Ok(()),
            Some(_) => {}
        }
        if is_data(&message) {
            self.count_message(MessagePath::Inline);
            self.call_instance(Call::Message(id, message)).await;
        }
        Ok(())
    }

    /// Counts a message handed to `on-message` by `path`.
    fn count_message(&self, path: MessagePath) {
        if let Some(meter) = &self.meter {
            meter.message(path);
        }
    }

    /// Handles one event from the queue.
    pub(crate) async fn handle(&mut self, event: Event) {
        let conns = &mut self.store.data_mut().conns;
        match event {
            Event::Handshake { info, reply } => {
                let verdict = self.handshake(*info).await;
                // The client may have given up meanwhile; nobody to tell then.
                let _ = reply.send(verdict);
            }
            Event::Reload(reload) => self.swap(*reload).await,
            Event::Shutdown { done } => {
                self.call(Call::Shutdown).await;
                let _ = done.send(());
            }
            Event::Open {
                info,
                outbound,
                span,
                deadline,
            } => {
                let id = info.id;
                let first = conns.is_empty();
                subscribe_to_route_topic(&self.store.data().hub, &info, &outbound, &span);
                let conns = &mut self.store.data_mut().conns;
                conns.insert(
                    id,
                    ConnEntry {
                        info,
                        outbound,
                        span: span.clone(),
                        deadline,
                        closing: false,
                    },
                );
                if first {
                    self.call(Call::FirstOpen(id)).await;
                }
                // on-first-open may have trapped and closed the connection already.
                if self.store.data().conns.contains_key(&id) {
                    self.call(Call::Open(id)).await;
                }
            }
            Event::Message {
                id,
                message,
                budget,
                backlog,
            } => {
                if conns.get(&id).is_none_or(|e| e.closing) {
                    return;
                }
                if !is_data(&message) {
                    return;
                }
                // The controller took it: its place is free again.
                drop(budget);
                self.count_message(MessagePath::Queued);
                self.call(Call::Message(id, message)).await;
                // Handled: the connection's next message may go inline.
                drop(backlog);
            }
            Event::Error { id, error, close } => {
                if !conns.contains_key(&id) {
                    return;
                }
                self.call(Call::Error(id, error)).await;
                // Behind every reply the controller queued so far, in order.
                let state = self.store.data_mut();
                if let Some(entry) = state.conns.get_mut(&id).filter(|e| !e.closing) {
                    entry.closing = true;
                    let _ = entry.outbound.push(Outbound::Close(close));
                    state.hub.leave_all(id);
                }
            }
            Event::Closed { id, code, reason } => {
                // Removed first: during on-close the connection is no longer listed. An
                // id that is already gone was dropped after a trap; its instance never
                // saw it open, so it gets no on-close either.
                let Some(entry) = conns.remove(&id) else {
                    return;
                };
                let last = conns.is_empty();
                let state = self.store.data_mut();
                state.hub.leave_all(id);
                // No longer in the table, so the guest's logs (and a broadcast to its
                // topic) find it here.
                state.leaving = Some(entry);
                self.call(Call::Close(id, code, reason)).await;
                if last && self.store.data().conns.is_empty() {
                    self.call(Call::LastClose(id)).await;
                }
                self.store.data_mut().leaving = None;
            }
        }
    }

    /// Calls one export (skipping optional ones the component lacks) under the deadline,
    /// and recovers from a trap. An instance that an earlier call of the same event left
    /// broken is replaced first.
    async fn call(&mut self, call: Call) {
        self.ensure_instance().await;
        self.call_instance(call).await;
    }

    /// [`Core::call`] on an instance known to be usable. Its future holds no instance
    /// replacement, which keeps the inline path's future (boxed per message) small.
    async fn call_instance(&mut self, call: Call) {
        let deadline = call
            .connection()
            .and_then(|id| self.store.data().conns.get(&id))
            .map_or(self.loaded.sandbox.call_deadline, |e| e.deadline);
        let started = start_call(&mut self.store, deadline);
        self.store.data_mut().set_calling(call.connection());
        let store = &mut self.store;
        let guest = &self.instance.controller;
        let lifecycle = self.instance.lifecycle.as_ref();
        let result = match &call {
            Call::Open(id) => guest.call_on_open(store, *id).await,
            Call::Message(id, msg) => {
                let msg = match msg {
                    Message::Text(text) => WitMessageRef::Text(text.as_str()),
                    Message::Binary(data) => WitMessageRef::Binary(data),
                    _ => unreachable!("only data messages are called with"),
                };
                guest.call_on_message(store, *id, msg).await
            }
            Call::Error(id, error) => guest.call_on_error(store, *id, error).await,
            Call::Close(id, code, reason) => guest.call_on_close(store, *id, *code, reason).await,
            Call::FirstOpen(id) => match lifecycle {
                Some(l) => l.call_on_first_open(store, *id).await,
                None => Ok(()),
            },
            Call::LastClose(id) => match lifecycle {
                Some(l) => l.call_on_last_close(store, *id).await,
                None => Ok(()),
            },
            Call::Shutdown => match lifecycle {
                Some(l) => l.call_on_shutdown(store).await,
                None => Ok(()),
            },
            Call::Timer(id) => match &self.instance.timer {
                Some(t) => t.call_on_timer(store, *id).await,
                None => Ok(()),
            },
        };
        end_call(&mut self.store);
        if self.meter.is_some() && self.exports(&call) {
            self.observe_call(call.export(), started);
        }
        if let Err(error) = result {
            self.recover(&call, &error);
        }
        self.store.data_mut().set_calling(None);
    }

    /// Whether the component exports what `call` calls (calls to a missing optional
    /// export return at once and are not timed).
    fn exports(&self, call: &Call) -> bool {
        match call {
            Call::FirstOpen(_) | Call::LastClose(_) | Call::Shutdown => {
                self.instance.lifecycle.is_some()
            }
            Call::Timer(_) => self.instance.timer.is_some(),
            Call::Open(_) | Call::Message(..) | Call::Error(..) | Call::Close(..) => true,
        }
    }

    /// Times a call into `export` that began at `started`, and shows the instance's
    /// timers and memory as the call left them.
    fn observe_call(&mut self, export: &str, started: std::time::Instant) {
        if let Some(meter) = &mut self.meter {
            meter.called(export, started);
        }
        self.observe_instance();
    }

    /// Shows the current instance's timers and memory.
    fn observe_instance(&self) {
        if let Some(meter) = &self.meter {
            let state = self.store.data();
            meter.instance(state.timers.len(), state.limits.used());
        }
    }

    /// Counts a trap in `export`.
    fn count_trap(&self, export: &str) {
        if let Some(meter) = &self.meter {
            meter.metrics().trapped(meter.name(), export);
        }
    }

    /// Runs `on-handshake` for a request; returns the final attributes or the refusal.
    async fn handshake(&mut self, mut info: ConnectionInfo) -> Result<Attributes, Rejection> {
        if self.instance.handshake.is_none() {
            return Ok(info.attributes);
        }
        let headers = pairs(&info.headers);
        let attributes = pairs(info.attributes.as_slice());
        let request = HandshakeRequest {
            path: &info.path,
            query: &info.query,
            headers: &headers,
            remote_addr: &info.remote_addr,
            protocol: info.protocol.as_deref(),
            attributes: &attributes,
        };
        let started = start_call(&mut self.store, self.loaded.sandbox.call_deadline);
        let hook = self.instance.handshake.as_ref().expect("checked above");
        let result = hook.call_on_handshake(&mut self.store, request).await;
        end_call(&mut self.store);
        if self.meter.is_some() {
            self.observe_call("on-handshake", started);
        }
        match result {
            Ok(Ok(added)) => {
                for (name, value) in added {
                    info.attributes.set(name, value);
                }
                Ok(info.attributes)
            }
            Ok(Err(response)) => Err(refusal(&self.loaded.name, response)),
            Err(error) => {
                self.log_trap("on-handshake", None, &error);
                self.count_trap("on-handshake");
                self.broken = true;
                Err(Rejection::new(500, "controller error"))
            }
        }
    }

    /// After a trap: close the offending connection (if the event had one) with 1011
    /// and mark the instance broken, for the actor to replace with a fresh one that
    /// inherits the connection table.
    fn recover(&mut self, call: &Call, error: &wasmtime::Error) {
        let id = call.connection();
        self.log_trap(call.export(), id, error);
        self.count_trap(call.export());
        if let Some(entry) = id.and_then(|id| self.store.data_mut().conns.remove(&id)) {
            self.store.data().hub.leave_all(entry.info.id);
            let _ = entry
                .outbound
                .push(Outbound::Close(CloseReason::new(1011, TRAP_REASON)));
        }
        self.broken = true;
    }

    fn log_trap(&self, export: &str, id: Option<ConnectionId>, error: &wasmtime::Error) {
        match self.store.data().calling_span() {
            Some(span) => span.in_scope(|| self.log_trap_here(export, id, error)),
            None => self.log_trap_here(export, id, error),
        }
    }

    fn log_trap_here(&self, export: &str, id: Option<ConnectionId>, error: &wasmtime::Error) {
        let route = id
            .and_then(|id| self.store.data().conns.get(&id))
            .and_then(|e| attribute(&e.info, "route"))
            .unwrap_or_default();
        tracing::error!(
            controller = %self.loaded.name,
            route,
            conn_id = id,
            export,
            error = %trap_message(error),
            "controller trapped; closing the connection with 1011 and replacing the instance"
        );
        if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
            tracing::debug!(controller = %self.loaded.name, "wasm backtrace:\n{backtrace}");
        }
    }

    /// Replaces a broken instance with a fresh one that inherits the connection table,
    /// after a backoff if the controller keeps trapping.
    async fn replace_instance(&mut self) {
        let now = Instant::now();
        while self
            .traps
            .front()
            .is_some_and(|t| now.duration_since(*t) > TRAP_WINDOW)
        {
            self.traps.pop_front();
        }
        self.traps.push_back(now);
        let recent = self.traps.len();
        if let Some(wait) = restart_backoff(recent) {
            tracing::warn!(
                controller = %self.loaded.name,
                traps_in_last_minute = recent,
                restart_in_ms = wait.as_millis() as u64,
                "controller keeps trapping; restarting it after a backoff"
            );
            tokio::time::sleep(wait).await;
        }
        let conns = std::mem::take(&mut self.store.data_mut().conns);
        let (store, instance) = instantiate_with_retry(&self.runtime, &self.loaded, conns).await;
        self.store = store;
        self.instance = instance;
        self.broken = false;
        if let Some(meter) = &self.meter {
            meter.metrics().restarted(meter.name());
        }
        self.observe_instance();
    }

    /// Counts a hot reload: swapped in, or refused.
    fn reloaded(&self, ok: bool) {
        if let Some(meter) = &self.meter {
            meter.metrics().reloaded(meter.name(), ok);
        }
    }
}

/// Whether `message` is a data message, the only kind `on-message` takes (control frames
/// never come here). It is lent to the guest as it came off the socket: wasmtime copies
/// the payload straight from the frame into guest memory, with no owned `String` or
/// `Vec` made for it on the way.
fn is_data(message: &Message) -> bool {
    matches!(message, Message::Text(_) | Message::Binary(_))
}

/// The handles of controller `name`'s series, if the server keeps metrics.
fn meter(runtime: &Runtime, name: &str) -> Option<ControllerMeter> {
    let metrics = runtime.metrics.clone()?;
    Some(ControllerMeter::new(metrics, name))
}

/// A trap in one line: its causes (the guest's panic message, the deadline, the memory
/// cap) without the multi-line wasm backtrace, which goes to the debug log.
pub(crate) fn trap_message(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|cause| !cause.contains("wasm backtrace:"))
        .collect();
    parts.dedup();
    let message = parts.join(": ");
    message.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// How long to wait before restarting a controller that trapped `recent` times within
/// [`TRAP_WINDOW`]; `None` restarts at once.
fn restart_backoff(recent: usize) -> Option<Duration> {
    let extra = recent.checked_sub(FREE_RESTARTS + 1)?;
    let factor = 1u32.checked_shl(extra as u32).unwrap_or(u32::MAX);
    Some(BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX))
}

/// The HTTP refusal a guest's `on-handshake` asked for. A status outside 400-599 is not
/// a refusal, and a header that is not a valid HTTP header (a CR or LF in its value
/// would let the guest write its own response lines) cannot be sent: both answer 500,
/// logged with the controller's name.
fn refusal(controller: &str, response: HandshakeResponse) -> Rejection {
    if !(400..=599).contains(&response.status) {
        tracing::warn!(
            controller,
            status = response.status,
            "on-handshake refused with a status that is not an HTTP error; answering 500"
        );
        return Rejection::new(500, "controller error");
    }
    let mut rejection = Rejection::new(response.status, response.body);
    for (name, value) in &response.headers {
        rejection = match rejection.with_text_header(name, value) {
            Ok(rejection) => rejection,
            Err(error) => {
                tracing::warn!(
                    controller,
                    %error,
                    "on-handshake refused with a header that cannot be sent; answering 500"
                );
                return Rejection::new(500, "controller error");
            }
        };
    }
    rejection
}

/// Instantiates `loaded` with `conns` as the connection table, retrying with backoff
/// while instantiation fails (it succeeded once at load time, so failures are
/// transient, e.g. memory pressure). Events wait in the queue meanwhile.
async fn instantiate_with_retry(
    runtime: &Runtime,
    loaded: &Loaded,
    mut conns: BTreeMap<ConnectionId, ConnEntry>,
) -> (Store<HostState>, Instance) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut state = loaded.new_state();
        state.conns = conns;
        let mut store = runtime.new_store(state);
        match loaded.instantiate(&mut store).await {
            Ok(instance) => return (store, instance),
            Err(error) => {
                tracing::error!(controller = %loaded.name, error = %format!("{error:#}"), retry_in = ?backoff, "cannot instantiate controller");
                conns = std::mem::take(&mut store.data_mut().conns);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Subscribes a connection that opens with a `topic` attribute (its route's `topic`, or
/// what a handshake hook set) to that topic.
fn subscribe_to_route_topic(
    hub: &crate::topics::Hub,
    info: &ConnectionInfo,
    outbound: &super::OutboundHandle,
    span: &tracing::Span,
) {
    let Some(topic) = info.attributes.get(TOPIC_ATTRIBUTE) else {
        return;
    };
    let user = info.attributes.get("user");
    if let Err(error) = hub.subscribe(info.id, outbound, user, topic) {
        tracing::warn!(parent: span, %error, topic, "the connection's `topic` attribute is not a topic it can subscribe to");
    }
}

/// The attribute that names a connection's topic.
pub(crate) const TOPIC_ATTRIBUTE: &str = "topic";

/// The value of attribute `name` of a connection.
pub(crate) fn attribute<'a>(info: &'a ConnectionInfo, name: &str) -> Option<&'a str> {
    info.attributes.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_restarts_and_doubles_up_to_the_cap() {
        assert_eq!(restart_backoff(1), None);
        assert_eq!(restart_backoff(FREE_RESTARTS), None);
        assert_eq!(restart_backoff(FREE_RESTARTS + 1), Some(BACKOFF_START));
        assert_eq!(restart_backoff(FREE_RESTARTS + 2), Some(BACKOFF_START * 2));
        assert_eq!(restart_backoff(FREE_RESTARTS + 3), Some(BACKOFF_START * 4));
        assert_eq!(restart_backoff(1000), Some(BACKOFF_MAX));
    }
}
