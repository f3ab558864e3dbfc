//! examples/chat is one room per controller instance: newcomers are welcomed with the
//! online count, the others hear who joined, said something (text or binary) and left.

use anyhow::{Context, Result};

use crate::harness::{Client, Route, Server, guests, routes_toml};

/// A server routing /chat/* with sub-protocol `chat` to the chat controller.
async fn chat_server() -> Result<Server> {
    let route = Route::to(&guests().chat).at("/chat/*").protocols(&["chat"]);
    Server::start(&routes_toml(&[route])).await
}

/// Joins the room and reads the welcome; returns the client, its name and the online count.
async fn join(server: &Server) -> Result<(Client, String, usize)> {
    let (mut client, protocol) = server
        .connect_with_protocols("/chat/room", &["chat"])
        .await?;
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

/// Three clients who joined in order, each having seen everything announced so far.
struct Room {
    _server: Server,
    a: (Client, String),
    b: (Client, String),
    c: (Client, String),
}

async fn room_of_three() -> Result<Room> {
    let server = chat_server().await?;
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
        _server: server,
        a,
        b,
        c: (c, name_c),
    })
}

#[tokio::test]
async fn newcomers_are_welcomed_and_announced() -> Result<()> {
    // room_of_three checks the welcomes (1, 2 and 3 online) and the `joined` notices.
    let room = room_of_three().await?;
    let names = [&room.a.1, &room.b.1, &room.c.1];
    for name in names {
        assert!(name.starts_with("anon-"), "unexpected name {name:?}");
    }
    assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
    Ok(())
}

#[tokio::test]
async fn text_reaches_everyone_but_the_sender() -> Result<()> {
    let Room {
        _server,
        a: (mut a, name_a),
        b: (mut b, name_b),
        c: (mut c, _),
    } = room_of_three().await?;
    a.send_text("hello room").await?;
    assert_eq!(b.recv_text().await?, format!("{name_a}: hello room"));
    assert_eq!(c.recv_text().await?, format!("{name_a}: hello room"));
    // B speaks only after A's message went out; A's next message is B's, which shows
    // A's own message was not sent back to it.
    b.send_text("hi a").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b}: hi a"));
    assert_eq!(c.recv_text().await?, format!("{name_b}: hi a"));
    Ok(())
}

#[tokio::test]
async fn binary_is_forwarded_unchanged() -> Result<()> {
    let Room {
        _server,
        a: (mut a, _),
        b: (mut b, name_b),
        c: (mut c, _),
    } = room_of_three().await?;
    let bytes = [0u8, 159, 146, 150, 255];
    a.send_binary(&bytes).await?;
    assert_eq!(b.recv_binary().await?, bytes);
    assert_eq!(c.recv_binary().await?, bytes);
    b.send_text("after").await?;
    assert_eq!(a.recv_text().await?, format!("{name_b}: after"));
    Ok(())
}

#[tokio::test]
async fn the_others_hear_who_left() -> Result<()> {
    let Room {
        _server,
        a: (mut a, _),
        b: (mut b, _),
        c: (c, name_c),
    } = room_of_three().await?;
    c.close(1000, "").await?;
    assert_eq!(a.recv_text().await?, format!("{name_c} left"));
    assert_eq!(b.recv_text().await?, format!("{name_c} left"));
    Ok(())
}
