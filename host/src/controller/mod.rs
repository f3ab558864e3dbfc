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
mod reload;
mod stdio;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

pub use build_step::BuildError;
pub use engine::{LoadError, Runtime};
pub use reload::{ReloadWatcher, SourceWatcher, reload_in_place, watch, watch_sources};

use crate::config::ControllerSpec;
use crate::handshake::Rejection;

/// Events a controller's queue holds at most before connection tasks stop reading
/// their sockets (TCP backpressure).
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// Messages a connection's outbound queue holds before the slow-client policy closes it.
pub const OUTBOUND_QUEUE_CAPACITY: usize = 1024;

/// Identifies a connection for the lifetime of the process (never reused).
pub type ConnectionId = u64;

/// What the host knows about a connection, fixed at the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// Request path without the query.
    pub path: String,
    /// Query string without `?`.
    pub query: String,
    /// Negotiated sub-protocol.
    pub protocol: Option<String>,
    /// Peer address.
    pub remote_addr: String,
    /// Request headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// Host-set attributes (`route`, `match.N`, filter results).
    pub attributes: Vec<(String, String)>,
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
    },
    /// A complete data message (text or binary).
    Message {
        /// The connection.
        id: ConnectionId,
        /// The message; never a control frame.
        message: Message,
    },
    /// A protocol or I/O error; `Closed` follows.
    Error {
        /// The connection.
        id: ConnectionId,
        /// Human-readable description.
        error: String,
    },
    /// An upgrade request waits for the controller's `on-handshake` verdict.
    Handshake {
        /// The connection-to-be (its id is not open yet).
        info: Box<ConnectionInfo>,
        /// Where the verdict goes: the final attributes, or the refusal.
        reply: oneshot::Sender<Result<Vec<(String, String)>, Rejection>>,
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

/// What a controller asks a connection task to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write a data message.
    Message(Message),
    /// Start the closing handshake.
    Close(u16, String),
}

/// The controller's end of a connection's outbound queue.
#[derive(Debug, Clone)]
pub struct OutboundHandle {
    tx: mpsc::Sender<Outbound>,
    overflow: Arc<Notify>,
}

/// A connection's end of its outbound queue.
#[derive(Debug)]
pub struct OutboundQueue {
    /// Frames to write, in order.
    pub rx: mpsc::Receiver<Outbound>,
    /// Notified when the controller found the queue full: the slow-client policy applies.
    pub overflow: Arc<Notify>,
}

/// Why an outbound item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The connection task is gone.
    Closed,
    /// The queue is full; the connection was told to apply its overflow policy.
    Full,
}

/// Makes a bounded outbound queue for one connection.
pub fn outbound_queue(capacity: usize) -> (OutboundHandle, OutboundQueue) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflow = Arc::new(Notify::new());
    (
        OutboundHandle {
            tx,
            overflow: overflow.clone(),
        },
        OutboundQueue { rx, overflow },
    )
}

impl OutboundHandle {
    /// Queues `item` without waiting. On a full queue, wakes the connection's overflow
    /// policy instead of waiting for room.
    pub fn push(&self, item: Outbound) -> Result<(), QueueError> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.notify_one();
                Err(QueueError::Full)
            }
        }
    }
}

/// A running controller, as connection tasks see it.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    name: Arc<str>,
    events: mpsc::Sender<Event>,
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
    pub async fn handshake(
        &self,
        info: &ConnectionInfo,
    ) -> Result<Vec<(String, String)>, Rejection> {
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
}

/// Loads every controller of a config and starts its actor. Build commands run first;
/// any failure aborts with an error naming the controller.
pub async fn start_all(
    runtime: &Runtime,
    specs: &[ControllerSpec],
) -> Result<Vec<ControllerHandle>, LoadError> {
    let mut handles = Vec::with_capacity(specs.len());
    for spec in specs {
        let loaded = runtime.load(spec).await?;
        handles.push(actor::spawn(runtime.clone(), loaded));
        tracing::info!(controller = %spec.name, wasm = %spec.wasm.display(), "controller loaded");
    }
    Ok(handles)
}
