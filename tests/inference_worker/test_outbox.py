"""The outbox on the suite's real Redis: many turns share a round trip, order and offsets hold,
cancel flags are seen, a failed flush fails only its turns, and the flusher stops when idle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from inference_worker.outbox import Outbox
from parley.turnstream import attached_key, cancel
from tests.fixtures.turns import tail


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def prefix() -> str:
    return f"ob{uuid.uuid4().hex[:8]}"


async def read_all(redis: aioredis.Redis, turn_id: str, p: str) -> list[tuple[str, str]]:
    async with asyncio.timeout(10):
        return [(e.kind, str(e.data.get("text", "")))
                async for e in tail(redis, turn_id, prefix=p, block=0.2)]


async def test_first_tokens_of_many_turns_share_one_round_trip(redis: aioredis.Redis) -> None:
    p = prefix()
    # No cancel poll within the test (its MGET is a flush of its own): on a loaded machine the
    # sleep below can outlast a short one.
    outbox = Outbox(redis, prefix=p, flush_interval=0.02, cancel_poll=60.0)
    ids = [f"turn-{i}" for i in range(50)]
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(outbox.open(t)) for t in ids]
        for out in outs:
            assert out.token("hello")
        await asyncio.sleep(0.05)
        assert outbox.flushes == 1  # 50 turns' first tokens, one pipeline
        for i, out in enumerate(outs):
            out.token(" there")
            out.token(f" {i}")
        await asyncio.gather(*(out.emit("final", {"text": "x"}) for out in outs))
    assert outbox.flushes <= 4  # tokens of all turns (one interval) + the finals (group commit)
    for i, turn_id in enumerate(ids):
        events = await read_all(redis, turn_id, p)
        assert events == [("token", "hello"), ("token", f" there {i}"), ("final", "x")]
        assert 0 < await redis.ttl(f"{p}:turn:{turn_id}") <= 3600


async def test_tokens_after_the_first_wait_at_most_one_interval(redis: aioredis.Redis) -> None:
    p = prefix()
    outbox = Outbox(redis, prefix=p, flush_interval=0.05, cancel_poll=5.0)
    with outbox.open("t") as out:
        out.token("a")
        await asyncio.sleep(0.01)
        out.token("b")  # not urgent: goes out within flush_interval, not at the cancel poll
        await asyncio.sleep(0.2)
        assert await read_all_now(redis, p, "t") == ["a", "b"]
        await out.emit("final", {})


async def read_all_now(redis: aioredis.Redis, p: str, turn_id: str) -> list[str]:
    entries: Any = await redis.xrange(f"{p}:turn:{turn_id}")
    return [json.loads(fields[b"d"])["text"] for _id, fields in entries]


async def test_emit_returns_the_offset_after_buffered_tokens(redis: aioredis.Redis) -> None:
    p = prefix()
    outbox = Outbox(redis, prefix=p)
    with outbox.open("t") as out:
        out.token("one")
        out.token(" two")
        offset = await out.emit("final", {"text": "one two"})
    entries: Any = await redis.xrange(f"{p}:turn:t")
    assert [e[1][b"k"] for e in entries] == [b"token", b"final"]
    assert entries[-1][0].decode() == offset
    with pytest.raises(RuntimeError, match="already ended"):
        await out.emit("final", {})


async def test_a_cancel_flag_is_seen_and_calls_back(redis: aioredis.Redis) -> None:
    p = prefix()
    outbox = Outbox(redis, prefix=p, cancel_poll=0.1)
    called = asyncio.Event()
    with outbox.open("t", on_cancel=called.set) as out, outbox.open("other") as other:
        assert out.token("a")
        await cancel(redis, "t", prefix=p)
        async with asyncio.timeout(1):
            await called.wait()
        assert out.cancelled and not out.token("b")
        assert not other.cancelled and other.token("still")
        await out.emit("cancelled", {})
        await other.emit("final", {})


async def test_a_failed_flush_fails_its_turns_and_the_flusher_stops(
    redis: aioredis.Redis,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    dead = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    outbox = Outbox(dead, prefix=prefix())
    try:
        with outbox.open("t") as out:
            out.token("a")
            with pytest.raises(aioredis.ConnectionError):
                await out.emit("final", {})
            with pytest.raises(aioredis.ConnectionError):
                out.token("b")
        async with asyncio.timeout(2):
            await outbox.close()
        assert outbox._task is not None and outbox._task.done()
    finally:
        await dead.aclose()


async def test_the_flusher_runs_only_while_turns_are_open(redis: aioredis.Redis) -> None:
    outbox = Outbox(redis, prefix=prefix(), cancel_poll=0.05)
    with outbox.open("t") as out:
        task = outbox._task
        assert task is not None and not task.done()
        await out.emit("final", {})
    await asyncio.sleep(0.2)
    assert task.done()
    with outbox.open("u") as out:  # a new turn starts a new flusher
        assert outbox._task is not None and outbox._task is not task
        assert not outbox._task.done()
        await out.emit("final", {})


async def test_a_turn_whose_gateway_hold_lapses_is_cancelled_as_orphaned(
    redis: aioredis.Redis,
) -> None:
    p = prefix()
    outbox = Outbox(redis, prefix=p, cancel_poll=0.05, orphan_after=0.3)
    orphaned = asyncio.Event()
    await redis.set(attached_key(p, "held"), b"gw-1", px=3000)
    with (
        outbox.open("held", on_cancel=orphaned.set) as held,
        outbox.open("never-held") as free,
    ):
        held.token("a")
        free.token("a")
        await asyncio.sleep(0.5)  # held throughout: not an orphan
        assert not held.cancelled
        await redis.delete(attached_key(p, "held"))  # the gateway died: its hold lapses
        lapsed = asyncio.get_running_loop().time()
        async with asyncio.timeout(2):
            await orphaned.wait()
        assert asyncio.get_running_loop().time() - lapsed >= 0.3
        assert held.cancel_reason == "orphaned" and not held.token("b")
        assert not free.cancelled  # no hold ever seen: another producer's turn, left alone
        await held.emit("cancelled", {})
        await free.emit("final", {})


async def test_a_first_token_leads_its_flush_for_a_blocked_reader(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """Redis answers a blocked XREAD right after the pipeline's first XADD for a stream it
    waits on: a turn's first token goes before other turns' tokens in the flush, so a reader of
    both streams (the gateway's) gets it in that answer, not in its next read."""
    p = prefix()
    outbox = Outbox(redis, prefix=p, flush_interval=0.5, cancel_poll=5.0)
    reader = aioredis.Redis.from_url(redis_url)
    try:
        with outbox.open("streaming") as streaming, outbox.open("new") as new:
            streaming.token("a")  # its first write: flushed at once
            await asyncio.sleep(0.1)
            streaming.token("b")  # buffered for the 0.5 s interval
            keys = {f"{p}:turn:streaming": "$", f"{p}:turn:new": "$"}
            read: asyncio.Task[Any] = asyncio.create_task(
                reader.xread(keys, block=5000))  # type: ignore[arg-type]
            await asyncio.sleep(0.1)  # the read is blocked
            new.token("first")  # urgent: flushed now, with "b" of the other turn
            reply: Any = await asyncio.wait_for(read, 5)
            assert [key.decode() for key, _entries in reply] == [f"{p}:turn:new"]
            await asyncio.gather(streaming.emit("final", {}), new.emit("final", {}))
    finally:
        await reader.aclose()
