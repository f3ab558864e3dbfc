// {{name}}: a wshost controller in JavaScript. wshost calls the exports below as
// things happen on the WebSocket connections routed to it (routes.toml), one call at a
// time. An uncaught exception ends the call: that connection is closed with 1011 and a
// fresh instance takes over (module state starts over). The full contract is
// wit/controller.wit.
//
// Connection ids are WIT u64, so they are BigInt here (`7n`). Messages are
// `{ tag: "text", val: string }` or `{ tag: "binary", val: Uint8Array }`. Host
// functions returning `result` throw on error.

import { log, send } from "wshost:controller/host@{{wit_version}}";

// A client completed the WebSocket handshake; it can be sent to already.
export function onOpen(conn) {
  try {
    send(conn, { tag: "text", val: "welcome to {{name}}" });
  } catch {
    // Gone already, or its queue is full.
  }
}

// A complete message arrived (text or binary). This one sends it back.
export function onMessage(conn, msg) {
  try {
    send(conn, msg);
  } catch {
    // Gone already, or its queue is full.
  }
}

// The connection is closed (1005: no code given, 1006: dropped).
export function onClose(conn, code, reason) {
  log("debug", `connection ${conn} closed: ${code} ${reason}`);
}

// The client broke the protocol; the host closes it and onClose follows.
export function onError(conn, error) {
  log("warn", `connection ${conn}: ${error}`);
}
