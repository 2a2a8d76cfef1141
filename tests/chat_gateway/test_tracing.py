"""A chat turn's trace, from the socket (or the OpenAI-compatible face) through the worker and
back: the gateway served for real (uvicorn + websockets) on real Redis, Chroma and embedder; the
inference worker's own wiring (``inference_worker.__main__.setup``: its consumer runtime and turn
handler) running in this process against the OpenAI-compatible backend, which streams from a
real HTTP server speaking the protocol (tests/peers/openai_chat.py); spans into an in-memory
exporter. The face is driven by the official ``openai`` SDK.

What it proves: the gateway's ``chat turn`` span (SERVER), the worker's ``<chat queue> process``
delivery span and the gateway's ``chat relay`` of the answer share one trace id; the delivery
span's parent is the ``chat turn`` span (the one active when the turn was published: the context
went through the message's ``traceparent``); the relay is a child of the same turn span and
counted the tokens the client received. The same holds for the face's turns, streaming and not,
and a face request carrying a ``traceparent`` continues the caller's trace. A ``resume`` on
another replica relays in the original turn's trace: a child of its ``chat turn`` span, whose
context came through the turn's metadata in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from pydantic import SecretStr
from websockets.asyncio.client import connect

from chat_gateway.app import Gateway
from chat_gateway.server import running
from chat_gateway.services import Services
from inference_worker.__main__ import setup as worker_setup
from parley import tracing
from parley.broker.redis import RedisBroker
from parley.embedder.local import LocalEmbedder
from parley.ids import DocumentId
from parley.settings import Settings
from parley.status import Stage, StatusStore
from parley.vectors.chroma import ChromaStore
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
    # Another gateway replica on the same Redis, Chroma and queues (its own connections).
    replica: Callable[[], contextlib.AbstractAsyncContextManager[str]]


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
        drain_seconds=5.0, answer_mode="generative",  # the model's way, traced through its server
    )
    redis = aioredis.Redis.from_url(redis_url)
    status = StatusStore(redis, prefix=prefix)
    for doc_id, filename, _pages in DOCUMENTS[ALPHA]:
        await status.update(ALPHA, DocumentId(doc_id), filename=filename, version="v1",
                            stage=Stage.READY)
    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def replica() -> AsyncIterator[str]:
        client = aioredis.Redis.from_url(redis_url)
        services = Services.assemble(
            settings, redis=client, broker=RedisBroker(client, prefix=prefix),
            embedder=embedder, store=indexed,
        )
        try:
            async with running(Gateway(settings, services=services)) as url:
                yield url
        finally:
            await services.close()
            await client.aclose()

    async with contextlib.AsyncExitStack() as exits:
        [consumer] = await worker_setup(exits, settings)
        worker = asyncio.create_task(consumer.run(stop))
        try:
            async with replica() as url:
                yield Stack(settings, url, replica)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
            await redis.aclose()


async def finished(
    exporter: InMemorySpanExporter, names: set[str], timeout: float = 5.0, *, relays: int = 1
) -> tuple[ReadableSpan, ...]:
    """The finished spans once one of each name (and ``relays`` ``chat relay`` spans) is among
    them: the client has ``final`` a moment before the turn span ends (and the worker's delivery
    span ends after its ack)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = exporter.get_finished_spans()
        done = names <= {s.name for s in spans} and \
            sum(s.name == "chat relay" for s in spans) >= relays
        if done or time.monotonic() > deadline:
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
    assert turn.kind == SpanKind.SERVER
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


def sdk(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="tok-alpha", max_retries=0)


async def ask_face(
    url: str, *, stream: bool, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    """One question through the OpenAI-compatible face with the SDK: (answer text, turn id)."""
    messages: Any = [{"role": "user", "content": "What was Orchard's revenue?"}]
    async with sdk(url) as client:
        if not stream:
            completion = await client.chat.completions.create(
                model="parley", messages=messages, extra_headers=headers)
            extension: dict[str, Any] = (completion.model_extra or {})["parley"]
            return completion.choices[0].message.content or "", str(extension["turn_id"])
        chunks = [chunk async for chunk in await client.chat.completions.create(
            model="parley", messages=messages, stream=True, extra_headers=headers)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    return text, str((chunks[0].model_extra or {})["parley"]["turn_id"])


def face_trace(
    spans: tuple[ReadableSpan, ...], queue: str, turn_id: str, *, stream: bool
) -> ReadableSpan:
    """Check the face's turn is one trace (turn -> worker, turn -> relay); its turn span."""
    turn = only(spans, "chat turn")
    delivery = only(spans, f"{queue} process")
    relay = only(spans, "chat relay")
    assert turn.kind == SpanKind.SERVER
    assert turn.attributes is not None
    assert turn.attributes["turn_id"] == turn_id and turn.attributes["stream"] is stream
    assert {s.context.trace_id for s in (delivery, relay)} == {turn.context.trace_id}, (
        "the face's turn and the worker are in different traces: was the turn published "
        "inside the face's 'chat turn' span?"
    )
    assert delivery.parent is not None and delivery.parent.span_id == turn.context.span_id
    assert delivery.parent.is_remote
    assert relay.parent is not None and relay.parent.span_id == turn.context.span_id
    assert relay.attributes is not None
    assert relay.attributes["turn_id"] == turn_id
    assert relay.attributes["terminal"] == "final"
    assert relay.attributes["tokens"] == len(REPLY)
    assert relay.start_time is not None and delivery.end_time is not None
    assert relay.end_time is not None and delivery.start_time is not None
    assert relay.start_time < delivery.end_time and delivery.start_time < relay.end_time
    return turn


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
async def test_the_openai_faces_turn_shares_one_trace_with_the_worker(
    stack: Stack, exporter: InMemorySpanExporter, peer: OpenAIChatPeer, stream: bool
) -> None:
    text, turn_id = await ask_face(stack.url, stream=stream)
    assert text == "".join(REPLY)
    assert len(peer.requests) == 1
    queue = stack.settings.queues.chat.name
    spans = await finished(exporter, {"chat turn", f"{queue} process", "chat relay"})
    turn = face_trace(spans, queue, turn_id, stream=stream)
    assert turn.parent is None  # no traceparent from the caller: the turn starts the trace


async def test_the_openai_face_continues_a_callers_trace(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    caller_trace, caller_span = uuid.uuid4().int, uuid.uuid4().int >> 64
    traceparent = f"00-{format_trace_id(caller_trace)}-{format_span_id(caller_span)}-01"
    text, turn_id = await ask_face(stack.url, stream=False, headers={"traceparent": traceparent})
    assert text == "".join(REPLY)
    queue = stack.settings.queues.chat.name
    spans = await finished(exporter, {"chat turn", f"{queue} process", "chat relay"})
    turn = face_trace(spans, queue, turn_id, stream=False)
    assert turn.context.trace_id == caller_trace
    assert turn.parent is not None and turn.parent.span_id == caller_span
    assert turn.parent.is_remote


async def test_a_resumed_relay_on_another_replica_lands_in_the_turns_trace(
    stack: Stack, exporter: InMemorySpanExporter, peer: OpenAIChatPeer
) -> None:
    peer.reply = [f" w{i}" for i in range(40)]
    peer.tokens_per_second = 20.0  # ~2 s: time to drop the connection and resume
    async with stack.replica() as other:
        ws = await connect(ws_url(stack.url, "tok-alpha"), compression=None)
        await receive_until(ws, {"ready"})
        await ws.send(json.dumps({"type": "ask", "question": "What was Orchard's revenue?"}))
        seen = await receive_until(ws, {"token"}, timeout=30.0)
        turn_id = next(e["turn_id"] for e in seen if e["type"] == "turn")
        ws.transport.abort()  # a network loss: no closing handshake, the turn keeps going
        await asyncio.sleep(0.3)
        async with connect(ws_url(other, "tok-alpha"), compression=None) as again:
            await receive_until(again, {"ready"})
            await again.send(json.dumps(
                {"type": "resume", "turn_id": turn_id, "offset": seen[-1]["offset"]}))
            rest = [e for e in await receive_until(again, {"final", "error", "cancelled"},
                                                   timeout=30.0) if e["type"] != "document"]
    assert rest[0]["type"] == "turn" and rest[0]["resumed"] is True
    assert rest[-1]["type"] == "final", rest[-1]
    received = [e for e in seen + rest if e["type"] == "token"]
    assert "".join(e["text"] for e in received) == "".join(peer.reply)

    queue = stack.settings.queues.chat.name
    spans = await finished(exporter, {"chat turn", f"{queue} process"}, relays=2)
    turn = only(spans, "chat turn")
    delivery = only(spans, f"{queue} process")
    relays = [s for s in spans if s.name == "chat relay"]
    assert len(relays) == 2, [s.attributes for s in relays]
    [resumed] = [s for s in relays if (s.attributes or {}).get("after") == seen[-1]["offset"]]
    assert turn.attributes is not None and turn.attributes["turn_id"] == turn_id
    assert delivery.context.trace_id == turn.context.trace_id
    assert resumed.context.trace_id == turn.context.trace_id, (
        "the resumed relay started a trace of its own: is the turn's traceparent stored with "
        "its metadata and used by the resume?"
    )
    # A child of the original turn span, whose context came from Redis (remote), not from a
    # span active in the resuming connection.
    assert resumed.parent is not None and resumed.parent.span_id == turn.context.span_id
    assert resumed.parent.is_remote
    assert resumed.attributes is not None
    assert resumed.attributes["turn_id"] == turn_id
    assert resumed.attributes["terminal"] == "final"
    assert resumed.attributes["tokens"] == sum(int(e["n"]) for e in rest if e["type"] == "token")
    # The first relay, cut by the drop, stays the turn's in-process child and names no end.
    [first] = [s for s in relays if s is not resumed]
    assert first.parent is not None and first.parent.span_id == turn.context.span_id
    assert not first.parent.is_remote
    assert first.attributes is not None and "terminal" not in first.attributes
