//! A test-only controller built against `wshost:controller@0.1.0`, a version of the WIT
//! other than the host's. Its handshake hook refuses every client with 401; a host that
//! loaded it and missed the hook (optional exports are found by versioned name) would
//! let everyone in. The host must refuse to load it, naming both versions.

#[expect(
    clippy::mem_forget,
    reason = "in the code wit-bindgen generates for list returns"
)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "controller-with-handshake",
    });
}

use bindings::Guest;
use bindings::exports::wshost::controller::handshake::{Guest as Handshake, Request, Response};
use bindings::wshost::controller::types::Message;

struct OldWit;

impl Guest for OldWit {
    fn on_open(_conn: u64) {}

    fn on_message(_conn: u64, _msg: Message) {}

    fn on_close(_conn: u64, _code: u16, _reason: String) {}

    fn on_error(_conn: u64, _error: String) {}
}

impl Handshake for OldWit {
    fn on_handshake(_req: Request) -> Result<Vec<(String, String)>, Response> {
        Err(Response {
            status: 401,
            headers: Vec::new(),
            body: "nobody gets in".to_owned(),
        })
    }
}

bindings::export!(OldWit with_types_in bindings);
