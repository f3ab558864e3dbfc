//! The chat controller: rooms. A member's room is what the route's first `*` captured
//! (attribute `match.1`: `/chat/lobby` is room `lobby`); members hear the members of
//! their own room only. While everyone is in one room, the host does the fan-out
//! (`broadcast`), copying each message out of the guest once however many members the
//! room has; with several rooms, each member of the room is sent to.
//!
//! The members live in guest memory, which a fresh instance (after a trap or a hot
//! reload) starts without: its first event rebuilds them from the host's connection list
//! and attributes.
//!
//! A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
//! - newcomer: `welcome {name}; {n} online` (n counts the room, newcomer included);
//!   the room's others: `{name} joined`
//! - text `m` from a member: `{name}: m` to every other member of the room; binary is
//!   forwarded as is
//! - on leaving: `{name} left` to the remaining members of the room

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use wshost_guest::{Connection, Controller, Message, broadcast, connections};

struct Chat;

/// A member, remembered at open: the host forgets a connection's info as soon as it
/// closes, and `left` still needs the name and the room.
#[derive(Clone)]
struct Member {
    name: String,
    room: String,
}

thread_local! {
    static MEMBERS: RefCell<HashMap<Connection, Member>> = RefCell::new(HashMap::new());
    /// Members per room.
    static ROOMS: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
    /// Whether this instance has learnt the connections it inherited.
    static KNOWN: Cell<bool> = const { Cell::new(false) };
}

/// The member `conn` is, registered from its attributes the first time.
fn member(conn: Connection) -> Member {
    if let Some(known) = MEMBERS.with_borrow(|m| m.get(&conn).cloned()) {
        return known;
    }
    let member = Member {
        name: conn
            .attribute("user")
            .unwrap_or_else(|| format!("anon-{}", conn.id())),
        room: conn.attribute("match.1").unwrap_or_default(),
    };
    ROOMS.with_borrow_mut(|rooms| *rooms.entry(member.room.clone()).or_insert(0) += 1);
    MEMBERS.with_borrow_mut(|members| members.insert(conn, member.clone()));
    member
}

/// A fresh instance's first event: learn the connections that are already open.
fn learn_inherited() {
    if !KNOWN.replace(true) {
        for conn in connections() {
            member(conn);
        }
    }
}

/// Sends `msg` to every member of `room` but `exclude`.
fn tell_room(room: &str, msg: &Message, exclude: Option<Connection>) {
    let (occupied, only) = ROOMS.with_borrow(|rooms| (rooms.contains_key(room), rooms.len() == 1));
    if !occupied {
        return;
    }
    if only {
        // Everyone is in this room: one copy out of the guest, fanned out by the host.
        broadcast(msg, exclude);
        return;
    }
    let members: Vec<Connection> = MEMBERS.with_borrow(|members| {
        members
            .iter()
            .filter(|(conn, m)| m.room == room && Some(**conn) != exclude)
            .map(|(conn, _)| *conn)
            .collect()
    });
    for member in members {
        let _ = member.send(msg);
    }
}

impl Controller for Chat {
    fn on_open(conn: Connection) {
        learn_inherited();
        let Member { name, room } = member(conn);
        let online = ROOMS.with_borrow(|rooms| rooms.get(&room).copied().unwrap_or(1));
        let _ = conn.send_text(&format!("welcome {name}; {online} online"));
        tell_room(&room, &Message::Text(format!("{name} joined")), Some(conn));
    }

    fn on_message(conn: Connection, msg: Message) {
        learn_inherited();
        let Member { name, room } = member(conn);
        match msg {
            Message::Text(line) => {
                tell_room(&room, &Message::Text(format!("{name}: {line}")), Some(conn));
            }
            binary @ Message::Binary(_) => tell_room(&room, &binary, Some(conn)),
        }
    }

    fn on_close(conn: Connection, _code: u16, _reason: String) {
        learn_inherited();
        // A member this instance never knew (it closed before the instance's first
        // event) has nobody to be announced to by name.
        let Some(member) = MEMBERS.with_borrow_mut(|members| members.remove(&conn)) else {
            return;
        };
        ROOMS.with_borrow_mut(|rooms| {
            if let Some(n) = rooms.get_mut(&member.room) {
                *n -= 1;
                if *n == 0 {
                    rooms.remove(&member.room);
                }
            }
        });
        tell_room(
            &member.room,
            &Message::Text(format!("{} left", member.name)),
            None,
        );
    }
}

wshost_guest::export!(Chat);
