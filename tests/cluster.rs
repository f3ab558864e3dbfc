//! Rooms across several wshost nodes (routes.toml `[cluster]`), with real `wshost run`
//! nodes and a real `nats-server`: a chat room spans the nodes and keeps each sender's
//! order and its walls; presence counts every node's members and forgets a killed node;
//! a node's own publication reaches its subscribers once; topic names that are NATS
//! wildcards, or hold dots or spaces, stay plain names; NATS may go away and come back,
//! or come late, under running nodes, and a frozen one never blocks a controller (what
//! does not fit the node's publish buffer is dropped and counted); a hot reload keeps the connections' topics; a bad
//! `[cluster]` table is named by file, line and key.
//!
//! The nodes re-announce presence every 200 ms and forget a silent node after 2 s (the
//! defaults are 2 s and 6 s) so that waiting on presence is short. Every wait is a bounded
//! poll of what the nodes report, never a sleep that assumes a speed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::future::try_join_all;
use serde_json::Value;
use tokio::time::timeout;

use crate::harness::{
    Client, HANG_GUARD, Nats, Route, RoutesDir, Server, check, guests, routes_toml, run_to_exit,
};

/// The presence keys of every node's `[cluster]` table.
const PRESENCE_KEYS: &str = "presence-interval-ms = 200\npresence-timeout-ms = 2000\n";

/// Names a connection after its `?name=` (the `user` attribute), as examples/routes.toml
/// does for the chat.
const NAME_FILTER: &str = r#"{ kind = "query", name = "name", attribute = "user" }"#;

/// The pause between two polls of a node's presence.
const POLL: Duration = Duration::from_millis(20);

/// How long one try of a message across nodes is waited for before the next try is sent.
const TRY: Duration = Duration::from_millis(200);

/// Upper bound on the wait for a node to (re)connect to a NATS server that is back: the
/// host's and async-nats's reconnection backoff comes on top of the hang guard. A hang
/// guard too, not a performance assertion.
const RECONNECT_GUARD: Duration = Duration::from_secs(60);

/// A `[cluster]` table for the node `node` on `nats`, with `extra` keys.
fn cluster_table(nats: &Nats, node: &str, extra: &str) -> String {
    format!(
        "[cluster]\nservers = [\"{}\"]\nname = \"{node}\"\n{PRESENCE_KEYS}{extra}",
        nats.url()
    )
}

/// A node's routes.toml: `cluster` (a `[cluster]` table), the chat controller at `chat`
/// on `/chat/*` with a room topic `chat/{1}`, the probe on `/probe` (no topic), then
/// `more` routes; chat and probe name their connections from `?name=`.
fn node_routes(cluster: &str, chat: &str, more: &[Route]) -> String {
    let mut routes = vec![
        Route::to_controller(chat)
            .at("/chat/*")
            .topic("chat/{1}")
            .filters(NAME_FILTER),
        Route::to(&guests().probe).at("/probe").filters(NAME_FILTER),
    ];
    routes.extend_from_slice(more);
    format!("{cluster}\n{}", routes_toml(&routes))
}

/// Starts one node per name on `nats` (chat and probe routes, then `more`), all at once,
/// and waits until each has connected to NATS.
async fn nodes<const N: usize>(
    nats: &Nats,
    names: [&str; N],
    more: &[Route],
) -> Result<[Server; N]> {
    let chat = guests().chat.display().to_string();
    let routes = names.map(|name| node_routes(&cluster_table(nats, name, ""), &chat, more));
    let nodes = try_join_all(routes.iter().map(|routes| Server::start(routes))).await?;
    for node in &nodes {
        connected(node).await?;
    }
    Ok(nodes.try_into().ok().expect("one node per name"))
}

/// Waits for the node's `cluster connected` event and returns it.
async fn connected(node: &Server) -> Result<Value> {
    node.log_event("saying it connected to NATS", |e| {
        e["message"] == "cluster connected"
    })
    .await
}

/// Joins chat room `room` on `node` as `name`; returns the client and the online count
/// of its welcome.
async fn join(node: &Server, room: &str, name: &str) -> Result<(Client, usize)> {
    let mut client = node.connect(&format!("/chat/{room}?name={name}")).await?;
    let welcome = client.recv_text().await?;
    let online = welcome
        .strip_prefix(&format!("welcome {name}; "))
        .and_then(|rest| rest.strip_suffix(" online"))
        .with_context(|| format!("expected `welcome {name}; {{n}} online`, got {welcome:?}"))?
        .parse()?;
    Ok((client, online))
}

/// The next thing a chat member hears that is not one of `room`'s members joining.
/// Whether a member hears about a later one on another node depends on how far its own
/// node's subscription had got, so these notices are not asserted here (tests/chat.rs
/// does on one node); any other room's notice is not skipped.
async fn hear(member: &mut Client, room: &[&str]) -> Result<String> {
    loop {
        let text = member.recv_text().await?;
        let joined = text
            .strip_suffix(" joined")
            .is_some_and(|name| room.contains(&name));
        if !joined {
            return Ok(text);
        }
    }
}

/// Reads what `member` hears until `{sender}: {tag} done`, expecting nothing but
/// `{sender}: {tag} {i}` with increasing `i` before it; returns those `i`.
async fn hear_until_done(
    member: &mut Client,
    room: &[&str],
    sender: &str,
    tag: &str,
) -> Result<Vec<usize>> {
    let prefix = format!("{sender}: {tag} ");
    let mut heard = Vec::new();
    loop {
        let text = hear(member, room).await?;
        let rest = text
            .strip_prefix(&prefix)
            .with_context(|| format!("expected `{prefix}…`, got {text:?} after {heard:?}"))?;
        if rest == "done" {
            return Ok(heard);
        }
        let i: usize = rest.parse().with_context(|| format!("in {text:?}"))?;
        ensure!(
            heard.last().is_none_or(|&last| last < i),
            "{text:?} after {heard:?}: out of order"
        );
        heard.push(i);
    }
}

/// Sends `{tag} 0`, `{tag} 1`, … from chat member `sender` (one try every [`TRY`]) until
/// `to`, on another node, hears one, then `{tag} done`; `to` must hear nothing but some
/// of the tries, in order, then `done`. Returns how many tries were sent. For waits on
/// a NATS connection that is coming back: bounded by [`RECONNECT_GUARD`].
async fn until_crossing(
    from: &mut Client,
    sender: &str,
    to: &mut Client,
    room: &[&str],
    tag: &str,
) -> Result<usize> {
    let deadline = Instant::now() + RECONNECT_GUARD;
    let mut tries = 0;
    let first = loop {
        ensure!(
            Instant::now() < deadline,
            "none of {tries} messages from {sender} crossed to the other node (hang guard)"
        );
        from.send_text(&format!("{tag} {tries}")).await?;
        tries += 1;
        if let Ok(heard) = timeout(TRY, hear(to, room)).await {
            break heard?;
        }
    };
    let i: usize = first
        .strip_prefix(&format!("{sender}: {tag} "))
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("expected `{sender}: {tag} {{i}}`, got {first:?}"))?;
    from.send_text(&format!("{tag} done")).await?;
    let rest = hear_until_done(to, room, sender, tag).await?;
    ensure!(
        rest.iter().all(|&j| i < j && j < tries),
        "heard {first:?}, then tries {rest:?} of {tries}"
    );
    Ok(tries)
}

/// Opens a probe on `node`, named `name` (its `user` attribute) unless `name` is empty.
async fn probe(node: &Server, name: &str) -> Result<Client> {
    let path = if name.is_empty() {
        "/probe".to_owned()
    } else {
        format!("/probe?name={name}")
    };
    Ok(node.connect_probe(&path).await?.0)
}

/// Sends `command` to a probe and returns its reply, the first text starting with
/// `reply`: a probe subscribed to a room also hears the room's traffic, which is skipped.
async fn ask(probe: &mut Client, command: &str, reply: &str) -> Result<String> {
    probe.send_text(command).await?;
    loop {
        let text = probe.recv_text().await?;
        if text.starts_with(reply) {
            return Ok(text);
        }
    }
}

/// Subscribes a probe to `topic`.
async fn subscribe(probe: &mut Client, topic: &str) -> Result<()> {
    let reply = probe.probe_request(&format!("sub {topic}")).await?;
    ensure!(
        reply == format!("subscribed {topic}"),
        "sub {topic:?}: {reply:?}"
    );
    Ok(())
}

/// A probe's `presence TOPIC`: the connection count and the users, as listed.
async fn presence(probe: &mut Client, topic: &str) -> Result<(usize, Vec<String>)> {
    let reply = ask(probe, &format!("presence {topic}"), "presence ").await?;
    let rest = &reply["presence ".len()..];
    let (count, users) = rest.split_once(' ').unwrap_or((rest, ""));
    let users = users
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((
        count
            .parse()
            .with_context(|| format!("in presence reply {reply:?}"))?,
        users,
    ))
}

/// Polls `presence TOPIC` on a probe until it counts `connections` and lists `users`
/// (sorted, as the WIT promises), within the hang guard.
async fn await_presence(
    probe: &mut Client,
    topic: &str,
    connections: usize,
    users: &[&str],
) -> Result<()> {
    let mut want: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
    want.sort();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let (count, listed) = presence(probe, topic).await?;
        if count == connections && listed == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "presence of `{topic}` stayed {count} {listed:?}, expected {connections} {want:?} \
             (hang guard)"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn rooms_span_nodes_in_each_senders_order() -> Result<()> {
    const MESSAGES: usize = 50;
    let nats = Nats::start().await?;
    let [a, b, c] = nodes(&nats, ["node-a", "node-b", "node-c"], &[]).await?;
    let lobby = ["ann", "bob", "cid", "dan"];
    let rust = ["eve", "fay", "gus"];
    let (mut ann, _) = join(&a, "lobby", "ann").await?;
    let (mut bob, _) = join(&b, "lobby", "bob").await?;
    let (mut cid, _) = join(&c, "lobby", "cid").await?;
    let (mut dan, _) = join(&a, "lobby", "dan").await?;
    let (mut eve, _) = join(&a, "rust", "eve").await?;
    let (mut fay, _) = join(&b, "rust", "fay").await?;
    let (mut gus, _) = join(&c, "rust", "gus").await?;
    // The senders' nodes have heard every member's presence, which a node announces
    // after subscribing: every node's subscription is in place before anyone speaks.
    await_presence(&mut probe(&a, "").await?, "chat/lobby", 4, &lobby).await?;
    await_presence(&mut probe(&b, "").await?, "chat/rust", 3, &rust).await?;

    for i in 0..MESSAGES {
        ann.send_text(&format!("lobby {i}")).await?;
        fay.send_text(&format!("rust {i}")).await?;
    }
    for (who, member) in [("bob", &mut bob), ("cid", &mut cid), ("dan", &mut dan)] {
        for i in 0..MESSAGES {
            let heard = hear(member, &lobby).await?;
            ensure!(heard == format!("ann: lobby {i}"), "{who} heard {heard:?}");
        }
    }
    for (who, member) in [("eve", &mut eve), ("gus", &mut gus)] {
        for i in 0..MESSAGES {
            let heard = hear(member, &rust).await?;
            ensure!(heard == format!("fay: rust {i}"), "{who} heard {heard:?}");
        }
    }
    // Everyone's next message is their own room's next speaker: no sender heard itself
    // and nothing crossed between the rooms.
    bob.send_text("over").await?;
    for (who, member) in [("ann", &mut ann), ("cid", &mut cid), ("dan", &mut dan)] {
        let heard = hear(member, &lobby).await?;
        ensure!(heard == "bob: over", "{who} heard {heard:?}");
    }
    gus.send_text("over").await?;
    for (who, member) in [("eve", &mut eve), ("fay", &mut fay)] {
        let heard = hear(member, &rust).await?;
        ensure!(heard == "gus: over", "{who} heard {heard:?}");
    }
    Ok(())
}

#[tokio::test]
async fn presence_counts_every_node_and_forgets_a_killed_one() -> Result<()> {
    let nats = Nats::start().await?;
    let [a, b, mut c] = nodes(&nats, ["node-a", "node-b", "node-c"], &[]).await?;
    // A node only knows other nodes' presence for topics it has a subscriber of: a probe
    // per node in the room lets each node know the room before its first chat member
    // joins. The probes count, and are listed, like members.
    let mut probes = Vec::new();
    for (node, name) in [(&a, "probe-a"), (&b, "probe-b"), (&c, "probe-c")] {
        let mut probe = probe(node, name).await?;
        subscribe(&mut probe, "chat/lobby").await?;
        probes.push(probe);
    }
    let mut present = vec!["probe-a", "probe-b", "probe-c"];
    let nodes = [&a, &b, &c];
    let mut members = Vec::new();
    for (i, name) in ["ann", "bob", "cid", "dan", "eve", "fay"]
        .into_iter()
        .enumerate()
    {
        let node = i % 3;
        // Once its node has heard of everyone before it, the newcomer's welcome counts
        // them all, and itself.
        await_presence(&mut probes[node], "chat/lobby", present.len(), &present).await?;
        let (member, online) = join(nodes[node], "lobby", name).await?;
        present.push(name);
        ensure!(
            online == present.len(),
            "{name} on node {node} was welcomed with {online} online, expected {}",
            present.len()
        );
        members.push(member);
    }
    for probe in &mut probes {
        await_presence(probe, "chat/lobby", present.len(), &present).await?;
    }

    // A member who leaves is taken out of the count everywhere.
    let bob = members.remove(1);
    bob.close(1000, "").await?;
    present.retain(|&name| name != "bob");
    for probe in &mut probes {
        await_presence(probe, "chat/lobby", present.len(), &present).await?;
    }

    // A node killed outright says nothing: its members drop out once it has been silent
    // for presence-timeout-ms.
    c.signal("KILL")?;
    c.wait_exit().await?;
    present.retain(|name| !["probe-c", "cid", "fay"].contains(name));
    for probe in &mut probes[..2] {
        await_presence(probe, "chat/lobby", present.len(), &present).await?;
    }
    let (_gil, online) = join(&a, "lobby", "gil").await?;
    ensure!(
        online == present.len() + 1,
        "gil was welcomed with {online} online, expected {}",
        present.len() + 1
    );
    Ok(())
}

/// Two nodes rather than one: a publication that a subscriber on the other node has
/// received has been through the NATS server, which therefore sends any copy of it back
/// to its own node before anything published later by the other node. So a subscriber
/// that hears the other node's next publication right after the first one has provably
/// not been handed the first one twice.
#[tokio::test]
async fn a_nodes_own_publication_reaches_its_subscribers_once() -> Result<()> {
    let nats = Nats::start().await?;
    let [a, b] = nodes(&nats, ["node-a", "node-b"], &[]).await?;
    let mut p1 = probe(&a, "p1").await?;
    let mut p2 = probe(&a, "p2").await?;
    let mut q1 = probe(&b, "q1").await?;
    let mut q2 = probe(&b, "q2").await?;
    for subscriber in [&mut p1, &mut q1, &mut q2] {
        subscribe(subscriber, "once").await?;
    }
    // p2, the publisher on node A, is not subscribed.
    await_presence(&mut p2, "once", 3, &["p1", "q1", "q2"]).await?;
    await_presence(&mut q1, "once", 3, &["p1", "q1", "q2"]).await?;

    // 1. Node A publishes; both subscribers on node B hearing it proves it crossed.
    assert_eq!(p2.probe_request("pub once h1").await?, "published 1");
    assert_eq!(q1.recv_text().await?, "h1");
    assert_eq!(q2.recv_text().await?, "h1");
    // 2. Node B publishes (not to q1): after h1, p1 hears m1, not h1 a second time.
    assert_eq!(q1.probe_request("pubx once m1").await?, "published 1");
    assert_eq!(q2.recv_text().await?, "m1");
    assert_eq!(p1.recv_text().await?, "h1");
    assert_eq!(p1.recv_text().await?, "m1", "p1 heard h1 twice");
    // 3. Node A publishes after m1 crossed: q2 hears m2, not m1 a second time.
    assert_eq!(p2.probe_request("pub once m2").await?, "published 1");
    assert_eq!(p1.recv_text().await?, "m2");
    assert_eq!(q2.recv_text().await?, "m2", "q2 heard m1 twice");
    assert_eq!(q1.recv_text().await?, "m2", "q1 was excluded from m1");
    Ok(())
}

#[tokio::test]
async fn local_chat_outlives_a_nats_outage_and_remote_chat_resumes() -> Result<()> {
    let mut nats = Nats::start().await?;
    let [a, b] = nodes(&nats, ["node-a", "node-b"], &[]).await?;
    let room = ["ann", "amy", "bob"];
    let (mut ann, _) = join(&a, "lobby", "ann").await?;
    let (mut amy, _) = join(&a, "lobby", "amy").await?;
    let (mut bob, _) = join(&b, "lobby", "bob").await?;
    await_presence(&mut probe(&a, "").await?, "chat/lobby", 3, &room).await?;
    await_presence(&mut probe(&b, "").await?, "chat/lobby", 3, &room).await?;
    ann.send_text("before").await?;
    assert_eq!(hear(&mut amy, &room).await?, "ann: before");
    assert_eq!(hear(&mut bob, &room).await?, "ann: before");

    nats.stop()?;
    for node in [&a, &b] {
        let event = node
            .log_event("saying it lost NATS", |e| {
                e["message"] == "cluster disconnected"
            })
            .await?;
        assert_eq!(event["level"], "WARN", "{event}");
    }
    // Node A's own members still hear each other.
    ann.send_text("during").await?;
    assert_eq!(hear(&mut amy, &room).await?, "ann: during");

    // NATS is back on the same port: the same processes find it again, and messages
    // cross again in both directions. Bob never hears `during`: until_crossing admits
    // nothing but its own tries.
    nats.restart().await?;
    let tries = until_crossing(&mut ann, "ann", &mut bob, &room, "again").await?;
    // Amy, on ann's node, heard every try.
    let heard = hear_until_done(&mut amy, &room, "ann", "again").await?;
    assert_eq!(heard, (0..tries).collect::<Vec<_>>());
    until_crossing(&mut bob, "bob", &mut ann, &room, "back").await?;
    hear_until_done(&mut amy, &room, "bob", "back").await?;

    // The publication nobody on node B got was counted and logged as dropped (whenever
    // the node logs it: at once, or once it is connected again).
    let dropped = a
        .log_event("counting the dropped publication", |e| {
            e["message"] == "cluster messages dropped"
        })
        .await?;
    assert_eq!(dropped["level"], "WARN", "{dropped}");
    assert_eq!(dropped["reason"], "disconnected", "{dropped}");
    ensure!(
        dropped["dropped"].as_u64().is_some_and(|n| n >= 1),
        "{dropped}"
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_nats_never_blocks_a_controller() -> Result<()> {
    // Enough 4 KiB publications to fill what a frozen NATS leaves room for: the socket
    // buffers of both ends (a few MiB on loopback), async-nats's command queue (2,048)
    // and the node's publish buffer (16 here).
    const MESSAGES: usize = 6_000;
    let nats = Nats::start().await?;
    let chat = guests().chat.display().to_string();
    let routes =
        |node: &str, extra: &str| node_routes(&cluster_table(&nats, node, extra), &chat, &[]);
    let a = Server::start(&routes("node-a", "publish-buffer = 16\n")).await?;
    let b = Server::start(&routes("node-b", "")).await?;
    for node in [&a, &b] {
        connected(node).await?;
    }
    let mut here = probe(&a, "here").await?;
    let mut there = probe(&b, "there").await?;
    subscribe(&mut here, "slow").await?;
    subscribe(&mut there, "slow").await?;
    await_presence(&mut here, "slow", 2, &["here", "there"]).await?;

    nats.pause()?;
    // The publisher's controller answers every publication while NATS reads nothing,
    // and the local subscriber gets each one, in order.
    let mut publisher = probe(&a, "").await?;
    let body = "x".repeat(4096);
    // In batches, read as they go, so that no client's own queue overflows.
    let all: Vec<usize> = (0..MESSAGES).collect();
    for batch in all.chunks(200) {
        for i in batch {
            publisher.send_text(&format!("pub slow {i} {body}")).await?;
        }
        for i in batch {
            let reply = publisher.recv_text().await?;
            assert_eq!(reply, "published 1", "publication {i}");
            let heard = here.recv_text().await?;
            ensure!(
                heard.strip_suffix(&body) == Some(&format!("{i} ")),
                "the local subscriber heard {:?} as publication {i}",
                heard.get(..20)
            );
        }
    }
    let dropped = a
        .log_event("counting publications the full buffer dropped", |e| {
            e["message"] == "cluster messages dropped" && e["reason"] == "buffer full"
        })
        .await?;
    assert_eq!(dropped["level"], "WARN", "{dropped}");

    // NATS catches up: what it had taken reaches node B in order, and a publication
    // after that arrives there too.
    nats.resume()?;
    publisher.send_text("pub slow after").await?;
    assert_eq!(publisher.recv_text().await?, "published 1");
    let mut last = None;
    let mut heard_there = 0;
    loop {
        let heard = there.recv_text().await?;
        if heard == "after" {
            break;
        }
        let i: usize = heard
            .split_once(' ')
            .and_then(|(i, _)| i.parse().ok())
            .with_context(|| format!("node B heard {:?}", heard.get(..20)))?;
        ensure!(
            last.is_none_or(|l| l < i),
            "node B heard {i} after {last:?}"
        );
        last = Some(i);
        heard_there += 1;
    }
    // How much a frozen NATS still absorbs (socket buffers) varies; what the node logged
    // as dropped is missing on the other node.
    let dropped = dropped["dropped"].as_u64().context("the dropped count")?;
    ensure!(
        dropped >= 1 && heard_there as u64 <= MESSAGES as u64 - dropped,
        "node B heard {heard_there} of {MESSAGES} though node A dropped {dropped}"
    );
    Ok(())
}

#[tokio::test]
async fn a_node_serves_locally_until_nats_appears() -> Result<()> {
    let mut nats = Nats::not_started()?;
    let chat = guests().chat.display().to_string();
    let a = Server::start(&node_routes(
        &cluster_table(&nats, "node-a", ""),
        &chat,
        &[],
    ))
    .await?;
    let room = ["ann", "amy", "bob"];
    let (mut ann, online) = join(&a, "lobby", "ann").await?;
    assert_eq!(online, 1);
    let (mut amy, online) = join(&a, "lobby", "amy").await?;
    assert_eq!(online, 2);
    assert_eq!(ann.recv_text().await?, "amy joined");
    amy.send_text("alone").await?;
    assert_eq!(ann.recv_text().await?, "amy: alone");
    ensure!(
        !a.log().contains("\"cluster connected\""),
        "connected to a NATS server that is not there:\n{}",
        a.log()
    );

    nats.restart().await?;
    let event = connected(&a).await?;
    assert_eq!(event["node"], "node-a", "{event}");
    let port = format!("127.0.0.1:{}", nats.port());
    ensure!(event["servers"].to_string().contains(&port), "{event}");

    // Node A subscribed its rooms once connected: a node started now shares them.
    let [b] = nodes(&nats, ["node-b"], &[]).await?;
    let (mut bob, _) = join(&b, "lobby", "bob").await?;
    until_crossing(&mut bob, "bob", &mut ann, &room, "hello").await?;
    hear_until_done(&mut amy, &room, "bob", "hello").await?;
    until_crossing(&mut amy, "amy", &mut bob, &room, "hi").await?;
    Ok(())
}

#[tokio::test]
async fn a_required_cluster_does_not_start_without_nats() -> Result<()> {
    let nats = Nats::not_started()?;
    let chat = guests().chat.display().to_string();
    let cluster = cluster_table(&nats, "node-a", "required = true\n");
    let dir = RoutesDir::new(&node_routes(&cluster, &chat, &[]))?;
    let routes = dir.routes();
    let output = run_to_exit(&routes).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "wshost run exited {}; stderr:\n{stderr}",
        output.status
    );
    ensure!(
        stderr.contains("cannot connect to NATS"),
        "stderr:\n{stderr}"
    );
    let port = format!("127.0.0.1:{}", nats.port());
    ensure!(
        stderr.contains(&port),
        "the servers are not named:\n{stderr}"
    );
    ensure!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "wshost listened without its required cluster"
    );
    Ok(())
}

/// `component` with a custom section appended: another file (and hash) for the same
/// controller, so that writing it over the old one is a reload.
fn another_build(component: &[u8]) -> Vec<u8> {
    let name = b"wshost-test";
    let payload = b"the same chat, rebuilt";
    let size = 1 + name.len() + payload.len();
    let mut bytes = component.to_vec();
    // Custom section (id 0): size, name length, name, payload; the sizes are under 128,
    // so each LEB128 is one byte.
    bytes.extend([0, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    bytes
}

#[tokio::test]
async fn a_hot_reload_keeps_the_connections_topics() -> Result<()> {
    let nats = Nats::start().await?;
    let dir = RoutesDir::new(&node_routes(
        &cluster_table(&nats, "node-a", ""),
        "chat.wasm",
        &[],
    ))?;
    let chat = std::fs::read(&guests().chat)?;
    let ctl = dir.write("chat.wasm", &chat)?;
    let a = Server::start_in(dir).await?;
    connected(&a).await?;
    let [b] = nodes(&nats, ["node-b"], &[]).await?;
    let room = ["ann", "al", "bob"];
    let (mut ann, _) = join(&a, "lobby", "ann").await?;
    let (mut al, _) = join(&a, "lobby", "al").await?;
    let (mut bob, _) = join(&b, "lobby", "bob").await?;
    let mut probe_a = probe(&a, "").await?;
    await_presence(&mut probe_a, "chat/lobby", 3, &room).await?;
    await_presence(&mut probe(&b, "").await?, "chat/lobby", 3, &room).await?;
    bob.send_text("before").await?;
    assert_eq!(hear(&mut ann, &room).await?, "bob: before");
    assert_eq!(hear(&mut al, &room).await?, "bob: before");

    // Replace node A's chat as a build tool does: write beside it, rename over it.
    let tmp = ctl.with_extension("tmp");
    std::fs::write(&tmp, another_build(&chat))?;
    std::fs::rename(&tmp, &ctl)?;
    a.log_line("about the reload", |l| l.contains("reloaded"))
        .await?;

    // Node A's members are still in the room: they hear node B, the new instance's
    // `broadcast` still publishes to their topic, and presence still counts them.
    bob.send_text("after").await?;
    assert_eq!(hear(&mut ann, &room).await?, "bob: after");
    assert_eq!(hear(&mut al, &room).await?, "bob: after");
    ann.send_text("from the new instance").await?;
    assert_eq!(hear(&mut al, &room).await?, "ann: from the new instance");
    assert_eq!(hear(&mut bob, &room).await?, "ann: from the new instance");
    await_presence(&mut probe_a, "chat/lobby", 3, &room).await?;
    Ok(())
}

/// Topics that are NATS wildcards or subject separators, or empty NATS tokens, and plain
/// ones they would match if they were used as subjects.
const PLAIN_TOPICS: [&str; 12] = [
    "a", "a.b", "a.b.c", "a.*", "a.>", "*", ">", ".a", "a.", "a..b", "a/b", "ü.ß",
];

/// Topics with spaces (a NATS protocol line separates its fields with them). The probe's
/// `pub` takes no space in its topic, so these are published by probes on routes with
/// that literal `topic`, through `broadcast`.
const SPACED_TOPICS: [&str; 3] = ["a >", "a b", "* >"];

#[tokio::test]
async fn topic_names_are_not_nats_subjects() -> Result<()> {
    let spaced_routes: Vec<Route> = SPACED_TOPICS
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            Route::to(&guests().probe)
                .at(&format!("/spaced/{i}"))
                .topic(topic)
        })
        .collect();
    let nats = Nats::start().await?;
    let [a, b] = nodes(&nats, ["node-a", "node-b"], &spaced_routes).await?;
    let nodes = [("a", &a), ("b", &b)];

    // On each node: a subscriber per topic, a publisher (subscribed to nothing), and a
    // speaker per spaced topic (subscribed by its route).
    let mut subscribers: Vec<(&str, &str, Client)> = Vec::new();
    let mut publishers = Vec::new();
    let mut speakers: Vec<(&str, &str, Client)> = Vec::new();
    for (tag, node) in nodes {
        for topic in PLAIN_TOPICS.into_iter().chain(SPACED_TOPICS) {
            let mut subscriber = probe(node, "").await?;
            subscribe(&mut subscriber, topic).await?;
            subscribers.push((tag, topic, subscriber));
        }
        for (i, topic) in SPACED_TOPICS.into_iter().enumerate() {
            let (speaker, _) = node.connect_probe(&format!("/spaced/{i}")).await?;
            speakers.push((tag, topic, speaker));
        }
        publishers.push((tag, probe(node, "").await?));
    }
    // Every node has heard of the other's subscribers, so their subscriptions are live.
    for (_, publisher) in &mut publishers {
        for topic in PLAIN_TOPICS {
            await_presence(publisher, topic, 2, &[]).await?;
        }
        for topic in SPACED_TOPICS {
            await_presence(publisher, topic, 4, &[]).await?;
        }
    }

    // Each node publishes `data` then `end` to every topic.
    for round in ["data", "end"] {
        for (tag, publisher) in &mut publishers {
            for topic in PLAIN_TOPICS {
                let reply = publisher
                    .probe_request(&format!("pub {topic} {round} from {tag} to {topic}"))
                    .await?;
                ensure!(reply == "published 1", "pub to {topic:?}: {reply:?}");
            }
        }
        for (tag, topic, speaker) in &mut speakers {
            speaker
                .send_text(&format!("broadcast {round} from {tag} to {topic}"))
                .await?;
        }
    }

    // Everyone hears the four publications of their own topic, each node's `data` before
    // its `end`, and nothing of any other topic.
    for (_, topic, listener) in subscribers.iter_mut().chain(&mut speakers) {
        let ends = [
            format!("end from a to {topic}"),
            format!("end from b to {topic}"),
        ];
        let mut heard = Vec::new();
        while !ends.iter().all(|end| heard.contains(end)) {
            if heard.len() == 4 {
                bail!("a listener of {topic:?} heard {heard:?}");
            }
            heard.push(listener.recv_text().await?);
        }
        for tag in ["a", "b"] {
            let at = |round: &str| {
                let text = format!("{round} from {tag} to {topic}");
                heard.iter().position(|h| *h == text)
            };
            ensure!(
                matches!((at("data"), at("end")), (Some(data), Some(end)) if data < end),
                "a listener of {topic:?} heard {heard:?}"
            );
        }
    }
    Ok(())
}

/// Runs `wshost check` on a routes.toml holding `text` and expects exit code 1 with an
/// error at `file:line:` that names each of `needles`.
async fn check_fails_at(text: &str, line: usize, needles: &[&str]) -> Result<()> {
    let dir = RoutesDir::new(text)?;
    let output = check(&dir.routes()).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{text}\nstderr:\n{stderr}");
    let at = format!("{}:{line}:", dir.routes().display());
    for needle in [at.as_str(), "error: "].iter().chain(needles) {
        ensure!(
            stderr.contains(needle),
            "expected {needle:?} for\n{text}\nin stderr:\n{stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_cluster_table_is_named_by_file_line_and_key() -> Result<()> {
    let route = routes_toml(&[Route::to_controller("x.wasm")]);
    let servers = "servers = [\"nats://127.0.0.1:4222\"]";
    check_fails_at(
        &format!("[cluster]\nname = \"node-a\"\n\n{route}"),
        1,
        &["servers"],
    )
    .await?;
    check_fails_at(
        &format!(
            "[cluster]\nname = \"node-a\"\nservers = [\"nats://127.0.0.1:4222\", \
             \"nats://127.0.0.1:port\"]\n\n{route}"
        ),
        3,
        &["servers", "nats://127.0.0.1:port"],
    )
    .await?;
    check_fails_at(
        &format!("[cluster]\n{servers}\nsubject-prefx = \"app\"\n\n{route}"),
        3,
        &["subject-prefx"],
    )
    .await?;
    for timeout_ms in [2000, 1500] {
        check_fails_at(
            &format!(
                "[cluster]\n{servers}\npresence-interval-ms = 2000\n\
                 presence-timeout-ms = {timeout_ms}\n\n{route}"
            ),
            4,
            &["presence-timeout-ms"],
        )
        .await?;
    }
    Ok(())
}
