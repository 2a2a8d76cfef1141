"""The consumer runtime on a real Redis: ack, reject, retry then dead-letter, bounded
concurrency, drain on stop, and surviving a broker that is down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from parley.broker import Message
from parley.broker.redis import RedisBroker
from parley.errors import Reject, Retry
from parley.runtime.consumer import Consumer, backoff
from parley.settings import QueueSettings


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    client = aioredis.Redis.from_url(redis_url)
    adapter = RedisBroker(client, prefix=f"c{uuid.uuid4().hex[:6]}", default_lease=5)
    yield adapter
    await adapter.close()
    await client.aclose()


def queue(**overrides: object) -> QueueSettings:
    return QueueSettings.model_validate({"name": f"q-{uuid.uuid4().hex[:6]}", **overrides})


async def run_until(consumer: Consumer, done: asyncio.Event, timeout: float = 20) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_handled_messages_are_acked(broker: RedisBroker) -> None:
    q = queue()
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        seen.append(message.body)
        if len(seen) == 3:
            done.set()

    await broker.publish_many(q.name, [(b"1", {}), (b"2", {}), (b"3", {})])
    consumer = Consumer(broker, q, handler, receive_wait=0.2)
    await run_until(consumer, done)
    assert sorted(seen) == [b"1", b"2", b"3"]
    assert consumer.stats.handled == 3
    assert await broker.depth(q.name) == 0


async def test_reject_dead_letters_at_once_with_reason(broker: RedisBroker) -> None:
    q = queue()
    done = asyncio.Event()
    calls = 0

    async def handler(message: Message) -> None:
        nonlocal calls
        calls += 1
        done.set()
        raise Reject("not a PDF", reason="unsupported_type")

    await broker.publish(q.name, b"junk")
    await run_until(Consumer(broker, q, handler, receive_wait=0.2), done)
    [dead] = await broker.dead_letters(q.name)
    assert calls == 1
    assert "not a PDF" in dead.reason and "unsupported_type" in dead.reason
    assert await broker.depth(q.name) == 0


async def test_failures_retry_with_backoff_then_dead_letter(broker: RedisBroker) -> None:
    q = queue(max_attempts=3)
    attempts: list[int] = []
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 3:
            done.set()
        if message.attempt == 1:
            raise Retry("busy", delay=0.1)
        raise RuntimeError("boom")

    await broker.publish(q.name, b"flaky")
    consumer = Consumer(broker, q, handler, receive_wait=0.1, backoff_base=0.1)
    await run_until(consumer, done)
    await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3]
    [dead] = await broker.dead_letters(q.name)
    assert dead.reason.startswith("gave up after 3 attempts: RuntimeError: boom")
    assert dead.attempt == 3
    assert consumer.stats.retried == 2


async def test_concurrency_is_bounded(broker: RedisBroker) -> None:
    q = queue(concurrency=3)
    running = peak = finished = 0
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        finished += 1
        if finished == 12:
            done.set()

    await broker.publish_many(q.name, [(str(i).encode(), {}) for i in range(12)])
    await run_until(Consumer(broker, q, handler, receive_wait=0.1), done)
    assert peak == 3


async def test_stop_drains_in_flight_work(broker: RedisBroker) -> None:
    q = queue()
    started = asyncio.Event()
    finished: list[bytes] = []

    async def handler(message: Message) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(message.body)

    await broker.publish(q.name, b"slow")
    stop = asyncio.Event()
    consumer = Consumer(broker, q, handler, receive_wait=0.1, drain_seconds=5)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()  # SIGTERM arrives mid-message
    await asyncio.wait_for(task, 10)
    assert finished == [b"slow"]
    assert await broker.depth(q.name) == 0  # acked, not abandoned


async def test_drain_timeout_leaves_message_for_redelivery(broker: RedisBroker) -> None:
    q = queue()
    started = asyncio.Event()

    async def handler(message: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.publish(q.name, b"stuck")
    stop = asyncio.Event()
    consumer = Consumer(broker, q, handler, receive_wait=0.1, drain_seconds=0.2)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await broker.depth(q.name) == 1  # still there: another worker will get it


async def test_stop_is_seen_while_every_slot_is_busy(broker: RedisBroker) -> None:
    # All slots taken: the receive loop waits for one to free up; a stop must not wait for that.
    q = queue(concurrency=1)
    started = asyncio.Event()

    async def handler(message: Message) -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.publish(q.name, b"long")
    stop = asyncio.Event()
    consumer = Consumer(broker, q, handler, receive_wait=0.1, drain_seconds=0.2)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.3)  # the loop is now waiting for a free slot
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert loop.time() - stopped_at < 2.0  # drain time (0.2 s), not the handler's 60 s
    assert await broker.depth(q.name) == 1


async def test_a_handler_that_swallows_the_drain_cancel_is_cancelled_again(
    broker: RedisBroker,
) -> None:
    # redis-py on Python 3.11 can swallow a cancel that lands while a command is sent; the
    # handler then carries on. The drain must not wait for it to finish on its own.
    q = queue()
    started = asyncio.Event()
    swallowed = asyncio.Event()

    async def handler(message: Message) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.set()  # lost, as in redis-py's send
        await asyncio.sleep(60)

    await broker.publish(q.name, b"stubborn")
    stop = asyncio.Event()
    consumer = Consumer(broker, q, handler, receive_wait=0.1, drain_seconds=0.2)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 5)  # drain 0.2 s + one re-cancel after 0.5 s
    assert swallowed.is_set()
    assert await broker.depth(q.name) == 1  # unsettled: redelivered after the lease


async def test_receive_errors_do_not_kill_the_consumer() -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    adapter = RedisBroker(dead)
    consumer = Consumer(adapter, queue(), lambda m: asyncio.sleep(0), receive_wait=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.sleep(1.0)
    assert not task.done()  # still retrying, not crashed
    stop.set()
    await asyncio.wait_for(task, 15)
    await dead.aclose()


def test_backoff_grows_and_is_capped() -> None:
    assert 0.5 <= backoff(1) <= 1.0
    assert 4.0 <= backoff(4) <= 8.0
    assert backoff(30, cap=60) <= 60
