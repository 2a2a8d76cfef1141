"""A chat turn's trace, from the socket through the worker and back: the gateway served for real
(uvicorn + websockets) on real Redis, Chroma and embedder; the inference worker's own wiring
(``inference_worker.__main__.setup``: its consumer runtime and turn handler) running in this
process against the OpenAI-compatible backend, which streams from a real HTTP server speaking
the protocol (tests/peers/openai_chat.py); spans into an in-memory exporter.

What it proves: the gateway's ``chat turn`` span, the worker's ``<chat queue> process`` delivery
span and the gateway's ``chat relay`` of the answer share one trace id; the delivery span's
parent is the ``chat turn`` span (the one active when the turn was published: the context went
through the message's ``traceparent``); the relay is a child of the same turn span and counted
the tokens the client received."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr
from websockets.asyncio.client import connect

from chat_gateway.app import Gateway
from chat_gateway.server import running
from chat_gateway.services import Services
from inference_worker.__main__ import setup as worker_setup
from parley import tracing
from parley.broker.redis import RedisBroker
from parley.chroma import ChromaStore
from parley.embedder.local import LocalEmbedder
from parley.ids import DocumentId
from parley.settings import Settings
from parley.status import Stage, StatusStore
from tests.chat_gateway.conftest import ALPHA, DOCUMENTS, receive_until, ws_url
from tests.peers.openai_chat import OpenAIChatPeer

REPLY = [" Orchard", " reported", " 383", " billion", " dollars", " [1]."]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.fixture
def peer() -> Iterator[OpenAIChatPeer]:
    server = OpenAIChatPeer(reply=list(REPLY), tokens_per_second=200.0).start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Stack:
    settings: Settings
    url: str  # the gateway's


@pytest.fixture
async def stack(
    redis_url: str, chroma_url: str, indexed: ChromaStore, embedder: LocalEmbedder,
    peer: OpenAIChatPeer,
) -> AsyncIterator[Stack]:
    """Gateway and inference worker on one fresh Redis prefix; the worker stopped (drained)
    and the gateway closed on exit."""
    prefix = f"tr{uuid.uuid4().hex[:10]}"
    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, redis_prefix=prefix,
        local_tokens=SecretStr(f"tok-alpha:{ALPHA}"),
        chat_backend="openai-compatible", chat_base_url=peer.base_url, chat_model="peer-model",
        drain_seconds=5.0,
    )
    redis = aioredis.Redis.from_url(redis_url)
    status = StatusStore(redis, prefix=prefix)
    for doc_id, filename, _pages in DOCUMENTS[ALPHA]:
        await status.update(ALPHA, DocumentId(doc_id), filename=filename, version="v1",
                            stage=Stage.READY)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as exits:
        [consumer] = await worker_setup(exits, settings)
        worker = asyncio.create_task(consumer.run(stop))
        services = Services.assemble(
            settings, redis=redis, broker=RedisBroker(redis, prefix=prefix),
            embedder=embedder, store=indexed,
        )
        try:
            async with running(Gateway(settings, services=services)) as url:
                yield Stack(settings, url)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
            await services.close()
            await redis.aclose()


async def finished(
    exporter: InMemorySpanExporter, names: set[str], timeout: float = 5.0
) -> tuple[ReadableSpan, ...]:
    """The finished spans once one of each name is among them: the client has ``final`` a
    moment before the turn span ends (and the worker's delivery span ends after its ack)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = exporter.get_finished_spans()
        if names <= {s.name for s in spans} or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.02)


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


async def test_a_chat_turns_spans_share_one_trace_from_socket_to_worker_and_back(
    stack: Stack, exporter: InMemorySpanExporter, peer: OpenAIChatPeer
) -> None:
    async with connect(ws_url(stack.url, "tok-alpha"), compression=None) as ws:
        await receive_until(ws, {"ready"})
        await ws.send(json.dumps({"type": "ask", "question": "What was Orchard's revenue?"}))
        events: list[dict[str, Any]] = [
            e for e in await receive_until(ws, {"final", "error", "cancelled"}, timeout=30.0)
            if e["type"] != "document"
        ]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "turn" and kinds[1] == "sources" and kinds[-1] == "final", events
    tokens = [e for e in events if e["type"] == "token"]
    assert "".join(e["text"] for e in tokens) == "".join(REPLY) == events[-1]["text"]
    assert len(peer.requests) == 1  # the answer came from the model server, once
    turn_id = events[0]["turn_id"]

    queue = stack.settings.queues.chat.name
    spans = await finished(exporter, {"chat turn", f"{queue} process", "chat relay"})
    turn = only(spans, "chat turn")
    delivery = only(spans, f"{queue} process")
    relay = only(spans, "chat relay")
    assert turn.attributes is not None and turn.attributes["turn_id"] == turn_id
    assert turn.parent is None  # the turn starts the trace

    # One trace: socket -> chat queue -> worker -> relay back to the socket.
    trace_id = turn.context.trace_id
    assert {s.context.trace_id for s in (delivery, relay)} == {trace_id}, (
        "the worker's delivery span is not in the gateway's trace: did the chat message "
        "carry the turn's traceparent?"
    )
    # The worker's span is a child of the span active at publish (the gateway's turn span).
    assert delivery.kind == SpanKind.CONSUMER
    assert delivery.parent is not None and delivery.parent.span_id == turn.context.span_id
    assert delivery.parent.is_remote  # it came through the message header, not this process
    assert delivery.attributes is not None
    assert delivery.attributes["messaging.destination.name"] == queue

    # The relay back is inside the turn, ran while the worker answered, and saw every token.
    assert relay.parent is not None and relay.parent.span_id == turn.context.span_id
    assert relay.attributes is not None
    assert relay.attributes["turn_id"] == turn_id
    assert relay.attributes["terminal"] == "final"
    assert relay.attributes["tokens"] == sum(int(e["n"]) for e in tokens) == len(REPLY)
    assert relay.start_time is not None and delivery.start_time is not None
    assert relay.end_time is not None and delivery.end_time is not None
    assert relay.start_time < delivery.end_time and delivery.start_time < relay.end_time
