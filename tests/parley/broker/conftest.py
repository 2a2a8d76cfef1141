"""The ``broker`` fixture: one instance per adapter, so every contract test runs on each.

Each test gets fresh queue names, so tests never see each other's messages. ``short_lease`` is
the lease (seconds) configured for queues named ``lease-*`` to exercise expiry quickly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from parley.broker import Broker
from parley.broker.redis import RedisBroker

SHORT_LEASE = 1.0


@pytest.fixture
def queue_name() -> Callable[[str], str]:
    run = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{run}"


@pytest.fixture(params=["redis"])
async def broker(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Broker]:
    if request.param == "redis":
        client = aioredis.Redis.from_url(redis_url)
        adapter = RedisBroker(
            client, prefix=f"t{uuid.uuid4().hex[:6]}", default_lease=SHORT_LEASE
        )
        yield adapter
        await adapter.close()
        await client.aclose()
