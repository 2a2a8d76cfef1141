"""The gateway's limits against hostile or careless clients (issue 12, items 12 and 13), on a real
gateway (uvicorn + websockets), real Redis, Chroma and embedder, and the stand-in worker:
deeply nested JSON is a clear rejection everywhere (never a RecursionError), questions are
rate limited per tenant as well as per user, the OpenAI face caps the question before it is
embedded, the websocket checks ``Origin``, a session ends when its token expires unless it
re-authenticates, and ``?token=`` is accepted only on the websocket (a browser cannot send a
header there) and never logged."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_gateway.auth import Authenticator, LocalTokens
from chat_gateway.protocol import MAX_QUESTION_CHARS
from chat_gateway.services import GatewayOptions
from tests.chat_gateway.conftest import ALPHA, World, receive_until, ws_url
from tests.chat_gateway.test_auth import Jwks, jwks, token, verifier

__all__ = ["jwks"]  # the module-scoped JWKS server fixture, shared with test_auth

NESTED = "[" * 5_000  # json.loads raises RecursionError: deeper than the recursion limit
AUTH = {"Authorization": "Bearer tok-alpha"}


async def send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def closed_code(ws: Any) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


# --- 12: deeply nested JSON ----------------------------------------------------------------------


async def test_nested_json_before_auth_is_refused_cleanly(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base)) as ws:
        await ws.send(NESTED)
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["code"] == "unauthenticated" and "nested" in event["message"]
        assert await closed_code(ws) == 4401


async def test_nested_json_after_auth_is_a_bad_request_and_the_session_carries_on(
    world: World,
) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(NESTED)
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["code"] == "bad_request" and "nested" in event["message"]
        await send(ws, {"type": "ping"})
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_nested_json_on_the_openai_face_is_400(world: World) -> None:
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/v1/chat/completions", content=NESTED, headers=AUTH)
        nested_message = '{"model": "x", "messages": [{"role": "user", "content": ' \
            + NESTED + "}]}"
        inner = await http.post("/v1/chat/completions", content=nested_message, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "nested" in response.json()["error"]["message"]
    assert inner.status_code == 400, inner.text


# --- 13: limits ----------------------------------------------------------------------------------


async def test_rate_limit_counts_the_tenant_as_well_as_each_user(
    world: World, jwks: Jwks
) -> None:
    auth = Authenticator(LocalTokens(""), verifier(jwks))
    one = token(jwks.keys["k1"], tid=ALPHA, oid="user-one")
    two = token(jwks.keys["k1"], tid=ALPHA, oid="user-two")
    options = GatewayOptions(asks_per_minute=2, tenant_asks_per_minute=3)
    events: list[dict[str, Any]] = []
    async with world.make_gateway(options, auth=auth) as base:
        for user, asks in ((one, 2), (two, 2)):
            async with connect(ws_url(base, user)) as ws:
                assert json.loads(await ws.recv())["tenant"] == ALPHA
                for n in range(asks):
                    await send(ws, {"type": "ask", "question": f"revenue {n}?"})
                    events.append((await receive_until(ws, {"final", "error"}))[-1])
    assert [e["type"] for e in events] == ["final", "final", "final", "error"]
    assert events[-1]["code"] == "rate_limited" and "tenant" in events[-1]["message"]
    assert 0 < events[-1]["retry_after"] <= 60


async def test_openai_face_caps_the_question_before_embedding_it(world: World) -> None:
    question = "revenue? " * (MAX_QUESTION_CHARS // 9 + 10)
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/v1/chat/completions", headers=AUTH,
            json={"model": "x", "messages": [{"role": "user", "content": question}]},
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"
    assert f"{MAX_QUESTION_CHARS:,}" in response.json()["error"]["message"]
    assert world.worker.turns == []  # nothing was retrieved or queued


async def test_websocket_refuses_foreign_origins(world: World) -> None:
    allowed = "https://portal.example.test"
    async with world.make_gateway(allowed_origins=allowed) as base:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base, "tok-alpha"), origin="https://evil.example.test"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        own = base  # the portal's own page: same origin
        for origin in (own, allowed):
            async with connect(ws_url(base, "tok-alpha"), origin=origin) as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["type"] == "ready"
        async with connect(ws_url(base, "tok-alpha")) as ws:  # no Origin: not a browser
            assert json.loads(await ws.recv())["type"] == "ready"


async def test_session_ends_when_its_token_expires(world: World, jwks: Jwks) -> None:
    auth = Authenticator(LocalTokens(""), verifier(jwks, leeway=1))
    short = token(jwks.keys["k1"], tid=ALPHA, exp=int(time.time()) + 2)
    async with world.make_gateway(auth=auth) as base, connect(ws_url(base)) as ws:
        await send(ws, {"type": "auth", "token": short})
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and 0 < ready["expires_in"] <= 3  # exp + leeway
        started = time.monotonic()
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert event["code"] == "token_expired"
        assert await closed_code(ws) == 4401
        assert time.monotonic() - started < 5


async def test_session_re_authenticates_before_its_token_expires(
    world: World, jwks: Jwks
) -> None:
    auth = Authenticator(LocalTokens(""), verifier(jwks, leeway=0))
    short = token(jwks.keys["k1"], tid=ALPHA, exp=int(time.time()) + 2)
    fresh = token(jwks.keys["k1"], tid=ALPHA, exp=int(time.time()) + 600)
    other_tenant = token(jwks.keys["k1"], tid="someone-else", exp=int(time.time()) + 600)
    async with world.make_gateway(auth=auth) as base, connect(ws_url(base)) as ws:
        await send(ws, {"type": "auth", "token": short})
        assert json.loads(await ws.recv())["type"] == "ready"
        await send(ws, {"type": "auth", "token": other_tenant})
        refused = json.loads(await ws.recv())
        assert refused["code"] == "bad_request" and "tenant" in refused["message"]
        await send(ws, {"type": "auth", "token": fresh})
        renewed = json.loads(await ws.recv())
        assert renewed == {"type": "ready", "tenant": ALPHA, "reauthenticated": True,
                           "expires_in": renewed["expires_in"]}
        assert 590 <= renewed["expires_in"] <= 600  # the fresh token's: the session's end moved
        await asyncio.sleep(3)  # past the first token's expiry
        await send(ws, {"type": "ping"})
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_query_token_only_on_the_websocket_and_never_logged(world: World) -> None:
    secret = "tok-alpha"
    wrong = "not-a-token-s3cr3t"
    with structlog.testing.capture_logs() as logs:
        async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
            listed = await http.get("/api/documents", params={"token": secret})
            assert listed.status_code == 401
            assert (await http.get("/api/documents", headers=AUTH)).status_code == 200
            async with connect(ws_url(base, secret)) as ws:  # a browser's only header-less way
                assert json.loads(await ws.recv())["type"] == "ready"
            with pytest.raises(InvalidStatus):
                async with connect(ws_url(base, wrong)):
                    pass
            await http.get("/nope", params={"token": wrong})
    text = json.dumps(logs, default=str)
    assert wrong not in text and secret not in text


def test_origin_allowed() -> None:
    from chat_gateway.session import origin_allowed

    allowed = "https://portal.example.test, http://localhost:5173/"
    assert origin_allowed("https://parley.example.test", "parley.example.test", "")
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", "")  # scheme not compared
    assert origin_allowed("https://Portal.Example.Test", "parley.example.test", allowed)
    assert origin_allowed("http://localhost:5173", None, allowed)
    assert not origin_allowed("https://evil.example.test", "parley.example.test", allowed)
    assert not origin_allowed("https://parley.example.test.evil.test", "parley.example.test", "")
    assert not origin_allowed("null", "parley.example.test", allowed)
    assert not origin_allowed("http://localhost:5174", None, allowed)
