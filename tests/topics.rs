//! Topics on one node, through the probe's topic commands: subscriptions come and go
//! (explicitly, or with the connection), a publish reaches the topic's subscribers only,
//! whatever their controller, topic names are opaque bytes with limits, subscriptions
//! belong to the host and outlive a trapped instance, a route's `topic` subscribes its
//! connections and turns their `broadcast` into a publish, and presence counts
//! connections and lists their users.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::harness::{
    Client, HANG_GUARD, Route, RoutesDir, Server, guests, info_value, parse_closed, parse_info,
    routes_toml,
};

/// `?name=NAME` becomes the `user` attribute.
const NAME_FILTER: &str = r#"{ kind = "query", name = "name", attribute = "user" }"#;

/// The probe on every path, one controller: `/room/*` has topic `room/{1}`, every other
/// path none; `?name=NAME` names the user on both.
async fn server() -> Result<Server> {
    let probe = &guests().probe;
    Server::start(&routes_toml(&[
        Route::to(probe)
            .named("room")
            .at("/room/*")
            .topic("room/{1}")
            .filters(NAME_FILTER),
        Route::to(probe).named("plain").filters(NAME_FILTER),
    ]))
    .await
}

/// Subscribes `client` to `topic`, expecting success.
async fn sub(client: &mut Client, topic: &str) -> Result<()> {
    assert_eq!(
        client.probe_request(&format!("sub {topic}")).await?,
        format!("subscribed {topic}")
    );
    Ok(())
}

/// Shows that nothing is queued for `client` before its next reply: a probe's reply to
/// a round trip comes after everything queued for it earlier.
async fn heard_nothing(client: &mut Client) -> Result<()> {
    assert_eq!(client.request("nothing-else").await?, "nothing-else");
    Ok(())
}

/// Repeats `command` until the probe answers `expected` (something that happens after
/// the server finished with another connection), bounded by the hang guard.
async fn eventually(client: &mut Client, command: &str, expected: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let reply = client.probe_request(command).await?;
        if reply == expected {
            return Ok(());
        }
        if started.elapsed() > HANG_GUARD {
            bail!("`{command}` still answers {reply:?}, not {expected:?} (hang guard)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscribe_unsubscribe_and_list() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    assert_eq!(a.request("subs").await?, "");
    sub(&mut a, "b/2").await?;
    sub(&mut a, "a/1").await?;
    // Subscribing twice is the same as once.
    sub(&mut a, "b/2").await?;
    assert_eq!(a.request("subs").await?, "a/1,b/2", "sorted, once each");
    assert_eq!(a.request("unsub b/2").await?, "unsubscribed true");
    assert_eq!(a.request("unsub b/2").await?, "unsubscribed false");
    assert_eq!(a.request("unsub never").await?, "unsubscribed false");
    assert_eq!(a.request("subs").await?, "a/1");
    assert_eq!(a.request("presence a/1").await?, "presence 1 ");
    assert_eq!(a.request("presence b/2").await?, "presence 0 ");
    Ok(())
}

#[tokio::test]
async fn a_publish_reaches_the_topics_subscribers_only() -> Result<()> {
    let server = server().await?;
    let (mut x, _) = server.connect_probe("/x").await?;
    let (mut y, _) = server.connect_probe("/y").await?;
    let (mut z, _) = server.connect_probe("/z").await?;
    let (mut sender, _) = server.connect_probe("/sender").await?;
    sub(&mut x, "t1").await?;
    sub(&mut y, "t2").await?;
    sub(&mut z, "t1").await?;
    // A publisher need not be a subscriber.
    assert_eq!(sender.request("pub t1 hello ✓").await?, "published 2");
    assert_eq!(x.recv_text().await?, "hello ✓");
    assert_eq!(z.recv_text().await?, "hello ✓");
    heard_nothing(&mut y).await?;
    heard_nothing(&mut sender).await?;
    // Without exclude, a subscriber publishing hears itself, before the reply.
    assert_eq!(x.request("pub t1 again").await?, "again");
    assert_eq!(x.recv_text().await?, "published 2");
    assert_eq!(z.recv_text().await?, "again");
    // A topic nobody is subscribed to reaches nobody.
    assert_eq!(sender.request("pub t3 void").await?, "published 0");
    for client in [&mut x, &mut y, &mut z] {
        heard_nothing(client).await?;
    }
    Ok(())
}

#[tokio::test]
async fn pubx_excludes_the_sender() -> Result<()> {
    let server = server().await?;
    let (mut x, _) = server.connect_probe("/x").await?;
    let (mut y, _) = server.connect_probe("/y").await?;
    sub(&mut x, "t").await?;
    sub(&mut y, "t").await?;
    assert_eq!(x.request("pubx t only-y").await?, "published 1");
    assert_eq!(y.recv_text().await?, "only-y");
    heard_nothing(&mut x).await?;
    Ok(())
}

#[tokio::test]
async fn a_topic_spans_controllers() -> Result<()> {
    // Two copies of the probe are two controllers, with an instance each.
    let wasm = std::fs::read(&guests().probe).context("reading the probe")?;
    let dir = RoutesDir::new("")?;
    let one = dir.write("one.wasm", &wasm)?;
    let two = dir.write("two.wasm", &wasm)?;
    dir.write(
        "routes.toml",
        routes_toml(&[Route::to(&one).at("/one"), Route::to(&two).at("/two")]).as_bytes(),
    )?;
    let server = Server::start_in(dir).await?;
    let (mut a, id_a) = server.connect_probe("/one").await?;
    let (mut b, id_b) = server.connect_probe("/two").await?;
    // Separate controllers: each sees its own connection only.
    assert_eq!(a.request("connections").await?, id_a.to_string());
    assert_eq!(b.request("connections").await?, id_b.to_string());
    sub(&mut a, "shared").await?;
    sub(&mut b, "shared").await?;
    assert_eq!(a.request("presence shared").await?, "presence 2 ");
    assert_eq!(a.request("pubx shared from-one").await?, "published 1");
    assert_eq!(b.recv_text().await?, "from-one");
    assert_eq!(b.request("pub shared from-two").await?, "from-two");
    assert_eq!(b.recv_text().await?, "published 2");
    assert_eq!(a.recv_text().await?, "from-two");
    Ok(())
}

#[tokio::test]
async fn topic_names_are_1_to_255_bytes() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    assert_eq!(a.request("sub ").await?, "error invalid-topic");
    assert_eq!(a.request("sub").await?, "error invalid-topic");
    let longest = "a".repeat(255);
    sub(&mut a, &longest).await?;
    assert_eq!(
        a.request(&format!("sub {}", "a".repeat(256))).await?,
        "error invalid-topic"
    );
    // Bytes, not characters: 128 two-byte characters are too many, 127 and a byte fit.
    assert_eq!(
        a.request(&format!("sub {}", "é".repeat(128))).await?,
        "error invalid-topic"
    );
    sub(&mut a, &format!("{}a", "é".repeat(127))).await?;
    assert_eq!(
        a.request("subs").await?,
        format!("{longest},{}a", "é".repeat(127))
    );
    // Publishing to an invalid topic reaches nobody.
    assert_eq!(a.request("pub  empty-topic").await?, "published 0");
    assert_eq!(
        a.request(&format!("pub {} long", "a".repeat(256))).await?,
        "published 0"
    );
    heard_nothing(&mut a).await?;
    Ok(())
}

#[tokio::test]
async fn a_connection_has_at_most_256_topics() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    for i in 0..256 {
        sub(&mut a, &format!("t{i:03}")).await?;
    }
    assert_eq!(a.request("sub t256").await?, "error too-many-topics");
    // Subscribing again to one it has is the same as once: no new topic.
    sub(&mut a, "t000").await?;
    assert_eq!(a.request("subs").await?.split(',').count(), 256);
    assert_eq!(a.request("unsub t000").await?, "unsubscribed true");
    sub(&mut a, "t256").await?;
    // The cap is per connection.
    let (mut b, _) = server.connect_probe("/b").await?;
    sub(&mut b, "t257").await?;
    Ok(())
}

#[tokio::test]
async fn a_closed_connection_leaves_its_topics() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    let (mut b, id_b) = server.connect_probe("/b").await?;
    let (mut c, id_c) = server.connect_probe("/c").await?;
    for client in [&mut a, &mut b, &mut c] {
        sub(client, "t").await?;
        sub(client, "u").await?;
    }
    assert_eq!(a.request("presence t").await?, "presence 3 ");
    // The peer closes: by on-close (the probe's `closed` notice) it has left.
    b.close(1000, "").await?;
    assert_eq!(parse_closed(&a.recv_text().await?)?.id, id_b);
    assert_eq!(a.request("presence t").await?, "presence 2 ");
    assert_eq!(a.request("presence u").await?, "presence 2 ");
    // The controller closes it.
    assert_eq!(parse_closed(&c.recv_text().await?)?.id, id_b);
    c.send_text("close 1000 bye").await?;
    assert_eq!(c.recv_close().await?, (1000, "bye".to_owned()));
    assert_eq!(parse_closed(&a.recv_text().await?)?.id, id_c);
    assert_eq!(a.request("presence t").await?, "presence 1 ");
    assert_eq!(a.request("pub u alone").await?, "alone");
    assert_eq!(a.recv_text().await?, "published 1");
    Ok(())
}

#[tokio::test]
async fn subscriptions_outlive_a_trapped_instance() -> Result<()> {
    let server = server().await?;
    let (mut a, _) = server.connect_probe("/a").await?;
    let (mut b, _) = server.connect_probe("/b").await?;
    let (mut c, _) = server.connect_probe("/c").await?;
    sub(&mut a, "t").await?;
    sub(&mut b, "t").await?;
    assert_eq!(a.request("count").await?, "3");
    b.send_text("panic").await?;
    assert_eq!(b.recv_close().await?.0, 1011);
    // A fresh instance (its message counter starts over), the same subscriptions: the
    // host's, not the instance's. Only the trapped connection left.
    assert_eq!(a.probe_request("count").await?, "1");
    assert_eq!(a.probe_request("subs").await?, "t");
    eventually(&mut a, "presence t", "presence 1 ").await?;
    assert_eq!(c.probe_request("pub t after").await?, "published 1");
    assert_eq!(a.recv_text().await?, "after");
    Ok(())
}

#[tokio::test]
async fn topic_names_are_opaque() -> Result<()> {
    let server = server().await?;
    // Characters that mean something to NATS subjects, spaces and non-ASCII: each a
    // topic of its own, none a pattern.
    let topics = ["a.b", "a.*", "a.>", "*", ">", "a", "a b", "ä/ß", "a.b.c"];
    let mut members = Vec::new();
    for topic in topics {
        let (mut client, _) = server.connect_probe("/m").await?;
        sub(&mut client, topic).await?;
        members.push(client);
    }
    let (mut publisher, _) = server.connect_probe("/p").await?;
    for (i, topic) in topics.iter().enumerate() {
        assert_eq!(
            publisher.request(&format!("presence {topic}")).await?,
            "presence 1 ",
            "topic {topic:?}"
        );
        if topic.contains(' ') {
            // `pub` takes the topic up to the first space.
            continue;
        }
        assert_eq!(
            publisher
                .request(&format!("pub {topic} to {topic}"))
                .await?,
            "published 1",
            "topic {topic:?}"
        );
        assert_eq!(members[i].recv_text().await?, format!("to {topic}"));
    }
    for member in &mut members {
        heard_nothing(member).await?;
    }
    assert_eq!(publisher.request("presence a.c").await?, "presence 0 ");
    Ok(())
}

#[tokio::test]
async fn a_route_topic_subscribes_and_scopes_broadcast() -> Result<()> {
    let server = server().await?;
    let (mut red_a, _) = server.connect_probe("/room/red").await?;
    let (mut red_b, id_red_b) = server.connect_probe("/room/red").await?;
    let (mut blue, _) = server.connect_probe("/room/blue").await?;
    // The same controller on a route without topic: one subscribed by hand, one not.
    let (mut listener, _) = server.connect_probe("/plain").await?;
    let (mut outsider, _) = server.connect_probe("/plain").await?;
    assert_eq!(red_a.request("subs").await?, "room/red");
    assert_eq!(blue.request("subs").await?, "room/blue");
    assert_eq!(outsider.request("subs").await?, "");
    let info = parse_info(&red_a.request("info").await?);
    assert_eq!(info_value(&info, "attr.topic"), Some("room/red"));
    let info = parse_info(&outsider.request("info").await?);
    assert_eq!(info_value(&info, "attr.topic"), None);
    sub(&mut listener, "room/red").await?;
    assert_eq!(outsider.request("presence room/red").await?, "presence 3 ");

    // `broadcast` by a member of red is a publish to room/red (exclude none).
    red_a.send_text("broadcast in red").await?;
    for client in [&mut red_a, &mut red_b, &mut listener] {
        assert_eq!(client.recv_text().await?, "in red");
    }
    for client in [&mut blue, &mut outsider] {
        heard_nothing(client).await?;
    }
    // `broadcast` by a connection without topic is the controller-wide one.
    outsider.send_text("broadcast everyone").await?;
    for client in [
        &mut red_a,
        &mut red_b,
        &mut blue,
        &mut listener,
        &mut outsider,
    ] {
        assert_eq!(client.recv_text().await?, "everyone");
    }
    // So is the probe's `closed` notice, broadcast from on-close: red_b's reaches its
    // room only.
    red_b.close(1000, "").await?;
    for client in [&mut red_a, &mut listener] {
        assert_eq!(parse_closed(&client.recv_text().await?)?.id, id_red_b);
    }
    for client in [&mut blue, &mut outsider] {
        heard_nothing(client).await?;
    }
    assert_eq!(outsider.request("presence room/red").await?, "presence 2 ");
    Ok(())
}

#[tokio::test]
async fn presence_counts_connections_and_lists_users() -> Result<()> {
    let server = server().await?;
    let (mut bob, _) = server.connect_probe("/x?name=bob").await?;
    let (mut alice, id_alice) = server.connect_probe("/x?name=alice").await?;
    let (mut alice_again, id_alice_again) = server.connect_probe("/x?name=alice").await?;
    let (mut anon, _) = server.connect_probe("/x").await?;
    for client in [&mut bob, &mut alice, &mut alice_again, &mut anon] {
        sub(client, "t").await?;
    }
    // Sorted, distinct; the anonymous connection counts but is not listed.
    assert_eq!(anon.request("presence t").await?, "presence 4 alice,bob");
    alice.close(1000, "").await?;
    assert_eq!(parse_closed(&anon.recv_text().await?)?.id, id_alice);
    assert_eq!(anon.request("presence t").await?, "presence 3 alice,bob");
    alice_again.close(1000, "").await?;
    assert_eq!(parse_closed(&anon.recv_text().await?)?.id, id_alice_again);
    assert_eq!(anon.request("presence t").await?, "presence 2 bob");
    assert_eq!(bob.probe_request("unsub t").await?, "unsubscribed true");
    assert_eq!(anon.request("presence t").await?, "presence 1 ");
    Ok(())
}
