"""Azure Service Bus adapter of :class:`parley.broker.Broker` (``azure-servicebus``, async API).

One logical queue is one Service Bus queue of the same name (created by Terraform; this adapter
never creates entities, so it needs only Send + Listen rights, or the ``Azure Service Bus Data
Sender``/``Data Receiver`` roles). Mapping:

- ``publish`` -> one ``ServiceBusMessage``: body as one data section, ``headers`` as application
  properties (str values), ``message_id`` a fresh uuid (the returned id);
- ``publish_many`` -> ``ServiceBusMessageBatch`` (one AMQP transfer per batch; a new batch is
  started when one is full, so order is kept);
- ``receive`` -> ``receive_messages`` on one peek-lock receiver per queue with ``prefetch 0``:
  nothing is locked ahead of a call, so the backlog KEDA reads stays in the queue; every
  received message is registered with one ``AutoLockRenewer``, so a long handler keeps its lock
  (for up to ``max_lock_renewal_seconds``). ``attempt`` = the SDK's ``delivery_count`` + 1 (the
  Python SDK reports the AMQP header value: earlier deliveries, 0 on the first);
- ``ack`` -> ``complete_message``; ``dead_letter(reason)`` -> ``dead_letter_message`` with
  ``reason`` = the text before the first ``:`` (a short code) and ``error_description`` = the
  whole text; ``dead_letters`` peeks ``<queue>/$DeadLetterQueue``;
- ``retry(delay)``: Service Bus has no delayed abandon. A delay up to ``max_hold_seconds`` is
  waited out while holding the lock (the renewer keeps it), then the message is abandoned
  (delivery count + 1). A longer delay schedules a copy at now + delay (``schedule_messages``,
  carrying the attempts so far in the ``parley-prior-attempts`` property) and completes the
  original: at-least-once, a crash between the two leaves the copy and a redelivered original;
- ``depth`` -> ``ServiceBusAdministrationClient.get_queue_runtime_properties``
  ``active_message_count`` (waiting + locked; what KEDA's ``messageCount`` uses). That call needs
  Manage rights or the ``Azure Service Bus Data Owner`` role: on failure ``depth`` logs once per
  queue and returns -1. ``depth_source`` replaces it (the test peer has no HTTPS API).

Settling a delivery whose lock was lost (lock expired, or this adapter was closed since) is
harmless, as the protocol says: the SDK's ``MessageLockLostError`` is logged and swallowed.
:meth:`close` closes renewer, receivers, senders, admin client, client and credential in that
order (the reverse of creation); in-flight locks are not settled and expire. The adapter opens
again lazily on the next call.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusReceiver,
    ServiceBusSender,
)
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    MessageSizeExceededError,
    ServiceBusError,
)

from parley.broker import DeadLetter, Message
from parley.errors import ConfigError
from parley.ids import MessageId
from parley.settings import Settings

log = structlog.get_logger(__name__)

PRIOR_ATTEMPTS = "parley-prior-attempts"
_DEAD_LETTER_PROPERTIES = frozenset({"DeadLetterReason", "DeadLetterErrorDescription"})
_HIDDEN = _DEAD_LETTER_PROPERTIES | {PRIOR_ATTEMPTS}
_MAX_REASON = 128
_MAX_DESCRIPTION = 4096


def _str(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


def properties_of(message: ServiceBusReceivedMessage) -> dict[str, str]:
    """All application properties as str -> str (the SDK hands bytes back for str values)."""
    return {_str(k): _str(v) for k, v in (message.application_properties or {}).items()}


def body_of(message: ServiceBusReceivedMessage) -> bytes:
    """The body bytes: data sections joined (a value body, sent by other tools, as UTF-8 text)."""
    body = message.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    try:
        return b"".join(bytes(part) for part in body)
    except TypeError:
        return str(body).encode()


def attempt_of(message: ServiceBusReceivedMessage, properties: Mapping[str, str]) -> int:
    """1 on the first delivery; counts the deliveries of a scheduled retry's original too."""
    prior = int(properties.get(PRIOR_ATTEMPTS, "0") or 0)
    return prior + (message.delivery_count or 0) + 1


def split_reason(reason: str) -> tuple[str, str]:
    """``"malformed: not JSON"`` -> (``"malformed"``, the whole text): Service Bus shows
    DeadLetterReason as a column, so it gets the short code; the description keeps everything."""
    code = reason.split(":", 1)[0].strip()[:_MAX_REASON] or "rejected"
    return code, reason[:_MAX_DESCRIPTION]


@dataclass(frozen=True)
class _Receipt:
    message: ServiceBusReceivedMessage
    receiver: ServiceBusReceiver


class ServiceBusBroker:
    """Work queues on Azure Service Bus. Build it with :meth:`from_settings` or directly.

    Exactly one of ``namespace`` (with ``credential``, default ``DefaultAzureCredential``) and
    ``connection_string`` is needed.
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        connection_string: str | None = None,
        credential: Any = None,
        max_hold_seconds: float = 10.0,
        max_lock_renewal_seconds: float = 3600.0,
        depth_source: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        if bool(namespace) == bool(connection_string):
            raise ConfigError(
                "Service Bus needs a namespace or a connection string, not both",
                hint="set PARLEY_SERVICEBUS_NAMESPACE (Entra ID) "
                "or PARLEY_SERVICEBUS_CONNECTION_STRING",
            )
        self._namespace = namespace
        self._connection_string = connection_string
        self._credential = credential
        self._owns_credential = False
        self._max_hold = max_hold_seconds
        self._max_renewal = max_lock_renewal_seconds
        self._depth_source = depth_source
        self._client: ServiceBusClient | None = None
        self._admin: ServiceBusAdministrationClient | None = None
        self._renewer: AutoLockRenewer | None = None
        self._senders: dict[str, ServiceBusSender] = {}
        self._receivers: dict[str, ServiceBusReceiver] = {}
        self._peekers: dict[str, ServiceBusReceiver] = {}  # for oldest_message_age only
        self._dead: dict[str, ServiceBusReceiver] = {}  # dead-letter queues (replay, purge)
        self._open_lock = asyncio.Lock()
        self._depth_failed: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ServiceBusBroker:
        secret = settings.servicebus_connection_string
        return cls(
            namespace=None if secret else settings.servicebus_namespace,
            connection_string=secret.get_secret_value() if secret else None,
            **options,
        )

    # --- handles (opened lazily, once) -----------------------------------------------------

    def _client_now(self) -> ServiceBusClient:
        if self._client is None:
            if self._connection_string:
                self._client = ServiceBusClient.from_connection_string(self._connection_string)
            else:
                if self._credential is None:
                    from azure.identity.aio import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
                    self._owns_credential = True
                self._client = ServiceBusClient(str(self._namespace), self._credential)
        return self._client

    def _renewer_now(self) -> AutoLockRenewer:
        if self._renewer is None:
            self._renewer = AutoLockRenewer(max_lock_renewal_duration=self._max_renewal)
        return self._renewer

    async def _sender(self, queue: str) -> ServiceBusSender:
        sender = self._senders.get(queue)
        if sender is None:
            async with self._open_lock:
                sender = self._senders.get(queue)
                if sender is None:
                    sender = self._client_now().get_queue_sender(queue)
                    self._senders[queue] = sender
        return sender

    async def _receiver(self, queue: str) -> ServiceBusReceiver:
        return await self._opened(
            self._receivers, queue,
            lambda: self._client_now().get_queue_receiver(
                queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=0
            ),
        )

    async def _opened(
        self,
        cache: dict[str, ServiceBusReceiver],
        queue: str,
        make: Callable[[], ServiceBusReceiver],
    ) -> ServiceBusReceiver:
        """The receiver of ``cache`` for ``queue``, made and opened once under the open lock:
        callers racing for it get the same receiver, never a second link."""
        receiver = cache.get(queue)
        if receiver is None:
            async with self._open_lock:
                receiver = cache.get(queue)
                if receiver is None:
                    receiver = make()
                    # Open now (connection, CBS, link: ~0.5 s of SDK pacing) so that the first
                    # receive's wait is spent waiting for messages, not opening.
                    await receiver.__aenter__()
                    cache[queue] = receiver
        return receiver

    # --- Broker ----------------------------------------------------------------------------

    async def publish(
        self, queue: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> MessageId:
        message = _outgoing(body, headers)
        await (await self._sender(queue)).send_messages(message)
        return MessageId(str(message.message_id))

    async def publish_many(
        self, queue: str, items: Sequence[tuple[bytes, Mapping[str, str]]]
    ) -> list[MessageId]:
        if not items:
            return []
        sender = await self._sender(queue)
        ids: list[MessageId] = []
        batch = await sender.create_message_batch()
        for body, headers in items:
            message = _outgoing(body, headers)
            try:
                batch.add_message(message)
            except MessageSizeExceededError:
                if len(batch) == 0:
                    raise  # one message larger than the entity allows
                await sender.send_messages(batch)
                batch = await sender.create_message_batch()
                batch.add_message(message)
            ids.append(MessageId(str(message.message_id)))
        await sender.send_messages(batch)
        return ids

    async def receive(self, queue: str, *, max_messages: int, wait: float) -> list[Message]:
        """Lock up to ``max_messages``. Cancelled mid-call, the receiver is closed, which
        releases whatever the SDK had already taken in, and is reopened on the next call."""
        receiver = await self._receiver(queue)
        try:
            received = await receiver.receive_messages(
                max_message_count=max_messages, max_wait_time=max(wait, 0.01)
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._drop_receiver(queue, receiver))
            raise
        renewer = self._renewer_now()
        out = []
        for sb in received:
            renewer.register(receiver, sb)
            properties = properties_of(sb)
            out.append(
                Message(
                    queue=queue,
                    id=MessageId(_str(sb.message_id or sb.sequence_number)),
                    body=body_of(sb),
                    headers={k: v for k, v in properties.items() if k not in _HIDDEN},
                    attempt=attempt_of(sb, properties),
                    receipt=_Receipt(sb, receiver),
                )
            )
        return out

    async def ack(self, message: Message) -> None:
        receipt = _receipt(message)
        await self._settle(message, lambda: receipt.receiver.complete_message(receipt.message))

    async def retry(self, message: Message, *, delay: float) -> None:
        """Abandon after ``delay`` (held under lock) or, beyond ``max_hold_seconds``, schedule a
        copy for later and complete this one. Cancelled while waiting, nothing is settled."""
        receipt = _receipt(message)
        if delay <= self._max_hold:
            if delay > 0:
                await asyncio.sleep(delay)
            await self._settle(message, lambda: receipt.receiver.abandon_message(receipt.message))
            return
        copy = _outgoing(
            message.body, {**message.headers, PRIOR_ATTEMPTS: str(message.attempt)}, message.id
        )
        due = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
        await (await self._sender(message.queue)).schedule_messages(copy, due)
        await self._settle(message, lambda: receipt.receiver.complete_message(receipt.message))

    async def dead_letter(self, message: Message, *, reason: str) -> None:
        receipt = _receipt(message)
        code, description = split_reason(reason)
        await self._settle(
            message,
            lambda: receipt.receiver.dead_letter_message(
                receipt.message, reason=code, error_description=description
            ),
        )

    async def _settle(self, message: Message, settle: Callable[[], Awaitable[None]]) -> None:
        try:
            await settle()
        except MessageLockLostError:
            log.info("servicebus.lock_lost", queue=message.queue, message_id=message.id)
        except MessageAlreadySettled:
            log.warning("servicebus.already_settled", queue=message.queue, message_id=message.id)
        except (ValueError, ServiceBusError) as exc:
            receiver = _receipt(message).receiver
            if receiver is self._receivers.get(message.queue):
                raise
            # Its receiver was closed (close() since): the lock is gone with it.
            log.info(
                "servicebus.receiver_closed", queue=message.queue, message_id=message.id,
                error=str(exc),
            )

    async def depth(self, queue: str) -> int:
        if self._depth_source is not None:
            return await self._depth_source(queue)
        try:
            if self._admin is None:
                if self._connection_string:
                    self._admin = ServiceBusAdministrationClient.from_connection_string(
                        self._connection_string
                    )
                else:
                    self._client_now()  # makes the credential
                    self._admin = ServiceBusAdministrationClient(
                        str(self._namespace), self._credential
                    )
            props = await self._admin.get_queue_runtime_properties(queue)
            return int(props.active_message_count or 0)
        except Exception as exc:  # any failure means "unknown"; the caller gets -1
            if queue not in self._depth_failed:
                self._depth_failed.add(queue)
                log.warning(
                    "servicebus.depth_unavailable",
                    queue=queue,
                    error=str(exc),
                    hint="depth needs Manage rights or the 'Azure Service Bus Data Owner' role",
                )
            return -1

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        async with self._client_now().get_queue_receiver(
            queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            peeked: list[ServiceBusReceivedMessage] = []
            next_seq = 1
            while len(peeked) < limit:
                page = await dlq.peek_messages(
                    max_message_count=limit - len(peeked), sequence_number=next_seq
                )
                if not page:
                    break
                peeked += page
                next_seq = int(page[-1].sequence_number or 0) + 1
        out = []
        for sb in peeked:
            properties = properties_of(sb)
            enqueued = sb.enqueued_time_utc
            out.append(
                DeadLetter(
                    queue=queue,
                    id=_str(sb.message_id or sb.sequence_number),
                    body=body_of(sb),
                    headers={k: v for k, v in properties.items() if k not in _HIDDEN},
                    reason=sb.dead_letter_error_description or sb.dead_letter_reason or "",
                    # A peeked message's delivery count is the deliveries so far (not - 1).
                    attempt=int(properties.get(PRIOR_ATTEMPTS, "0") or 0)
                    + max(sb.delivery_count or 0, 1),
                    failed_at=enqueued.timestamp() if enqueued else time.time(),
                )
            )
        return out

    async def oldest_message_age(self, queue: str) -> float | None:
        """Peeks the first active message (waiting or locked) on a receiver of its own, so a
        scrape never disturbs the consumer's link."""
        peeker = await self._opened(
            self._peekers, queue,
            lambda: self._client_now().get_queue_receiver(queue, prefetch_count=0),
        )
        page = await peeker.peek_messages(max_message_count=1, sequence_number=1)
        if not page or page[0].enqueued_time_utc is None:
            return None
        return max(0.0, time.time() - page[0].enqueued_time_utc.timestamp())

    async def replay_dead_letter(self, queue: str, dead_letter_id: str) -> bool:
        """Receives the dead-letter queue under lock until the message turns up, sends a copy
        (new message id, attempts afresh) to ``queue``, then completes the dead letter; the
        others are abandoned at the end (they stay dead letters). A crash between send and
        complete leaves both: at-least-once, as everywhere."""
        found = False
        dlq = await self._dead_receiver(queue)
        skipped: list[ServiceBusReceivedMessage] = []
        try:
            while not found:
                page = await dlq.receive_messages(max_message_count=50, max_wait_time=0.5)
                if not page:
                    break
                for sb in page:
                    if found or _str(sb.message_id or sb.sequence_number) != dead_letter_id:
                        skipped.append(sb)
                        continue
                    await (await self._sender(queue)).send_messages(_revived(sb))
                    await dlq.complete_message(sb)
                    found = True
        finally:
            for sb in skipped:
                await _quietly(dlq.abandon_message(sb))
        return found

    async def purge_dead_letters(self, queue: str) -> int:
        removed = 0
        dlq = await self._dead_receiver(queue)
        while True:
            page = await dlq.receive_messages(max_message_count=100, max_wait_time=0.5)
            if not page:
                return removed
            for sb in page:
                await dlq.complete_message(sb)
                removed += 1

    async def _dead_receiver(self, queue: str) -> ServiceBusReceiver:
        """A peek-lock receiver on ``<queue>/$DeadLetterQueue``, opened once and kept."""
        return await self._opened(
            self._dead, queue,
            lambda: self._client_now().get_queue_receiver(
                queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, prefetch_count=0
            ),
        )

    async def close(self) -> None:
        renewer, self._renewer = self._renewer, None
        receivers, self._receivers = list(self._receivers.values()), {}
        receivers += [*self._peekers.values(), *self._dead.values()]
        self._peekers, self._dead = {}, {}
        senders, self._senders = list(self._senders.values()), {}
        admin, self._admin = self._admin, None
        client, self._client = self._client, None
        credential = self._credential if self._owns_credential else None
        if self._owns_credential:
            self._credential, self._owns_credential = None, False
        if renewer is not None:
            await renewer.close()  # up to 1 s: its tasks poll once a second
        # Links are independent of each other: close them together (each close waits up to
        # 1 s for the SDK's keep-alive task), receivers before senders.
        await asyncio.gather(*(_quietly(r.close()) for r in reversed(receivers)))
        await asyncio.gather(*(_quietly(s.close()) for s in reversed(senders)))
        if admin is not None:
            await _quietly(admin.close())
        if client is not None:
            await _quietly(client.close())
        if credential is not None:
            await _quietly(credential.close())

    async def _drop_receiver(self, queue: str, receiver: ServiceBusReceiver) -> None:
        if self._receivers.get(queue) is receiver:
            del self._receivers[queue]
        await _quietly(receiver.close())


def _outgoing(
    body: bytes, headers: Mapping[str, str] | None, message_id: str | None = None
) -> ServiceBusMessage:
    return ServiceBusMessage(
        body,
        message_id=message_id or uuid.uuid4().hex,
        application_properties={k: str(v) for k, v in (headers or {}).items()} or None,
    )


def _revived(dead: ServiceBusReceivedMessage) -> ServiceBusMessage:
    """A dead letter as a new message: same body and headers, no dead-letter properties and no
    prior attempts (a replay starts counting again)."""
    headers = {k: v for k, v in properties_of(dead).items() if k not in _HIDDEN}
    return _outgoing(body_of(dead), headers)


def _receipt(message: Message) -> _Receipt:
    if not isinstance(message.receipt, _Receipt):
        raise TypeError("this message was not received from a ServiceBusBroker")
    return message.receipt


async def _quietly(closing: Awaitable[Any]) -> None:
    try:
        await closing
    except Exception as exc:  # closing a broken link must not stop closing the rest
        log.info("servicebus.close_failed", error=str(exc))
