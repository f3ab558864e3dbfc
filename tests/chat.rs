//! The chat example: a room per path (`/chat/ROOM`, the route's topic `chat/{1}`);
//! newcomers are welcomed with the room's online count, the others in the room hear who
//! joined, said something (text or binary) and left, and other rooms hear none of it. On a
//! route without a `topic` (a routes.toml from before topics) the rooms work the same.
//!
//! The same scenarios run against the chat controller in each language (examples/chat in
//! Rust, examples/chat-js, examples/chat-py): they must behave exactly alike.

use anyhow::{Context, Result};

use crate::harness::{
    Client, HttpRequest, Lang, Route, RoutesDir, Server, chat, opcode, routes_toml,
};

/// A server routing /chat/* with sub-protocol `chat` and topic `chat/{1}` to the chat
/// controller in `lang`; a static bearer token (`?access_token=tok-alice`) names a member
/// `alice`.
async fn chat_server(lang: Lang) -> Result<Server> {
    chat_server_with(lang, Some("chat/{1}")).await
}

/// [`chat_server`] with the route's `topic` set to `topic`, or left out.
async fn chat_server_with(lang: Lang, topic: Option<&str>) -> Result<Server> {
    let mut route = Route::to(chat(lang))
        .at("/chat/*")
        .protocols(&["chat"])
        .filters(r#"{ kind = "bearer", from = ["query"], tokens-file = "tokens.txt" }"#);
    if let Some(topic) = topic {
        route = route.topic(topic);
    }
    let dir = RoutesDir::new(&routes_toml(&[route]))?;
    dir.write("tokens.txt", b"tok-alice alice\n")?;
    Server::start_in(dir).await
}

/// Joins the room at `path` and reads the welcome; returns the client, its name and the
/// online count.
async fn join_at(server: &Server, path: &str) -> Result<(Client, String, usize)> {
    let (mut client, protocol) = server.connect_with_protocols(path, &["chat"]).await?;
    assert_eq!(protocol.as_deref(), Some("chat"));
    let welcome = client.recv_text().await?;
    let (name, online) = welcome
        .strip_prefix("welcome ")
        .and_then(|rest| rest.split_once("; "))
        .with_context(|| format!("expected `welcome {{name}}; {{n}} online`, got {welcome:?}"))?;
    let online = online
        .strip_suffix(" online")
        .with_context(|| format!("no online count in {welcome:?}"))?
        .parse()?;
    Ok((client, name.to_owned(), online))
}

async fn join(server: &Server) -> Result<(Client, String, usize)> {
    join_at(server, "/chat/room").await
}

/// Three clients who joined in order, each having seen everything announced so far.
struct Room {
    server: Server,
    a: (Client, String),
    b: (Client, String),
    c: (Client, String),
}

async fn room_of_three(lang: Lang) -> Result<Room> {
    let server = chat_server(lang).await?;
    let (a, name_a, online) = join(&server).await?;
    assert_eq!(online, 1);
    let (b, name_b, online) = join(&server).await?;
    assert_eq!(online, 2);
    let mut a = (a, name_a);
    assert_eq!(a.0.recv_text().await?, format!("{name_b} joined"));
    let (c, name_c, online) = join(&server).await?;
    assert_eq!(online, 3);
    let mut b = (b, name_b);
    assert_eq!(a.0.recv_text().await?, format!("{name_c} joined"));
    assert_eq!(b.0.recv_text().await?, format!("{name_c} joined"));
    Ok(Room {
        server,
        a,
        b,
        c: (c, name_c),
    })
}

async fn newcomers_are_welcomed_and_announced(lang: Lang) -> Result<()> {
    // room_of_three checks the welcomes (1, 2 and 3 online) and the `joined` notices.
    let room = room_of_three(lang).await?;
    let names = [&room.a.1, &room.b.1, &room.c.1];
    for name in names {
        assert!(name.starts_with("anon-"), "unexpected name {name:?}");
    }
    assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
    Ok(())
}

async fn text_reaches_everyone_but_the_sender(lang: Lang) -> Result<()> {
    let Room {
        server: _server,
        a: (mut a, name_a),
        b: (mut b, name_b),
        c: (mut c, _),
    } = room_of_three(lang).await?;
    a.send_text("hello room").await?;
    assert_eq!(b.recv_text().await?, format!("{name_a}: hello room"));
    assert_eq!(c.recv_text().await?, format!("{name_a}: hello room"));
    // B speaks only after A's message went out; A's next message is B's, which shows
    // A's own message was not sent back to it.
    b.send_text("hi a ✓ ünïcödé").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b}: hi a ✓ ünïcödé"));
    assert_eq!(c.recv_text().await?, format!("{name_b}: hi a ✓ ünïcödé"));
    Ok(())
}

async fn binary_is_forwarded_unchanged(lang: Lang) -> Result<()> {
    let Room {
        server: _server,
        a: (mut a, _),
        b: (mut b, name_b),
        c: (mut c, _),
    } = room_of_three(lang).await?;
    let bytes = [0u8, 159, 146, 150, 255];
    a.send_binary(&bytes).await?;
    assert_eq!(b.recv_binary().await?, bytes);
    assert_eq!(c.recv_binary().await?, bytes);
    // 1 MiB of every byte value, and an empty message.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    c.send_binary(&big).await?;
    c.send_binary(&[]).await?;
    assert_eq!(a.recv_binary().await?, big);
    assert_eq!(a.recv_binary().await?, Vec::<u8>::new());
    assert_eq!(b.recv_binary().await?, big);
    assert_eq!(b.recv_binary().await?, Vec::<u8>::new());
    b.send_text("after").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b}: after"));
    Ok(())
}

async fn the_others_hear_who_left(lang: Lang) -> Result<()> {
    let Room {
        server,
        a: (mut a, _),
        b: (b, name_b),
        c: (c, name_c),
    } = room_of_three(lang).await?;
    c.close(1000, "").await?;
    assert_eq!(a.recv_text().await?, format!("{name_c} left"));
    // A dropped socket (no close frame) is a departure too.
    drop(b);
    assert_eq!(a.recv_text().await?, format!("{name_b} left"));
    // The count went down with them.
    let (_d, name_d, online) = join(&server).await?;
    assert_eq!(online, 2);
    assert_eq!(a.recv_text().await?, format!("{name_d} joined"));
    Ok(())
}

async fn a_protocol_error_ends_only_that_member(lang: Lang) -> Result<()> {
    let Room {
        server,
        a: (mut a, _),
        b: (mut b, name_b),
        c: (mut c, _),
    } = room_of_three(lang).await?;
    // A fourth member speaking raw frames, so that it can break the protocol.
    let request = HttpRequest::upgrade("/chat/room").header("Sec-WebSocket-Protocol", "chat");
    let mut d = server.raw_peer_for(&request).await?;
    let welcome = d.read_frame().await?.context("no welcome")?;
    let welcome = String::from_utf8(welcome.payload)?;
    let name_d = welcome
        .strip_prefix("welcome ")
        .and_then(|rest| rest.strip_suffix("; 4 online"))
        .with_context(|| format!("welcome {welcome:?}"))?
        .to_owned();
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(member.recv_text().await?, format!("{name_d} joined"));
    }
    // Invalid UTF-8 in a text frame: `on-error`, close 1007, then `on-close`.
    d.send_frame(opcode::TEXT, &[b'o', b'k', 0xff, 0xfe])
        .await?;
    assert_eq!(d.read_close().await?.close_code(), Some(1007));
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(member.recv_text().await?, format!("{name_d} left"));
    }
    // The instance did not trap: the room (and its names) is intact.
    b.send_text("still here").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b}: still here"));
    Ok(())
}

async fn names_come_from_the_user_attribute(lang: Lang) -> Result<()> {
    let server = chat_server(lang).await?;
    let (mut anon, name, online) = join(&server).await?;
    assert!(name.starts_with("anon-"), "{name:?}");
    assert_eq!(online, 1);
    let (mut alice, name, online) = join_at(&server, "/chat/room?access_token=tok-alice").await?;
    assert_eq!((name.as_str(), online), ("alice", 2));
    assert_eq!(anon.recv_text().await?, "alice joined");
    alice.send_text("hi").await?;
    assert_eq!(anon.recv_text().await?, "alice: hi");
    alice.close(1000, "").await?;
    assert_eq!(anon.recv_text().await?, "alice left");
    Ok(())
}

async fn rooms_are_separate(lang: Lang) -> Result<()> {
    rooms_are_separate_on(&chat_server(lang).await?).await
}

/// The chat subscribes and publishes itself when its route has no `topic`.
async fn rooms_work_on_a_route_without_a_topic(lang: Lang) -> Result<()> {
    rooms_are_separate_on(&chat_server_with(lang, None).await?).await
}

async fn rooms_are_separate_on(server: &Server) -> Result<()> {
    let (mut red_a, name_red_a, online) = join_at(server, "/chat/red").await?;
    assert_eq!(online, 1);
    let (mut blue_a, _, online) = join_at(server, "/chat/blue").await?;
    assert_eq!(online, 1, "a room counts its own members");
    let (mut red_b, name_red_b, online) = join_at(server, "/chat/red").await?;
    assert_eq!(online, 2);
    assert_eq!(red_a.recv_text().await?, format!("{name_red_b} joined"));
    red_a.send_binary(&[1, 2, 3]).await?;
    assert_eq!(red_b.recv_binary().await?, [1, 2, 3]);
    red_a.send_text("red only").await?;
    assert_eq!(red_b.recv_text().await?, format!("{name_red_a}: red only"));
    red_b.close(1000, "").await?;
    assert_eq!(red_a.recv_text().await?, format!("{name_red_b} left"));
    // Blue heard none of it: the next thing it hears is its own room's newcomer.
    let (mut blue_b, name_blue_b, online) = join_at(server, "/chat/blue").await?;
    assert_eq!(online, 2);
    assert_eq!(blue_a.recv_text().await?, format!("{name_blue_b} joined"));
    blue_b.send_text("blue only").await?;
    assert!(blue_a.recv_text().await?.ends_with(": blue only"));
    // Red, alone now, heard none of blue's traffic: its next message is its own
    // room's newcomer.
    blue_b.close(1000, "").await?;
    assert_eq!(blue_a.recv_text().await?, format!("{name_blue_b} left"));
    let (_red_c, name_red_c, online) = join_at(server, "/chat/red").await?;
    assert_eq!(online, 2);
    assert_eq!(red_a.recv_text().await?, format!("{name_red_c} joined"));
    Ok(())
}

/// One `#[tokio::test]` per scenario for the chat controller in `$lang`.
macro_rules! chat_tests {
    ($module:ident, $lang:expr) => {
        mod $module {
            use super::*;
            chat_tests!(@each $lang;
                newcomers_are_welcomed_and_announced,
                text_reaches_everyone_but_the_sender,
                binary_is_forwarded_unchanged,
                the_others_hear_who_left,
                a_protocol_error_ends_only_that_member,
                names_come_from_the_user_attribute,
                rooms_are_separate,
                rooms_work_on_a_route_without_a_topic,
            );
        }
    };
    (@each $lang:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() -> Result<()> {
                super::$scenario($lang).await
            }
        )*
    };
}

chat_tests!(rust, Lang::Rust);
chat_tests!(javascript, Lang::JavaScript);
chat_tests!(python, Lang::Python);
