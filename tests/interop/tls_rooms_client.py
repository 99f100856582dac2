"""An independent client (Python `websockets`) against `wsm serve --tls-cert/--tls-key`.

Usage: tls_rooms_client.py URL CA_PEM
Trusts only CA_PEM, joins a room, publishes with an id, expects the broadcast and the ack,
echoes, then closes with 1000. Prints "ok" and exits 0 on success; any failure raises (exit 1).
"""

import asyncio
import json
import ssl
import sys

import websockets


async def main(url: str, ca: str) -> None:
    context = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=context, open_timeout=10) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "join", "room": "py", "id": 1}))
        joined = json.loads(await asyncio.wait_for(ws.recv(), 10))
        position = joined.pop("data", None)
        assert joined == {"type": "joined", "room": "py", "id": 1}, joined
        assert isinstance(position, dict) and position.get("offset") == 0, position
        await ws.send(json.dumps({"type": "publish", "room": "py", "data": {"n": 7}, "id": 2}))
        got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        kinds = sorted(m["type"] for m in got)
        assert kinds == ["ack", "message"], got
        message = next(m for m in got if m["type"] == "message")
        assert message["data"] == {"n": 7} and message["room"] == "py", message
        await ws.send(json.dumps({"type": "echo", "data": "over tls", "id": 3}))
        echo = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert echo == {"type": "echo", "data": "over tls", "id": 3}, echo
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
