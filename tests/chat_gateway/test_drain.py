"""A gateway told to stop (SIGTERM: uvicorn's shutdown) while answers stream, on both faces:
every client gets a typed end within the drain time, never a bare connection error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets

from chat_gateway.app import Gateway
from chat_gateway.server import running
from chat_gateway.services import GatewayOptions, Services
from parley import turnstream
from parley.broker.redis import RedisBroker
from parley.embedder.local import LocalEmbedder
from parley.vectors.chroma import ChromaStore
from tests.chat_gateway.conftest import World, receive_until, ws_url

DRAIN = 3.0  # seconds: uvicorn's graceful-shutdown time (PARLEY_DRAIN_SECONDS)


async def send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def test_drain_ends_open_answers_with_a_typed_event_on_both_faces(
    world: World, redis_url: str, embedder: LocalEmbedder, indexed: ChromaStore
) -> None:
    world.worker.delay = 0.05
    world.worker.answer = " ".join(f"w{i}" for i in range(400))  # ~20 s: outlives the drain
    client = aioredis.Redis.from_url(redis_url)
    services = Services.assemble(
        world.settings, redis=client,
        broker=RedisBroker(client, prefix=world.settings.redis_prefix),
        embedder=embedder, store=indexed, options=GatewayOptions(),
    )
    gateway = Gateway(world.settings, services=services)
    serving = contextlib.AsyncExitStack()
    base = await serving.enter_async_context(running(gateway, timeout_graceful_shutdown=DRAIN))
    http = httpx.AsyncClient(base_url=base, timeout=30)
    try:
        ws = await websockets.connect(ws_url(base, "tok-alpha"))
        await ws.recv()
        await send(ws, {"type": "ask", "question": "revenue?"})
        seen = await receive_until(ws, {"token"})
        turn_id = seen[0]["turn_id"]

        sse_lines: list[str] = []
        sse_started = asyncio.Event()

        async def read_sse() -> None:
            async with http.stream(
                "POST", "/v1/chat/completions", headers={"Authorization": "Bearer tok-alpha"},
                json={"model": "parley", "stream": True,
                      "messages": [{"role": "user", "content": "revenue?"}]},
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        sse_lines.append(line[6:])
                        if '"content":"w' in line:
                            sse_started.set()

        sse = asyncio.create_task(read_sse())
        await asyncio.wait_for(sse_started.wait(), 10)

        loop = asyncio.get_running_loop()
        began = loop.time()
        stopping = asyncio.create_task(serving.aclose())  # what SIGTERM does
        rest: list[dict[str, Any]] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                rest.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        ws_told = loop.time() - began
        assert ws.close_code == 1001
        assert rest[-1]["type"] == "error" and rest[-1]["code"] == "going_away"
        assert rest[-1]["turn_id"] == turn_id and "resume" in rest[-1]["hint"]

        await asyncio.wait_for(sse, DRAIN + 2)  # ended by the gateway, not by a broken pipe
        sse_told = loop.time() - began
        await asyncio.wait_for(stopping, DRAIN + 5)
        stopped = loop.time() - began
    finally:
        await http.aclose()
        await services.close()
        await client.aclose()
    assert ws_told < 1.0, ws_told
    assert sse_lines[-1] == "[DONE]"
    error = json.loads(sse_lines[-2])["error"]
    assert error["code"] == "going_away", error
    assert sse_told < DRAIN, sse_told
    assert stopped < DRAIN + 1.0, stopped
    prefix = world.settings.redis_prefix
    # The websocket's turn goes on for a resume elsewhere; the OpenAI face's (no resume) stops.
    assert not await turnstream.is_cancelled(world.redis, turn_id, prefix=prefix)
    sse_turn = json.loads(sse_lines[0])["parley"]["turn_id"]
    assert await turnstream.is_cancelled(world.redis, sse_turn, prefix=prefix)


async def test_a_websocket_on_a_wrong_path_is_closed_with_4404(world: World) -> None:
    async with world.make_gateway() as base:
        ws = await websockets.connect(base.replace("http://", "ws://") + "/nowhere")
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 4404
