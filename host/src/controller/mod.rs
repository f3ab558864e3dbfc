//! Controllers: WebAssembly components that hold the application logic.
//!
//! Each controller file is compiled once ([`engine`]), linked against WASI and our
//! `host` interface into an `InstancePre`, and driven by one actor task ([`actor`]) that
//! owns its `Store` and calls one export at a time. Connection tasks talk to the actor
//! only through its bounded event queue ([`ControllerHandle`]); the actor talks back only
//! through each connection's bounded outbound queue ([`Outbound`]), so neither ever waits
//! on the other's network I/O.

mod actor;
mod bindings;
mod build_step;
mod component;
mod engine;
mod host_api;
mod limiter;
mod outbound;
mod reload;
mod stdio;
mod store;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

pub use build_step::BuildError;
pub use engine::{LoadCost, LoadError, Runtime};
pub use outbound::{Outbound, OutboundHandle, OutboundQueue, QueueError, outbound_queue};
pub use reload::{ReloadWatcher, SourceWatcher, reload_in_place, watch, watch_sources};

use crate::config::ControllerSpec;
use crate::request::{Attributes, CloseReason, Rejection};

/// Identifies a connection for the lifetime of the process (never reused).
pub type ConnectionId = u64;

/// What the host knows about a connection, fixed at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// Request path without the query.
    pub path: String,
    /// Query string without `?` (without the token a `bearer` filter consumed).
    pub query: String,
    /// Negotiated sub-protocol.
    pub protocol: Option<String>,
    /// Peer address.
    pub remote_addr: String,
    /// Request headers, names lower-case, in order (without the credentials a `bearer`
    /// filter consumed).
    pub headers: Vec<(String, String)>,
    /// Host-set attributes (`route`, `match.N`, filter results).
    pub attributes: Attributes,
}

/// Something that happened on a connection, queued for its controller.
#[derive(Debug)]
pub enum Event {
    /// The upgrade completed; the controller starts tracking the connection.
    Open {
        /// Shared with the connection task.
        info: Arc<ConnectionInfo>,
        /// Where the controller's `send`/`close` go.
        outbound: OutboundHandle,
        /// The connection's tracing span, entered while the controller handles its events.
        span: tracing::Span,
        /// Deadline of each call for this connection's events.
        deadline: std::time::Duration,
    },
    /// A complete data message (text or binary).
    Message {
        /// The connection.
        id: ConnectionId,
        /// The message; never a control frame.
        message: Message,
        /// The message's share of the controller's inbound byte budget, given back
        /// once the controller handled it.
        budget: OwnedSemaphorePermit,
    },
    /// A protocol error from the peer: after `on-error` the controller queues the close
    /// frame, so that replies to the messages before the error still go out first.
    /// `Closed` follows.
    Error {
        /// The connection.
        id: ConnectionId,
        /// Human-readable description.
        error: String,
        /// The close code and reason the connection fails with.
        close: CloseReason,
    },
    /// An upgrade request waits for the controller's `on-handshake` verdict.
    Handshake {
        /// The connection-to-be (its id is not open yet).
        info: Box<ConnectionInfo>,
        /// Where the verdict goes: the final attributes, or the refusal.
        reply: oneshot::Sender<Result<Attributes, Rejection>>,
    },
    /// The server is shutting down: call `on-shutdown`, then report `done`.
    Shutdown {
        /// Completed once `on-shutdown` returned (or the controller has none).
        done: oneshot::Sender<()>,
    },
    /// A new version of the controller, compiled and checked, to swap in.
    Reload(Box<Reload>),
    /// The connection is gone; the last event of a connection.
    Closed {
        /// The connection.
        id: ConnectionId,
        /// Close code of the closing handshake (1005 none given, 1006 dropped).
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// A verified new version of a controller, on its way to the actor.
pub struct Reload {
    loaded: component::Loaded,
    /// When the reload started (the file change was noticed), for the log.
    started: tokio::time::Instant,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("path", &self.loaded.path)
            .finish_non_exhaustive()
    }
}

/// A running controller, as connection tasks see it.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    name: Arc<str>,
    events: mpsc::Sender<Event>,
    /// The inbound byte budget: queued messages hold permits for their bytes.
    budget: Arc<Semaphore>,
    /// Permits in the budget (the most one message takes).
    budget_size: u32,
    /// Whether the current version exports `handshake`; a reload may change it.
    handshake_hook: Arc<AtomicBool>,
}

impl ControllerHandle {
    /// Whether the component exports the optional `handshake` interface.
    pub fn has_handshake_hook(&self) -> bool {
        self.handshake_hook.load(Ordering::Acquire)
    }

    /// Asks the controller's `on-handshake` about a request whose filters passed.
    /// Returns the connection's final attributes, or the refusal to answer.
    pub async fn handshake(&self, info: &ConnectionInfo) -> Result<Attributes, Rejection> {
        let (reply, verdict) = oneshot::channel();
        let gone = || Rejection::new(503, "controller unavailable");
        self.events
            .send(Event::Handshake {
                info: Box::new(info.clone()),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        verdict.await.map_err(|_| gone())?
    }

    /// The controller's name (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls the controller's `on-shutdown` (if it has one) and waits for it to return.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.events.send(Event::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }

    /// The controller's event queue.
    pub fn events(&self) -> &mpsc::Sender<Event> {
        &self.events
    }

    /// The controller's inbound byte budget, and the permits a message of `bytes`
    /// takes from it (a message bigger than the whole budget takes all of it).
    pub fn budget(&self, bytes: usize) -> (&Arc<Semaphore>, u32) {
        let wanted = u32::try_from(bytes).unwrap_or(u32::MAX);
        (&self.budget, wanted.min(self.budget_size))
    }
}

/// A controller version built, compiled, linked and trial-instantiated, but not running
/// yet: the first half of a start or a reload. A routes.toml reload prepares every new
/// version before it starts or swaps any, so a failure changes nothing.
pub struct Prepared(Reload);

impl Prepared {
    /// Builds (if `spec` has a build command), compiles, links and trial-instantiates
    /// `spec`.
    pub async fn load(runtime: &Runtime, spec: &ControllerSpec) -> Result<Self, LoadError> {
        let started = tokio::time::Instant::now();
        let loaded = runtime.load(spec).await?;
        Ok(Self(Reload { loaded, started }))
    }

    /// Starts an actor running this version.
    pub fn start(self, runtime: &Runtime) -> ControllerHandle {
        let loaded = self.0.loaded;
        tracing::info!(controller = %loaded.name, wasm = %loaded.path.display(), "controller loaded");
        actor::spawn(runtime.clone(), loaded)
    }

    /// Queues this version to replace the one running behind `handle`, behind the
    /// events already queued.
    pub async fn swap_into(self, handle: &ControllerHandle) {
        let name = self.0.loaded.name.clone();
        if handle
            .events()
            .send(Event::Reload(Box::new(self.0)))
            .await
            .is_err()
        {
            tracing::warn!(controller = %name, "controller stopped; reload dropped");
        }
    }
}

/// Loads every controller of a config and starts its actor. Build commands run first;
/// any failure aborts with an error naming the controller, before any actor starts.
pub async fn start_all(
    runtime: &Runtime,
    specs: &[ControllerSpec],
) -> Result<Vec<ControllerHandle>, LoadError> {
    let mut prepared = Vec::with_capacity(specs.len());
    for spec in specs {
        prepared.push(Prepared::load(runtime, spec).await?);
    }
    Ok(prepared.into_iter().map(|p| p.start(runtime)).collect())
}
