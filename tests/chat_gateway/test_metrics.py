"""The gateway's ``/metrics`` during a websocket session: sessions and streams go up while a
turn streams and back down after; the chat queue's depth is reported. Differences between two
scrapes (the registry is process-wide)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from websockets.asyncio.client import connect

from parley import metrics
from tests.chat_gateway.conftest import World, receive_until, ws_url
from tests.parley.test_metrics import Samples, parse, value


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(metrics.PROBE, "ttl", 0.0)
    yield


async def test_gateway_metrics_follow_sessions_and_streams(
    world: World, fresh_probes: None
) -> None:
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:

        async def scrape() -> Samples:
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            return parse(response.text)

        before = await scrape()
        world.worker.delay = 0.05  # a stream long enough to be seen while it runs
        async with connect(ws_url(base, "tok-alpha")) as ws:
            await receive_until(ws, {"ready"})
            await ws.send(json.dumps({"type": "ask", "question": "Orchard revenue?"}))
            await receive_until(ws, {"token"})
            streaming = await scrape()
            await receive_until(ws, {"final"})
            for _ in range(100):  # the relay leaves just after sending its final event
                answered = await scrape()
                if value(answered, "parley_chat_streams_active") == value(
                    before, "parley_chat_streams_active"
                ):
                    break
                await asyncio.sleep(0.05)
        for _ in range(100):
            closed = await scrape()
            if value(closed, "parley_ws_sessions_active") == value(before,
                                                                  "parley_ws_sessions_active"):
                break
            await asyncio.sleep(0.05)

    def delta(samples: Samples, name: str) -> float:
        return value(samples, name) - value(before, name)

    assert delta(streaming, "parley_ws_sessions_active") == 1
    assert delta(streaming, "parley_chat_streams_active") == 1
    assert delta(answered, "parley_chat_streams_active") == 0
    assert delta(answered, "parley_ws_sessions_active") == 1
    assert delta(closed, "parley_ws_sessions_active") == 0
    # The gateway publishes to the chat queue and reports its depth.
    chat = world.settings.queues.chat.name
    assert ("parley_queue_depth", (("queue", chat),)) in streaming


async def test_openai_face_streams_are_counted_too(world: World, fresh_probes: None) -> None:
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:

        async def streams() -> float:
            return value(parse((await http.get("/metrics")).text), "parley_chat_streams_active")

        before = await streams()
        world.worker.delay = 0.05
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="tok-alpha", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="parley", messages=[{"role": "user", "content": "Orchard revenue?"}],
                stream=True,
            )
            during = None
            async for chunk in stream:  # read to the end: the turn settles normally
                if during is None and chunk.choices and chunk.choices[0].delta.content:
                    during = await streams()
        finally:
            await client.close()
        for _ in range(100):
            after = await streams()
            if after == before:
                break
            await asyncio.sleep(0.05)
    assert during is not None and during - before == 1
    assert after == before
