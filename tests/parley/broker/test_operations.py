"""The operator's part of the Broker protocol on every adapter: oldest message age (a queue
metric), replaying and purging dead letters."""

from __future__ import annotations

from collections.abc import Callable

from parley.broker import Broker


async def test_oldest_message_age(broker: Broker, queue_name: Callable[[str], str]) -> None:
    q = queue_name("age")
    assert await broker.oldest_message_age(q) is None
    await broker.publish(q, b"first")
    await broker.publish(q, b"second")
    age = await broker.oldest_message_age(q)
    assert age is not None and age >= 0
    [message] = await broker.receive(q, max_messages=1, wait=2)
    assert await broker.oldest_message_age(q) is not None  # leased still counts
    await broker.ack(message)
    [second] = await broker.receive(q, max_messages=1, wait=2)
    await broker.ack(second)
    assert await broker.oldest_message_age(q) is None


async def test_replay_and_purge_dead_letters(
    broker: Broker, queue_name: Callable[[str], str]
) -> None:
    q = queue_name("dlq")
    await broker.publish_many(q, [(b"one", {"k": "1"}), (b"two", {"k": "2"}), (b"three", {})])
    received = await broker.receive(q, max_messages=3, wait=2)
    while len(received) < 3:
        received += await broker.receive(q, max_messages=3 - len(received), wait=2)
    for message in received:
        await broker.dead_letter(message, reason=f"poison: {message.body.decode()}")
    letters = {d.body: d for d in await broker.dead_letters(q)}
    assert set(letters) == {b"one", b"two", b"three"}
    assert await broker.replay_dead_letter(q, "no-such-id") is False

    assert await broker.replay_dead_letter(q, letters[b"two"].id) is True
    assert await broker.replay_dead_letter(q, letters[b"two"].id) is False  # once only
    [again] = await broker.receive(q, max_messages=1, wait=2)
    assert (again.body, again.headers.get("k"), again.attempt) == (b"two", "2", 1)
    await broker.ack(again)
    assert {d.body for d in await broker.dead_letters(q)} == {b"one", b"three"}

    assert await broker.purge_dead_letters(q) == 2
    assert await broker.dead_letters(q) == []
    assert await broker.purge_dead_letters(q) == 0
