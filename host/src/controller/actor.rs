//! The controller actor: one task per controller that owns its wasm `Store` and
//! instance, takes events from the controller's queue one at a time and calls the
//! matching export.
//!
//! Because exactly one task touches the store, the guest needs no locks and the
//! connection table lives in the store data without a mutex. When an export traps, the
//! connection whose event caused it gets 1011, the instance is dropped (a trapped
//! instance can never be entered again) and a fresh one is made from the same
//! `InstancePre`; the connection table moves over, so every other connection stays open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{HandshakeRequest, HandshakeResponse, WitMessage};
use super::engine::{Instance, Loaded, Runtime};
use super::stdio::{GuestOutput, Stream};
use super::{
    ConnectionId, ConnectionInfo, ControllerHandle, EVENT_QUEUE_CAPACITY, Event, Outbound,
    OutboundHandle, Reload,
};
use crate::filter::set_attribute;
use crate::handshake::Rejection;

/// Longest a single export call may run before it is interrupted (a trap, handled like
/// any other). Generous: an event handler should take microseconds.
pub(crate) const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Most linear memory one controller instance may grow to.
pub(crate) const MEMORY_LIMIT: usize = 256 << 20;

/// Close reason sent with 1011 when the controller trapped on the connection's event.
const TRAP_REASON: &str = "controller error";

/// Store data of one controller instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) name: Arc<str>,
    /// Connections open on this controller; survives instance replacement.
    pub(crate) conns: BTreeMap<ConnectionId, ConnEntry>,
    /// When the current export call started; `None` between calls.
    call_started: Option<Instant>,
}

/// One connection as the controller sees it.
pub(crate) struct ConnEntry {
    pub(crate) info: Arc<ConnectionInfo>,
    pub(crate) outbound: OutboundHandle,
    span: tracing::Span,
    /// The controller called `close`: no longer listed, sent to, or given messages.
    pub(crate) closing: bool,
}

impl HostState {
    /// Fresh state with the WASI sandbox: no files, no environment, no network, guest
    /// stdout/stderr to the log.
    pub(crate) fn new(name: Arc<str>) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(name.clone(), Stream::Stdout))
            .stderr(GuestOutput::new(name.clone(), Stream::Stderr))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .trap_on_grow_failure(true)
                .build(),
            name,
            conns: BTreeMap::new(),
            call_started: None,
        }
    }

    /// Called at each epoch tick while the guest runs: yield to the runtime, or trap
    /// once the call has run past its deadline.
    pub(crate) fn on_epoch_tick(&self) -> wasmtime::Result<UpdateDeadline> {
        match self.call_started {
            Some(started) if started.elapsed() > CALL_DEADLINE => {
                Err(DeadlineExceeded(CALL_DEADLINE).into())
            }
            _ => Ok(UpdateDeadline::Yield(1)),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trap raised when an export call runs past [`CALL_DEADLINE`].
#[derive(Debug, thiserror::Error)]
#[error("call ran longer than its {0:?} deadline")]
pub(crate) struct DeadlineExceeded(Duration);

/// One export call.
enum Call {
    Open(ConnectionId),
    Message(ConnectionId, WitMessage),
    Error(ConnectionId, String),
    Close(ConnectionId, u16, String),
    Handshake(ConnectionId),
}

impl Call {
    fn export(&self) -> &'static str {
        match self {
            Self::Handshake(_) => "on-handshake",
            Self::Open(_) => "on-open",
            Self::Message(..) => "on-message",
            Self::Error(..) => "on-error",
            Self::Close(..) => "on-close",
        }
    }
}

struct Actor {
    runtime: Runtime,
    loaded: Loaded,
    store: Store<HostState>,
    instance: Instance,
    /// Shared with the handles: whether the current version has a handshake hook.
    handshake_hook: Arc<AtomicBool>,
}

/// Starts the actor of a loaded controller and returns the handle connections use.
pub(crate) fn spawn(runtime: Runtime, loaded: Loaded) -> ControllerHandle {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
    let name = loaded.name.clone();
    let handshake_hook = Arc::new(AtomicBool::new(loaded.handshake.is_some()));
    let span = tracing::info_span!("controller", controller = %name);
    let hook_flag = handshake_hook.clone();
    tokio::spawn(
        async move {
            let (store, instance) =
                instantiate_with_retry(&runtime, &loaded, BTreeMap::new()).await;
            let actor = Actor {
                runtime,
                loaded,
                store,
                instance,
                handshake_hook: hook_flag,
            };
            actor.run(rx).await;
        }
        .instrument(span),
    );
    ControllerHandle {
        name,
        events: tx,
        handshake_hook,
    }
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        while let Some(event) = rx.recv().await {
            self.handle(event).await;
        }
        tracing::debug!("controller queue closed; actor ends");
    }

    async fn handle(&mut self, event: Event) {
        let event = match event {
            Event::Handshake { info, reply } => {
                let verdict = self.handshake(info).await;
                // The client may have given up meanwhile; nobody to tell then.
                let _ = reply.send(verdict);
                return;
            }
            Event::Reload(reload) => return self.swap(reload).await,
            other => other,
        };
        let conns = &mut self.store.data_mut().conns;
        let (call, span) = match event {
            Event::Open {
                info,
                outbound,
                span,
            } => {
                let id = info.id;
                conns.insert(
                    id,
                    ConnEntry {
                        info,
                        outbound,
                        span: span.clone(),
                        closing: false,
                    },
                );
                (Call::Open(id), span)
            }
            Event::Message { id, message } => {
                let Some(entry) = conns.get(&id).filter(|e| !e.closing) else {
                    return;
                };
                let message = match message {
                    Message::Text(text) => WitMessage::Text(text.as_str().to_owned()),
                    Message::Binary(data) => WitMessage::Binary(data.to_vec()),
                    _ => return,
                };
                (Call::Message(id, message), entry.span.clone())
            }
            Event::Error { id, error } => {
                let Some(entry) = conns.get(&id) else { return };
                (Call::Error(id, error), entry.span.clone())
            }
            Event::Handshake { .. } | Event::Reload(_) => unreachable!("handled above"),
            Event::Closed { id, code, reason } => {
                // Removed first: during on-close the connection is no longer listed. An
                // id that is already gone was dropped after a trap; its instance never
                // saw it open, so it gets no on-close either.
                let Some(entry) = conns.remove(&id) else {
                    return;
                };
                (Call::Close(id, code, reason), entry.span)
            }
        };
        self.call(call).instrument(span).await;
    }

    async fn call(&mut self, call: Call) {
        self.start_call();
        let guest = &self.instance.controller;
        let store = &mut self.store;
        let result = match &call {
            Call::Open(id) => guest.call_on_open(store, *id).await,
            Call::Message(id, msg) => guest.call_on_message(store, *id, msg).await,
            Call::Error(id, error) => guest.call_on_error(store, *id, error).await,
            Call::Close(id, code, reason) => guest.call_on_close(store, *id, *code, reason).await,
            Call::Handshake(_) => unreachable!("handshakes go through `handshake`"),
        };
        self.store.data_mut().call_started = None;
        if let Err(error) = result {
            self.recover(&call, &error).await;
        }
    }

    /// Swaps in a new version: a fresh instance of it inherits the connection table. If
    /// it cannot be instantiated here after all, the old instance stays.
    async fn swap(&mut self, reload: Reload) {
        let Reload { loaded, started } = reload;
        let mut state = HostState::new(loaded.name.clone());
        state.conns = std::mem::take(&mut self.store.data_mut().conns);
        let mut store = self.runtime.new_store(&loaded.name, state);
        match loaded.instantiate(&mut store).await {
            Ok(instance) => {
                let open = store.data().conns.len();
                self.handshake_hook
                    .store(loaded.handshake.is_some(), Ordering::Release);
                self.store = store;
                self.instance = instance;
                self.loaded = loaded;
                tracing::info!(
                    open_connections = open,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reloaded"
                );
            }
            Err(error) => {
                self.store.data_mut().conns = std::mem::take(&mut store.data_mut().conns);
                tracing::error!(
                    error = %format!("{error:#}"),
                    "reload refused: the new version failed to instantiate; the old version keeps serving"
                );
            }
        }
    }

    /// Arms the per-call deadline.
    fn start_call(&mut self) {
        self.store.data_mut().call_started = Some(Instant::now());
        self.store.set_epoch_deadline(1);
    }

    /// Runs `on-handshake` for a request; returns the final attributes or the refusal.
    async fn handshake(
        &mut self,
        mut info: ConnectionInfo,
    ) -> Result<Vec<(String, String)>, Rejection> {
        if self.instance.handshake.is_none() {
            return Ok(info.attributes);
        }
        let request = HandshakeRequest {
            path: info.path.clone(),
            query: info.query.clone(),
            headers: info.headers.clone(),
            remote_addr: info.remote_addr.clone(),
            protocol: info.protocol.clone(),
            attributes: info.attributes.clone(),
        };
        self.start_call();
        let hook = self.instance.handshake.as_ref().expect("checked above");
        let result = hook.call_on_handshake(&mut self.store, &request).await;
        self.store.data_mut().call_started = None;
        match result {
            Ok(Ok(added)) => {
                for (name, value) in added {
                    set_attribute(&mut info.attributes, name, value);
                }
                Ok(info.attributes)
            }
            Ok(Err(response)) => Err(refusal(response)),
            Err(error) => {
                self.recover(&Call::Handshake(info.id), &error).await;
                Err(Rejection::new(500, "controller error"))
            }
        }
    }

    /// After a trap: close the offending connection with 1011 and swap in a fresh
    /// instance that inherits the connection table.
    async fn recover(&mut self, call: &Call, error: &wasmtime::Error) {
        let (Call::Open(id)
        | Call::Message(id, _)
        | Call::Error(id, _)
        | Call::Close(id, ..)
        | Call::Handshake(id)) = call;
        let conns = &mut self.store.data_mut().conns;
        let route = conns
            .get(id)
            .and_then(|e| attribute(&e.info, "route"))
            .unwrap_or_default();
        tracing::error!(
            controller = %self.loaded.name,
            route,
            conn_id = id,
            export = call.export(),
            error = %format!("{error:#}"),
            "controller trapped; closing the connection with 1011 and replacing the instance"
        );
        if let Some(entry) = conns.remove(id) {
            let _ = entry
                .outbound
                .push(Outbound::Close(1011, TRAP_REASON.to_owned()));
        }
        let conns = std::mem::take(conns);
        let (store, instance) = instantiate_with_retry(&self.runtime, &self.loaded, conns).await;
        self.store = store;
        self.instance = instance;
    }
}

/// The HTTP refusal a guest's `on-handshake` asked for; statuses outside 400-599 are
/// not refusals, so they become 500.
fn refusal(response: HandshakeResponse) -> Rejection {
    let status = if (400..=599).contains(&response.status) {
        response.status
    } else {
        tracing::warn!(
            status = response.status,
            "on-handshake refused with a status that is not an HTTP error; answering 500"
        );
        500
    };
    let mut rejection = Rejection::new(status, response.body);
    for (name, value) in response.headers {
        rejection = rejection.with_header(&name, value);
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
        let mut state = HostState::new(loaded.name.clone());
        state.conns = conns;
        let mut store = runtime.new_store(&loaded.name, state);
        match loaded.instantiate(&mut store).await {
            Ok(instance) => return (store, instance),
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), retry_in = ?backoff, "cannot instantiate controller");
                conns = std::mem::take(&mut store.data_mut().conns);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The value of attribute `name` of a connection.
pub(crate) fn attribute<'a>(info: &'a ConnectionInfo, name: &str) -> Option<&'a str> {
    info.attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
