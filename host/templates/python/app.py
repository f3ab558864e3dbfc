"""{{name}}: a wshost controller in Python.

wshost calls the methods below as things happen on the WebSocket connections routed to
it (routes.toml), one call at a time. An uncaught exception ends the call: that
connection is closed with 1011 and a fresh instance takes over (module state starts
over). The full contract is wit/controller.wit; `wit_world` is generated from it by
componentize-py at build time. Connection ids are ints; host functions returning a
`result` raise `Err` on error.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import LogLevel, Message, Message_Text


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
