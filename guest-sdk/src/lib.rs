//! Write [wshost](https://github.com/) controllers in Rust.
//!
//! A controller is a WebAssembly component that wshost calls when WebSocket clients
//! connect, send messages and leave. Implement [`Controller`] (every method has a no-op
//! default), hand the type to [`export!`], and build the crate as a `cdylib` for
//! `wasm32-wasip2`; `cargo build --release --target wasm32-wasip2` emits the component.
//!
//! ```ignore
//! use wshost_guest::{Connection, Controller, Message};
//!
//! struct Echo;
//!
//! impl Controller for Echo {
//!     fn on_message(conn: Connection, msg: Message) {
//!         let _ = conn.send(&msg);
//!     }
//! }
//!
//! wshost_guest::export!(Echo);
//! ```
//!
//! The host calls one method at a time, so state can live in `static`s with interior
//! mutability (`thread_local!` + `RefCell`, or atomics) without locks. One instance
//! serves every connection routed to the controller. If a method panics, the host
//! closes that connection with 1011 and continues with a fresh instance: statics start
//! over, [`connections()`] still lists the open connections.
//!
//! Topics are rooms the host keeps: [`Connection::subscribe`] a connection to a topic
//! (or let the route's `topic` key do it), [`publish`] to every subscriber, whatever
//! controller and, with a `[cluster]`, whatever node it is on, and ask [`presence`] who
//! is there. Subscriptions belong to the host, so they survive a fresh instance.
//!
//! The full contract, with every guarantee, is the WIT file `wit/controller.wit`.

// The generated code names this crate by its absolute path, which must also resolve
// from inside the crate itself.
extern crate self as wshost_guest;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "controller",
        pub_export_macro: true,
        export_macro_name: "__wshost_export_world",
        default_bindings_module: "::wshost_guest::bindings",
        runtime_path: "::wshost_guest::wit_bindgen::rt",
    });
}

/// Bindings of the `controller-full` world (every optional capability), sharing the
/// base world's types. Controllers exported with an optional capability use this world
/// and get defaults for the capabilities they do not implement.
#[doc(hidden)]
#[expect(
    clippy::mem_forget,
    reason = "in the code wit-bindgen generates for list returns"
)]
pub mod bindings_full {
    wit_bindgen::generate!({
        path: "../wit",
        world: "controller-full",
        pub_export_macro: true,
        export_macro_name: "__wshost_export_world_full",
        default_bindings_module: "::wshost_guest::bindings_full",
        runtime_path: "::wshost_guest::wit_bindgen::rt",
        with: {
            "wshost:controller/types@0.2.0": crate::bindings::wshost::controller::types,
            "wshost:controller/host@0.2.0": crate::bindings::wshost::controller::host,
            "wshost:controller/topics@0.2.0": crate::bindings::wshost::controller::topics,
        },
    });
}

/// The wit-bindgen version this SDK uses, for controllers that want to add their own
/// bindings without a second dependency.
pub use wit_bindgen;

use bindings::wshost::controller::host;
use bindings::wshost::controller::topics;
pub use bindings::wshost::controller::topics::{TopicError, TopicPresence as Presence};
pub use bindings::wshost::controller::types::{ConnectionInfo, LogLevel, Message, SendError};
pub use bindings_full::exports::wshost::controller::handshake::{
    Request as HandshakeRequest, Response as HandshakeResponse,
};
pub use bindings_full::exports::wshost::controller::lifecycle::ServerParams;
use bindings_full::wshost::controller::timers;

/// The event handlers of a controller. All default to doing nothing.
///
/// Methods take no `self`: one instance of the component serves every connection, and
/// its state lives in statics.
pub trait Controller {
    /// A client completed the handshake; it is already in [`connections()`].
    fn on_open(conn: Connection) {
        let _ = conn;
    }

    /// A complete text or binary message arrived.
    fn on_message(conn: Connection, msg: Message) {
        let _ = (conn, msg);
    }

    /// The connection is closed (`code` 1005: close without code; 1006: dropped). It is
    /// no longer in [`connections()`]. Called exactly once per `on_open`.
    fn on_close(conn: Connection, code: u16, reason: String) {
        let _ = (conn, code, reason);
    }

    /// A protocol or I/O error happened; `on_close` follows.
    fn on_error(conn: Connection, error: String) {
        let _ = (conn, error);
    }
}

/// The optional handshake hook: the controller's own check of an upgrade request,
/// run after the host's filters. Export it with `export!(MyController, handshake)` (or
/// `full`).
pub trait Handshake {
    /// Accept, returning attributes to add to the connection (they show in
    /// [`ConnectionInfo::attributes`]), or refuse with an HTTP answer. The default
    /// accepts and adds nothing.
    fn on_handshake(request: HandshakeRequest) -> Result<Vec<(String, String)>, HandshakeResponse> {
        let _ = request;
        Ok(Vec::new())
    }
}

/// Optional lifecycle hooks, timers and state handoff (the seed's extra controller
/// interfaces). Export with `export!(MyController, lifecycle)` (or `full`). Every method
/// defaults to doing nothing.
pub trait Lifecycle {
    /// Once per instance before any other call (at start, after a trap, and for a new
    /// version on hot reload, before [`Lifecycle::restore`]), with the `config` tables of
    /// the controller's routes. An error refuses the instance.
    fn init(config: Vec<(String, String)>, params: ServerParams) -> Result<(), String> {
        let _ = (config, params);
        Ok(())
    }

    /// The controller's connection count went from 0 to 1; `on_open` follows.
    fn on_first_open(conn: Connection) {
        let _ = conn;
    }

    /// The controller's connection count went from 1 to 0, after `on_close`.
    fn on_last_close(conn: Connection) {
        let _ = conn;
    }

    /// The server is shutting down; connections are still open and can be sent to.
    fn on_shutdown() {}

    /// A timer set with [`set_timer`] fired.
    fn on_timer(timer: Timer) {
        let _ = timer;
    }

    /// The state to carry to the next version on hot reload. Default: nothing.
    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    /// Receives what the old version's `snapshot` returned (after `init`). An error
    /// refuses the reload and the old version keeps serving. Default: ignore it.
    fn restore(state: Vec<u8>) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// Stands in for the optional capabilities a controller does not implement.
#[doc(hidden)]
pub struct Defaults;

impl Handshake for Defaults {}
impl Lifecycle for Defaults {}

/// A timer of this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer(u64);

impl Timer {
    /// The timer with host id `id`.
    pub fn from_id(id: u64) -> Self {
        Self(id)
    }

    /// The host's id of this timer.
    pub fn id(self) -> u64 {
        self.0
    }

    /// Stops the timer; returns whether it was still pending.
    pub fn cancel(self) -> bool {
        timers::cancel_timer(self.0)
    }
}

/// Starts a timer that calls [`Lifecycle::on_timer`] after `delay`, and every `delay`
/// after that if `repeat`. Timers belong to the instance: a replaced instance has none.
/// Needs a controller exported with `lifecycle` (or `full`).
///
/// An instance may have routes.toml `max-timers` (default 10000) timers pending at
/// once; past that this returns the host's explanation and sets nothing.
pub fn set_timer(delay: std::time::Duration, repeat: bool) -> Result<Timer, String> {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    timers::set_timer(ms, repeat).map(Timer)
}

impl HandshakeRequest {
    /// The value of attribute `name` (e.g. `user`, `claims.room`, `match.1`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find(&self.attributes, name)
    }

    /// The first value of request header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, &name.to_ascii_lowercase())
    }
}

impl HandshakeResponse {
    /// A refusal with `status` and a plain-text `body`.
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }
}

/// One WebSocket connection of this controller. A plain id: cheap to copy and store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection(u64);

impl Connection {
    /// The connection with host id `id` (ids come from the host, e.g. from storage).
    pub fn from_id(id: u64) -> Self {
        Self(id)
    }

    /// The host's id of this connection, unique for the server's lifetime.
    pub fn id(self) -> u64 {
        self.0
    }

    /// Queues a message. Fails if the connection is no longer open or its outbound
    /// queue is full (the host then closes it as a slow client).
    pub fn send(self, msg: &Message) -> Result<(), SendError> {
        host::send(self.0, msg)
    }

    /// Queues a text message.
    pub fn send_text(self, text: &str) -> Result<(), SendError> {
        self.send(&Message::Text(text.to_owned()))
    }

    /// Queues a binary message.
    pub fn send_binary(self, data: &[u8]) -> Result<(), SendError> {
        self.send(&Message::Binary(data.to_vec()))
    }

    /// Starts the closing handshake with `code` (1000-1003, 1007-1014, 3000-4999) and
    /// `reason` (at most 123 bytes are sent).
    pub fn close(self, code: u16, reason: &str) {
        host::close(self.0, code, reason);
    }

    /// Path, query, headers, sub-protocol, peer address and attributes of the
    /// connection; `None` once it is closed.
    pub fn info(self) -> Option<ConnectionInfo> {
        host::info(self.0)
    }

    /// One attribute of the connection (e.g. `user`), without copying the rest of
    /// [`Connection::info`]; `None` once it is closed or if it has no such attribute.
    pub fn attribute(self, name: &str) -> Option<String> {
        host::attribute(self.0, name)
    }

    /// Subscribes the connection to `topic` (1 to 255 bytes of any UTF-8, e.g.
    /// `chat/lobby`): from now on it receives what anyone [`publish`]es there, on this
    /// node or, with a `[cluster]`, any other. Subscribing twice is the same as once.
    ///
    /// Subscriptions belong to the host, not to the instance: they survive a trap or a
    /// hot reload, and end when the connection closes. Fails with
    /// [`TopicError::InvalidTopic`] for an empty or too long name,
    /// [`TopicError::NotOpen`] if the connection is not open on this controller and
    /// [`TopicError::TooManyTopics`] if it is already subscribed to 256 topics.
    pub fn subscribe(self, topic: &str) -> Result<(), TopicError> {
        topics::subscribe(self.0, topic)
    }

    /// Unsubscribes the connection from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(self, topic: &str) -> bool {
        topics::unsubscribe(self.0, topic)
    }

    /// The topics the connection is subscribed to, sorted (including the one its route's
    /// `topic` key subscribed it to).
    pub fn subscriptions(self) -> Vec<String> {
        topics::subscriptions(self.0)
    }
}

impl ConnectionInfo {
    /// The value of attribute `name` (e.g. `user`, `route`, `match.1`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find(&self.attributes, name)
    }

    /// The first value of request header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        find(&self.headers, &name)
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The connections currently open on this controller, oldest first.
pub fn connections() -> Vec<Connection> {
    host::connections().into_iter().map(Connection).collect()
}

/// How many connections are open on this controller (`connections().len()` without
/// the list).
pub fn connection_count() -> u32 {
    host::connection_count()
}

/// Queues `msg` for every open connection except `exclude`, copying it out of the guest
/// once. Returns how many connections it was queued for.
///
/// On a route with a `topic` (routes.toml), called while handling an event of one of
/// its connections (its `on_close` included), this is [`publish`] to that connection's
/// topic (its `topic` attribute) instead, reaching the topic's subscribers on every
/// node; the count is of this node's.
pub fn broadcast(msg: &Message, exclude: Option<Connection>) -> u32 {
    host::broadcast(msg, exclude.map(Connection::id))
}

/// [`broadcast`] of a text message.
pub fn broadcast_text(text: &str, exclude: Option<Connection>) -> u32 {
    broadcast(&Message::Text(text.to_owned()), exclude)
}

/// Queues `msg` for every subscriber of `topic` on this node but `exclude`, and hands it
/// to the cluster (routes.toml `[cluster]`) for the subscribers on other nodes, whatever
/// controller they belong to. The payload leaves the guest once. Returns how many
/// connections of this node it was queued for; an invalid topic reaches nobody and
/// returns 0.
///
/// Delivery is at most once: while the cluster is unreachable, or this node's publish
/// buffer is full, the message reaches this node's subscribers only.
pub fn publish(topic: &str, msg: &Message, exclude: Option<Connection>) -> u32 {
    topics::publish(topic, msg, exclude.map(Connection::id))
}

/// [`publish`] of a text message.
pub fn publish_text(topic: &str, text: &str, exclude: Option<Connection>) -> u32 {
    publish(topic, &Message::Text(text.to_owned()), exclude)
}

/// Who is subscribed to `topic`: the number of connections and their distinct `user`
/// attributes, sorted, on every reachable node. This node's subscribers count at once;
/// other nodes' within about 100 ms of a change, and only for topics this node has a
/// subscriber of.
pub fn presence(topic: &str) -> Presence {
    topics::presence(topic)
}

/// Writes `msg` to the host's log at `level`, tagged with this controller.
pub fn log(level: LogLevel, msg: &str) {
    host::log(level, msg);
}

/// Exports a [`Controller`] implementation as the component's world.
///
/// Use it once per crate, at the top level:
/// - `wshost_guest::export!(MyController);` the base `controller` world;
/// - `wshost_guest::export!(MyController, handshake);` also [`Handshake`];
/// - `wshost_guest::export!(MyController, lifecycle);` also [`Lifecycle`] (timers, state);
/// - `wshost_guest::export!(MyController, full);` both.
///
/// The last three export the `controller-full` world; the capabilities a type does not
/// implement get the defaults (accept every handshake, do nothing on lifecycle events).
#[macro_export]
macro_rules! export {
    ($controller:ty) => {
        const _: () = {
            struct __WshostGuest;
            $crate::__forward_events!($crate::bindings::Guest, $controller, __WshostGuest);
    $crate::bindings::__wshost_export_world!(__WshostGuest with_types_in $crate::bindings);
        };
    };
    ($controller:ty, handshake) => {
        $crate::__export_full!($controller, $controller, $crate::Defaults);
    };
    ($controller:ty, lifecycle) => {
        $crate::__export_full!($controller, $crate::Defaults, $controller);
    };
    ($controller:ty, full) => {
        $crate::__export_full!($controller, $controller, $controller);
    };
}

/// Exports the `controller-full` world: events from `$controller`, the handshake hook
/// from `$handshake`, lifecycle, timers and state from `$lifecycle`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_full {
    ($controller:ty, $handshake:ty, $lifecycle:ty) => {
        const _: () = {
            use $crate::bindings_full::exports::wshost::controller as __exports;

            struct __WshostGuest;
            $crate::__forward_events!($crate::bindings_full::Guest, $controller, __WshostGuest);

            impl __exports::handshake::Guest for __WshostGuest {
                fn on_handshake(
                    request: $crate::HandshakeRequest,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    $crate::HandshakeResponse,
                > {
                    <$handshake as $crate::Handshake>::on_handshake(request)
                }
            }

            impl __exports::lifecycle::Guest for __WshostGuest {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    params: $crate::ServerParams,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$lifecycle as $crate::Lifecycle>::init(config, params)
                }
                fn on_first_open(conn: u64) {
                    <$lifecycle as $crate::Lifecycle>::on_first_open($crate::Connection::from_id(
                        conn,
                    ));
                }
                fn on_last_close(conn: u64) {
                    <$lifecycle as $crate::Lifecycle>::on_last_close($crate::Connection::from_id(
                        conn,
                    ));
                }
                fn on_shutdown() {
                    <$lifecycle as $crate::Lifecycle>::on_shutdown();
                }
            }

            impl __exports::timer_handler::Guest for __WshostGuest {
                fn on_timer(id: u64) {
                    <$lifecycle as $crate::Lifecycle>::on_timer($crate::Timer::from_id(id));
                }
            }

            impl __exports::state::Guest for __WshostGuest {
                fn snapshot() -> ::std::vec::Vec<u8> {
                    <$lifecycle as $crate::Lifecycle>::snapshot()
                }
                fn restore(
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$lifecycle as $crate::Lifecycle>::restore(state)
                }
            }

            $crate::bindings_full::__wshost_export_world_full!(
                __WshostGuest with_types_in $crate::bindings_full
            );
        };
    };
}

/// Implements a world's event exports (trait `$world_guest`) for `$guest` by forwarding
/// to `$controller`.
#[doc(hidden)]
#[macro_export]
macro_rules! __forward_events {
    ($world_guest:path, $controller:ty, $guest:ident) => {
        impl $world_guest for $guest {
            fn on_open(conn: u64) {
                <$controller as $crate::Controller>::on_open($crate::Connection::from_id(conn));
            }
            fn on_message(conn: u64, msg: $crate::Message) {
                <$controller as $crate::Controller>::on_message(
                    $crate::Connection::from_id(conn),
                    msg,
                );
            }
            fn on_close(conn: u64, code: u16, reason: ::std::string::String) {
                <$controller as $crate::Controller>::on_close(
                    $crate::Connection::from_id(conn),
                    code,
                    reason,
                );
            }
            fn on_error(conn: u64, error: ::std::string::String) {
                <$controller as $crate::Controller>::on_error(
                    $crate::Connection::from_id(conn),
                    error,
                );
            }
        }
    };
}
