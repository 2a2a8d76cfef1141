"""One reader for every turn stream of a process: many concurrent turns (more than redis-py's
default pool of 100 connections), and two readers of one turn at different offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat_gateway.tailer import TurnTailer
from parley.broker.redis import RedisBroker
from parley.runtime import tasks
from parley.turnevents import TurnEvent
from parley.turnstream import LostWorkers, TurnWriter, alive_key, owner_key


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


async def test_the_read_connection_killed_mid_read_is_replaced(client: aioredis.Redis) -> None:
    # The read loop has a connection of its own, blocked in XREAD: Redis dropping it (a
    # failover, a CLIENT KILL, a timeout) costs a retry, not the relay.
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix)
    turn_id = uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    await writer.emit("token", {"text": "a"})
    reader = asyncio.create_task(collect(tailer, turn_id))
    await asyncio.sleep(0.3)  # read "a", then blocked on the next read
    blocked = [c for c in await client.client_list() if c.get("cmd") == "xread"]
    assert blocked, "the loop should be blocked in XREAD"
    for connection in blocked:
        await client.client_kill_filter(_id=connection["id"])
    await writer.emit("token", {"text": "b"})
    await writer.emit("final", {"text": "end"})
    assert await asyncio.wait_for(reader, 10) == ["a", "b", "end"]
    await tailer.close()
    assert not [c for c in await client.client_list() if c.get("cmd") == "xread"]


async def _lost_turn(
    client: aioredis.Redis, *, worker_dies: bool, silent_for: float
) -> tuple[list[str], float]:
    """A turn taken by a worker (owner key + heartbeat) that writes a token and then goes
    silent; the worker's process dies (its heartbeat stops without deleting its key, as a
    SIGKILL leaves it) or keeps beating. Returns the events read and when the last came."""
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix)
    turn_id = uuid.uuid4().hex
    worker_id = f"w-{uuid.uuid4().hex[:6]}"
    # A worker's heartbeat is its broker's (parley.broker.redis): it beats once it receives.
    broker = RedisBroker(client, prefix=prefix, consumer=worker_id)
    await broker.receive("parley-chat", max_messages=1, wait=0.01)
    assert await client.exists(alive_key(prefix, worker_id))
    await client.set(owner_key(prefix, turn_id), worker_id)
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    await writer.emit("token", {"text": "half an ans"})
    kinds: list[str] = []

    async def read() -> None:
        async for event in tailer.tail(turn_id, idle_timeout=30):
            kinds.append(str(event.data.get("code", event.kind)))

    reader = asyncio.create_task(read())
    started = asyncio.get_running_loop().time()
    if worker_dies:
        await tasks.stop(broker._keeper)  # the beating stops; the key is left to expire
    try:
        await asyncio.wait_for(asyncio.shield(reader), silent_for)
    except TimeoutError:
        await writer.emit("final", {"text": "half an answer"})  # the live worker's end
        await asyncio.wait_for(reader, 5)
    took = asyncio.get_running_loop().time() - started
    await broker.close()
    await tailer.close()
    return kinds, took


async def test_a_dead_workers_turn_ends_worker_lost_within_five_seconds(
    client: aioredis.Redis,
) -> None:
    kinds, took = await _lost_turn(client, worker_dies=True, silent_for=10)
    assert kinds == ["token", "worker_lost"]
    assert took < 5.0, took


async def test_a_silent_but_living_worker_is_not_declared_lost(client: aioredis.Redis) -> None:
    kinds, _ = await _lost_turn(client, worker_dies=False, silent_for=6)
    assert kinds == ["token", "final"]


async def test_worker_lost_is_written_once_and_never_after_a_terminal_event(
    client: aioredis.Redis,
) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    lost = LostWorkers(client, prefix=prefix)
    ended, finished = uuid.uuid4().hex, uuid.uuid4().hex
    for turn_id in (ended, finished):
        await client.set(owner_key(prefix, turn_id), "gone-worker")  # no heartbeat at all
        await TurnWriter(client, turn_id, prefix=prefix).emit("token", {"text": "x"})
    await TurnWriter(client, finished, prefix=prefix).emit("final", {"text": "x"})
    assert await lost.check([ended, finished, uuid.uuid4().hex]) == [ended]
    assert await lost.check([ended, finished]) == []  # already ended: nothing twice
    entries: Any = await client.xrange(f"{prefix}:turn:{ended}")
    assert [fields[b"k"] for _id, fields in entries] == [b"token", b"error"]


async def test_an_unknown_kind_is_skipped_and_a_malformed_entry_ends_the_turn(
    client: aioredis.Redis,
) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix)
    turn_id = uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    await writer.emit("token", {"text": "a"})
    await client.xadd(writer.key, {"k": "heartbeat", "d": "{}"})  # a newer writer's kind
    await writer.emit("token", {"text": "b"})
    raw: Any = await client.xadd(writer.key, {"k": "token", "d": '{"n": 1}'})  # no text
    broken = raw.decode()
    await writer.emit("token", {"text": "never relayed"})
    events = [e async for e in tailer.tail(turn_id, idle_timeout=10)]
    assert [e.kind for e in events] == ["token", "token", "error"]
    assert [e.data.get("text") for e in events[:2]] == ["a", "b"]
    end = events[-1]
    assert end.offset == broken
    assert end.data["code"] == "internal"
    assert broken in end.data["message"] and "text" in end.data["message"]
    await tailer.close()


async def test_a_reader_waiting_longer_than_idle_timeout_gets_timeout_error(
    client: aioredis.Redis,
) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix, watch_every=None)
    turn_id = uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    started = asyncio.get_running_loop().time()

    async def read() -> list[str]:
        texts = []
        async for event in tailer.tail(turn_id, idle_timeout=0.5):
            texts.append(str(event.data.get("text")))
        return texts

    reader = asyncio.create_task(read())
    for i in range(4):  # events more often than the timeout: no timeout, 0.9 s in all
        await asyncio.sleep(0.3)
        await writer.emit("token", {"text": str(i)})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader, 5)
    took = asyncio.get_running_loop().time() - started
    assert 1.2 + 0.5 - 0.05 <= took < 1.2 + 0.5 + 1.0, took
    assert tailer.active == 0
    await tailer.close()


async def test_a_slow_reader_is_not_timed_out_while_batches_wait_for_it(
    client: aioredis.Redis,
) -> None:
    # The idle timeout is about waiting for the stream, not about a reader busy elsewhere.
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix, watch_every=None)
    turn_id = uuid.uuid4().hex
    writer = TurnWriter(client, turn_id, prefix=prefix, flush_interval=0)
    for i in range(3):
        await writer.emit("token", {"text": str(i)})
    await writer.emit("final", {"text": "end"})
    texts = []
    async for event in tailer.tail(turn_id, idle_timeout=0.2):
        texts.append(str(event.data.get("text")))
        await asyncio.sleep(0.3)  # longer than the timeout, between events
    assert texts == ["0", "1", "2", "end"]
    await tailer.close()


async def test_a_slow_reader_is_left_out_of_reads_until_it_catches_up(
    client: aioredis.Redis,
) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix, high_water=2, watch_every=None)
    slow_turn, fast_turn = uuid.uuid4().hex, uuid.uuid4().hex
    slow = tailer.batches(slow_turn, idle_timeout=10)
    fast = asyncio.create_task(collect(tailer, fast_turn))

    async def take() -> list[TurnEvent]:
        return await anext(slow)

    first = asyncio.create_task(take())  # subscribed; then it stops reading
    writers = [TurnWriter(client, t, prefix=prefix, flush_interval=0)
               for t in (slow_turn, fast_turn)]
    for i in range(8):  # one entry per read
        for writer in writers:
            await writer.emit("token", {"text": str(i)})
        await asyncio.sleep(0.05)
    for writer in writers:
        await writer.emit("final", {"text": "end"})
    # The other turn is relayed to its end meanwhile.
    assert await asyncio.wait_for(fast, 10) == [*map(str, range(8)), "end"]
    [sub] = tailer._by_key[f"{prefix}:turn:{slow_turn}"]
    assert len(sub.batches) <= 2  # at the high water mark: no further reads for it
    texts = [e.data["text"] for e in await asyncio.wait_for(first, 5)]
    async for batch in slow:
        texts.extend(e.data["text"] for e in batch)
    assert texts == [*map(str, range(8)), "end"]
    await tailer.close()


async def test_a_turn_subscribed_during_a_blocked_read_gets_its_first_token_at_once(
    client: aioredis.Redis,
) -> None:
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix, block=4.0, watch_every=None)
    quiet = asyncio.create_task(collect(tailer, uuid.uuid4().hex))  # the loop blocks on it
    await asyncio.sleep(0.3)
    turn_id = uuid.uuid4().hex
    await TurnWriter(client, turn_id, prefix=prefix, flush_interval=0).emit("token", {"text": "a"})
    started = asyncio.get_running_loop().time()
    batches: Any = tailer.batches(turn_id, idle_timeout=10)
    batch = await asyncio.wait_for(anext(batches), 5)
    took = asyncio.get_running_loop().time() - started
    assert [e.data["text"] for e in batch] == ["a"]
    assert took < 0.5, took  # not after the 4 s block of the read in flight
    await batches.aclose()
    quiet.cancel()
    await tailer.close()


async def test_a_turn_subscribed_between_reads_is_read_without_a_wake(
    client: aioredis.Redis,
) -> None:
    """Only a read in flight needs waking: a subscriber that comes while none is (here: every
    earlier turn done, the loop waiting for one) is named by the next read as it is built."""
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    tailer = TurnTailer(client, prefix=prefix, block=0.1, watch_every=None)
    done = uuid.uuid4().hex
    await TurnWriter(client, done, prefix=prefix, flush_interval=0).emit("final", {"text": "x"})
    assert await asyncio.wait_for(collect(tailer, done), 5) == ["x"]
    await asyncio.sleep(0.3)  # its last read returned: the loop waits for a subscriber
    turn_id = uuid.uuid4().hex
    await TurnWriter(client, turn_id, prefix=prefix, flush_interval=0).emit("token", {"text": "a"})
    batches: Any = tailer.batches(turn_id, idle_timeout=10)
    batch = await asyncio.wait_for(anext(batches), 5)
    assert [e.data["text"] for e in batch] == ["a"]
    assert not await client.exists(tailer._wake_key)  # no wake was written
    assert tailer.wakes == 0
    await batches.aclose()
    await tailer.close()
