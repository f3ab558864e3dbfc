//! Controllers: WebAssembly components that hold the application logic.
//!
//! Each controller file is compiled once ([`engine`]), linked against WASI and our
//! `host` interface into an `InstancePre`, and run as one instance whose `Store` sits
//! behind the controller's lock ([`calls`]): whoever holds it calls one export at a
//! time. One actor task per controller ([`actor`]) takes the controller's bounded event
//! queue and its timers.
//!
//! The hop-free path: a connection task hands its data message to `on-message` itself,
//! under the lock, when the controller is free and none of the connection's earlier
//! events still wait in the queue ([`ControllerHandle::call_inline`]); the reply the
//! guest sends to that connection lands in its outbound queue and is written by the same
//! task right after, with no other task woken. Otherwise (the lock is taken, or the
//! connection's earlier messages are queued) the message takes the queue as before, and
//! so do opens, closes, errors, handshakes, reloads and shutdown. So connection tasks
//! do call wasm now; what still holds is that the guest talks back only through each
//! connection's bounded outbound queue ([`Outbound`]), so no call ever waits on a
//! socket.
//!
//! Per-connection order holds across the two paths: a message goes inline only when the
//! connection is in the controller's table (its `Open`, which always takes the queue,
//! was handled) and its [`Backlog`] of queued messages is empty (each queued message
//! holds a [`Backlogged`] until the actor handled it). Its `Error` and `Closed` are
//! queued by the connection task only after its last message was handed over either way.

mod actor;
mod bindings;
mod build_step;
mod calls;
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
        /// The message's place in the controller's inbound limits, given back once the
        /// controller takes it.
        budget: Budgeted,
        /// Keeps the connection's next message off the inline path until this one was
        /// handled.
        backlog: Backlogged,
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
    /// The inbound limits queued messages hold their places in.
    budget: Budget,
    /// Whether the current version exports `handshake`; a reload may change it.
    handshake_hook: Arc<AtomicBool>,
    /// The instance behind its lock, and the actor's wake-up.
    shared: Arc<actor::Shared>,
}

/// A connection's data messages that took the controller's queue (or wait for room in
/// it) and were not handled yet. While any is, the connection's next message queues
/// behind them instead of going inline, so the guest sees them in order.
#[derive(Debug, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// Counts one more queued message until the returned token is dropped.
    pub fn enter(&self) -> Backlogged {
        self.0.fetch_add(1, Ordering::Relaxed);
        Backlogged(self.0.clone())
    }

    /// Whether every queued message was handled (its call returned).
    fn is_empty(&self) -> bool {
        // Acquire: pairs with the release in `Backlogged::drop`, after the call.
        self.0.load(Ordering::Acquire) == 0
    }
}

/// One queued message of a connection's [`Backlog`], dropped once the controller
/// handled it (or dropped it).
#[derive(Debug)]
pub struct Backlogged(Arc<AtomicUsize>);

impl Drop for Backlogged {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
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

    /// Calls `on-message` with a data message of connection `id` from the calling task,
    /// if the controller is free (nobody holds its lock) and the connection's `backlog`
    /// is empty; otherwise, or when the connection must wait for its `Open` (see
    /// [`calls::Core::message_inline`]), gives the message back to go through the queue.
    ///
    /// The call runs to its end once begun (deadline, traps and all): callers await it
    /// in the body of their loop, never as a branch of a `select!` that could drop it.
    /// A trap closes the connection with 1011 through its outbound queue like on the
    /// queue path, and the actor replaces the instance.
    pub async fn call_inline(
        &self,
        id: ConnectionId,
        message: Message,
        backlog: &Backlog,
    ) -> Result<(), Message> {
        if !backlog.is_empty() {
            return Err(message);
        }
        let Some(Ok(mut core)) = self.shared.core.get().map(tokio::sync::Mutex::try_lock) else {
            return Err(message);
        };
        // Boxed: the call's state (wasmtime's async call, about 700 bytes) would otherwise
        // be part of every connection's task, idle or not, for its whole life.
        let handled = Box::pin(core.message_inline(id, message)).await;
        if core.wants_actor() {
            self.shared.wake.notify_one();
        }
        handled
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

    /// The controller's inbound limits, which a message needs a place in to be queued.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// A controller's inbound limits: how many data messages may wait for it
/// (`inbound-queue-messages`) and how many bytes (`inbound-queue-bytes`).
///
/// A message holds its place from the moment it is queued until the controller takes it
/// for a call, including while the actor holds it and waits for a call on a connection's
/// own task to end (see [`ControllerHandle::call_inline`]). So the count is exact on
/// both paths, which the queue's own capacity would not be: the actor takes an event
/// off the queue before it waits for the controller's lock.
#[derive(Debug, Clone)]
pub struct Budget {
    /// One permit per message.
    messages: Arc<Semaphore>,
    /// One permit per payload byte.
    bytes: Arc<Semaphore>,
    /// Permits in `bytes` (the most one message takes).
    bytes_size: u32,
}

/// One queued message's place in its controller's [`Budget`].
#[derive(Debug)]
pub struct Budgeted {
    _message: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Budget {
    /// Room for `messages` messages and `bytes` bytes (at most `u32::MAX`).
    fn new(messages: usize, bytes: usize) -> Self {
        let bytes_size = u32::try_from(bytes).unwrap_or(u32::MAX);
        Self {
            messages: Arc::new(Semaphore::new(messages)),
            bytes: Arc::new(Semaphore::new(bytes_size as usize)),
            bytes_size,
        }
    }

    /// The byte permits a message of `bytes` takes (a message bigger than the whole
    /// budget takes all of it).
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(self.bytes_size)
    }

    /// A place for a message of `bytes`, if there is room now.
    pub fn try_take(&self, bytes: usize) -> Option<Budgeted> {
        let message = self.messages.clone().try_acquire_owned().ok()?;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.permits(bytes))
            .ok()?;
        Some(Budgeted {
            _message: message,
            _bytes: bytes,
        })
    }

    /// Waits for a place for a message of `bytes`.
    pub async fn take(self, bytes: usize) -> Budgeted {
        let permits = self.permits(bytes);
        // Neither semaphore is ever closed.
        let message = self.messages.acquire_owned().await.expect("never closed");
        let bytes = self
            .bytes
            .acquire_many_owned(permits)
            .await
            .expect("never closed");
        Budgeted {
            _message: message,
            _bytes: bytes,
        }
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
