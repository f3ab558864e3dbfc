"""Echo server on Python's `websockets` (no compression), for the benchmark: prints
`listening PORT` on stdout once bound to 127.0.0.1."""

import asyncio

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with serve(
        echo, "127.0.0.1", 0, compression=None, max_size=64 << 20, ping_interval=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)
        await asyncio.Future()


asyncio.run(main())
