"""A chat worker harness on the real Redis of the suite: a RedisBroker, a Consumer on a fresh
chat queue running the TurnHandler in the test's loop, and a "gateway" that writes a turn's
``sources`` event and queues the turn, as chat_gateway does."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from inference_worker.chatmodel import ChatModel
from inference_worker.handler import HandlerOptions, TurnHandler
from parley.broker.redis import RedisBroker
from parley.contracts import TURN_HEADER, ChatMessage, ChatTurn, Source, dump
from parley.ids import ChunkId, ConversationId, DocumentId, TenantId, TurnId, new_turn_id
from parley.runtime.consumer import Consumer
from parley.settings import QueueSettings
from parley.turnstream import TurnEvent, TurnWriter
from tests.fixtures.turns import tail


def sources(count: int = 2) -> list[Source]:
    return [
        Source(n=n, chunk_id=ChunkId(f"chunk-{n}"), document_id=DocumentId(f"doc-{n}"),
               document=f"report-{n}.pdf", page=n + 1, snippet=f"snippet {n}",
               text=f"Revenue grew 12% on cloud sales, says chunk {n}.", score=0.9 - n / 10)
        for n in range(1, count + 1)
    ]


def turn(**overrides: Any) -> ChatTurn:
    fields: dict[str, Any] = {
        "turn_id": new_turn_id(), "tenant": TenantId("acme"),
        "conversation_id": ConversationId("conv-1"),
        "messages": [ChatMessage(role="system", content="Answer from the sources; cite [n]."),
                     ChatMessage(role="user", content="How did revenue change?")],
        "max_tokens": 64, "sources": sources(), "enqueued_at": time.time(),
        "deadline": time.time() + 60,
    }
    fields.update(overrides)
    return ChatTurn.model_validate(fields)


@dataclass
class Harness:
    redis: aioredis.Redis
    broker: RedisBroker
    queue: QueueSettings
    handler: TurnHandler
    consumer: Consumer
    prefix: str

    async def ask(
        self, chat: ChatTurn, *, write_sources: bool = True, redelivered: bool = False
    ) -> str:
        """Do what the gateway does: ``sources`` event first, then queue the turn.
        ``redelivered``: queued as the broker queues a delivery's second attempt (its field
        ``a``, the deliveries before it), as after a worker died holding it."""
        if write_sources:
            writer = TurnWriter(self.redis, chat.turn_id, prefix=self.prefix)
            await writer.emit("sources", {"sources": [s.model_dump(mode="json")
                                                      for s in chat.sources]})
        if redelivered:
            entry = await self.redis.xadd(self.broker.stream_key(self.queue.name), {
                "body": dump(chat), "a": "1", f"h:{TURN_HEADER}": chat.turn_id})
            return str(entry)
        return await self.publish(dump(chat), chat.turn_id)

    async def publish(self, body: bytes, turn_id: str | None = None) -> str:
        headers = {TURN_HEADER: turn_id} if turn_id else {}
        return await self.broker.publish(self.queue.name, body, headers)

    async def events(self, turn_id: TurnId, *, timeout: float = 20.0) -> list[TurnEvent]:
        """Every event of the turn up to and including its terminal event."""
        async def read() -> list[TurnEvent]:
            return [e async for e in tail(self.redis, turn_id, prefix=self.prefix, block=0.2)]

        return await asyncio.wait_for(read(), timeout)

    async def first_token(self, turn_id: TurnId, *, timeout: float = 20.0) -> TurnEvent:
        async def read() -> TurnEvent:
            async for event in tail(self.redis, turn_id, prefix=self.prefix, block=0.2):
                if event.kind == "token":
                    return event
            raise AssertionError("the turn ended without a token")

        return await asyncio.wait_for(read(), timeout)

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the queue holds nothing (acked, retried-and-done or dead-lettered)."""
        deadline = time.monotonic() + timeout
        while await self.broker.depth(self.queue.name) or self.consumer.stats.in_flight:
            assert time.monotonic() < deadline, "the turn was never settled"
            await asyncio.sleep(0.02)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def worker(
    redis: aioredis.Redis,
    model: ChatModel,
    *,
    max_attempts: int = 3,
    lease_seconds: float = 30.0,
    drain_seconds: float = 5.0,
    stop: asyncio.Event | None = None,
    orphan_after: float = 15.0,
) -> AsyncIterator[Harness]:
    """A running worker; stopped (drained) on exit."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    queue = QueueSettings(name="parley-chat", concurrency=8, max_attempts=max_attempts,
                          lease_seconds=lease_seconds)
    broker = RedisBroker(redis, prefix=prefix, lease_seconds={queue.name: lease_seconds})
    handler = TurnHandler(model, redis, HandlerOptions(prefix=prefix, max_attempts=max_attempts,
                                                       orphan_after=orphan_after))
    consumer = Consumer(broker, queue, handler, drain_seconds=drain_seconds, receive_wait=0.1,
                        backoff_base=0.05, backoff_cap=0.2)
    stop = stop or asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        yield Harness(redis, broker, queue, handler, consumer, prefix)
    finally:
        stop.set()
        await asyncio.wait_for(running, drain_seconds + 10)
        await handler.close()
        await broker.close()


def text_of(events: Sequence[TurnEvent]) -> str:
    return "".join(str(e.data["text"]) for e in events if e.kind == "token")
