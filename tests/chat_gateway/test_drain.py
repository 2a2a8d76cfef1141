"""A gateway told to stop (SIGTERM: uvicorn's shutdown) while answers stream, on both faces:
every client gets a typed end within the drain time, never a bare connection error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
import websockets

from chat_gateway.app import Gateway
from chat_gateway.server import running
from chat_gateway.services import GatewayOptions, Services
from parley import turnstream
from parley.broker.redis import RedisBroker
from parley.embedder.local import LocalEmbedder
from parley.vectors.chroma import ChromaStore
from parley_cli import localstack
from tests.chat_gateway.conftest import World, receive_until, ws_url

DRAIN = 3.0  # seconds: uvicorn's graceful-shutdown time (PARLEY_DRAIN_SECONDS)
ROOT = Path(__file__).resolve().parents[2]


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


async def _gateway_ready(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            assert process.poll() is None, "the gateway exited while starting"
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    pytest.fail("the gateway process never became ready")


@pytest.mark.slow
async def test_a_gateway_process_sent_sigterm_ends_both_faces_and_exits_0(
    world: World, tmp_path: Path
) -> None:
    """The same as above on a real ``python -m chat_gateway`` sent SIGTERM, with the official
    clients: websockets on the websocket face, openai (stream=True) on the OpenAI face."""
    world.worker.delay = 0.05
    world.worker.answer = " ".join(f"w{i}" for i in range(400))  # ~20 s: outlives the drain
    settings = world.settings
    port = localstack.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PYTHONPATH": str(ROOT), "PARLEY_REDIS_URL": settings.redis_url,
        "PARLEY_CHROMA_URL": settings.chroma_url, "PARLEY_REDIS_PREFIX": settings.redis_prefix,
        "PARLEY_LOCAL_TOKENS": settings.local_tokens.get_secret_value(),
        "PARLEY_GATEWAY_HOST": "127.0.0.1", "PARLEY_GATEWAY_PORT": str(port),
        "PARLEY_DRAIN_SECONDS": str(DRAIN), "PARLEY_BLOB_DIR": str(tmp_path / "blobs"),
        "PARLEY_EMBED_THREADS": "1", "PARLEY_LOG_JSON": "true", "ANONYMIZED_TELEMETRY": "False",
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "chat_gateway"], cwd=ROOT, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    openai_client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="tok-alpha",
                                       max_retries=0, timeout=30)
    try:
        await _gateway_ready(base, process, 120)
        ws = await websockets.connect(ws_url(base, "tok-alpha"))
        await ws.recv()
        await send(ws, {"type": "ask", "question": "revenue?"})
        turn_id = (await receive_until(ws, {"token"}, timeout=30))[0]["turn_id"]

        stream = await openai_client.chat.completions.create(
            model="parley", stream=True, messages=[{"role": "user", "content": "revenue?"}])
        chunks = aiter(stream)
        first = await asyncio.wait_for(anext(chunks), 30)
        answered = "".join(c.delta.content or "" for c in first.choices)

        async def read_rest() -> tuple[str, Exception | None]:
            """(text read until the stream ended, the typed error it ended with, if any)."""
            text = ""
            try:
                async for chunk in chunks:
                    text += "".join(c.delta.content or "" for c in chunk.choices)
            except openai.APIError as exc:
                return text, exc
            return text, None

        reading = asyncio.create_task(read_rest())
        await asyncio.sleep(0.5)  # a few tokens on both faces

        loop = asyncio.get_running_loop()
        began = loop.time()
        process.send_signal(signal.SIGTERM)
        rest: list[dict[str, Any]] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                rest.append(json.loads(await asyncio.wait_for(ws.recv(), DRAIN + 2)))
        ws_told = loop.time() - began
        text, error = await asyncio.wait_for(reading, DRAIN + 2)
        sse_told = loop.time() - began
        code = await asyncio.to_thread(process.wait, DRAIN + 10)
        stopped = loop.time() - began
    finally:
        await openai_client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert ws.close_code == 1001
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "going_away", rest[-3:]
    assert rest[-1]["turn_id"] == turn_id and "resume" in rest[-1]["hint"]
    assert ws_told < DRAIN, ws_told
    # The SDK raises the gateway's error chunk as an APIError carrying its code: a typed end.
    assert isinstance(error, openai.APIError), (text[-200:], error)
    assert isinstance(error.body, dict) and error.body.get("code") == "going_away", error.body
    assert "w1" in answered + text  # it streamed before the stop
    assert sse_told < DRAIN + 1.0, sse_told
    assert stopped < DRAIN + 5.0, stopped
    assert "Traceback" not in output and "CancelledError" not in output, output[-3000:]
