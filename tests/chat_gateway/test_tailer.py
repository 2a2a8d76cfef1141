"""One reader for every turn stream of a process: many concurrent turns (more than redis-py's
default pool of 100 connections), and two readers of one turn at different offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat_gateway.tailer import TurnTailer
from parley.turnstream import TurnWriter


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def collect(tailer: TurnTailer, turn_id: str, after: str = "0-0") -> list[str]:
    texts = []
    async for event in tailer.tail(turn_id, after=after, idle_timeout=10):
        texts.append(event.data.get("text", event.kind))
    return texts


async def test_many_concurrent_turns(client: aioredis.Redis) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix)
    turns = [uuid.uuid4().hex for _ in range(150)]
    readers = [asyncio.create_task(collect(tailer, t)) for t in turns]
    await asyncio.sleep(0.1)

    writers = asyncio.Semaphore(20)  # the writers stand for workers in other processes

    async def write(turn_id: str) -> None:
        async with writers:
            writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
            for i in range(5):
                await writer.token(f"{turn_id[:4]}-{i};")
            await writer.emit("final", {"text": "end"})

    await asyncio.gather(*(write(t) for t in turns))
    results = await asyncio.wait_for(asyncio.gather(*readers), 30)
    for turn_id, texts in zip(turns, results, strict=True):
        assert texts == [f"{turn_id[:4]}-{i};" for i in range(5)] + ["end"]
    assert tailer.active == 0
    await tailer.close()


async def test_two_readers_of_one_turn_from_different_offsets(client: aioredis.Redis) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix)
    turn_id = uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    first = await writer.emit("token", {"text": "a"})
    await writer.emit("token", {"text": "b"})
    late = asyncio.create_task(collect(tailer, turn_id, after=first))
    early = asyncio.create_task(collect(tailer, turn_id))
    await asyncio.sleep(0.1)
    await writer.emit("final", {"text": "end"})
    assert await asyncio.wait_for(early, 10) == ["a", "b", "end"]
    assert await asyncio.wait_for(late, 10) == ["b", "end"]
    await tailer.close()
