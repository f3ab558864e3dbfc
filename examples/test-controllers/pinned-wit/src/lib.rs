//! A test-only controller built against `wit/controller.wit` as it was before the
//! `topics` interface (commit e11b960), pinned verbatim in its own `wit/` with its own
//! bindings: the shape of every component built before topics existed. The host must
//! keep loading it and running every export it has (tests/wit_compat.rs).
//!
//! It targets `controller-full`: text is echoed as `pinned:{text}` (binary as is); the
//! command `timer` sets a 10 ms one-shot timer whose firing sends `tick` to the
//! connection that asked (`timer error WHY` if the host refused it); the command `attr`
//! replies `attr {value}` with the connection's `pinned` attribute (`attr -` without
//! one), which its handshake hook sets to `yes`.

#[expect(
    clippy::mem_forget,
    reason = "in the code wit-bindgen generates for list returns"
)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "controller-full",
    });
}

use std::cell::RefCell;
use std::collections::HashMap;

use bindings::Guest;
use bindings::exports::wshost::controller::handshake::{self, Request, Response};
use bindings::exports::wshost::controller::lifecycle::{self, ServerParams};
use bindings::exports::wshost::controller::{state, timer_handler};
use bindings::wshost::controller::host;
use bindings::wshost::controller::timers;
use bindings::wshost::controller::types::Message;

thread_local! {
    /// Pending timers and the connection each one answers.
    static TIMERS: RefCell<HashMap<u64, u64>> = RefCell::new(HashMap::new());
}

fn reply(conn: u64, text: String) {
    let _ = host::send(conn, &Message::Text(text));
}

struct PinnedWit;

impl Guest for PinnedWit {
    fn on_open(_conn: u64) {}

    fn on_message(conn: u64, msg: Message) {
        let text = match msg {
            Message::Text(text) => text,
            binary @ Message::Binary(_) => {
                let _ = host::send(conn, &binary);
                return;
            }
        };
        match text.as_str() {
            "timer" => match timers::set_timer(10, false) {
                Ok(id) => {
                    TIMERS.with_borrow_mut(|t| t.insert(id, conn));
                }
                Err(why) => reply(conn, format!("timer error {why}")),
            },
            "attr" => {
                let value = host::attribute(conn, "pinned");
                reply(conn, format!("attr {}", value.as_deref().unwrap_or("-")));
            }
            _ => reply(conn, format!("pinned:{text}")),
        }
    }

    fn on_close(_conn: u64, _code: u16, _reason: String) {}

    fn on_error(_conn: u64, _error: String) {}
}

impl handshake::Guest for PinnedWit {
    fn on_handshake(_req: Request) -> Result<Vec<(String, String)>, Response> {
        Ok(vec![("pinned".to_owned(), "yes".to_owned())])
    }
}

impl lifecycle::Guest for PinnedWit {
    fn init(_config: Vec<(String, String)>, _params: ServerParams) -> Result<(), String> {
        Ok(())
    }

    fn on_first_open(_conn: u64) {}

    fn on_last_close(_conn: u64) {}

    fn on_shutdown() {}
}

impl timer_handler::Guest for PinnedWit {
    fn on_timer(id: u64) {
        if let Some(conn) = TIMERS.with_borrow_mut(|t| t.remove(&id)) {
            reply(conn, "tick".to_owned());
        }
    }
}

impl state::Guest for PinnedWit {
    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

bindings::export!(PinnedWit with_types_in bindings);
