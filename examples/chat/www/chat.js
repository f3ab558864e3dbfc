// The chat page: joins /chat/ROOM?name=NAME with the `chat` sub-protocol and speaks the
// chat controller's protocol (examples/chat/src/lib.rs):
//   `welcome NAME; N online` (to the newcomer), `NAME joined`, `NAME left`,
//   `NAME: TEXT` (someone else's message; your own are not echoed back).
// The name reaches the controller as its `user` attribute through the route's `query`
// filter. When the connection drops (server restart, network), it reconnects with
// exponential backoff; a controller hot reload keeps the connection open.
// `window.chatStats` counts opens, closes and messages (the browser tests read it).
"use strict";

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 8000;

const $ = (id) => document.getElementById(id);
const stats = { opens: 0, closes: 0, received: 0, sent: 0, online: 0, me: null };
window.chatStats = stats;

let socket = null;
let wanted = null; // { name, room } while the user wants to be in a room
let retries = 0;
let retryTimer = null;
let countdown = null;

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function setOnline(n) {
  stats.online = Math.max(n, 0);
  const online = $("online");
  online.hidden = false;
  online.textContent = `${stats.online} online`;
}

function add(kind, text, who) {
  const log = $("log");
  const item = document.createElement("li");
  item.className = kind;
  if (who !== undefined) {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    item.append(name);
  }
  item.append(document.createTextNode(text));
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(item);
  if (atBottom || kind === "mine") {
    item.scrollIntoView({ block: "end" });
  }
}

// One line from the controller. Names picked here contain no `:`, so a line with `: `
// is a message; the welcome comes first on every connection.
function receive(line) {
  stats.received += 1;
  const welcome = /^welcome (.*); (\d+) online$/.exec(line);
  if (welcome && stats.me === null) {
    stats.me = welcome[1];
    setOnline(Number(welcome[2]));
    add("event", `you joined as ${welcome[1]}`);
    return;
  }
  const colon = line.indexOf(": ");
  if (colon > 0) {
    add("theirs", line.slice(colon + 2), line.slice(0, colon));
    return;
  }
  const joined = /^(.*) joined$/.exec(line);
  if (joined) {
    setOnline(stats.online + 1);
    add("event", `${joined[1]} joined`);
    return;
  }
  const left = /^(.*) left$/.exec(line);
  if (left) {
    setOnline(stats.online - 1);
    add("event", `${left[1]} left`);
    return;
  }
  add("event", line);
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  if (!wanted) {
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/chat/${encodeURIComponent(wanted.room)}` +
    `?name=${encodeURIComponent(wanted.name)}`;
  setStatus("connecting", retries === 0 ? "connecting…" : `reconnecting (try ${retries + 1})…`);
  const ws = new WebSocket(url, ["chat"]);
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onopen = () => {
    stats.opens += 1;
    stats.me = null;
    retries = 0;
    setStatus("online", "connected");
    $("text").disabled = false;
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      receive(event.data);
    } else {
      add("event", `(binary message, ${event.data.byteLength} bytes)`);
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) {
      return; // left on purpose, or replaced
    }
    stats.closes += 1;
    socket = null;
    $("text").disabled = true;
    $("online").hidden = true; // stale until the next welcome
    if (stats.opens > 0 && stats.me !== null) {
      add("event", `connection lost (${event.code || "no close code"})`);
    }
    stats.me = null;
    scheduleRetry();
  };
}

function scheduleRetry() {
  if (!wanted) {
    return;
  }
  // 0.5 s, 1 s, 2 s, ... up to 8 s, with up to 20 % jitter so a restarted server is
  // not hit by every page in the same millisecond.
  const base = Math.min(RETRY_FIRST_MS * 2 ** retries, RETRY_MAX_MS);
  const delay = Math.round(base * (1 + Math.random() * 0.2));
  retries += 1;
  const until = Date.now() + delay;
  const show = () => {
    const secs = Math.max(0, (until - Date.now()) / 1000).toFixed(1);
    setStatus("waiting", `offline, retrying in ${secs} s`);
  };
  show();
  countdown = setInterval(show, 250);
  retryTimer = setTimeout(connect, delay);
}

function join(name, room) {
  wanted = { name, room };
  localStorage.setItem("wshost-chat", JSON.stringify(wanted));
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-label").textContent = `#${room}`;
  $("log").replaceChildren();
  retries = 0;
  connect();
  $("text").focus();
}

function leave() {
  wanted = null;
  clearTimeout(retryTimer);
  clearInterval(countdown);
  const ws = socket;
  socket = null;
  if (ws) {
    ws.close(1000, "left");
  }
  stats.me = null;
  $("chat").hidden = true;
  $("join").hidden = false;
  $("online").hidden = true;
  $("room-label").textContent = "";
  setStatus("idle", "not connected");
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim().replaceAll(":", "");
  const room = $("room").value.trim();
  if (name && room) {
    join(name, room);
  }
});

$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim() || !socket || socket.readyState !== WebSocket.OPEN) {
    return;
  }
  socket.send(text);
  stats.sent += 1;
  add("mine", text);
  input.value = "";
});

$("leave").addEventListener("click", leave);

// Prefill from the last visit, and the room from `?room=`.
try {
  const last = JSON.parse(localStorage.getItem("wshost-chat") || "null");
  if (last) {
    $("name").value = last.name;
    $("room").value = last.room;
  }
} catch {
  // A broken entry is just not used.
}
const roomParam = new URLSearchParams(location.search).get("room");
if (roomParam) {
  $("room").value = roomParam;
}
