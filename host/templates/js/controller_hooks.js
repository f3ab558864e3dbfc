// {{name}}: a wshost controller in JavaScript with every optional hook: it checks
// upgrade requests itself (`handshake`) and has lifecycle hooks, timers and state
// handoff on hot reload (`lifecycle`, `timerHandler`, `state`). wshost calls one export
// at a time. An uncaught exception ends the call: that connection is closed with 1011
// (a handshake gets 500) and a fresh instance takes over, running `init` again. The
// full contract is wit/controller.wit (world `controller-full`).
//
// Connection and timer ids are WIT u64, so they are BigInt here (`7n`). Messages are
// `{ tag: "text", val: string }` or `{ tag: "binary", val: Uint8Array }`. Functions
// returning a WIT `result` throw on error (imports), and report an error by throwing
// (exports).

import { broadcast, connectionCount, log, send } from "wshost:controller/host@{{wit_version}}";
import { cancelTimer, setTimer } from "wshost:controller/timers@{{wit_version}}";

// The heartbeat timer, running while anyone is connected.
let heartbeat;

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

export const handshake = {
  // Runs after routes.toml's filters, before the `101`: return attributes to add as
  // [name, value] pairs, or throw a response ({ status, headers, body }) to refuse.
  onHandshake(request) {
    if (request.headers.some(([name]) => name === "x-refuse")) {
      throw { status: 403, headers: [], body: "refused by {{name}}" };
    }
    return [["greeted", "yes"]];
  },
};

export const lifecycle = {
  // Runs once per instance before anything else, with `[route.config]` settings;
  // throwing a string refuses to start.
  init(config, params) {
    log("info", `${params.controller} starting on ${params.listen}`);
  },
  // The connection count went from 0 to 1 (before onOpen).
  onFirstOpen(conn) {
    heartbeat = setTimer(30000n, true);
  },
  // The count went from 1 to 0 (after onClose).
  onLastClose(conn) {
    if (heartbeat !== undefined) {
      cancelTimer(heartbeat);
      heartbeat = undefined;
    }
  },
  // The server is shutting down; connections are still open and can be sent to.
  onShutdown() {
    broadcast({ tag: "text", val: "server shutting down" }, undefined);
  },
};

export const timerHandler = {
  // A timer set with setTimer fired.
  onTimer(id) {
    broadcast({ tag: "text", val: `${connectionCount()} online` }, undefined);
  },
};

export const state = {
  // Hot reload: the old version's state, handed to the new version's restore.
  snapshot() {
    return new Uint8Array(0);
  },
  // Hot reload: what the old version's snapshot returned; throwing keeps the old
  // version serving.
  restore(bytes) {},
};
