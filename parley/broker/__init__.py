"""The broker seam: one small protocol, two real adapters (Redis Streams here, Azure Service Bus
in :mod:`backends.servicebus`).

Delivery is at-least-once. A received :class:`Message` is invisible to other consumers until it
is acked, retried or dead-lettered, or until its lease runs out (a crashed consumer): then it is
delivered again with ``attempt`` increased. Handlers must therefore be idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from parley.ids import MessageId


@dataclass(frozen=True)
class Message:
    """One delivery of a queued message.

    ``attempt`` is 1 on the first delivery and grows with every redelivery (explicit retry or
    lease expiry). ``receipt`` is adapter-private state needed to settle the delivery.
    """

    queue: str
    id: MessageId
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    receipt: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DeadLetter:
    """A message that was given up on, with why and after how many attempts."""

    queue: str
    id: str
    body: bytes
    headers: Mapping[str, str]
    reason: str
    attempt: int
    failed_at: float


@runtime_checkable
class Broker(Protocol):
    """A set of named work queues.

    Settling calls (``ack``, ``retry``, ``dead_letter``) on a delivery whose lease has expired
    are harmless: the message has already been or will be delivered again.
    """

    async def publish(
        self, queue: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> MessageId:
        """Append one message; returns its id once the broker has it durably."""
        ...

    async def publish_many(
        self, queue: str, items: Sequence[tuple[bytes, Mapping[str, str]]]
    ) -> list[MessageId]:
        """Append several messages in as few round trips as the backend allows."""
        ...

    async def receive(self, queue: str, *, max_messages: int, wait: float) -> list[Message]:
        """Lease up to ``max_messages``, waiting at most ``wait`` seconds for the first one.

        Also reclaims messages whose lease expired (their consumer died). Returns an empty list
        on timeout. Cancelling the call leases nothing.
        """
        ...

    async def ack(self, message: Message) -> None:
        """Done: remove the message for good."""
        ...

    async def retry(self, message: Message, *, delay: float) -> None:
        """Give the message back to be delivered again, not before ``delay`` seconds."""
        ...

    async def dead_letter(self, message: Message, *, reason: str) -> None:
        """Move the message to the queue's dead letters with ``reason``."""
        ...

    async def depth(self, queue: str) -> int:
        """Messages waiting or leased (the backlog KEDA scales on)."""
        ...

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters of ``queue``, without removing them."""
        ...

    async def oldest_message_age(self, queue: str) -> float | None:
        """Seconds since the oldest waiting or leased message was enqueued; None when empty."""
        ...

    async def replay_dead_letter(self, queue: str, dead_letter_id: str) -> bool:
        """Put one dead letter back on ``queue`` (body and headers, attempts counted afresh)
        and remove it from the dead letters. False when there is no such dead letter."""
        ...

    async def purge_dead_letters(self, queue: str) -> int:
        """Remove every dead letter of ``queue``; returns how many."""
        ...

    async def close(self) -> None:
        """Release connections. In-flight leases are not settled: they expire and redeliver."""
        ...
