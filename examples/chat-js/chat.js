// The chat controller in JavaScript: the same rooms as examples/chat (Rust).
//
// A member's room is what the route's first `*` captured (attribute `match.1`:
// `/chat/lobby` is room `lobby`); members hear the members of their own room only.
// While everyone is in one room, the host does the fan-out (`broadcast`), copying each
// message out of the guest once however many members the room has; with several rooms,
// each member of the room is sent to.
//
// The members live in guest memory, which a fresh instance (after a trap or a hot
// reload) starts without: its first event rebuilds them from the host's connection list
// and attributes.
//
// A member's name is the `user` attribute a request filter attached, or `anon-{id}`.
// - newcomer: `welcome {name}; {n} online` (n counts the room, newcomer included);
//   the room's others: `{name} joined`
// - text `m` from a member: `{name}: m` to every other member of the room; binary is
//   forwarded as is
// - on leaving: `{name} left` to the remaining members of the room
//
// Connection ids are WIT `u64`, so they are BigInt here (`7n`), never Number.

import { attribute, broadcast, connections, send } from "wshost:controller/host@0.2.0";

// Members by connection, remembered at open: the host forgets a connection's info as
// soon as it closes, and `left` still needs the name and the room. BigInt keys compare
// by value.
const members = new Map();
// Members per room.
const rooms = new Map();
// Whether this instance has learnt the connections it inherited.
let known = false;

// The member `conn` is, registered from its attributes the first time.
function member(conn) {
  let found = members.get(conn);
  if (found === undefined) {
    found = {
      name: attribute(conn, "user") ?? `anon-${conn}`,
      room: attribute(conn, "match.1") ?? "",
    };
    members.set(conn, found);
    rooms.set(found.room, (rooms.get(found.room) ?? 0) + 1);
  }
  return found;
}

// A fresh instance's first event: learn the connections that are already open.
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

// Sends `msg` to every member of `room` but `exclude`.
function tellRoom(room, msg, exclude) {
  if (!rooms.has(room)) {
    return;
  }
  if (rooms.size === 1) {
    // Everyone is in this room: one copy out of the guest, fanned out by the host.
    broadcast(msg, exclude);
    return;
  }
  for (const [conn, member] of members) {
    if (member.room === room && conn !== exclude) {
      try {
        send(conn, msg);
      } catch {
        // Gone already, or its queue is full.
      }
    }
  }
}

export function onOpen(conn) {
  learnInherited();
  const { name, room } = member(conn);
  const online = rooms.get(room);
  try {
    send(conn, text(`welcome ${name}; ${online} online`));
  } catch {
    // `result<_, send-error>` arrives as an exception; the newcomer may already be
    // gone (not-open) or its queue full: nothing to do either way.
  }
  tellRoom(room, text(`${name} joined`), conn);
}

export function onMessage(conn, msg) {
  learnInherited();
  const { name, room } = member(conn);
  if (msg.tag === "text") {
    tellRoom(room, text(`${name}: ${msg.val}`), conn);
  } else {
    tellRoom(room, msg, conn);
  }
}

export function onClose(conn, _code, _reason) {
  learnInherited();
  // A member this instance never knew (it closed before the instance's first event)
  // has nobody to be announced to by name.
  const gone = members.get(conn);
  if (gone === undefined) {
    return;
  }
  members.delete(conn);
  const left = rooms.get(gone.room) - 1;
  if (left === 0) {
    rooms.delete(gone.room);
  } else {
    rooms.set(gone.room, left);
  }
  tellRoom(gone.room, text(`${gone.name} left`), undefined);
}

export function onError(_conn, _error) {
  // The host closes the connection itself; `onClose` follows.
}
