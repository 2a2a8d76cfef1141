"""A message whose handling kills its worker (OOM kill, a hang the liveness probe ends) is never
settled by that worker: it comes back after its lease with ``attempt`` increased. Past the queue's
``max_attempts`` the consumer runtime dead-letters it at receive, without running the handler
again, on both brokers (Service Bus would also do it itself at the queue's MaxDeliveryCount; the
peer's is set higher here, so the runtime's own check is what is tested)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from backends.servicebus import ServiceBusBroker
from parley.broker import Broker, DeadLetter, Message
from parley.broker.redis import RedisBroker
from parley.runtime.consumer import Consumer
from parley.runtime.service import Plain
from parley.settings import QueueSettings
from tests.peers.servicebus import ServiceBusPeer

LEASE = 1.0


@dataclass
class Backend:
    new: Callable[[], Broker]
    # Makes the broker forget a dead consumer's leases (Redis: wait the lease out; the peer:
    # expire its locks now, as LockDuration passing would).
    lapse: Callable[[str], Awaitable[None]]


@pytest.fixture(params=["redis", "servicebus"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Backend]:
    made: list[Broker] = []
    if request.param == "redis":
        client = aioredis.Redis.from_url(redis_url)
        prefix = f"p{uuid.uuid4().hex[:6]}"

        def new() -> Broker:
            made.append(RedisBroker(client, prefix=prefix, default_lease=LEASE))
            return made[-1]

        async def lapse(queue: str) -> None:
            await asyncio.sleep(LEASE * 1.2)

        yield Backend(new, lapse)
        for broker in made:
            await broker.close()
        await client.aclose()
    else:
        peer: ServiceBusPeer = request.getfixturevalue("servicebus_peer")

        def new_sb() -> Broker:
            made.append(ServiceBusBroker(connection_string=peer.connection_string))
            return made[-1]

        async def expire(queue: str) -> None:
            await asyncio.to_thread(peer.expire_locks, queue)

        yield Backend(new_sb, expire)
        for broker in made:
            await broker.close()


async def die_holding(backend: Backend, queue: str) -> int:
    """A worker that receives the message and dies before settling it: its connection goes away
    and its lease runs out. Returns the attempt it saw."""
    broker = backend.new()
    messages: list[Message] = []
    async with asyncio.timeout(15):
        while not messages:
            messages = await broker.receive(queue, max_messages=1, wait=1)
    await broker.close()
    await backend.lapse(queue)
    return messages[0].attempt


async def consume_until_dead_lettered(
    broker: Broker, consumer: Consumer, queue: str
) -> list[DeadLetter]:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(20):
            while not (dead := await broker.dead_letters(queue)):
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return dead


async def test_a_message_that_kills_its_worker_is_dead_lettered_at_receive(
    backend: Backend,
) -> None:
    q = QueueSettings(name=f"poison-{uuid.uuid4().hex[:8]}", max_attempts=2)
    survivor = backend.new()
    await survivor.publish(q.name, b'{"poison": true}')
    assert [await die_holding(backend, q.name) for _ in range(q.max_attempts)] == [1, 2]

    calls: list[int] = []

    async def handler(message: Message) -> None:
        calls.append(message.attempt)

    consumer = Consumer(survivor, q, handler, receive_wait=0.5)
    [dead] = await consume_until_dead_lettered(survivor, consumer, q.name)
    assert calls == []  # never run a third time
    assert dead.body == b'{"poison": true}'
    assert "max_deliveries" in dead.reason and "delivered 3 times" in dead.reason
    assert consumer.stats.dead_lettered == 1


async def test_the_give_up_hook_runs_before_the_dead_letter(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"p{uuid.uuid4().hex[:6]}"
    backend = Backend(lambda: RedisBroker(client, prefix=prefix, default_lease=LEASE),
                      lambda _queue: asyncio.sleep(LEASE * 1.2))
    q = QueueSettings(name=f"poison-{uuid.uuid4().hex[:8]}", max_attempts=1)
    survivor = backend.new()
    await survivor.publish(q.name, b"x")
    await die_holding(backend, q.name)
    seen: list[tuple[int, str, int]] = []

    class Poisoned(Plain):
        async def on_retry_exhausted(
            self, delivery: Message, item: Message | None, error: Exception
        ) -> None:
            reason = str(error)
            seen.append((delivery.attempt, reason, len(await survivor.dead_letters(q.name))))

    async def handler(message: Message) -> None:
        raise AssertionError("never run")

    consumer = Consumer(survivor, q, Poisoned(handler), receive_wait=0.5)
    try:
        await consume_until_dead_lettered(survivor, consumer, q.name)
    finally:
        await survivor.close()
        await client.aclose()
    [(attempt, reason, dead_before)] = seen
    assert attempt == 2 and reason.startswith("max_deliveries") and dead_before == 0
