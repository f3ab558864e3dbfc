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

/// Bindings of the `controller-with-handshake` world, sharing the base world's types.
#[doc(hidden)]
pub mod bindings_handshake {
    wit_bindgen::generate!({
        path: "../wit",
        world: "controller-with-handshake",
        pub_export_macro: true,
        export_macro_name: "__wshost_export_world_with_handshake",
        default_bindings_module: "::wshost_guest::bindings_handshake",
        runtime_path: "::wshost_guest::wit_bindgen::rt",
        with: {
            "wshost:controller/types@0.1.0": crate::bindings::wshost::controller::types,
            "wshost:controller/host@0.1.0": crate::bindings::wshost::controller::host,
        },
    });
}

/// The wit-bindgen version this SDK uses, for controllers that want to add their own
/// bindings without a second dependency.
pub use wit_bindgen;

use bindings::wshost::controller::host;
pub use bindings::wshost::controller::types::{ConnectionInfo, LogLevel, Message, SendError};
pub use bindings_handshake::exports::wshost::controller::handshake::{
    Request as HandshakeRequest, Response as HandshakeResponse,
};

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
/// run after the host's filters. Export it with `export!(MyController, handshake)`.
pub trait Handshake {
    /// Accept, returning attributes to add to the connection (they show in
    /// [`ConnectionInfo::attributes`]), or refuse with an HTTP answer.
    fn on_handshake(request: HandshakeRequest) -> Result<Vec<(String, String)>, HandshakeResponse>;
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

/// Queues `msg` for every open connection except `except`, copying it out of the guest
/// once. Returns how many connections it was queued for.
pub fn broadcast(msg: &Message, except: Option<Connection>) -> u32 {
    host::broadcast(msg, except.map(Connection::id))
}

/// [`broadcast`] of a text message.
pub fn broadcast_text(text: &str, except: Option<Connection>) -> u32 {
    broadcast(&Message::Text(text.to_owned()), except)
}

/// Writes `msg` to the host's log at `level`, tagged with this controller.
pub fn log(level: LogLevel, msg: &str) {
    host::log(level, msg);
}

/// Exports a [`Controller`] implementation as the component's `controller` world.
///
/// Use it once per crate, at the top level: `wshost_guest::export!(MyController);`.
/// A type that also implements [`Handshake`] is exported with its hook by
/// `wshost_guest::export!(MyController, handshake);` (world `controller-with-handshake`).
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
        const _: () = {
            struct __WshostGuest;
            $crate::__forward_events!(
                $crate::bindings_handshake::Guest,
                $controller,
                __WshostGuest
            );
            impl $crate::bindings_handshake::exports::wshost::controller::handshake::Guest
                for __WshostGuest
            {
                fn on_handshake(
                    request: $crate::HandshakeRequest,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                    $crate::HandshakeResponse,
                > {
                    <$controller as $crate::Handshake>::on_handshake(request)
                }
            }
            $crate::bindings_handshake::__wshost_export_world_with_handshake!(
                __WshostGuest with_types_in $crate::bindings_handshake
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
