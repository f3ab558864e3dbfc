//! {{name}}: a wshost controller. wshost calls the methods below as things happen on the
//! WebSocket connections routed to it (routes.toml), one call at a time, so state can
//! live in `static`s (`thread_local!` + `RefCell`) without locks. A panic ends the call:
//! that connection is closed with 1011 and a fresh instance takes over (statics start
//! over). The full contract is wit/controller.wit.

use wshost_guest::{Connection, Controller, LogLevel, Message, log};

struct {{type}};

impl Controller for {{type}} {
    /// A client completed the WebSocket handshake; it can be sent to already.
    fn on_open(conn: Connection) {
        let _ = conn.send_text("welcome to {{name}}");
    }

    /// A complete message arrived (text or binary). This one sends it back.
    fn on_message(conn: Connection, msg: Message) {
        // `send` fails only when the connection is gone or its queue is full.
        let _ = conn.send(&msg);
    }

    /// The connection is closed (1005: no code given, 1006: dropped). It is no longer
    /// in `connections()`.
    fn on_close(conn: Connection, code: u16, reason: String) {
        log(
            LogLevel::Debug,
            &format!("connection {} closed: {code} {reason}", conn.id()),
        );
    }

    /// The client broke the protocol (e.g. invalid UTF-8); the host closes it and
    /// `on_close` follows.
    fn on_error(conn: Connection, error: String) {
        log(LogLevel::Warn, &format!("connection {}: {error}", conn.id()));
    }
}

wshost_guest::export!({{type}});
