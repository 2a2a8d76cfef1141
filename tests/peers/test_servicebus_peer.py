"""The real ``azure-servicebus`` SDK (async, pyamqp transport) against the AMQP test peer.

These pin what the SDK sends and how it reads the answers, so the adapter's assumptions
(delivery count convention, lock-lost errors, dead-letter properties, batch framing) are
checked at the AMQP level rather than assumed.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusError

from tests.peers.servicebus import ServiceBusPeer, split_batch

SHORT_LOCK = 1.0
MAX_DELIVERIES = 3


@pytest.fixture(scope="module")
def peer() -> Iterator[ServiceBusPeer]:
    with ServiceBusPeer(
        lock_duration=lambda q: SHORT_LOCK if q.startswith("short-") else 30.0,
        max_delivery_count=MAX_DELIVERIES,
    ) as running:
        yield running


@pytest.fixture
async def client(peer: ServiceBusPeer) -> AsyncIterator[ServiceBusClient]:
    async with ServiceBusClient.from_connection_string(peer.connection_string) as sb:
        yield sb


def fresh(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def send(client: ServiceBusClient, queue: str, *bodies: bytes) -> None:
    async with client.get_queue_sender(queue) as sender:
        for body in bodies:
            await sender.send_messages(ServiceBusMessage(body, message_id=body.decode()))


async def receive(
    receiver: ServiceBusReceiver, n: int, wait: float = 5.0
) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(got) < n and loop.time() < deadline:
        got += await receiver.receive_messages(max_message_count=n - len(got), max_wait_time=0.5)
    return got


async def test_emulator_connection_string_keeps_port_without_tls(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    assert client.fully_qualified_namespace == f"127.0.0.1:{peer.port}"
    before = peer.tokens_put
    await send(client, fresh(), b"m")
    assert peer.tokens_put > before  # the SDK waited for the $cbs answer before sending
    assert peer.sasl_mechanisms[-1] == "ANONYMOUS"  # the token goes over $cbs, not SASL


async def test_send_receive_complete(peer: ServiceBusPeer, client: ServiceBusClient) -> None:
    q = fresh()
    async with client.get_queue_sender(q) as sender:
        await sender.send_messages(
            ServiceBusMessage(b"hello", message_id="m-1", application_properties={"k": "v"})
        )
    assert peer.depth(q) == 1
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [msg] = await receive(receiver, 1)
        assert b"".join(msg.body) == b"hello"
        assert msg.message_id == "m-1"
        assert msg.application_properties == {b"k": b"v"}
        assert msg.delivery_count == 0  # earlier deliveries: the adapter adds 1
        assert msg.sequence_number == 1
        assert isinstance(msg.lock_token, uuid.UUID)
        assert msg.locked_until_utc is not None
        assert msg.locked_until_utc > datetime.datetime.now(datetime.UTC)
        assert peer.locked(q) == 1
        await receiver.complete_message(msg)
        assert peer.depth(q) == 0
        assert peer.completed(q) == 1
        assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.3) == []


async def test_batch_is_one_transfer_of_ordered_messages(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    before = peer.transfers
    async with client.get_queue_sender(q) as sender:
        batch = await sender.create_message_batch()
        for i in range(5):
            batch.add_message(ServiceBusMessage(f"b{i}".encode(), application_properties={"i": i}))
        await sender.send_messages(batch)
    assert peer.transfers == before + 1
    stored = peer.messages(q)
    assert [m.body for m in stored] == [f"b{i}".encode() for i in range(5)]
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        got = await receive(receiver, 5)
        assert [b"".join(m.body) for m in got] == [f"b{i}".encode() for i in range(5)]
        assert [(m.application_properties or {})[b"i"] for m in got] == [0, 1, 2, 3, 4]
        for m in got:
            await receiver.complete_message(m)
    assert peer.depth(q) == 0


def test_single_message_is_not_taken_for_a_batch() -> None:
    from proton import Message

    assert split_batch(bytes(Message(body=b"plain", inferred=True).encode())) is None


async def test_abandon_redelivers_with_delivery_count(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    await send(client, q, b"again")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [first] = await receive(receiver, 1)
        await receiver.abandon_message(first)
        [second] = await receive(receiver, 1)
        assert second.message_id == "again"
        assert second.sequence_number == first.sequence_number
        assert second.lock_token != first.lock_token
        assert second.delivery_count == 1
        await receiver.complete_message(second)


async def test_dead_letter_moves_message_with_reason(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    await send(client, q, b"poison")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [msg] = await receive(receiver, 1)
        await receiver.dead_letter_message(msg, reason="bad", error_description="bad: details")
    assert peer.depth(q) == 0
    assert peer.dead_letter_count(q) == 1
    [stored] = peer.messages(q + "/$DeadLetterQueue")
    assert stored.application_properties["DeadLetterReason"] == "bad"
    async with client.get_queue_receiver(q, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as dlq:
        [peeked] = await dlq.peek_messages(max_message_count=10, sequence_number=1)
        assert peeked.dead_letter_reason == "bad"
        assert peeked.dead_letter_error_description == "bad: details"
        assert peeked.delivery_count == 1  # a peek reports deliveries so far
        [dead] = await receive(dlq, 1)
        assert b"".join(dead.body) == b"poison"
        await dlq.complete_message(dead)
    assert peer.dead_letter_count(q) == 0


async def test_expired_lock_redelivers_and_stale_settle_raises_lock_lost(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh("short")
    await send(client, q, b"slow")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [first] = await receive(receiver, 1)
        await asyncio.sleep(SHORT_LOCK * 1.3)
        [second] = await receive(receiver, 1)
        assert second.sequence_number == first.sequence_number
        assert second.delivery_count == 1
        with pytest.raises(MessageLockLostError):  # the SDK's own check of locked_until
            await receiver.complete_message(first)
        await receiver.complete_message(second)
    assert peer.depth(q) == 0


async def test_lock_lost_at_the_broker_is_reported_by_the_sdk(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    await send(client, q, b"x")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [msg] = await receive(receiver, 1)
        assert peer.expire_locks(q) == 1
        # The client still thinks the lock valid; the broker answers message-lock-lost.
        with pytest.raises(MessageLockLostError):
            await receiver.complete_message(msg)
        [again] = await receive(receiver, 1)
        assert again.delivery_count == 1
        await receiver.complete_message(again)


async def test_renew_lock_keeps_the_message(peer: ServiceBusPeer, client: ServiceBusClient) -> None:
    q = fresh("short")
    await send(client, q, b"long job")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [msg] = await receive(receiver, 1)
        for _ in range(3):
            await asyncio.sleep(SHORT_LOCK * 0.5)
            until = await receiver.renew_message_lock(msg)
            assert until > datetime.datetime.now(datetime.UTC)
        # 1.5 lock durations later, still ours.
        assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.2) == []
        await receiver.complete_message(msg)
    assert peer.completed(q) == 1


async def test_too_many_deliveries_dead_letter_the_message(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    await send(client, q, b"flaky")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        for _ in range(MAX_DELIVERIES):
            [msg] = await receive(receiver, 1)
            await receiver.abandon_message(msg)
        assert await receiver.receive_messages(max_message_count=1, max_wait_time=0.2) == []
    [dead] = peer.messages(q + "/$DeadLetterQueue")
    assert dead.application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    assert dead.deliveries == MAX_DELIVERIES


async def test_peek_does_not_lock(peer: ServiceBusPeer, client: ServiceBusClient) -> None:
    q = fresh()
    await send(client, q, b"a", b"b")
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        [held] = await receive(receiver, 1)
        peeked = await receiver.peek_messages(max_message_count=10, sequence_number=1)
        assert [m.message_id for m in peeked] == ["a", "b"]
        assert peer.locked(q) == 1
        [other] = await receive(receiver, 1)
        assert other.message_id == "b"
        await receiver.complete_message(held)
        await receiver.complete_message(other)


async def test_scheduled_message_arrives_when_due(
    peer: ServiceBusPeer, client: ServiceBusClient
) -> None:
    q = fresh()
    async with client.get_queue_receiver(q, prefetch_count=0) as receiver:
        due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
        async with client.get_queue_sender(q) as sender:
            [seq] = await sender.schedule_messages(
                ServiceBusMessage(b"later", message_id="s"), due
            )
            assert peer.depth(q) == 0  # scheduled is not active
        [msg] = await receive(receiver, 1, wait=10)
        assert datetime.datetime.now(datetime.UTC) >= due
        assert msg.message_id == "s"
        assert msg.sequence_number == seq
        assert msg.enqueued_time_utc is not None
        await receiver.complete_message(msg)


async def test_unmodelled_management_operation_is_refused(client: ServiceBusClient) -> None:
    async with client.get_queue_receiver(fresh(), prefetch_count=0) as receiver:
        with pytest.raises(ServiceBusError):
            await receiver.receive_deferred_messages([1])
