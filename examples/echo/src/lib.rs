//! The echo controller: every text or binary message goes back to its sender unchanged,
//! empty and large messages included. The smallest useful controller.

use wshost_guest::{Connection, Controller, Message};

struct Echo;

impl Controller for Echo {
    fn on_message(conn: Connection, msg: Message) {
        let _ = conn.send(&msg);
    }
}

wshost_guest::export!(Echo);
