//! The auth controller: rooms that only token holders for that room may enter.
//!
//! routes.toml puts a `bearer` filter in front of `/rooms/*`, so by the time a request
//! reaches this controller the JWT is verified and its claims are attributes. The
//! controller's own handshake hook then checks what no built-in filter can know: that
//! the token's `room` claim names the room in the path. Members of a room hear each
//! other, and nobody else.

use wshost_guest::{
    Connection, Controller, Handshake, HandshakeRequest, HandshakeResponse, Message, connections,
};

struct Auth;

impl Handshake for Auth {
    fn on_handshake(request: HandshakeRequest) -> Result<Vec<(String, String)>, HandshakeResponse> {
        let room = request.attribute("match.1").unwrap_or_default();
        if request.attribute("user").is_none() {
            let mut refusal = HandshakeResponse::new(401, "a token is required");
            refusal
                .headers
                .push(("www-authenticate".to_owned(), "Bearer".to_owned()));
            return Err(refusal);
        }
        match request.attribute("claims.room") {
            Some(claim) if claim == room => Ok(vec![("room".to_owned(), room.to_owned())]),
            _ => Err(HandshakeResponse::new(
                403,
                &format!("this token does not open room `{room}`"),
            )),
        }
    }
}

fn room_of(conn: Connection) -> Option<String> {
    conn.info()?.attribute("room").map(str::to_owned)
}

impl Controller for Auth {
    fn on_open(conn: Connection) {
        let Some(info) = conn.info() else { return };
        let user = info.attribute("user").unwrap_or("?");
        let room = info.attribute("room").unwrap_or("?");
        let _ = conn.send_text(&format!("hello {user}, this is room {room}"));
    }

    fn on_message(conn: Connection, msg: Message) {
        let room = room_of(conn);
        for other in connections() {
            if other != conn && room_of(other) == room {
                let _ = other.send(&msg);
            }
        }
    }
}

wshost_guest::export!(Auth, handshake);
