//! A controller's own `on-handshake` check (examples/auth): after the bearer filter, it
//! admits a token only to the room its `room` claim names, adds a `room` attribute, and
//! refuses the rest with its own status and body; a refusal header that could break the
//! response (a CR or LF in it) answers 500 instead.

use anyhow::Result;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::harness::{Client, HttpRequest, RoutesDir, SECRET, Server, claims, guests, jwt};

async fn server() -> Result<Server> {
    let dir = RoutesDir::new(&format!(
        r#"
[[route]]
match = "/rooms/*"
filters = [{{ kind = "bearer", algorithm = "HS256", secret-file = "secret.txt", claims = ["room"] }}]
controller = "{}"
"#,
        guests().auth.display()
    ))?;
    dir.write("secret.txt", SECRET.as_bytes())?;
    Server::start_in(dir).await
}

fn enter(path: &str, user: &str, room: &str) -> HttpRequest {
    let token = jwt(Algorithm::HS256, &claims(user, json!({ "room": room })));
    HttpRequest::upgrade(path).header("Authorization", &format!("Bearer {token}"))
}

async fn member(server: &Server, user: &str, room: &str) -> Result<Client> {
    let (_, mut client) = server
        .upgrade(&enter(&format!("/rooms/{room}"), user, room))
        .await?;
    assert_eq!(
        client.recv_text().await?,
        format!("hello {user}, this is room {room}")
    );
    Ok(client)
}

#[tokio::test]
async fn the_hook_admits_the_right_room_and_its_attribute_scopes_messages() -> Result<()> {
    let server = server().await?;
    let mut ann = member(&server, "ann", "blue").await?;
    let mut bob = member(&server, "bob", "blue").await?;
    let mut cat = member(&server, "cat", "red").await?;
    cat.send_text("for red only").await?;
    ann.send_text("for blue").await?;
    assert_eq!(bob.recv_text().await?, "for blue");
    bob.send_text("blue again").await?;
    // Ann's next message is Bob's, not Cat's: rooms are kept apart.
    assert_eq!(ann.recv_text().await?, "blue again");
    Ok(())
}

#[tokio::test]
async fn the_hook_refuses_a_token_for_another_room() -> Result<()> {
    let server = server().await?;
    let response = server.http(&enter("/rooms/red", "ann", "blue")).await?;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(
        response.body_text().trim(),
        "this token does not open room `red`"
    );
    Ok(())
}

#[tokio::test]
async fn the_hook_refuses_anonymous_requests_with_its_own_401() -> Result<()> {
    let server = server().await?;
    let response = server.http(&HttpRequest::upgrade("/rooms/blue")).await?;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(response.body_text().trim(), "a token is required");
    Ok(())
}

#[tokio::test]
async fn a_refusal_header_with_a_line_break_answers_500_instead_of_injecting() -> Result<()> {
    let dir = RoutesDir::new(&format!(
        r#"
[[route]]
match = "/h/*"
controller = "{}"
"#,
        guests().probe_hook.display()
    ))?;
    let server = Server::start_in(dir).await?;
    // The probe's hook refuses with `x-probe: VALUE`, VALUE taken from the query.
    let plain = server
        .http(&HttpRequest::upgrade("/h/x?refuse-header=fine"))
        .await?;
    assert_eq!(plain.status, 403, "{plain:?}");
    assert_eq!(plain.header("x-probe"), Some("fine"));

    let injected = server
        .http(&HttpRequest::upgrade(
            "/h/x?refuse-header=1%0D%0ASet-Cookie:%20session=evil",
        ))
        .await?;
    assert_eq!(injected.status, 500, "{injected:?}");
    assert!(injected.header("set-cookie").is_none(), "{injected:?}");
    assert!(injected.header("x-probe").is_none(), "{injected:?}");
    let line = server
        .log_line("the refused header", |l| l.contains("cannot be sent"))
        .await?;
    assert!(line.contains("probe-hook"), "names the controller: {line}");
    // The controller keeps serving.
    let again = server
        .http(&HttpRequest::upgrade("/h/x?refuse-header=ok"))
        .await?;
    assert_eq!(again.status, 403);
    Ok(())
}
