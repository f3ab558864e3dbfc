//! The chat controller: one room per controller instance. Everyone hears everyone
//! else; the host does the fan-out (`broadcast`), copying each message out of the
//! guest once however many members the room has.
//!
//! A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
//! - newcomer: `welcome {name}; {n} online` (n counts the newcomer); others: `{name} joined`
//! - text `m` from a member: `{name}: m` to every other member; binary is forwarded as is
//! - on leaving: `{name} left` to the remaining members

use std::cell::RefCell;
use std::collections::HashMap;

use wshost_guest::{Connection, Controller, Message, broadcast, broadcast_text, connection_count};

struct Chat;

thread_local! {
    /// Names of the members, remembered at open: the host forgets a connection's info
    /// as soon as it closes, and `left` still needs the name.
    static NAMES: RefCell<HashMap<Connection, String>> = RefCell::new(HashMap::new());
}

fn name(conn: Connection) -> String {
    NAMES
        .with_borrow(|names| names.get(&conn).cloned())
        .or_else(|| conn.attribute("user"))
        .unwrap_or_else(|| format!("anon-{}", conn.id()))
}

impl Controller for Chat {
    fn on_open(conn: Connection) {
        let name = name(conn);
        NAMES.with_borrow_mut(|names| names.insert(conn, name.clone()));
        let online = connection_count();
        let _ = conn.send_text(&format!("welcome {name}; {online} online"));
        broadcast_text(&format!("{name} joined"), Some(conn));
    }

    fn on_message(conn: Connection, msg: Message) {
        match msg {
            Message::Text(text) => {
                broadcast_text(&format!("{}: {text}", name(conn)), Some(conn));
            }
            binary @ Message::Binary(_) => {
                broadcast(&binary, Some(conn));
            }
        }
    }

    fn on_close(conn: Connection, _code: u16, _reason: String) {
        let name = name(conn);
        NAMES.with_borrow_mut(|names| names.remove(&conn));
        broadcast_text(&format!("{name} left"), None);
    }
}

wshost_guest::export!(Chat);
