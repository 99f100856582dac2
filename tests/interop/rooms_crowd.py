"""Many Python `websockets` clients in one room of the rooms server (`wsm serve`).

Usage: rooms_crowd.py WS_URL CLIENTS PUBLISHES

CLIENTS clients (one asyncio process) connect and join one room; once every one of them has
joined, each publishes PUBLISHES messages {"c": its index, "seq": 0..PUBLISHES-1} with an id,
one at a time (the next after the ack of the previous). The server delivers a publish to every
member, the publisher included, so every client must receive CLIENTS * PUBLISHES messages:
from each publisher exactly its sequence 0, 1, 2, ... in order (per-publisher order), with
`from` naming that publisher's session, and one ack per own publish. Anything else (an error,
a stray type, a gap, a duplicate, a disconnect) fails. Prints "ok" and exits 0 on success;
otherwise prints "FAIL <what>" and exits 1. Bounded: each wait by WAIT, the whole run by
BOUND seconds.
"""

import asyncio
import faulthandler
import json
import sys
import time
import traceback

import websockets

WAIT = 10.0
BOUND = 40.0
ROOM = "crowd"


class Client:
    def __init__(self, index: int, ws, session: str) -> None:
        self.index = index
        self.ws = ws
        self.session = session
        self.next_seq = {}  # publisher session -> the seq expected next
        self.received = 0
        self.acks = asyncio.Queue()

    async def recv(self) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"client {self.index}: nothing within {WAIT} s after {self.received} messages"
            ) from None
        except websockets.ConnectionClosed as e:
            raise AssertionError(
                f"client {self.index}: connection closed after {self.received} messages: {e}"
            ) from None
        return json.loads(raw)


async def connect(url: str, index: int) -> Client:
    ws = await websockets.connect(url, open_timeout=WAIT, ping_interval=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert welcome.get("type") == "welcome", f"client {index}: {welcome}"
    client = Client(index, ws, welcome["data"]["session"])
    await ws.send(json.dumps({"type": "join", "room": ROOM, "id": 1}))
    joined = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    position = joined.pop("data", None)
    assert joined == {"type": "joined", "room": ROOM, "id": 1}, f"client {index}: {joined}"
    assert isinstance(position, dict) and isinstance(position.get("offset"), int), position
    return client


async def read(client: Client, sessions: dict, expected: int, publishes: int) -> None:
    """Read until every publication and every own ack is in, checking each as it comes."""
    acks = 0
    while client.received < expected or acks < publishes:
        m = await client.recv()
        kind = m.get("type")
        if kind == "ack":
            assert m.get("id") == 100 + acks, f"client {client.index}: ack out of order: {m}"
            acks += 1
            client.acks.put_nowait(m["id"])
            continue
        assert kind == "message" and m.get("room") == ROOM, f"client {client.index}: {m}"
        sender = m.get("from")
        publisher = sessions.get(sender)
        assert publisher is not None, f"client {client.index}: from an unknown session: {m}"
        data = m.get("data")
        assert data.get("c") == publisher, f"client {client.index}: {m} is not from {publisher}"
        want = client.next_seq.get(sender, 0)
        assert data.get("seq") == want, (
            f"client {client.index}: from client {publisher} seq {want} expected, got {m}"
        )
        client.next_seq[sender] = want + 1
        client.received += 1
    assert acks == publishes, f"client {client.index}: {acks} acks"
    counts = sorted(set(client.next_seq.values()))
    assert counts == [publishes] and len(client.next_seq) == len(sessions), (
        f"client {client.index}: per-publisher counts {client.next_seq}"
    )


async def publish(client: Client, publishes: int) -> None:
    for seq in range(publishes):
        data = {"c": client.index, "seq": seq}
        message = {"type": "publish", "room": ROOM, "data": data, "id": 100 + seq}
        await client.ws.send(json.dumps(message))
        ack = await asyncio.wait_for(client.acks.get(), WAIT)
        assert ack == 100 + seq, f"client {client.index}: ack {ack} for seq {seq}"


async def main(url: str, n: int, publishes: int) -> None:
    start = time.monotonic()
    clients = await asyncio.gather(*(connect(url, i) for i in range(n)))
    sessions = {c.session: c.index for c in clients}
    assert len(sessions) == n, "session names are not unique"
    joined = time.monotonic()
    expected = n * publishes
    readers = [asyncio.create_task(read(c, sessions, expected, publishes)) for c in clients]
    writers = [asyncio.create_task(publish(c, publishes)) for c in clients]
    try:
        # The first failure ends the run (gather raises it); the rest are cancelled below.
        await asyncio.gather(*readers, *writers)
    finally:
        for task in readers + writers:
            task.cancel()
    done = time.monotonic()
    await asyncio.gather(*(asyncio.wait_for(c.ws.close(), WAIT) for c in clients))
    print(
        f"{n} clients joined in {joined - start:.2f} s; {n * expected} deliveries in "
        f"{done - joined:.2f} s",
        file=sys.stderr,
    )
    print("ok")


if __name__ == "__main__":
    faulthandler.dump_traceback_later(BOUND + 15, exit=True)
    try:
        url, n, publishes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        asyncio.run(asyncio.wait_for(main(url, n, publishes), BOUND))
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line and exit 1
        traceback.print_exc()
        print(f"FAIL {e!r}")
        sys.exit(1)
