"""Python `websockets` clients (permessage-deflate on, as websockets offers it by default)
against the rooms server with deflate enabled.

Usage: deflate_client.py echo|rooms|bomb|bombs URL [--plain] [--declined] [--members N]

echo: one client sends 50 JSON messages of about 2 KiB (a market-data feed's shape) and 50
  short ones, and checks each echo.
rooms: 200 members (--members N) join one room; one publishes 5 messages of about 2 KiB; every member gets all
  5, in order.
bomb: one message of 16 MiB of zeros (about 16 KiB compressed, under the server's 64 KiB
  frame limit) is refused with 1009.
bombs: one message of 512 fragments of 64 KiB of zeros each (about 100 bytes compressed
  each) is refused with 1009.
--plain: the client offers no extension (compression=None), for a byte count to compare with.
--declined: the client offers the extension and expects the server to decline it (answer without
  Sec-WebSocket-Extensions), as `wsm serve --no-deflate` does.

Checks that the extension was negotiated (or not, with --plain) from the server's answer.
Prints "ok" and exits 0 on success; otherwise "FAIL <what>" and exits 1. Every wait is bounded.
"""

import asyncio
import json
import sys

import websockets

WAIT = 10.0
MEMBERS = 200
DECLINED = False


def feed(i: int) -> str:
    """One market-data-like message of about 2 KiB."""
    levels = [{"px": f"{100 + k * 0.25:.2f}", "qty": str(10 * (k + i % 7)), "n": k % 5} for k in range(30)]
    return json.dumps({"type": "echo", "data": {"symbol": "BTC-USD", "seq": i, "bids": levels}})


async def connect(url: str, plain: bool):
    ws = await websockets.connect(
        url,
        open_timeout=WAIT,
        ping_interval=None,
        compression=None if plain else "deflate",
        max_size=1 << 20,
    )
    ext = ws.response.headers.get("Sec-WebSocket-Extensions")
    print(f"extensions: {ext}", file=sys.stderr)
    if plain:
        assert ext is None, f"extensions negotiated without an offer: {ext}"
    elif DECLINED:
        assert ext is None, f"extensions negotiated by a server that should decline: {ext}"
    else:
        assert ext is not None and ext.startswith("permessage-deflate"), f"no deflate: {ext}"
    return ws


async def recv(ws) -> str:
    try:
        return await asyncio.wait_for(ws.recv(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"nothing arrived within {WAIT} s") from None


async def echo(url: str, plain: bool) -> None:
    ws = await connect(url, plain)
    for i in range(50):
        for message in (feed(i), json.dumps({"type": "echo", "data": i})):
            await ws.send(message)
            got = await recv(ws)
            assert got == message, f"echo {i} differs: {got[:80]!r}"
    await ws.close()


async def rooms(url: str, plain: bool) -> None:
    members = []
    while len(members) < MEMBERS:
        batch = min(50, MEMBERS - len(members))
        members += await asyncio.gather(*(connect(url, plain) for _ in range(batch)))

    async def join(n: int, ws) -> None:
        welcome = json.loads(await recv(ws))
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "join", "room": "deflate", "id": n}))
        joined = json.loads(await recv(ws))
        assert joined["type"] == "joined", joined

    await asyncio.gather(*(join(n, ws) for n, ws in enumerate(members)))
    sent = [json.loads(feed(i))["data"] for i in range(5)]
    for data in sent:
        await members[0].send(json.dumps({"type": "publish", "room": "deflate", "data": data}))
    async def receive(n: int, ws) -> None:
        for i, data in enumerate(sent):
            got = json.loads(await recv(ws))
            assert got["type"] == "message" and got["data"] == data, f"member {n}, message {i}: {got}"

    await asyncio.gather(*(receive(n, ws) for n, ws in enumerate(members)))
    for ws in members:
        await ws.close()


async def expect_1009(ws) -> None:
    try:
        got = await asyncio.wait_for(ws.recv(), WAIT)
        raise AssertionError(f"a message instead of the close: {got[:80]!r}")
    except websockets.ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else None
        assert code == 1009, f"closed with {code}, not 1009"


async def bomb(url: str, plain: bool) -> None:
    ws = await connect(url, plain)
    await ws.send(bytes(16 << 20))
    await expect_1009(ws)


async def bombs(url: str, plain: bool) -> None:
    ws = await connect(url, plain)

    async def fragments():
        for _ in range(512):
            yield bytes(64 << 10)

    try:
        await ws.send(fragments())
    except websockets.ConnectionClosed:
        pass  # the server closed while fragments were still going out
    await expect_1009(ws)


def main() -> int:
    global MEMBERS, DECLINED
    mode, url = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    plain = "--plain" in rest
    DECLINED = "--declined" in rest
    if "--members" in rest:
        MEMBERS = int(rest[rest.index("--members") + 1])
    try:
        asyncio.run({"echo": echo, "rooms": rooms, "bomb": bomb, "bombs": bombs}[mode](url, plain))
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"FAIL {mode}: {e!r}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
