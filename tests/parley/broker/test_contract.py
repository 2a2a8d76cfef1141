"""The Broker contract, run on every adapter (see conftest's ``broker`` fixture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from parley.broker import Broker, Message


async def receive_all(broker: Broker, queue: str, n: int, timeout: float = 10.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += await broker.receive(queue, max_messages=n - len(got), wait=0.5)
    return got


async def test_publish_receive_ack(broker: Broker, queue_name: Callable[[str], str]) -> None:
    q = queue_name("basic")
    await broker.publish(q, b'{"n": 1}', {"traceparent": "00-abc-def-01"})
    [msg] = await receive_all(broker, q, 1)
    assert msg.body == b'{"n": 1}'
    assert msg.headers["traceparent"] == "00-abc-def-01"
    assert msg.attempt == 1
    await broker.ack(msg)
    assert await broker.receive(q, max_messages=1, wait=0.2) == []
    assert await broker.depth(q) == 0


async def test_receive_times_out_empty(broker: Broker, queue_name: Callable[[str], str]) -> None:
    assert await broker.receive(queue_name("empty"), max_messages=5, wait=0.2) == []


async def test_publish_many_keeps_order_and_bytes(
    broker: Broker, queue_name: Callable[[str], str]
) -> None:
    q = queue_name("many")
    bodies = [f"m{i}".encode() + bytes([0, 255, i]) for i in range(20)]
    await broker.publish_many(q, [(b, {"i": str(i)}) for i, b in enumerate(bodies)])
    assert await broker.depth(q) == 20
    got = await receive_all(broker, q, 20)
    assert [m.body for m in got] == bodies
    assert [m.headers["i"] for m in got] == [str(i) for i in range(20)]
    for m in got:
        await broker.ack(m)
    assert await broker.depth(q) == 0


async def test_leased_message_is_invisible_to_others(
    broker: Broker, queue_name: Callable[[str], str]
) -> None:
    q = queue_name("lease-invisible")
    await broker.publish(q, b"x")
    [msg] = await receive_all(broker, q, 1)
    # Within the lease nobody else gets it.
    assert await broker.receive(q, max_messages=1, wait=0.2) == []
    await broker.ack(msg)


async def test_retry_redelivers_with_attempt_and_delay(
    broker: Broker, queue_name: Callable[[str], str]
) -> None:
    q = queue_name("retry")
    await broker.publish(q, b"again", {"k": "v"})
    [first] = await receive_all(broker, q, 1)
    started = time.monotonic()
    await broker.retry(first, delay=0.5)
    [second] = await receive_all(broker, q, 1)
    assert time.monotonic() - started >= 0.45
    assert second.body == b"again"
    assert second.headers["k"] == "v"
    assert second.attempt == 2
    await broker.ack(second)
    assert await broker.depth(q) == 0


async def test_dead_letter_keeps_reason_and_attempt(
    broker: Broker, queue_name: Callable[[str], str]
) -> None:
    q = queue_name("dead")
    await broker.publish(q, b"poison", {"parley-document-id": "d1"})
    [msg] = await receive_all(broker, q, 1)
    await broker.dead_letter(msg, reason="malformed: not JSON")
    assert await broker.receive(q, max_messages=1, wait=0.2) == []
    [dead] = await broker.dead_letters(q)
    assert dead.body == b"poison"
    assert dead.reason == "malformed: not JSON"
    assert dead.attempt == 1
    assert dead.headers["parley-document-id"] == "d1"
    assert await broker.depth(q) == 0


async def test_unsettled_message_comes_back_after_lease(
    broker: Broker, queue_name: Callable[[str], str], lease: float
) -> None:
    """A consumer that dies holding a message: another consumer gets it after the lease."""
    q = queue_name("lease-expiry")
    await broker.publish(q, b"orphan")
    [msg] = await receive_all(broker, q, 1)
    await broker.close()  # stops lease keeping, like a killed process; msg never settled
    await asyncio.sleep(lease * 1.5)
    [again] = await receive_all(broker, q, 1, timeout=lease * 10)
    assert again.body == b"orphan"
    assert again.attempt == msg.attempt + 1
    await broker.ack(again)


async def test_lease_is_kept_while_held(
    broker: Broker, queue_name: Callable[[str], str], lease: float
) -> None:
    """A live consumer holding a message longer than the lease keeps it (lease renewal)."""
    q = queue_name("lease-kept")
    await broker.publish(q, b"slow")
    [msg] = await receive_all(broker, q, 1)
    await asyncio.sleep(lease * 2.5)
    assert await broker.receive(q, max_messages=1, wait=0.2) == []
    await broker.ack(msg)
