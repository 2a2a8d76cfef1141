"""The hooks contract, on a real Redis: what the consumer runtime does with a service's typed
items and when it calls ``on_rejected``, ``on_user_error`` and ``on_retry_exhausted``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from parley.broker import Message
from parley.broker.redis import RedisBroker
from parley.errors import Reject, Retry, UserError
from parley.ids import MessageId
from parley.runtime.consumer import Consumer
from parley.runtime.service import Service, typed
from parley.settings import QueueSettings

Outcome = Literal["ok", "retry_once", "reject", "boom", "user_error"]


class Job(BaseModel):
    name: str
    outcome: Outcome = "ok"


class Jobs(BaseModel):
    jobs: list[Job]


class Recorder(Service[Job]):
    """Does what each job says; records every call the runtime makes."""

    def __init__(self, *, broken_hooks: bool = False) -> None:
        self.handled: list[tuple[str, int]] = []
        self.calls: list[tuple[str, str | None, str]] = []  # hook, item's name, error
        self.broken_hooks = broken_hooks
        self.quiet = asyncio.Event()

    def parse(self, delivery: Message) -> Sequence[Job]:
        return typed(Jobs, delivery, what="list of jobs").jobs

    async def handle(self, item: Job, delivery: Message) -> None:
        self.handled.append((item.name, delivery.attempt))
        if item.outcome == "retry_once" and delivery.attempt == 1:
            raise Retry("busy", delay=0.05)
        if item.outcome == "reject":
            raise Reject("cannot be done", reason="impossible")
        if item.outcome == "boom":
            raise RuntimeError("boom")
        if item.outcome == "user_error":
            raise UserError("the file is encrypted", reason="encrypted")

    async def _record(self, hook: str, item: Job | None, error: Exception) -> None:
        self.calls.append((hook, item.name if item is not None else None, str(error)))
        if self.broken_hooks:
            raise ConnectionError("the status store is down")

    async def on_rejected(self, delivery: Message, item: Job | None, error: Reject) -> None:
        await self._record("on_rejected", item, error)

    async def on_user_error(self, delivery: Message, item: Job, error: UserError) -> None:
        await self._record("on_user_error", item, error)

    async def on_retry_exhausted(
        self, delivery: Message, item: Job | None, error: Exception
    ) -> None:
        await self._record("on_retry_exhausted", item, error)


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    client = aioredis.Redis.from_url(redis_url)
    adapter = RedisBroker(client, prefix=f"s{uuid.uuid4().hex[:6]}", default_lease=5)
    yield adapter
    await adapter.close()
    await client.aclose()


def body(*jobs: Job) -> bytes:
    return Jobs(jobs=list(jobs)).model_dump_json().encode()


async def consume(
    broker: RedisBroker, service: Recorder, *bodies: bytes, max_attempts: int = 3
) -> Consumer:
    """Publish ``bodies``, run a consumer until the queue is empty and nothing is in flight."""
    q = QueueSettings(name=f"q-{uuid.uuid4().hex[:6]}", max_attempts=max_attempts)
    for one in bodies:
        await broker.publish(q.name, one)
    consumer = Consumer(broker, q, service, receive_wait=0.1, backoff_base=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(20):
            while await broker.depth(q.name) or consumer.stats.in_flight:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return consumer


async def test_a_malformed_message_is_dead_lettered_with_its_reason(
    broker: RedisBroker,
) -> None:
    service = Recorder()
    consumer = await consume(broker, service, b'{"jobs": [{"outcome": "ok"}]}')
    [dead] = await broker.dead_letters(consumer.queue.name)
    assert dead.reason.startswith("not a list of jobs: jobs.0.name: Field required")
    assert "malformed_message" in dead.reason and dead.attempt == 1
    assert service.handled == []
    [(hook, item, error)] = service.calls
    assert (hook, item) == ("on_rejected", None) and error == dead.reason


async def test_retry_delivers_the_message_again(broker: RedisBroker) -> None:
    service = Recorder()
    consumer = await consume(broker, service, body(Job(name="a", outcome="retry_once")))
    assert service.handled == [("a", 1), ("a", 2)]
    assert (consumer.stats.retried, consumer.stats.handled) == (1, 1)
    assert await broker.dead_letters(consumer.queue.name) == []
    assert service.calls == []


async def test_reject_dead_letters_at_once_and_is_not_retried(broker: RedisBroker) -> None:
    service = Recorder()
    consumer = await consume(
        broker, service, body(Job(name="a"), Job(name="b", outcome="reject"), Job(name="c"))
    )
    [dead] = await broker.dead_letters(consumer.queue.name)
    assert dead.reason == "cannot be done [impossible]" and dead.attempt == 1
    assert service.handled == [("a", 1), ("b", 1)]  # c is not handled: the message is dead
    assert service.calls == [("on_rejected", "b", "cannot be done [impossible]")]
    assert consumer.stats.retried == 0


async def test_exhausted_retries_call_the_hook_once_with_the_failing_item(
    broker: RedisBroker,
) -> None:
    service = Recorder()
    consumer = await consume(
        broker, service, body(Job(name="a"), Job(name="b", outcome="boom")), max_attempts=3
    )
    [dead] = await broker.dead_letters(consumer.queue.name)
    assert dead.reason == "gave up after 3 attempts: RuntimeError: boom" and dead.attempt == 3
    assert [name for name, _ in service.handled] == ["a", "b"] * 3
    assert service.calls == [("on_retry_exhausted", "b", "boom")]
    assert consumer.stats.retried == 2


async def test_a_user_error_ends_its_item_without_retry_and_the_rest_is_handled(
    broker: RedisBroker,
) -> None:
    service = Recorder()
    consumer = await consume(
        broker, service, body(Job(name="a", outcome="user_error"), Job(name="b"))
    )
    assert service.handled == [("a", 1), ("b", 1)]
    assert service.calls == [("on_user_error", "a", "the file is encrypted [encrypted]")]
    assert (consumer.stats.handled, consumer.stats.retried) == (1, 0)
    assert await broker.dead_letters(consumer.queue.name) == []
    assert await broker.depth(consumer.queue.name) == 0


async def test_a_failing_give_up_hook_does_not_stop_the_dead_letter(
    broker: RedisBroker,
) -> None:
    service = Recorder(broken_hooks=True)
    consumer = await consume(
        broker, service, b"{not json", body(Job(name="b", outcome="boom")), max_attempts=2
    )
    dead = await broker.dead_letters(consumer.queue.name)
    assert len(dead) == 2
    assert sorted(hook for hook, _, _ in service.calls) == ["on_rejected", "on_retry_exhausted"]


async def test_a_failing_user_error_hook_is_retried_like_the_handler(
    broker: RedisBroker,
) -> None:
    # The user's outcome must be recorded: a hook that cannot record it (the status store is
    # down) has the message delivered again, until the runtime gives up.
    service = Recorder(broken_hooks=True)
    consumer = await consume(
        broker, service, body(Job(name="a", outcome="user_error")), max_attempts=2
    )
    assert service.handled == [("a", 1), ("a", 2)]
    assert [hook for hook, _, _ in service.calls] == [
        "on_user_error", "on_user_error", "on_retry_exhausted"
    ]
    [dead] = await broker.dead_letters(consumer.queue.name)
    assert dead.reason.startswith("gave up after 2 attempts: ConnectionError")


async def test_a_service_called_by_hand_handles_its_items_and_records_user_errors() -> None:
    service = Recorder()
    message = Message(queue="q", id=MessageId("1"),
                      body=body(Job(name="a", outcome="user_error"), Job(name="b")))
    await service(message)
    assert service.handled == [("a", 1), ("b", 1)]
    assert [hook for hook, _, _ in service.calls] == ["on_user_error"]
    with pytest.raises(Reject, match="malformed_message"):
        await service(Message(queue="q", id=message.id, body=b"[]"))
