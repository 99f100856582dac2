"""Python `websockets` + PyJWT against `wsm serve --jwt-secret-file`: JWT authentication.

Usage: jwt_auth.py WS_URL SECRET_FILE RSA_PRIVATE_KEY_FILE [RS256_WS_URL RSA_PUBLIC_KEY_FILE]

Upgrades refused with HTTP 401 and a one-line reason: no token, a bad signature, `alg: none`, an
RS256 token (wrong key type), an expired token, a malformed Authorization header. A valid token
(in the header, and in the `token` query parameter) connects: `welcome` names its `sub`, and a
publish arrives with `from` = sub and `session` = the session id. The `rooms` claim `["chat.*"]`
lets the session join `chat.general` and refuses `admin` with `forbidden_room`. Expiry: a token
with 2 s left brings `token_expiring`; a `refresh` with a new token keeps the session open past
the old `exp` (`refreshed`), a refresh for another `sub` or with an expired token is `bad_token`;
without a refresh the close is 4001 at `exp`. With the optional RS256 server: a token signed with
the RSA key connects, and an HS256 token signed with the public key's PEM as the secret
("algorithm confusion") is refused.

Prints "ok" and exits 0 on success; otherwise "FAIL <step>: <what>" and exit 1. Every wait is
bounded.
"""

import asyncio
import base64
import faulthandler
import hashlib
import hmac
import json
import math
import sys
import time
import traceback

import jwt
import websockets

WAIT = 10.0
STEP = "start"
# How late the 4001 close may come after `exp` (the server's timer is exact; this is slack for a
# busy machine), and how early (never: at most clock rounding).
CLOSE_SLACK = 1.5


def step(name: str) -> None:
    global STEP
    STEP = name


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def status_of(exc: Exception):
    """The HTTP status of a refused handshake, across websockets versions."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        return response.status_code, bytes(getattr(response, "body", b"") or b"")
    return getattr(exc, "status_code", None), b""


async def refused(url: str, headers=None) -> str:
    """Connect and expect HTTP 401; answers the body (one line)."""
    kwargs = {"open_timeout": WAIT, "ping_interval": None}
    if headers:
        kwargs["additional_headers"] = headers
    try:
        ws = await websockets.connect(url, **kwargs)
    except websockets.exceptions.InvalidStatus as e:
        status, body = status_of(e)
        assert status == 401, f"status {status}, expected 401"
        text = body.decode("utf-8", "replace")
        assert "\n" not in text.strip(), f"the 401 body is not one line: {text!r}"
        return text
    await ws.close()
    raise AssertionError("the upgrade was accepted")


async def connect(url: str, token: str = None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    kwargs = {"open_timeout": WAIT, "ping_interval": None}
    if headers:
        kwargs["additional_headers"] = headers
    ws = await websockets.connect(url, **kwargs)
    welcome = await recv(ws)
    assert welcome.get("type") == "welcome", welcome
    return ws, welcome["data"]


async def recv(ws) -> dict:
    try:
        raw = await asyncio.wait_for(ws.recv(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"nothing arrived within {WAIT} s") from None
    return json.loads(raw)


async def recv_type(ws, kind: str) -> dict:
    """The next message of type `kind`, skipping nothing else: any other type fails."""
    got = await recv(ws)
    assert got.get("type") == kind, f"{kind} expected: {got}"
    return got


def claims(sub="alice", ttl=60, **extra) -> dict:
    now = int(time.time())
    out = {"sub": sub, "exp": now + ttl, "iat": now}
    out.update(extra)
    return out


async def refusals(url: str, secret: bytes, rsa_private: bytes) -> None:
    step("no token")
    why = await refused(url)
    assert "token" in why, why

    step("bad signature")
    bad = jwt.encode(claims(), b"another secret", algorithm="HS256")
    why = await refused(url, {"Authorization": f"Bearer {bad}"})
    assert "signature" in why, why

    step("alg none")
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    why = await refused(url, {"Authorization": f"Bearer {header}.{payload}."})
    assert "none" in why, why

    step("wrong key type (RS256 to an HS256 server)")
    rs = jwt.encode(claims(), rsa_private, algorithm="RS256")
    why = await refused(url, {"Authorization": f"Bearer {rs}"})
    assert "RS256" in why, why

    step("expired")
    old = jwt.encode(claims(ttl=-30), secret, algorithm="HS256")
    why = await refused(url, {"Authorization": f"Bearer {old}"})
    assert "expired" in why, why

    step("no exp")
    no_exp = jwt.encode({"sub": "alice"}, secret, algorithm="HS256")
    why = await refused(url, {"Authorization": f"Bearer {no_exp}"})
    assert "exp" in why, why

    step("not a bearer header")
    why = await refused(url, {"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert "Bearer" in why, why

    step("bad token in the query")
    why = await refused(f"{url}?token=not.a.jwt")
    assert "JWT" in why, why


async def identity_and_rooms(url: str, secret: bytes) -> None:
    step("valid token: from carries sub")
    token = jwt.encode(claims("alice", rooms=["chat.*"]), secret, algorithm="HS256")
    ws, welcome = await connect(url, token)
    assert welcome.get("identity") == "alice", welcome
    await ws.send(json.dumps({"type": "join", "room": "chat.general", "id": 1}))
    joined = await recv_type(ws, "joined")
    assert joined.get("id") == 1, joined
    await ws.send(json.dumps({"type": "publish", "room": "chat.general", "data": {"x": 1}}))
    msg = await recv_type(ws, "message")
    assert msg.get("from") == "alice", msg
    assert msg.get("session") == welcome["session"], msg

    step("rooms claim refuses admin")
    await ws.send(json.dumps({"type": "join", "room": "admin", "id": 2}))
    err = await recv_type(ws, "error")
    assert err.get("id") == 2 and err["data"]["code"] == "forbidden_room", err
    await ws.close()

    step("valid token in the query parameter")
    token = jwt.encode(claims("bob"), secret, algorithm="HS256")
    ws, welcome = await connect(f"{url}?token={token}")
    assert welcome.get("identity") == "bob", welcome
    await ws.send(json.dumps({"type": "join", "room": "admin", "id": 1}))
    joined = await recv_type(ws, "joined")  # no rooms claim: any room
    await ws.close()


def short_token(secret: bytes, sub: str) -> tuple:
    """A token whose exp is 2 to 3 s away (exp is whole seconds): (token, exp)."""
    exp = math.ceil(time.time()) + 2
    return jwt.encode({"sub": sub, "exp": exp}, secret, algorithm="HS256"), exp


async def expiry(url: str, secret: bytes) -> None:
    step("expiring: refresh keeps the session")
    token, exp = short_token(secret, "carol")
    ws, _ = await connect(url, token)
    notice = await recv_type(ws, "token_expiring")
    in_ms = notice["data"]["in_ms"]
    assert 0 < in_ms <= 3000, notice
    other = jwt.encode(claims("mallory"), secret, algorithm="HS256")
    await ws.send(json.dumps({"type": "refresh", "id": 7, "data": {"token": other}}))
    err = await recv_type(ws, "error")
    assert err.get("id") == 7 and err["data"]["code"] == "bad_token", err
    stale = jwt.encode(claims("carol", ttl=-5), secret, algorithm="HS256")
    await ws.send(json.dumps({"type": "refresh", "id": 8, "data": {"token": stale}}))
    err = await recv_type(ws, "error")
    assert err.get("id") == 8 and err["data"]["code"] == "bad_token", err
    fresh = jwt.encode(claims("carol", ttl=60), secret, algorithm="HS256")
    await ws.send(json.dumps({"type": "refresh", "id": 9, "data": {"token": fresh}}))
    done = await recv_type(ws, "refreshed")
    assert done.get("id") == 9, done
    # Past the old exp, the session still answers.
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.0)
    await ws.send(json.dumps({"type": "ping", "id": 10}))
    pong = await recv_type(ws, "pong")
    assert pong.get("id") == 10, pong
    await ws.close()

    step("expiring: no refresh closes with 4001 at exp")
    token, exp = short_token(secret, "dave")
    ws, _ = await connect(url, token)
    await recv_type(ws, "token_expiring")
    try:
        extra = await asyncio.wait_for(ws.recv(), exp - time.time() + WAIT)
        raise AssertionError(f"a message instead of the close: {extra}")
    except websockets.exceptions.ConnectionClosed as e:
        closed_at = time.time()
        rcvd = e.rcvd
        assert rcvd is not None and rcvd.code == 4001, f"close {rcvd}"
        assert rcvd.reason == "token expired", rcvd.reason
    assert exp - 1.0 <= closed_at <= exp + CLOSE_SLACK, f"closed {closed_at - exp:+.2f} s from exp"


async def algorithm_confusion(url: str, rsa_private: bytes, rsa_public: bytes) -> None:
    step("RS256 server takes an RS256 token")
    token = jwt.encode(claims("erin"), rsa_private, algorithm="RS256")
    ws, welcome = await connect(url, token)
    assert welcome.get("identity") == "erin", welcome
    await ws.close()

    step("RS256 server refuses HS256 signed with its public key")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims("erin")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = b64(hmac.new(rsa_public, signing_input, hashlib.sha256).digest())
    why = await refused(url, {"Authorization": f"Bearer {header}.{payload}.{sig}"})
    assert "HS256" in why, why


async def main(argv) -> None:
    url, secret_file, rsa_private_file = argv[1], argv[2], argv[3]
    secret = open(secret_file, "rb").read().strip()
    rsa_private = open(rsa_private_file, "rb").read()
    await refusals(url, secret, rsa_private)
    await identity_and_rooms(url, secret)
    await expiry(url, secret)
    if len(argv) > 5:
        await algorithm_confusion(argv[4], rsa_private, open(argv[5], "rb").read())


if __name__ == "__main__":
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        asyncio.run(main(sys.argv))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        traceback.print_exc()
        print(f"FAIL {STEP}: {e}")
        sys.exit(1)
    print("ok")
