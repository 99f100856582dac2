"""Python `websockets` clients against `wsm serve`: room history by the README's table.

Usage: rooms_history.py WS_URL

a joins (the room's position: offset 0 and an epoch), publishes 5 with ids and sees offsets 1..5;
b joins with `since` offset 2 and gets `recovered:true`, then 3, 4, 5 in order as ordinary room
messages, then live 6; c asks `history` (latest 3; everything since offset 0; a position of
another epoch), joins with a foreign epoch (`epoch_changed`), and sends a malformed `since`
(`bad_position`). Prints "ok" and exits 0 on success; otherwise "FAIL <step>: <what>" and exit 1.
Every wait is bounded.
"""

import asyncio
import faulthandler
import json
import sys
import traceback

import websockets

WAIT = 10.0
ROOM = "py.history"
STEP = "start"


def step(name: str) -> None:
    global STEP
    STEP = name


class Peer:
    def __init__(self, name: str, ws) -> None:
        self.name = name
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, name: str) -> "Peer":
        ws = await websockets.connect(url, open_timeout=WAIT, ping_interval=None)
        peer = cls(name, ws)
        welcome = await peer.recv()
        assert welcome.get("type") == "welcome", welcome
        return peer

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: nothing arrived within {WAIT} s") from None
        return json.loads(raw)

    async def message(self, offset: int, epoch: str) -> dict:
        got = await self.recv()
        assert got.get("type") == "message" and got.get("room") == ROOM, f"{self.name}: {got}"
        assert got.get("offset") == offset, f"{self.name}: offset {offset} expected: {got}"
        assert got.get("epoch") == epoch, f"{self.name}: epoch {epoch} expected: {got}"
        assert got.get("data") == {"n": offset}, got
        return got


async def main(url: str) -> None:
    step("join: the position")
    a = await Peer.connect(url, "a")
    await a.send({"type": "join", "room": ROOM, "id": 1})
    joined = await a.recv()
    assert joined.get("type") == "joined" and joined.get("id") == 1, joined
    assert joined["data"]["offset"] == 0 and isinstance(joined["data"]["epoch"], str), joined
    assert "recovered" not in joined["data"], joined
    epoch = joined["data"]["epoch"]

    step("publish 5")
    for n in range(1, 6):
        await a.send({"type": "publish", "room": ROOM, "data": {"n": n}, "id": 100 + n})
        got = [await a.recv(), await a.recv()]
        assert {"type": "ack", "id": 100 + n} in got, got
        copy = [m for m in got if m.get("type") == "message"][0]
        assert copy["offset"] == n and copy["epoch"] == epoch, copy

    step("join with since: recovered")
    b = await Peer.connect(url, "b")
    await b.send({"type": "join", "room": ROOM, "id": 2, "since": {"offset": 2, "epoch": epoch}})
    joined = await b.recv()
    assert joined == {
        "type": "joined", "room": ROOM, "id": 2,
        "data": {"offset": 5, "epoch": epoch, "recovered": True},
    }, joined
    for n in (3, 4, 5):
        await b.message(n, epoch)
    await a.send({"type": "publish", "room": ROOM, "data": {"n": 6}})
    await b.message(6, epoch)
    await a.message(6, epoch)

    step("history: the latest 3")
    c = await Peer.connect(url, "c")
    await c.send({"type": "history", "room": ROOM, "id": 3, "limit": 3})
    got = await c.recv()
    assert got.get("type") == "history" and got.get("id") == 3 and got.get("room") == ROOM, got
    data = got["data"]
    assert [p["offset"] for p in data["publications"]] == [4, 5, 6], data
    assert data["offset"] == 6 and data["epoch"] == epoch and data["complete"] is False, data

    step("history: since 0")
    await c.send({"type": "history", "room": ROOM, "id": 4, "since": {"offset": 0, "epoch": epoch}})
    data = (await c.recv())["data"]
    assert [p["offset"] for p in data["publications"]] == [1, 2, 3, 4, 5, 6], data
    assert data["complete"] is True, data

    step("history: another epoch")
    await c.send({"type": "history", "room": ROOM, "id": 5, "since": {"offset": 1, "epoch": "x"}})
    data = (await c.recv())["data"]
    assert data["complete"] is False and data["epoch"] == epoch, data

    step("join with a foreign epoch")
    await c.send({"type": "join", "room": ROOM, "id": 6, "since": {"offset": 1, "epoch": "x"}})
    joined = await c.recv()
    assert joined["data"] == {
        "offset": 6, "epoch": epoch, "recovered": False, "reason": "epoch_changed",
    }, joined

    step("bad since")
    await c.send({"type": "join", "room": "other", "id": 7, "since": {"offset": -1}})
    got = await c.recv()
    assert got.get("type") == "error" and got["data"]["code"] == "bad_position", got
    assert got.get("id") == 7, got

    step("close")
    for peer in (a, b, c):
        await asyncio.wait_for(peer.ws.close(), WAIT)
    print("ok")


if __name__ == "__main__":
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 45))
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line and exit 1
        traceback.print_exc()
        print(f"FAIL {STEP}: {e!r}")
        sys.exit(1)
