"""Python `websockets` clients read presence from `wsm serve`, by the README's protocol table.

Usage: rooms_presence.py WS_URL

a joins `py.presence` with `"presence":true` and info {"name":"A"}; b joins with info {"name":"B"}:
a receives a `presence_diff` naming b's join (with its info) and never its own; b asks `presence`:
count 2, both members with their sessions and info; a join whose info is over 1 KiB is answered
`bad_data`; b leaves: a receives the leave. Prints "ok" and exits 0 on success; otherwise
"FAIL <step>: <what>" and exit 1. Every wait is bounded.
"""

import asyncio
import faulthandler
import json
import sys
import traceback

import websockets

WAIT = 10.0
ROOM = "py.presence"
STEP = "start"


def step(name: str) -> None:
    global STEP
    STEP = name


async def connect(url: str):
    ws = await websockets.connect(url, open_timeout=WAIT, ping_interval=None)
    welcome = await recv(ws)
    assert welcome.get("type") == "welcome", welcome
    return ws, welcome["data"]["session"]


async def recv(ws) -> dict:
    try:
        raw = await asyncio.wait_for(ws.recv(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"nothing arrived within {WAIT} s") from None
    return json.loads(raw)


async def recv_type(ws, kind: str) -> dict:
    got = await recv(ws)
    assert got.get("type") == kind, f"{kind} expected: {got}"
    return got


async def main(url: str) -> None:
    step("a joins with presence")
    a, a_id = await connect(url)
    await a.send(json.dumps({"type": "join", "room": ROOM, "id": 1, "presence": True,
                             "data": {"info": {"name": "A"}}}))
    joined = await recv_type(a, "joined")
    assert joined.get("id") == 1 and joined.get("room") == ROOM, joined

    step("b joins: a sees b's join")
    b, b_id = await connect(url)
    await b.send(json.dumps({"type": "join", "room": ROOM, "id": 1, "presence": True,
                             "data": {"info": {"name": "B"}}}))
    await recv_type(b, "joined")
    diff = await recv_type(a, "presence_diff")
    assert diff.get("room") == ROOM, diff
    assert diff["data"]["joins"] == [{"session": b_id, "info": {"name": "B"}}], diff
    assert diff["data"]["leaves"] == [], diff

    step("b asks presence")
    await b.send(json.dumps({"type": "presence", "room": ROOM, "id": 2}))
    while True:
        got = await recv(b)
        if got.get("type") == "presence":
            break
        assert got.get("type") == "presence_diff", got
        joins = [e["session"] for e in got["data"]["joins"]]
        assert b_id not in joins, f"b's own join in its diff: {got}"
    assert got.get("id") == 2 and got.get("room") == ROOM, got
    assert got["data"]["count"] == 2, got
    members = sorted(got["data"]["members"], key=lambda m: m["session"])
    expected = sorted([{"session": a_id, "info": {"name": "A"}},
                       {"session": b_id, "info": {"name": "B"}}], key=lambda m: m["session"])
    assert members == expected, got
    assert "truncated" not in got["data"], got

    step("info over 1 KiB")
    await b.send(json.dumps({"type": "join", "room": "py.other", "id": 3,
                             "data": {"info": "x" * 1100}}))
    err = await recv_type(b, "error")
    assert err.get("id") == 3 and err["data"]["code"] == "bad_data", err

    step("b leaves: a sees the leave")
    await b.send(json.dumps({"type": "leave", "room": ROOM, "id": 4}))
    await recv_type(b, "left")
    diff = await recv_type(a, "presence_diff")
    assert diff["data"]["leaves"] == [{"session": b_id, "info": {"name": "B"}}], diff
    assert diff["data"]["joins"] == [], diff
    await a.close()
    await b.close()


if __name__ == "__main__":
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        asyncio.run(main(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        traceback.print_exc()
        print(f"FAIL {STEP}: {e}")
        sys.exit(1)
    print("ok")
