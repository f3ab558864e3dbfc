// The chat controller in JavaScript: the same room as examples/chat (Rust).
//
// One room per controller instance. Everyone hears everyone else; the host does the
// fan-out (`broadcast`), copying each message out of the guest once however many
// members the room has.
//
// A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
// - newcomer: `welcome {name}; {n} online` (n counts the newcomer); others: `{name} joined`
// - text `m` from a member: `{name}: m` to every other member; binary is forwarded as is
// - on leaving: `{name} left` to the remaining members
//
// Connection ids are WIT `u64`, so they are BigInt here (`7n`), never Number.

import { attribute, broadcast, connectionCount, send } from "wshost:controller/host@0.2.0";

// Names of the members, remembered at open: the host forgets a connection's info as
// soon as it closes, and `left` still needs the name. BigInt keys compare by value.
const names = new Map();

function nameOf(conn) {
  const known = names.get(conn);
  if (known !== undefined) {
    return known;
  }
  return attribute(conn, "user") ?? `anon-${conn}`;
}

function text(value) {
  return { tag: "text", val: value };
}

export function onOpen(conn) {
  const name = nameOf(conn);
  names.set(conn, name);
  const online = connectionCount();
  try {
    send(conn, text(`welcome ${name}; ${online} online`));
  } catch {
    // `result<_, send-error>` arrives as an exception; the newcomer may already be
    // gone (not-open) or its queue full: nothing to do either way.
  }
  broadcast(text(`${name} joined`), conn);
}

export function onMessage(conn, msg) {
  if (msg.tag === "text") {
    broadcast(text(`${nameOf(conn)}: ${msg.val}`), conn);
  } else {
    broadcast(msg, conn);
  }
}

export function onClose(conn, _code, _reason) {
  const name = nameOf(conn);
  names.delete(conn);
  broadcast(text(`${name} left`), undefined);
}

export function onError(_conn, _error) {
  // The host closes the connection itself; `onClose` follows.
}
