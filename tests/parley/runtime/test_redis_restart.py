"""A consumer across a Redis restart on the same port, with its data (append-only file) and
without (a failover to an empty replica): it reconnects by itself, recreates its consumer
group when the group is gone, settles what it was handling when Redis went, reports not ready
while it cannot receive, and leaves no task exception unretrieved."""

from __future__ import annotations

import asyncio
import gc
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley.broker import Message
from parley.broker.redis import RedisBroker
from parley.runtime.consumer import Consumer
from parley.settings import QueueSettings
from parley_cli import localstack


@pytest.mark.parametrize("keep_data", [True, False], ids=["with-data", "without-data"])
async def test_a_consumer_survives_a_redis_restart(tmp_path: Path, keep_data: bool) -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    server = localstack.start_redis(tmp_path, persist=keep_data)
    client = aioredis.Redis.from_url(server.url)
    broker = RedisBroker(client, prefix=f"r{uuid.uuid4().hex[:6]}", default_lease=30)
    queue = QueueSettings(name="q", concurrency=4)
    handled: list[bytes] = []
    busy = asyncio.Event()

    async def handler(message: Message) -> None:
        if message.body == b"slow":
            busy.set()
            await asyncio.sleep(2.0)  # still running while Redis is down: its ack must wait
        handled.append(message.body)

    consumer = Consumer(broker, queue, handler, receive_wait=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    readiness: list[bool] = []

    async def sample() -> None:
        while True:
            readiness.append(consumer.ready)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        await broker.publish("q", b"slow")
        await asyncio.wait_for(busy.wait(), 10)
        await asyncio.sleep(0.5)  # the append-only file is written every second
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        await asyncio.sleep(1.0)
        assert not consumer.ready
        server = localstack.start_redis(tmp_path, server.port, persist=keep_data)
        await broker.publish("q", b"after")
        async with asyncio.timeout(20):
            while sorted(handled) != [b"after", b"slow"]:
                await asyncio.sleep(0.1)
        assert consumer.ready
        await asyncio.sleep(1.0)  # a redelivery of "slow" would show now (it must not)
        assert sorted(handled) == [b"after", b"slow"]
        assert await broker.depth("q") == 0
    finally:
        sampler.cancel()
        stop.set()
        await asyncio.wait_for(running, 30)
        await broker.close()
        await client.aclose()
        server.stop()
    assert False in readiness and readiness[-1] is True
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []
