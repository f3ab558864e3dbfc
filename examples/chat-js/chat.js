// The chat controller in JavaScript: the same rooms by path, with presence, as
// examples/chat (Rust).
//
// A member's room is a topic: the one the route's `topic` key subscribed it to
// (routes.toml `topic = "chat/{1}"`, so `/chat/lobby` is topic `chat/lobby`, the
// connection's `topic` attribute). The chat keeps no member lists of its own: the host
// fans a message out to the topic's subscribers (on every node of a `[cluster]`),
// copying it out of the guest once, and counts them (`presence`).
//
// On a route with a `topic`, the chat speaks with `broadcast`, which the host turns into
// a publish to the connection's topic. On a route without one (a routes.toml from before
// topics), the chat subscribes each newcomer itself to `chat/{match.1}` and publishes
// there explicitly: the same rooms, the same protocol.
//
// A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
// - newcomer: `welcome {name}; {n} online` (n counts the room's subscribers, newcomer
//   included, on every node this node has heard from: the first member of a room on a
//   node counts that node's only); the room's others: `{name} joined`
// - text `m` from a member: `{name}: m` to every other member of the room; binary is
//   forwarded as is
// - on leaving: `{name} left` to the remaining members of the room
//
// By the time `onClose` runs the host has forgotten the connection's attributes, so
// names and rooms are remembered in guest memory at open. A fresh instance (after a trap
// or a hot reload) starts without them: its first event relearns them from the host's
// connection list and attributes. The subscriptions themselves belong to the host and
// survive the instance.
//
// Connection ids are WIT `u64`, so they are BigInt here (`7n`), never Number.

import { attribute, broadcast, connections, log, send } from "wshost:controller/host@0.2.0";
import { presence, publish, subscribe } from "wshost:controller/topics@0.2.0";

// Members by connection, { name, topic, routed }, remembered at open: the host forgets
// a connection's attributes as soon as it closes, and `left` still needs them. `routed`:
// the route's `topic` subscribed it (the host publishes our `broadcast`s); otherwise the
// chat subscribed it to `topic` itself and publishes explicitly. BigInt keys compare by
// value.
const members = new Map();
// Whether this instance has learnt the connections it inherited.
let known = false;

// The member `conn` is, registered from its attributes the first time.
function member(conn) {
  let found = members.get(conn);
  if (found === undefined) {
    const routed = attribute(conn, "topic");
    found = {
      name: attribute(conn, "user") ?? `anon-${conn}`,
      topic: routed ?? `chat/${attribute(conn, "match.1") ?? ""}`,
      routed: routed !== undefined,
    };
    members.set(conn, found);
  }
  return found;
}

// A fresh instance's first event: learn the connections that are already open (their
// subscriptions outlived the old instance; only names and rooms need relearning).
function learnInherited() {
  if (!known) {
    known = true;
    for (const conn of connections()) {
      member(conn);
    }
  }
}

function text(value) {
  return { tag: "text", val: value };
}

// Sends `msg` to every member of `who`'s room but `exclude`, on every node.
function tellRoom(who, msg, exclude) {
  if (who.routed) {
    broadcast(msg, exclude);
  } else {
    publish(who.topic, msg, exclude);
  }
}

export function onOpen(conn) {
  learnInherited();
  const who = member(conn);
  if (!who.routed) {
    try {
      subscribe(conn, who.topic);
    } catch (e) {
      // `result<_, topic-error>` arrives as an exception (e.g. "invalid-topic").
      log("warn", `cannot subscribe ${conn} to \`${who.topic}\`: ${e.payload ?? e}`);
    }
  }
  const online = presence(who.topic).connections;
  try {
    send(conn, text(`welcome ${who.name}; ${online} online`));
  } catch {
    // `result<_, send-error>` arrives as an exception; the newcomer may already be
    // gone (not-open) or its queue full: nothing to do either way.
  }
  tellRoom(who, text(`${who.name} joined`), conn);
}

export function onMessage(conn, msg) {
  learnInherited();
  const who = member(conn);
  if (msg.tag === "text") {
    tellRoom(who, text(`${who.name}: ${msg.val}`), conn);
  } else {
    tellRoom(who, msg, conn);
  }
}

export function onClose(conn, _code, _reason) {
  learnInherited();
  // A member this instance never knew (it closed before the instance's first event)
  // has nobody to be announced to by name. The host already took the connection out of
  // its room, so nobody needs excluding.
  const gone = members.get(conn);
  if (gone === undefined) {
    return;
  }
  members.delete(conn);
  tellRoom(gone, text(`${gone.name} left`), undefined);
}

export function onError(_conn, _error) {
  // The host closes the connection itself; `onClose` follows.
}
