"""Python `websockets` clients against the rooms server (`wsm serve`): the whole protocol.

Usage: rooms_protocol.py WS_URL

Two clients, a and b: welcome; join (with and without id, twice); publish with an event name
and an id (members get the event, the sender an ack too), without an event and without an id
(members get "message", no ack); echo; the ping envelope; every error code the protocol can
produce from a client's own input, each followed by a check that the session still answers;
leave (and what no longer arrives after it); a normal close. Prints "ok" and exits 0 on
success; otherwise prints "FAIL <step>: <what>" and exits 1. Every wait is bounded.
"""

import asyncio
import datetime
import faulthandler
import json
import sys
import traceback

import websockets

WAIT = 10.0
ROOM = "py.room-1:a_b"
STEP = "start"


def step(name: str) -> None:
    global STEP
    STEP = name


class Peer:
    """One client: JSON in and out, every receive bounded by WAIT."""

    def __init__(self, name: str, ws) -> None:
        self.name = name
        self.ws = ws
        self.session = None
        self.next_ping = 1000

    @classmethod
    async def connect(cls, url: str, name: str) -> "Peer":
        ws = await websockets.connect(url, open_timeout=WAIT, ping_interval=None)
        return cls(name, ws)

    async def send(self, message) -> None:
        """A dict is sent as JSON text; str and bytes as they are (text and binary)."""
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def recv(self) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: nothing arrived within {WAIT} s") from None
        assert isinstance(raw, str), f"{self.name}: expected a text frame, got {raw!r}"
        message = json.loads(raw)
        assert isinstance(message, dict), f"{self.name}: not a JSON object: {raw}"
        return message

    async def expect(self, expected: dict) -> None:
        got = await self.recv()
        assert got == expected, f"{self.name}: expected {expected}, got {got}"

    async def joined(self, id_=None) -> dict:
        """The next message is `joined` for ROOM (with `id_` when given) carrying the room's
        stream position (`data`: `offset`, a non-negative integer, and `epoch`, a string)."""
        got = await self.recv()
        expected = {"type": "joined", "room": ROOM}
        if id_ is not None:
            expected["id"] = id_
        data = got.pop("data", None)
        assert got == expected, f"{self.name}: expected {expected} with a position, got {got}"
        assert isinstance(data, dict) and set(data) == {"offset", "epoch"}, f"position: {data}"
        assert isinstance(data["offset"], int) and data["offset"] >= 0, data
        assert isinstance(data["epoch"], str) and data["epoch"], data
        return data

    async def usable(self) -> None:
        """The session answers, and nothing else was waiting for this client: a ping envelope
        with a fresh id is answered by the very next message."""
        self.next_ping += 1
        await self.send({"type": "ping", "id": self.next_ping})
        await self.expect({"type": "pong", "id": self.next_ping})

    async def error(self, message, code: str, id_=None) -> None:
        """`message` is refused with `code` (carrying `id_` when given), and the session stays
        usable."""
        await self.send(message)
        got = await self.recv()
        assert got.get("type") == "error", f"{self.name}: expected error {code}, got {got}"
        data = got.get("data")
        assert isinstance(data, dict) and data.get("code") == code, (
            f"{self.name}: expected error code {code} for {message!r}, got {got}"
        )
        assert isinstance(data.get("message"), str) and data["message"], got
        if id_ is None:
            assert "id" not in got, f"{self.name}: an error without id expected, got {got}"
        else:
            assert got.get("id") == id_, f"{self.name}: error id {id_} expected, got {got}"
        await self.usable()


def check_broadcast(got: dict, kind: str, sender: Peer, data) -> None:
    fields = {"type", "room", "from", "data", "timestamp", "offset", "epoch"}
    assert set(got) == fields, f"fields of {got}"
    assert isinstance(got["offset"], int) and got["offset"] >= 1, f"offset: {got}"
    assert isinstance(got["epoch"], str) and got["epoch"], f"epoch: {got}"
    assert got["type"] == kind, f"type {kind} expected: {got}"
    assert got["room"] == ROOM, got
    assert got["from"] == sender.session, f"from {sender.session} expected: {got}"
    assert got["data"] == data, f"data {data!r} expected: {got}"
    stamp = got["timestamp"]
    assert isinstance(stamp, str) and stamp.endswith("Z"), f"UTC RFC 3339 timestamp: {got}"
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 60, f"timestamp {stamp} is not now ({now})"


async def publish_with_ack(publisher: Peer, message: dict, kind: str) -> dict:
    """`publisher` sends `message` (which has an id): it gets the ack and its own copy, in
    either order. Answers the copy."""
    await publisher.send(message)
    got = [await publisher.recv(), await publisher.recv()]
    acks = [m for m in got if m.get("type") == "ack"]
    assert acks == [{"type": "ack", "id": message["id"]}], f"one ack expected: {got}"
    copies = [m for m in got if m.get("type") == kind]
    assert len(copies) == 1, f"the publisher's own {kind} expected: {got}"
    return copies[0]


async def main(url: str) -> None:
    step("connect and welcome")
    a = await Peer.connect(url, "a")
    b = await Peer.connect(url, "b")
    for peer in (a, b):
        welcome = await peer.recv()
        assert welcome.get("type") == "welcome" and set(welcome) == {"type", "data"}, welcome
        session = welcome["data"].get("session")
        assert isinstance(session, str) and session, welcome
        peer.session = session
    assert a.session != b.session, (a.session, b.session)

    step("join")
    await a.send({"type": "join", "room": ROOM, "id": 1})
    await a.joined(1)
    await b.send({"type": "join", "room": ROOM})
    await b.joined()
    step("join again (idempotent)")
    await a.send({"type": "join", "room": ROOM, "id": 2})
    await a.joined(2)

    step("publish with an event and an id")
    data = {"text": "héllo ✓ 🦀", "n": 1, "list": [1, None, True]}
    msg = {"type": "publish", "room": ROOM, "event": "chat.line", "data": data, "id": 3}
    check_broadcast(await publish_with_ack(a, msg, "chat.line"), "chat.line", a, data)
    check_broadcast(await b.recv(), "chat.line", a, data)
    await b.usable()  # exactly one copy, no ack for b

    step("publish without an event and without an id")
    data = [1, "two", None]
    await b.send({"type": "publish", "room": ROOM, "data": data})
    check_broadcast(await b.recv(), "message", b, data)
    await b.usable()  # no ack without an id
    check_broadcast(await a.recv(), "message", b, data)
    await a.usable()

    step("echo")
    data = {"nested": [1, 2, {"x": "ü"}], "f": 1.5}
    await a.send({"type": "echo", "data": data, "id": 4})
    await a.expect({"type": "echo", "data": data, "id": 4})
    await a.send({"type": "echo", "data": "plain"})
    await a.expect({"type": "echo", "data": "plain"})

    step("ping envelope")
    await a.send({"type": "ping"})
    await a.expect({"type": "pong"})
    await a.send({"type": "ping", "id": 5})
    await a.expect({"type": "pong", "id": 5})

    step("malformed")
    await a.error("{not json", "malformed")
    await a.error("[1, 2, 3]", "malformed")
    await a.error('{"data": 1}', "malformed")
    await a.error('{"type": 5, "id": 6}', "malformed")
    step("unknown_type")
    await a.error({"type": "frobnicate", "id": 10}, "unknown_type", 10)
    await a.error({"type": "frobnicate"}, "unknown_type")
    step("not_joined")
    await a.error({"type": "publish", "room": "elsewhere", "data": 1, "id": 11}, "not_joined", 11)
    await a.error({"type": "leave", "room": "elsewhere", "id": 12}, "not_joined", 12)
    step("bad_event")
    for i, event in enumerate(["welcome", "message", "ack", "error", "has space", "x" * 65, ""]):
        publish = {"type": "publish", "room": ROOM, "event": event, "data": 1, "id": 20 + i}
        await a.error(publish, "bad_event", 20 + i)
    step("bad_room")
    for i, room in enumerate(["no spaces", "", "r" * 65, "slash/no", "ü"]):
        await a.error({"type": "join", "room": room, "id": 30 + i}, "bad_room", 30 + i)
    await a.error({"type": "join", "id": 40}, "bad_room", 40)
    await a.error({"type": "publish", "room": "bad room", "data": 1, "id": 41}, "bad_room", 41)
    step("binary_unsupported")
    await a.error(b"\x00\x01\x02\xff", "binary_unsupported")
    step("b saw none of a's errors")
    await b.usable()

    step("leave")
    await a.send({"type": "leave", "room": ROOM, "id": 50})
    await a.expect({"type": "left", "room": ROOM, "id": 50})
    await a.error({"type": "publish", "room": ROOM, "data": 1, "id": 51}, "not_joined", 51)
    await a.error({"type": "leave", "room": ROOM, "id": 52}, "not_joined", 52)
    step("no broadcast after leave")
    msg = {"type": "publish", "room": ROOM, "data": "after leave", "id": 53}
    check_broadcast(await publish_with_ack(b, msg, "message"), "message", b, "after leave")
    # b's copy arrived: the hub has offered that publish to every member already; a is not one.
    await a.usable()

    step("join again after leave")
    await a.send({"type": "join", "room": ROOM, "id": 54})
    await a.joined(54)
    await b.send({"type": "publish", "room": ROOM, "event": "back", "data": {}})
    check_broadcast(await a.recv(), "back", b, {})
    check_broadcast(await b.recv(), "back", b, {})

    step("close 1000")
    for peer in (a, b):
        await asyncio.wait_for(peer.ws.close(), WAIT)
        assert peer.ws.close_code == 1000, f"{peer.name}: server answered {peer.ws.close_code}"
    print("ok")


if __name__ == "__main__":
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 45))
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line and exit 1
        traceback.print_exc()
        print(f"FAIL {STEP}: {e!r}")
        sys.exit(1)
