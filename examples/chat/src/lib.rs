//! The chat controller: rooms by path, with presence. A member's room is a topic: the
//! one the route's `topic` key subscribed it to (routes.toml `topic = "chat/{1}"`, so
//! `/chat/lobby` is topic `chat/lobby`, the connection's `topic` attribute). The chat
//! keeps no member lists of its own: the host fans a message out to the topic's
//! subscribers (on every node of a `[cluster]`), copying it out of the guest once, and
//! counts them (`presence`).
//!
//! On a route with a `topic`, the chat speaks with `broadcast`, which the host turns into
//! a publish to the connection's topic. On a route without one (a routes.toml from
//! before topics), the chat subscribes each newcomer itself to `chat/{match.1}` and
//! publishes there explicitly: the same rooms, the same protocol.
//!
//! A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
//! - newcomer: `welcome {name}; {n} online` (n counts the room's subscribers, newcomer
//!   included, on every node this node has heard from: the first member of a room on a
//!   node counts that node's only); the room's others: `{name} joined`
//! - text `m` from a member: `{name}: m` to every other member of the room; binary is
//!   forwarded as is
//! - on leaving: `{name} left` to the remaining members of the room
//!
//! By the time `on_close` runs the host has forgotten the connection's attributes, so
//! names and rooms are remembered in guest memory at open. A fresh instance (after a
//! trap or a hot reload) starts without them: its first event relearns them from the
//! host's connection list and attributes. The subscriptions themselves belong to the
//! host and survive the instance.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use wshost_guest::{
    Connection, Controller, LogLevel, Message, broadcast, connections, log, presence, publish,
};

struct Chat;

/// A member's room, and how messages reach it.
#[derive(Clone)]
enum Room {
    /// The route's `topic`: the host subscribed the connection, and `broadcast` during its
    /// events publishes to the topic.
    Routed(String),
    /// No `topic` on the route: the chat subscribes the connection to this topic itself
    /// and publishes to it explicitly.
    Own(String),
}

impl Room {
    /// The room's topic.
    fn topic(&self) -> &str {
        match self {
            Room::Routed(topic) | Room::Own(topic) => topic,
        }
    }

    /// Sends `msg` to every member of the room but `exclude`, on every node.
    fn tell(&self, msg: &Message, exclude: Option<Connection>) {
        match self {
            Room::Routed(_) => broadcast(msg, exclude),
            Room::Own(topic) => publish(topic, msg, exclude),
        };
    }
}

/// A member, remembered at open: the host forgets a connection's attributes as soon as
/// it closes, and `left` still needs the name and the room.
#[derive(Clone)]
struct Member {
    name: String,
    room: Room,
}

thread_local! {
    static MEMBERS: RefCell<HashMap<Connection, Member>> = RefCell::new(HashMap::new());
    /// Whether this instance has learnt the connections it inherited.
    static KNOWN: Cell<bool> = const { Cell::new(false) };
}

/// The member `conn` is, registered from its attributes the first time.
fn member(conn: Connection) -> Member {
    if let Some(known) = MEMBERS.with_borrow(|m| m.get(&conn).cloned()) {
        return known;
    }
    let room = match conn.attribute("topic") {
        Some(topic) => Room::Routed(topic),
        None => Room::Own(format!(
            "chat/{}",
            conn.attribute("match.1").unwrap_or_default()
        )),
    };
    let member = Member {
        name: conn
            .attribute("user")
            .unwrap_or_else(|| format!("anon-{}", conn.id())),
        room,
    };
    MEMBERS.with_borrow_mut(|members| members.insert(conn, member.clone()));
    member
}

/// A fresh instance's first event: learn the connections that are already open (their
/// subscriptions outlived the old instance; only names and rooms need relearning).
fn learn_inherited() {
    if !KNOWN.replace(true) {
        for conn in connections() {
            member(conn);
        }
    }
}

impl Controller for Chat {
    fn on_open(conn: Connection) {
        learn_inherited();
        let Member { name, room } = member(conn);
        if let Room::Own(topic) = &room
            && let Err(e) = conn.subscribe(topic)
        {
            log(
                LogLevel::Warn,
                &format!("cannot subscribe {} to `{topic}`: {e}", conn.id()),
            );
        }
        let online = presence(room.topic()).connections;
        let _ = conn.send_text(&format!("welcome {name}; {online} online"));
        room.tell(&Message::Text(format!("{name} joined")), Some(conn));
    }

    fn on_message(conn: Connection, msg: Message) {
        learn_inherited();
        let Member { name, room } = member(conn);
        match msg {
            Message::Text(line) => room.tell(&Message::Text(format!("{name}: {line}")), Some(conn)),
            binary @ Message::Binary(_) => room.tell(&binary, Some(conn)),
        }
    }

    fn on_close(conn: Connection, _code: u16, _reason: String) {
        learn_inherited();
        // A member this instance never knew (it closed before the instance's first
        // event) has nobody to be announced to by name. The host already took the
        // connection out of its room, so `None` excludes nobody.
        let Some(Member { name, room }) = MEMBERS.with_borrow_mut(|members| members.remove(&conn))
        else {
            return;
        };
        room.tell(&Message::Text(format!("{name} left")), None);
    }
}

wshost_guest::export!(Chat);
