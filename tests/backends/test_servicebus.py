"""ServiceBusBroker beyond the shared contract: its Service Bus specific choices, through the
real SDK against the AMQP test peer (tests/peers/servicebus.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from backends.servicebus import PRIOR_ATTEMPTS, ServiceBusBroker, split_reason
from parley.broker import Message
from parley.errors import ConfigError
from parley.settings import Settings
from tests.parley.broker.conftest import SERVICEBUS_SHORT_LOCK
from tests.peers.servicebus import ServiceBusPeer


@pytest.fixture
async def sb(servicebus_peer: ServiceBusPeer) -> AsyncIterator[ServiceBusBroker]:
    async def depth(queue: str) -> int:
        return servicebus_peer.depth(queue)

    broker = ServiceBusBroker(
        connection_string=servicebus_peer.connection_string,
        depth_source=depth,
        max_hold_seconds=0.5,
    )
    yield broker
    await broker.close()


def fresh(prefix: str = "sb") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def one(broker: ServiceBusBroker, queue: str, timeout: float = 10.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await broker.receive(queue, max_messages=1, wait=0.5)
        if got:
            return got[0]
    raise AssertionError(f"nothing arrived on {queue} within {timeout} s")


def test_split_reason_gives_short_code_and_full_text() -> None:
    assert split_reason("malformed: not JSON") == ("malformed", "malformed: not JSON")
    assert split_reason("") == ("rejected", "")
    code, description = split_reason("x" * 5000)
    assert len(code) == 128
    assert len(description) == 4096


def test_settings_need_exactly_one_way_in() -> None:
    with pytest.raises(ConfigError):
        ServiceBusBroker.from_settings(Settings())
    secret = SecretStr("Endpoint=sb://h/;SharedAccessKeyName=k;SharedAccessKey=x")
    broker = ServiceBusBroker.from_settings(Settings(servicebus_connection_string=secret))
    assert isinstance(broker, ServiceBusBroker)


async def test_long_retry_schedules_a_copy_and_counts_attempts(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh()
    sent_id = await sb.publish(q, b"later", {"k": "v"})
    first = await one(sb, q)
    started = time.monotonic()
    await sb.retry(first, delay=1.5)  # beyond max_hold_seconds: scheduled, original completed
    assert servicebus_peer.completed(q) == 1
    assert servicebus_peer.depth(q) == 0  # the copy is scheduled, not active
    second = await one(sb, q)
    assert time.monotonic() - started >= 1.4
    assert second.id == sent_id
    assert second.attempt == 2
    assert second.headers == {"k": "v"}  # the attempt bookkeeping stays internal
    assert PRIOR_ATTEMPTS not in second.headers
    await sb.dead_letter(second, reason="gave_up: twice")
    [dead] = await sb.dead_letters(q)
    assert dead.attempt == 2
    assert dead.reason == "gave_up: twice"


async def test_settling_a_lost_lock_is_harmless(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh()
    await sb.publish(q, b"x")
    msg = await one(sb, q)
    assert servicebus_peer.expire_locks(q) == 1
    await sb.ack(msg)  # broker answers message-lock-lost; swallowed
    again = await one(sb, q)
    assert again.attempt == 2
    await sb.ack(again)
    assert servicebus_peer.completed(q) == 1


async def test_settling_after_close_is_harmless(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh()
    await sb.publish(q, b"x")
    msg = await one(sb, q)
    await sb.close()
    await sb.ack(msg)
    assert servicebus_peer.locked(q) == 1  # not settled: it will expire and come back
    assert servicebus_peer.expire_locks(q) == 1
    again = await one(sb, q)  # the adapter reopened by itself
    assert again.attempt == 2
    await sb.ack(again)


async def test_cancelled_receive_leaves_nothing_locked(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh()
    assert await sb.receive(q, max_messages=1, wait=0.1) == []  # opens the receiver
    pending = asyncio.create_task(sb.receive(q, max_messages=5, wait=5.0))
    await asyncio.sleep(0.3)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await sb.publish(q, b"after")
    await asyncio.sleep(0.3)
    assert servicebus_peer.locked(q) == 0  # no credit was left behind on a live link
    msg = await one(sb, q)
    assert msg.attempt == 1
    await sb.ack(msg)


async def test_concurrent_settles_while_receiving(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh()
    await sb.publish_many(q, [(f"m{i}".encode(), {}) for i in range(10)])
    got: list[Message] = []
    while len(got) < 10:
        batch = await sb.receive(q, max_messages=3, wait=1.0)
        # settle this batch while the next receive is already running
        next_batch = asyncio.create_task(sb.receive(q, max_messages=3, wait=1.0))
        await asyncio.gather(*(sb.ack(m) for m in batch))
        got += batch + await next_batch
        await asyncio.gather(*(sb.ack(m) for m in got[-3:] if m not in batch))
    assert sorted(m.body for m in got) == sorted(f"m{i}".encode() for i in range(10))
    assert servicebus_peer.depth(q) == 0


async def test_lock_renewer_keeps_a_message_past_its_lock(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    q = fresh("lease")  # the peer's short LockDuration
    await sb.publish(q, b"slow")
    msg = await one(sb, q)
    renewals = servicebus_peer.renewals
    await asyncio.sleep(SERVICEBUS_SHORT_LOCK * 2.2)
    assert servicebus_peer.renewals > renewals
    assert await sb.receive(q, max_messages=1, wait=0.2) == []
    await sb.ack(msg)
    assert servicebus_peer.completed(q) == 1


async def test_depth_without_management_rights_is_minus_one(
    servicebus_peer: ServiceBusPeer,
) -> None:
    # The peer has no HTTPS management API, like a namespace where we lack Manage rights.
    broker = ServiceBusBroker(connection_string=servicebus_peer.connection_string)
    try:
        assert await broker.depth("anything") == -1
    finally:
        await broker.close()


async def test_receivers_are_opened_once_when_callers_race(
    sb: ServiceBusBroker, servicebus_peer: ServiceBusPeer
) -> None:
    """Dead-letter handling (replay, purge) and the metrics peek open their receivers under the
    same lock as the consumer's: callers racing for one get the same link, never a second one
    left open."""
    queue = fresh("race")
    await sb.publish(queue, b"x")
    [message] = await sb.receive(queue, max_messages=1, wait=5)
    await sb.dead_letter(message, reason="test: dead")
    purged = await asyncio.gather(
        sb.purge_dead_letters(queue), sb.purge_dead_letters(queue),
        sb.replay_dead_letter(queue, "no-such-id"),
    )
    assert sorted(purged[:2]) == [0, 1] and purged[2] is False
    ages = await asyncio.gather(*(sb.oldest_message_age(queue) for _ in range(3)))
    assert ages == [None, None, None]
    assert servicebus_peer.receiver_links(f"{queue}/$DeadLetterQueue") == 1
    assert servicebus_peer.receiver_links(queue) == 2  # the consumer's and the peeker
