"""The Redis adapter's liveness: a consumer that dies holding a message (its heartbeat lapses)
loses it to a live consumer within seconds, whatever the lease; a live consumer with a slow
handler, and a consumer that keeps no heartbeat (an older version), keep theirs until the lease.
A successor started under a dead consumer's name takes what it held on its first receives; two
live consumers given one name end with two names. The dying consumer is a real process,
SIGKILLed while it holds its messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley.broker import Message
from parley.broker.redis import CHORES, GROUP, RedisBroker
from parley.keys import Keys

ROOT = Path(__file__).resolve().parents[3]
LEASE = 60.0  # the default: nothing here may come back by the lease
QUEUE = "work"

# A consumer in its own process: receives messages (one, or argv[4]), says so, then holds them
# (a handler that never ends) until it is killed.
HOLDER = """
import asyncio, sys
import redis.asyncio as aioredis
from parley.broker.redis import RedisBroker

async def main() -> None:
    client = aioredis.Redis.from_url(sys.argv[1])
    broker = RedisBroker(client, prefix=sys.argv[2], default_lease=60.0, consumer=sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    got = []
    while len(got) < count:
        got += await broker.receive("work", max_messages=count - len(got), wait=1.0)
    print("holding", *sorted(m.id for m in got), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def prefix() -> str:
    return f"l{uuid.uuid4().hex[:6]}"


async def _receive_for(broker: RedisBroker, seconds: float) -> list[Message]:
    """Everything ``broker`` receives in ``seconds``, polling as a consumer loop does."""
    got: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += await broker.receive(QUEUE, max_messages=1, wait=0.5)
    return got


async def _pending_owner(client: aioredis.Redis, key: str) -> str:
    pending: Any = await client.xpending_range(key, GROUP, min="-", max="+", count=10)
    assert len(pending) == 1
    return str(pending[0]["consumer"].decode())


@pytest.mark.slow
async def test_a_killed_consumers_message_is_taken_within_seconds(
    client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    publisher = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    posted = await publisher.publish(QUEUE, b"doc-1")
    dead_name = f"holder-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, prefix, dead_name],
        stdout=subprocess.PIPE, env=env,
    )
    live = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60)
        assert line.decode().split() == ["holding", posted]
        # The live consumer runs first beside the holder: the holder's heartbeat protects it.
        assert await _receive_for(live, 4.0) == []
        assert await _pending_owner(client, publisher.stream_key(QUEUE)) == dead_name

        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        got: list[Message] = []
        while not got and time.monotonic() - killed < 20:
            got = await live.receive(QUEUE, max_messages=1, wait=0.5)
        taken_after = time.monotonic() - killed
        assert [m.id for m in got] == [posted]
        assert got[0].attempt == 2
        # Heartbeat expiry (3 s) + grace (2 s) + one look (1 s), with room for a loaded machine;
        # far below the 60 s lease.
        assert taken_after < 10, taken_after
        await live.ack(got[0])

        # Holding nothing, the dead consumer is forgotten by the group and the set.
        for _ in range(10):
            await live.receive(QUEUE, max_messages=1, wait=0.5)
            infos = await client.xinfo_consumers(publisher.stream_key(QUEUE), GROUP)
            if dead_name not in {i["name"].decode() for i in infos}:
                break
        else:
            pytest.fail("the dead consumer stayed in the group")
        assert not await client.sismember(Keys(prefix).consumers(QUEUE), dead_name)
    finally:
        holder.kill()
        holder.wait(10)
        await live.close()


@pytest.mark.slow
async def test_a_live_slow_consumer_keeps_its_message(
    client: aioredis.Redis, prefix: str
) -> None:
    slow = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    other = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    try:
        posted = await slow.publish(QUEUE, b"doc-1")
        held = await slow.receive(QUEUE, max_messages=1, wait=1.0)
        assert [m.id for m in held] == [posted]
        # Longer than heartbeat expiry + grace + a look: only a lapsed heartbeat would lose it.
        assert await _receive_for(other, 8.0) == []
        assert await _pending_owner(client, slow.stream_key(QUEUE)) == slow.consumer
        await slow.ack(held[0])
    finally:
        await slow.close()
        await other.close()


@pytest.mark.slow
async def test_a_consumer_without_a_heartbeat_keeps_its_message_until_the_lease(
    client: aioredis.Redis, prefix: str
) -> None:
    live = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    try:
        key = live.stream_key(QUEUE)
        await client.xgroup_create(key, GROUP, id="0", mkstream=True)
        posted = await live.publish(QUEUE, b"doc-1")
        # An older consumer: it reads from the group but never beats nor names itself.
        await client.xreadgroup(GROUP, "older", {key: ">"}, count=1)
        assert await _receive_for(live, 6.0) == []
        assert await _pending_owner(client, key) == "older"
        assert posted
    finally:
        await live.close()


async def test_closing_deletes_the_heartbeat(client: aioredis.Redis, prefix: str) -> None:
    broker = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    alive = Keys(prefix).worker_alive(broker.consumer)
    await broker.receive(QUEUE, max_messages=1, wait=0.1)
    assert await client.exists(alive)
    assert await client.sismember(Keys(prefix).consumers(QUEUE), broker.consumer)
    await broker.close()
    assert not await client.exists(alive)


async def test_close_ends_a_keeper_that_swallowed_a_cancel(
    client: aioredis.Redis, prefix: str
) -> None:
    """redis-py on Python 3.11 can swallow a cancel that lands mid-command; close() must still
    end the keeper (one cancel and one await hung a teardown for good)."""
    broker = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    swallowed: list[bool] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)

    keeper = broker._keeper = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    closing = asyncio.create_task(broker.close())
    # Not wait_for: its cancel would reach the keeper through close() and hide a hang.
    done, _ = await asyncio.wait({closing}, timeout=3)
    keeper.cancel()  # a second cancel ends it, should close() have left it running
    await asyncio.wait({closing, keeper}, timeout=3)
    assert closing in done, "close() hung on a keeper that swallowed one cancel"
    assert swallowed == [True] and keeper.cancelled() and broker._keeper is None


def _hold(redis_url: str, prefix: str, name: str, count: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, prefix, name, str(count)],
        stdout=subprocess.PIPE, env=env,
    )


@pytest.mark.slow
async def test_a_successor_with_the_dead_consumers_name_takes_its_messages_at_once(
    client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    publisher = RedisBroker(client, prefix=prefix, default_lease=LEASE)
    posted = [await publisher.publish(QUEUE, f"doc-{i}".encode()) for i in range(3)]
    name = f"slot-{uuid.uuid4().hex[:6]}"
    holder = _hold(redis_url, prefix, name, 2)
    successor = RedisBroker(client, prefix=prefix, default_lease=LEASE, consumer=name)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60)
        assert line.decode().split() == ["holding", *posted[:2]]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # Its heartbeat is still alive: nobody else may take these yet. The successor's first
        # receives do, one at a time as asked, each once, before anything new.
        first = await successor.receive(QUEUE, max_messages=1, wait=0.1)
        second = await successor.receive(QUEUE, max_messages=1, wait=0.1)
        third = await successor.receive(QUEUE, max_messages=1, wait=0.1)
        assert sorted(m.id for m in first + second) == posted[:2]
        assert [m.attempt for m in first + second] == [2, 2]
        assert [(m.id, m.attempt) for m in third] == [(posted[2], 1)]
        for message in first + second + third:
            await successor.ack(message)
        assert await client.xlen(publisher.stream_key(QUEUE)) == 0
    finally:
        holder.kill()
        holder.wait(10)
        await successor.close()


@pytest.mark.slow
async def test_two_live_consumers_given_one_name_end_with_two(
    client: aioredis.Redis, prefix: str
) -> None:
    name = f"slot-{uuid.uuid4().hex[:6]}"
    first = RedisBroker(client, prefix=prefix, default_lease=LEASE, consumer=name)
    second = RedisBroker(client, prefix=prefix, default_lease=LEASE, consumer=name)
    try:
        posted = await first.publish(QUEUE, b"doc-1")
        held = await first.receive(QUEUE, max_messages=1, wait=1.0)
        assert [m.id for m in held] == [posted]
        await second.receive(QUEUE, max_messages=1, wait=0.1)
        deadline = time.monotonic() + 20
        while first.consumer == second.consumer and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert first.consumer != second.consumer
        # The renamed one takes what it holds along to its new name (or the other holds it,
        # having taken it as its predecessor's): a live consumer holds it, never the old name
        # alone.
        for _ in range(20):
            owner = await _pending_owner(client, first.stream_key(QUEUE))
            if owner in (first.consumer, second.consumer):
                break
            await asyncio.sleep(0.2)
        assert owner in (first.consumer, second.consumer)
    finally:
        await first.close()
        await second.close()


async def test_a_busy_queues_reads_skip_the_looks_for_retries_and_lapsed_leases(
    client: aioredis.Redis, prefix: str
) -> None:
    """Receives in quick succession (a busy worker's) read at once: the Lua promotion of due
    retries and the XAUTOCLAIM of lapsed leases run once per ``CHORES`` seconds, not before
    every read; a retry due meanwhile is still delivered by a receive after that."""
    broker = RedisBroker(client, prefix=prefix)
    calls = {"promote": 0, "reclaim": 0}
    promote, reclaim = broker._promote, broker._reclaim

    async def counted_promote(*args: Any, **kwargs: Any) -> Any:
        calls["promote"] += 1
        return await promote(*args, **kwargs)

    async def counted_reclaim(queue: str, count: int) -> list[Message]:
        calls["reclaim"] += 1
        return await reclaim(queue, count)

    broker._promote = counted_promote  # type: ignore[assignment]
    broker._reclaim = counted_reclaim  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        for i in range(20):
            await broker.publish(QUEUE, f"turn {i}".encode())
            [message] = await broker.receive(QUEUE, max_messages=1, wait=1.0)
            await broker.ack(message)
        looks = 1 + int((time.monotonic() - started) / CHORES)
        assert calls["promote"] <= min(looks, 10) and calls["reclaim"] <= min(looks, 10)
        await broker.publish(QUEUE, b"again")
        [message] = await broker.receive(QUEUE, max_messages=1, wait=1.0)
        await broker.retry(message, delay=0.0)
        started = time.monotonic()
        again: list[Message] = []
        while not again and time.monotonic() - started < 3.0:
            again = await broker.receive(QUEUE, max_messages=1, wait=0.05)
        assert [m.body for m in again] == [b"again"] and again[0].attempt == 2
        assert time.monotonic() - started < 0.5  # within a look or two
        await broker.ack(again[0])
    finally:
        await broker.close()
