//! {{name}}: a wshost controller with every optional hook: it checks upgrade requests
//! itself (`Handshake`) and has lifecycle hooks, timers and state handoff on hot reload
//! (`Lifecycle`). wshost calls one method at a time, so state can live in `static`s
//! (`thread_local!` + `RefCell`) without locks. A panic ends the call: that connection
//! is closed with 1011 (a handshake gets 500) and a fresh instance takes over, running
//! `init` again. The full contract is wit/controller.wit.

use std::cell::RefCell;
use std::time::Duration;

use wshost_guest::{
    Connection, Controller, Handshake, HandshakeRequest, HandshakeResponse, Lifecycle,
    LogLevel, Message, ServerParams, Timer, connection_count, log, set_timer,
};

thread_local! {
    /// The heartbeat timer, running while anyone is connected.
    static HEARTBEAT: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

struct {{type}};

impl Controller for {{type}} {
    /// A client completed the WebSocket handshake; it can be sent to already.
    fn on_open(conn: Connection) {
        let _ = conn.send_text("welcome to {{name}}");
    }

    /// A complete message arrived (text or binary). This one sends it back.
    fn on_message(conn: Connection, msg: Message) {
        let _ = conn.send(&msg);
    }

    /// The connection is closed (1005: no code given, 1006: dropped).
    fn on_close(conn: Connection, code: u16, reason: String) {
        log(
            LogLevel::Debug,
            &format!("connection {} closed: {code} {reason}", conn.id()),
        );
    }

    /// The client broke the protocol; the host closes it and `on_close` follows.
    fn on_error(conn: Connection, error: String) {
        log(LogLevel::Warn, &format!("connection {}: {error}", conn.id()));
    }
}

impl Handshake for {{type}} {
    /// Runs after routes.toml's filters, before the `101`: return attributes to add
    /// (the connection sees them in its info), or refuse with an HTTP answer.
    fn on_handshake(request: HandshakeRequest) -> Result<Vec<(String, String)>, HandshakeResponse> {
        if request.header("x-refuse").is_some() {
            return Err(HandshakeResponse::new(403, "refused by {{name}}"));
        }
        Ok(vec![("greeted".to_owned(), "yes".to_owned())])
    }
}

impl Lifecycle for {{type}} {
    /// Runs once per instance before anything else, with `[route.config]` settings.
    fn init(config: Vec<(String, String)>, params: ServerParams) -> Result<(), String> {
        log(
            LogLevel::Info,
            &format!("{} starting on {} with {config:?}", params.controller, params.listen),
        );
        Ok(())
    }

    /// The controller's connection count went from 0 to 1 (before `on_open`).
    fn on_first_open(_conn: Connection) {
        let timer = set_timer(Duration::from_secs(30), true).ok();
        HEARTBEAT.with(|h| *h.borrow_mut() = timer);
    }

    /// The count went from 1 to 0 (after `on_close`).
    fn on_last_close(_conn: Connection) {
        if let Some(timer) = HEARTBEAT.with(|h| h.borrow_mut().take()) {
            timer.cancel();
        }
    }

    /// The server is shutting down; connections are still open and can be sent to.
    fn on_shutdown() {
        wshost_guest::broadcast_text("server shutting down", None);
    }

    /// A timer set with `set_timer` fired.
    fn on_timer(_timer: Timer) {
        let n = connection_count();
        wshost_guest::broadcast_text(&format!("{n} online"), None);
    }

    /// Hot reload: the old version's state, handed to the new version's `restore`.
    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    /// Hot reload: what the old version's `snapshot` returned; an error keeps the old
    /// version serving.
    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

wshost_guest::export!({{type}}, full);
