"""{{name}}: a wshost controller in Python with every optional hook.

It checks upgrade requests itself (`Handshake`) and has lifecycle hooks, timers and
state handoff on hot reload (`Lifecycle`, `TimerHandler`, `State`). wshost calls one
method at a time. An uncaught exception ends the call: that connection is closed with
1011 (a handshake gets 500) and a fresh instance takes over, running `init` again. The
full contract is wit/controller.wit (world `controller-full`); `wit_world` is generated
from it by componentize-py at build time. Ids are ints; functions returning a WIT
`result` raise `Err` on error (imports) and report an error by raising `Err` (exports).
"""

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handshake import Request, Response
from wit_world.exports.lifecycle import ServerParams
from wit_world.imports import host, timers
from wit_world.imports.types import LogLevel, Message, Message_Text

# The heartbeat timer, running while anyone is connected.
heartbeat: int | None = None


class WitWorld(wit_world.WitWorld):
    def on_open(self, conn: int) -> None:
        """A client completed the WebSocket handshake; it can be sent to already."""
        try:
            host.send(conn, Message_Text("welcome to {{name}}"))
        except Err:
            pass  # gone already, or its queue is full

    def on_message(self, conn: int, msg: Message) -> None:
        """A complete message arrived (text or binary). This one sends it back."""
        try:
            host.send(conn, msg)
        except Err:
            pass

    def on_close(self, conn: int, code: int, reason: str) -> None:
        """The connection is closed (1005: no code given, 1006: dropped)."""
        host.log(LogLevel.DEBUG, f"connection {conn} closed: {code} {reason}")

    def on_error(self, conn: int, error: str) -> None:
        """The client broke the protocol; the host closes it and on_close follows."""
        host.log(LogLevel.WARN, f"connection {conn}: {error}")


class Handshake(exports.Handshake):
    def on_handshake(self, req: Request) -> list[tuple[str, str]]:
        """Runs after routes.toml's filters, before the `101`: return attributes to
        add, or raise Err(Response(...)) to refuse."""
        if any(name == "x-refuse" for name, _ in req.headers):
            raise Err(Response(403, [], "refused by {{name}}"))
        return [("greeted", "yes")]


class Lifecycle(exports.Lifecycle):
    def init(self, config: list[tuple[str, str]], params: ServerParams) -> None:
        """Runs once per instance before anything else; raise Err(str) to refuse."""
        host.log(LogLevel.INFO, f"{params.controller} starting on {params.listen}")

    def on_first_open(self, conn: int) -> None:
        """The connection count went from 0 to 1 (before on_open)."""
        global heartbeat
        heartbeat = timers.set_timer(30000, True)

    def on_last_close(self, conn: int) -> None:
        """The count went from 1 to 0 (after on_close)."""
        global heartbeat
        if heartbeat is not None:
            timers.cancel_timer(heartbeat)
            heartbeat = None

    def on_shutdown(self) -> None:
        """The server is shutting down; connections are still open."""
        host.broadcast(Message_Text("server shutting down"), None)


class TimerHandler(exports.TimerHandler):
    def on_timer(self, id: int) -> None:
        """A timer set with timers.set_timer fired."""
        host.broadcast(Message_Text(f"{host.connection_count()} online"), None)


class State(exports.State):
    def snapshot(self) -> bytes:
        """Hot reload: the old version's state, handed to the new version's restore."""
        return b""

    def restore(self, state: bytes) -> None:
        """Hot reload: what the old snapshot returned; raise Err to keep the old one."""
