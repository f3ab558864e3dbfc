//! A test-only controller built against `wshost:controller@0.1.0`, a version of the WIT
//! other than the host's. Its handshake hook refuses every client with 401; a host that
//! loaded it and missed the hook (optional exports are found by versioned name) would
//! let everyone in. The host must refuse to load it, naming both versions.

#![expect(
    missing_docs,
    reason = "the bindings wit-bindgen generates are undocumented"
)]

wit_bindgen::generate!({
    path: "wit",
    world: "controller-with-handshake",
});

use exports::wshost::controller::handshake::{Guest as Handshake, Request, Response};

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

export!(OldWit);
