"""The ``broker`` fixture: one instance per adapter, so every contract test runs on each.

Each test gets fresh queue names, so tests never see each other's messages. ``short_lease`` is
the lease (seconds) configured for queues named ``lease-*`` to exercise expiry quickly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from backends.servicebus import ServiceBusBroker
from parley.broker import Broker
from parley.broker.redis import RedisBroker
from tests.peers.servicebus import ServiceBusPeer

SHORT_LEASE = 1.0
# Service Bus: the peer's LockDuration for lease-* queues. The SDK's AutoLockRenewer wakes once a
# second and picks its renew margin in whole seconds, so it cannot keep a lock shorter than 3 s
# (Azure's own minimum LockDuration is 5 s).
SERVICEBUS_SHORT_LOCK = 3.0


@pytest.fixture
def queue_name() -> Callable[[str], str]:
    run = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{run}"


@pytest.fixture(scope="session")
def servicebus_peer() -> Iterator[ServiceBusPeer]:
    """An AMQP 1.0 Service Bus stand-in (tests/peers/servicebus.py) for the real SDK."""
    with ServiceBusPeer(
        lock_duration=lambda q: SERVICEBUS_SHORT_LOCK if q.startswith("lease-") else 30.0
    ) as peer:
        yield peer


@pytest.fixture
def lease(broker: Broker) -> float:
    """The lease (lock duration) of ``lease-*`` queues on this adapter."""
    return SERVICEBUS_SHORT_LOCK if isinstance(broker, ServiceBusBroker) else SHORT_LEASE


@pytest.fixture(params=["redis", "servicebus"])
async def broker(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Broker]:
    if request.param == "redis":
        client = aioredis.Redis.from_url(redis_url)
        adapter = RedisBroker(
            client, prefix=f"t{uuid.uuid4().hex[:6]}", default_lease=SHORT_LEASE
        )
        yield adapter
        await adapter.close()
        await client.aclose()
    elif request.param == "servicebus":
        peer: ServiceBusPeer = request.getfixturevalue("servicebus_peer")

        async def depth(queue: str) -> int:
            return peer.depth(queue)

        sb = ServiceBusBroker(connection_string=peer.connection_string, depth_source=depth)
        yield sb
        await sb.close()
