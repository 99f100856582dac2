"""A Python `websockets` echo server with permessage-deflate, for the crate's client.

Usage: deflate_peer.py [--server-no-context-takeover] [--client-no-context-takeover]
                       [--server-max-window-bits N] [--client-max-window-bits N]

Listens on 127.0.0.1 with a port chosen by the OS and prints that port alone as its first
stdout line. Exits when its stdin closes or after LIFETIME seconds. Every connection:

  "extensions?"  is answered with the Sec-WebSocket-Extensions header the server sent
                 ("none" without one)
  "bomb"         is answered with one binary message of 16 MiB of zeros (compressed)
  "bombs"        is answered with one binary message of 512 fragments of 64 KiB of zeros
  anything else  goes back as it came (same type, same bytes)
"""

import argparse
import asyncio
import sys

import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

LIFETIME = 120.0
MAJOR = int(websockets.__version__.split(".")[0])
if MAJOR >= 14:
    from websockets.asyncio.server import serve
else:  # 12 and 13: the legacy implementation
    from websockets.legacy.server import serve


def answered_extensions(ws) -> str:
    response = getattr(ws, "response", None)
    headers = response.headers if response is not None else ws.response_headers
    return headers.get("Sec-WebSocket-Extensions") or "none"


async def handler(ws, *_legacy_path) -> None:
    try:
        async for message in ws:
            if message == "extensions?":
                await ws.send(answered_extensions(ws))
            elif message == "bomb":
                await ws.send(bytes(16 << 20))
            elif message == "bombs":

                async def fragments():
                    for _ in range(512):
                        yield bytes(64 << 10)

                await ws.send(fragments())
            else:
                await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        await asyncio.Event().wait()
    while await reader.read(65536):
        pass


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server-no-context-takeover", action="store_true")
    p.add_argument("--client-no-context-takeover", action="store_true")
    p.add_argument("--server-max-window-bits", type=int)
    p.add_argument("--client-max-window-bits", type=int)
    a = p.parse_args()
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=a.server_no_context_takeover,
        client_no_context_takeover=a.client_no_context_takeover,
        server_max_window_bits=a.server_max_window_bits,
        client_max_window_bits=a.client_max_window_bits,
    )
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ping_interval=None,
        max_size=None,
        compression=None,
        extensions=[factory],
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.wait(
            [asyncio.ensure_future(stdin_closed()), asyncio.ensure_future(asyncio.sleep(LIFETIME))],
            return_when=asyncio.FIRST_COMPLETED,
        )


if __name__ == "__main__":
    asyncio.run(main())
