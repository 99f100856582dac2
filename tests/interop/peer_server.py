"""An independent WebSocket server (Python `websockets`) for the crate's client to talk to.

Usage: peer_server.py

Listens on 127.0.0.1 with a port chosen by the OS and prints that port alone as its first
stdout line. Exits when its stdin closes (the test that started it is gone) or after
LIFETIME seconds, whichever comes first. What a connection gets depends on its request path:

  /echo              every text or binary message goes back as it came (same type, same bytes)
  /fragments/<n>     every message goes back cut into fragments of <n> bytes (text cut on
                     bytes, so a multi-byte UTF-8 character can straddle two fragments); the
                     text message "stats" is answered, unfragmented, with
                     "fragments <messages> <frames>" (counted over this connection, "stats"
                     excluded)
  /ping              the server pings the client three times (payloads ping-0..ping-2), waits
                     for each pong (5 s bound), then sends "pong-ok 3" (or "pong-timeout <i>")
  /close/<code>      the server sends the text "closing <code>", then closes with <code> and
                     the reason "python closes with <code>"

After a connection ends the server prints one line on stdout:
  closed <path> sent=<code or -> received=<code> <reason>
where received is the close code the client sent (its answer to ours, or its own close).
"""

import asyncio
import sys

import websockets

LIFETIME = 60.0
PONG_TIMEOUT = 5.0

MAJOR = int(websockets.__version__.split(".")[0])
if MAJOR >= 14:
    # The asyncio implementation; `send(..., text=True)` sends bytes as text fragments.
    from websockets.asyncio.server import serve
else:  # 12 and 13: the legacy implementation
    from websockets.legacy.server import serve


def out(line: str) -> None:
    print(line, flush=True)


def request_path(ws) -> str:
    request = getattr(ws, "request", None)
    return request.path if request is not None else ws.path


async def send_fragments(ws, chunks: list, text: bool) -> None:
    """Send one message as the given fragments (at least two frames on the wire)."""
    if MAJOR >= 14:
        await ws.send(iter(chunks), text=text)
        return
    # Legacy: write the frames directly (its send() cannot send bytes as text).
    from websockets.frames import Opcode

    first = Opcode.TEXT if text else Opcode.BINARY
    for i, chunk in enumerate(chunks):
        await ws.write_frame(False, first if i == 0 else Opcode.CONT, chunk)
    await ws.write_frame(True, Opcode.CONT, b"")


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


async def fragments(ws, size: int) -> None:
    messages = frames = 0
    async for message in ws:
        if message == "stats":
            await ws.send(f"fragments {messages} {frames}")
            continue
        is_text = isinstance(message, str)
        data = message.encode() if is_text else message
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        await send_fragments(ws, chunks, is_text)
        messages += 1
        frames += len(chunks)


async def ping(ws) -> None:
    for i in range(3):
        waiter = await ws.ping(f"ping-{i}".encode())
        try:
            await asyncio.wait_for(waiter, PONG_TIMEOUT)
        except asyncio.TimeoutError:
            await ws.send(f"pong-timeout {i}")
            break
    else:
        await ws.send("pong-ok 3")
    async for _ in ws:
        pass


async def close(ws, code: int) -> int:
    await ws.send(f"closing {code}")
    await ws.close(code, f"python closes with {code}")
    return code


async def handler(ws, *_legacy_path) -> None:
    path = request_path(ws)
    sent = "-"
    try:
        if path == "/echo":
            await echo(ws)
        elif path.startswith("/fragments/"):
            await fragments(ws, int(path.rsplit("/", 1)[1]))
        elif path == "/ping":
            await ping(ws)
        elif path.startswith("/close/"):
            sent = await close(ws, int(path.rsplit("/", 1)[1]))
        else:
            await ws.close(1008, f"no behaviour for path {path}")
            sent = "1008"
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    out(f"closed {path} sent={sent} received={ws.close_code} {ws.close_reason or ''}".rstrip())


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        # Not a pipe (a terminal or a file): run for LIFETIME.
        await asyncio.Event().wait()
    while await reader.read(65536):
        pass


async def main() -> None:
    async with serve(
        handler, "127.0.0.1", 0, ping_interval=None, max_size=4 * 1024 * 1024
    ) as server:
        port = server.sockets[0].getsockname()[1]
        out(str(port))
        try:
            await asyncio.wait_for(stdin_closed(), LIFETIME)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
