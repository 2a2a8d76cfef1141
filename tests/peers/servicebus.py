"""An AMQP 1.0 stand-in for Azure Service Bus queues, driven by the real ``azure-servicebus`` SDK.

The official emulator needs Docker, which these machines don't run. This peer speaks the part of
the Service Bus AMQP dialect that the SDK uses for queues, on plain TCP (the SDK keeps the port
and drops TLS when the connection string says ``UseDevelopmentEmulator=true``):

* SASL ANONYMOUS, then a ``$cbs`` ``put-token`` request answered ``status-code`` 202 (any token
  is accepted: authorisation is not modelled);
* sender links to ``<queue>``: single messages and SDK batches (message format 0x80013700, one
  data section per encoded message), each stored with a sequence number and enqueued time;
* receiver links in peek-lock (rcv-settle-mode second): the delivery tag is the lock token
  (``uuid.bytes_le``), ``x-opt-sequence-number``, ``x-opt-enqueued-time`` and
  ``x-opt-locked-until`` are message annotations, the header's delivery-count is the number of
  earlier deliveries (so the SDK's ``delivery_count`` is 0 on the first one);
* settlement answered the way rcv-settle-mode second needs: accepted (complete), modified
  (abandon: redelivered, delivery count kept), rejected with ``com.microsoft:dead-letter`` and
  ``DeadLetterReason``/``DeadLetterErrorDescription`` (moved to ``<queue>/$DeadLetterQueue`` with
  those application properties), released (back without counting a delivery); a settlement of a
  lock the peer no longer holds is answered rejected with ``com.microsoft:message-lock-lost``;
* lock expiry: an unsettled message whose lock ran out is available again, and after
  ``max_delivery_count`` deliveries it is dead-lettered with ``MaxDeliveryCountExceeded``;
* ``<entity>/$management`` request/response: ``renew-lock``, ``peek-message`` and
  ``update-disposition``; every other operation is answered 501 ``amqp:not-implemented``.

Not modelled: sessions, scheduling, deferral, topics, duplicate detection, TTL expiry,
authorisation, the HTTPS management (ATOM) API. The SDK's batch format code is not visible through
python-qpid-proton, so a message is taken for a batch when every body section is a data section
that is itself an encoded AMQP message (the SDK never sends such a single message for us).

The peer runs its own proton reactor in a daemon thread on a random localhost port. Its state is
only touched on that thread; the test-facing methods either read counters under a lock or run a
command on the reactor thread and wait for it.
"""

from __future__ import annotations

import concurrent.futures
import queue as queue_mod
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from proton import (
    UNDESCRIBED,
    Array,
    Condition,
    Data,
    Delivery,
    Described,
    Endpoint,
    Handler,
    Link,
    Message,
    symbol,
    timestamp,
    uint,
    ulong,
)
from proton.reactor import ApplicationEvent, Container, EventInjector

T = TypeVar("T")
_Command = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]

CBS_NODE = "$cbs"
DLQ_SUFFIX = "/$DeadLetterQueue"
MGMT_SUFFIX = "/$management"
DEAD_LETTER_CONDITION = "com.microsoft:dead-letter"
LOCK_LOST = "com.microsoft:message-lock-lost"
_DATA_SECTION = 0x75
_TICK_SECONDS = 0.05
_UNDESCRIBED: Any = UNDESCRIBED


@dataclass
class _Entry:
    """One stored message. ``raw`` is the message exactly as the client encoded it."""

    seq: int
    raw: bytes
    enqueued_ms: int
    deliveries: int = 0
    added_properties: dict[str, str] = field(default_factory=dict)


@dataclass
class _Lock:
    token: uuid.UUID
    entry: _Entry
    until: float


@dataclass
class _Entity:
    name: str
    available: dict[int, _Entry] = field(default_factory=dict)
    locks: dict[uuid.UUID, _Lock] = field(default_factory=dict)
    receivers: list[Link] = field(default_factory=list)
    scheduled: dict[int, tuple[float, _Entry]] = field(default_factory=dict)
    next_seq: int = 1
    completed: int = 0


@dataclass(frozen=True)
class PeerMessage:
    """A test's view of one stored message."""

    seq: int
    body: bytes
    application_properties: dict[str, Any]
    deliveries: int
    locked: bool


def entity_of(address: str | None) -> str:
    """The entity path of a link address (``amqps://host:port/q/$DeadLetterQueue`` ->
    ``q/$DeadLetterQueue``)."""
    if not address:
        return ""
    parsed = urlparse(address)
    path = parsed.path if parsed.scheme else address
    return path.strip("/")


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return str(value)


def _sections(raw: bytes) -> Iterator[Any]:
    """The top-level AMQP values (message sections) of an encoded message, in order."""
    view = memoryview(raw)
    while len(view):
        data = Data()
        used = data.decode(bytes(view))
        if used <= 0:
            raise ValueError("undecodable AMQP section")
        data.rewind()
        data.next()
        yield _owned(data.get_object())
        view = view[used:]


def _code(section: Any) -> int:
    """The numeric descriptor of a message section (0x70 header ... 0x75 data ...)."""
    return int(section.descriptor)


def _owned(value: Any) -> Any:
    """``value`` with every binary copied out of proton's buffer (a memoryview dies with it)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Described):
        return Described(value.descriptor, _owned(value.value))
    if isinstance(value, dict):
        return type(value)((_owned(k), _owned(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_owned(v) for v in value]
    return value


def split_batch(raw: bytes) -> list[bytes] | None:
    """The encoded messages inside an SDK batch, or None when ``raw`` is a single message."""
    inner: list[bytes] = []
    try:
        for section in _sections(raw):
            if not isinstance(section, Described):
                return None
            value: Any = section.value
            if _code(section) == _DATA_SECTION:
                inner.append(bytes(value))
    except (ValueError, TypeError):
        return None
    if not inner:
        return None
    for candidate in inner:
        try:
            parsed = list(_sections(candidate))
        except Exception:
            return None
        if not parsed or not all(isinstance(s, Described) for s in parsed):
            return None
    return inner


def _render(entry: _Entry, *, delivery_count: int, locked_until: float | None) -> bytes:
    """The stored message as Service Bus hands it out: a header carrying the delivery count
    (always present, even when 0), the broker's annotations and any properties it added."""
    sections: dict[int, Any] = {}
    body: list[Any] = []
    for section in _sections(entry.raw):
        code = _code(section)
        if code in (0x75, 0x76, 0x77):
            body.append(section)
        else:
            sections[code] = section.value
    header = list(sections.get(0x70) or [])
    header += [None] * (5 - len(header))
    header[3] = delivery_count == 0  # first-acquirer
    header[4] = uint(delivery_count)
    sections[0x70] = header[:5]
    annotations = dict(sections.get(0x72) or {})
    annotations[symbol("x-opt-sequence-number")] = entry.seq
    annotations[symbol("x-opt-enqueued-time")] = timestamp(entry.enqueued_ms)
    if locked_until is not None:
        annotations[symbol("x-opt-locked-until")] = timestamp(int(locked_until * 1000))
    sections[0x72] = annotations
    if entry.added_properties:
        sections[0x74] = {**(sections.get(0x74) or {}), **entry.added_properties}
    out = Data()
    for code in (0x70, 0x71, 0x72, 0x73, 0x74):
        if code in sections:
            out.put_object(Described(ulong(code), sections[code]))
    for section in body:
        out.put_object(section)
    if 0x78 in sections:
        out.put_object(Described(ulong(0x78), sections[0x78]))
    return bytes(out.encode())


class _Broker(Handler):
    """The reactor-thread half: every method runs on the proton thread."""

    def __init__(self, peer: ServiceBusPeer) -> None:
        super().__init__()
        self.peer = peer
        self.entities: dict[str, _Entity] = {}
        # delivery -> (entity, lock token) for every unsettled delivery on an entity link
        self.outstanding: dict[Delivery, tuple[_Entity, uuid.UUID]] = {}
        self.acceptor: Any = None
        self.container: Any = None

    # --- lifecycle ---------------------------------------------------------------------

    def on_reactor_init(self, event: Any) -> None:
        self.container = event.container
        self.acceptor = event.container.acceptor("127.0.0.1", 0)
        self.peer.port = self.acceptor._selectable._delegate.getsockname()[1]
        event.container.schedule(_TICK_SECONDS, self)
        self.peer._ready.set()

    def on_timer_task(self, event: Any) -> None:
        if self.peer._stopping:
            return
        self.sweep(time.time())
        event.container.schedule(_TICK_SECONDS, self)

    def on_peer_command(self, event: Any) -> None:
        while True:
            try:
                fn, future = self.peer._commands.get_nowait()
            except queue_mod.Empty:
                break
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
        self.dispatch_all()

    def on_peer_stop(self, event: Any) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        self.peer._injector.close()
        for conn in list(self.peer._connections):
            conn.close()
        self.container.stop()

    # --- endpoints ---------------------------------------------------------------------

    def on_connection_bound(self, event: Any) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS PLAIN")
        sasl.allow_insecure_mechs = True
        self.peer._connections.add(event.connection)

    def on_connection_remote_open(self, event: Any) -> None:
        self.peer.sasl_mechanisms.append(event.transport.sasl().mech if event.transport else "")
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.container = "parley-servicebus-peer"
            event.connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.max_message_size = self.peer.max_message_size
        link.open()
        if link.is_receiver:
            link.flow(100)
            return
        address = entity_of(link.remote_source.address)
        if address != CBS_NODE and not address.endswith(MGMT_SUFFIX):
            self.entity(address).receivers.append(link)

    def on_link_remote_close(self, event: Any) -> None:
        self.forget(event.link)
        event.link.close()

    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    def on_connection_remote_close(self, event: Any) -> None:
        event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        conn = event.connection
        if conn is None:
            return
        self.peer._connections.discard(conn)
        for entity in self.entities.values():
            entity.receivers = [r for r in entity.receivers if r.connection != conn]
        # A vanished client's locks stay until they expire, as on Service Bus.
        for delivery in [d for d in self.outstanding if d.link.connection == conn]:
            del self.outstanding[delivery]

    def forget(self, link: Link) -> None:
        for entity in self.entities.values():
            if link in entity.receivers:
                entity.receivers.remove(link)
        for delivery in [d for d in self.outstanding if d.link == link]:
            del self.outstanding[delivery]

    def on_link_flow(self, event: Any) -> None:
        if event.link.is_sender:
            self.dispatch_all()

    # --- deliveries --------------------------------------------------------------------

    def on_delivery(self, event: Any) -> None:
        delivery, link = event.delivery, event.link
        if link.is_receiver:
            self.incoming(link, delivery)
        else:
            self.outcome(delivery)
        self.dispatch_all()

    def incoming(self, link: Link, delivery: Delivery) -> None:
        if not delivery.readable or delivery.partial:
            return
        raw = bytes(link.recv(delivery.pending))
        link.advance()
        target = entity_of(link.remote_target.address)
        if target == CBS_NODE:
            self.peer.tokens_put += 1
            request = Message()
            request.decode(raw)
            self.reply(link, request, {"status-code": 202, "status-description": "Accepted"}, None)
        elif target.endswith(MGMT_SUFFIX):
            request = Message()
            request.decode(raw)
            status, body = self.management(target[: -len(MGMT_SUFFIX)], request)
            self.reply(link, request, status, body)
        else:
            self.peer.transfers += 1
            self.enqueue(target, raw)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < 50:
            link.flow(100 - link.credit)

    def reply(
        self, request_link: Link, request: Message, status: dict[str, Any], body: Any
    ) -> None:
        node = entity_of(request_link.remote_target.address)
        response_link = None
        candidate = request_link.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while candidate is not None:
            if candidate.is_sender and entity_of(candidate.remote_source.address) == node:
                response_link = candidate
                break
            candidate = candidate.next(Endpoint.LOCAL_ACTIVE)
        if response_link is None:
            return
        response = Message(correlation_id=request.id, properties=status, body=body)
        response.inferred = False
        tag: Any = uuid.uuid4().bytes
        delivery = response_link.delivery(tag)
        response_link.send(response.encode())
        response_link.advance()
        if response_link.snd_settle_mode == Link.SND_SETTLED:
            delivery.settle()

    def enqueue(self, address: str, raw: bytes) -> None:
        entity = self.entity(address)
        now_ms = int(time.time() * 1000)
        for one in split_batch(raw) or [raw]:
            entry = _Entry(seq=entity.next_seq, raw=one, enqueued_ms=now_ms)
            entity.next_seq += 1
            entity.available[entry.seq] = entry
        self.peer._publish_counts(self.entities)

    def dispatch_all(self) -> None:
        for entity in list(self.entities.values()):
            self.dispatch(entity)
        self.peer._publish_counts(self.entities)

    def dispatch(self, entity: _Entity) -> None:
        while entity.available:
            link = next(
                (r for r in entity.receivers if r.credit > 0 and r.state & Endpoint.LOCAL_ACTIVE),
                None,
            )
            if link is None:
                return
            # Round robin: the link that just got a message goes to the back.
            entity.receivers.remove(link)
            entity.receivers.append(link)
            entry = entity.available.pop(min(entity.available))
            entry.deliveries += 1
            token = uuid.uuid4()
            until = time.time() + self.peer.lock_duration_of(entity.name)
            entity.locks[token] = _Lock(token, entry, until)
            tag: Any = token.bytes_le  # the SDK reads the lock token from the tag
            delivery = link.delivery(tag)
            link.send(_render(entry, delivery_count=entry.deliveries - 1, locked_until=until))
            link.advance()
            self.outstanding[delivery] = (entity, token)

    def outcome(self, delivery: Delivery) -> None:
        """The client settled (or answered) one of our deliveries."""
        if not delivery.updated and not delivery.settled:
            return
        found = self.outstanding.pop(delivery, None)
        if found is None:  # a management/CBS response, or already handled
            delivery.settle()
            return
        entity, token = found
        state = delivery.remote_state
        lock = entity.locks.get(token)
        if lock is None or lock.until <= time.time():
            if lock is not None:
                self.sweep(time.time())
            if state == Delivery.RELEASED:
                delivery.settle()
            else:
                self.answer(delivery, Delivery.REJECTED, Condition(LOCK_LOST, "The lock was lost."))
            return
        remote = delivery.remote
        if state == Delivery.ACCEPTED:
            self.complete(entity, token)
            self.answer(delivery, Delivery.ACCEPTED)
        elif state == Delivery.MODIFIED and remote.undeliverable:
            entity.locks[token] = lock  # deferral is not modelled
            self.answer(delivery, Delivery.REJECTED, Condition("amqp:not-implemented", "defer"))
        elif state == Delivery.MODIFIED:
            self.abandon(entity, token)
            self.answer(delivery, Delivery.MODIFIED)
        elif state == Delivery.REJECTED:
            condition = remote.condition
            raw_info: Any = (condition.info if condition else None) or {}
            info = {_text(k): _text(v) for k, v in raw_info.items()}
            self.dead_letter(
                entity,
                token,
                reason=info.get("DeadLetterReason", ""),
                description=info.get("DeadLetterErrorDescription", ""),
            )
            self.answer(delivery, Delivery.REJECTED)
        elif state == Delivery.RELEASED:
            entry = entity.locks.pop(token).entry
            entry.deliveries -= 1
            self.make_available(entity, entry)
            delivery.settle()

    @staticmethod
    def answer(delivery: Delivery, state: Any, condition: Condition | None = None) -> None:
        if delivery.settled:
            delivery.settle()
            return
        if condition is not None:
            delivery.local.condition = condition
        if state == Delivery.MODIFIED:
            delivery.local.failed = True
        delivery.update(state)
        delivery.settle()

    # --- queue semantics ---------------------------------------------------------------

    def entity(self, address: str) -> _Entity:
        key = address.lower()
        if key not in self.entities:
            self.entities[key] = _Entity(address)
        return self.entities[key]

    def complete(self, entity: _Entity, token: uuid.UUID) -> None:
        entity.locks.pop(token)
        entity.completed += 1

    def abandon(self, entity: _Entity, token: uuid.UUID) -> None:
        self.make_available(entity, entity.locks.pop(token).entry)

    def dead_letter(
        self, entity: _Entity, token: uuid.UUID, *, reason: str, description: str
    ) -> None:
        self.move_to_dlq(entity, entity.locks.pop(token).entry, reason, description)

    def move_to_dlq(self, entity: _Entity, entry: _Entry, reason: str, description: str) -> None:
        entry.added_properties = {
            "DeadLetterReason": reason,
            "DeadLetterErrorDescription": description,
        }
        self.entity(entity.name + DLQ_SUFFIX).available[entry.seq] = entry

    def make_available(self, entity: _Entity, entry: _Entry) -> None:
        exhausted = entry.deliveries >= self.peer.max_delivery_count
        if exhausted and not entity.name.endswith(DLQ_SUFFIX):
            self.move_to_dlq(
                entity,
                entry,
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {entry.deliveries} delivery attempts.",
            )
        else:
            entity.available[entry.seq] = entry

    def sweep(self, now: float) -> None:
        """Locks that ran out give their message back (the delivery count already says so);
        scheduled messages that are due become active."""
        for entity in list(self.entities.values()):
            for seq, (due, entry) in list(entity.scheduled.items()):
                if due <= now:
                    del entity.scheduled[seq]
                    entity.available[seq] = entry
            for token, lock in list(entity.locks.items()):
                if lock.until <= now:
                    del entity.locks[token]
                    self.make_available(entity, lock.entry)
        self.dispatch_all()

    # --- $management ---------------------------------------------------------------------

    def management(self, address: str, request: Message) -> tuple[dict[str, Any], Any]:
        entity = self.entity(address)
        properties: dict[Any, Any] = request.properties or {}
        operation = _text(properties.get("operation", ""))
        body = request.body if isinstance(request.body, dict) else {}
        args = {_text(k): v for k, v in body.items()}
        if operation == "com.microsoft:renew-lock":
            return self.renew(entity, self.tokens(args))
        if operation == "com.microsoft:peek-message":
            start, count = args.get("from-sequence-number", 1), args.get("message-count", 1)
            return self.peek(entity, int(start), int(count))
        if operation == "com.microsoft:update-disposition":
            return self.update_disposition(entity, args)
        if operation == "com.microsoft:schedule-message":
            return self.schedule(entity, args)
        return _not_implemented(f"{operation} is not implemented by the test peer")

    @staticmethod
    def tokens(args: dict[str, Any]) -> list[uuid.UUID]:
        raw = args.get("lock-tokens")
        values = raw.elements if isinstance(raw, Array) else list(raw or [])
        return [v if isinstance(v, uuid.UUID) else uuid.UUID(_text(v)) for v in values]

    def renew(self, entity: _Entity, tokens: list[uuid.UUID]) -> tuple[dict[str, Any], Any]:
        now = time.time()
        locks = [entity.locks.get(t) for t in tokens]
        if any(lock is None or lock.until <= now for lock in locks):
            return _status(410, "The lock supplied is invalid.", LOCK_LOST), None
        expirations = []
        for lock in locks:
            assert lock is not None
            lock.until = now + self.peer.lock_duration_of(entity.name)
            expirations.append(timestamp(int(lock.until * 1000)))
        self.peer.renewals += len(locks)
        body = {"expirations": Array(_UNDESCRIBED, Data.TIMESTAMP, *expirations)}
        return _status(200, "OK"), body

    def peek(self, entity: _Entity, start: int, count: int) -> tuple[dict[str, Any], Any]:
        locked = {lock.entry.seq: lock for lock in entity.locks.values()}
        entries = {**entity.available, **{seq: lock.entry for seq, lock in locked.items()}}
        chosen = sorted(seq for seq in entries if seq >= start)[:count]
        if not chosen:
            return _status(204, "No messages"), None
        rendered = [
            {
                "message": _render(
                    entries[seq],
                    delivery_count=entries[seq].deliveries,
                    locked_until=locked[seq].until if seq in locked else None,
                )
            }
            for seq in chosen
        ]
        return _status(200, "OK"), {"messages": rendered}

    def schedule(self, entity: _Entity, args: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Scheduled messages get their sequence number now and become active when due."""
        numbers = []
        for item in args.get("messages") or []:
            fields = {_text(k): v for k, v in item.items()}
            raw = bytes(fields["message"])
            due = time.time()
            for section in _sections(raw):
                if _code(section) == 0x72:
                    annotations = {_text(k): v for k, v in (section.value or {}).items()}
                    due = int(annotations.get("x-opt-scheduled-enqueue-time", due * 1000)) / 1000
            entry = _Entry(seq=entity.next_seq, raw=raw, enqueued_ms=int(due * 1000))
            entity.next_seq += 1
            entity.scheduled[entry.seq] = (due, entry)
            numbers.append(entry.seq)
        return _status(200, "OK"), {"sequence-numbers": Array(_UNDESCRIBED, Data.LONG, *numbers)}

    def update_disposition(
        self, entity: _Entity, args: dict[str, Any]
    ) -> tuple[dict[str, Any], Any]:
        status = _text(args.get("disposition-status", ""))
        tokens = self.tokens(args)
        now = time.time()
        if any(t not in entity.locks or entity.locks[t].until <= now for t in tokens):
            return _status(410, "The lock supplied is invalid.", LOCK_LOST), None
        for token in tokens:
            if status == "completed":
                self.complete(entity, token)
            elif status == "abandoned":
                self.abandon(entity, token)
            elif status == "suspended":
                self.dead_letter(
                    entity,
                    token,
                    reason=_text(args.get("deadletter-reason", "")),
                    description=_text(args.get("deadletter-description", "")),
                )
            else:
                return _not_implemented(f"disposition {status} is not implemented")
        return _status(200, "OK"), {}


def _not_implemented(description: str) -> tuple[dict[str, Any], Any]:
    return _status(501, description, "amqp:not-implemented"), None


def _body_bytes(body: Any) -> bytes:
    return bytes(body) if isinstance(body, bytes | memoryview) else str(body).encode()


def _status(code: int, description: str, condition: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"statusCode": code, "statusDescription": description}
    if condition:
        status["errorCondition"] = symbol(condition)
    return status


class ServiceBusPeer:
    """The test-facing half. Start it, hand :attr:`connection_string` to the SDK, inspect it.

    ``lock_duration`` is the queues' LockDuration in seconds, or a function of the queue name;
    ``max_delivery_count`` the queues' MaxDeliveryCount (Service Bus defaults: 60 s and 10).
    Queues are created on first use.
    """

    def __init__(
        self,
        *,
        lock_duration: float | Callable[[str], float] = 30.0,
        max_delivery_count: int = 10,
        max_message_size: int = 256 * 1024,
    ) -> None:
        self.lock_duration = lock_duration
        self.max_delivery_count = max_delivery_count
        self.max_message_size = max_message_size
        self.port = 0
        self.tokens_put = 0  # $cbs put-token requests answered
        self.renewals = 0  # locks renewed over $management
        self.transfers = 0  # transfers received on queue links (a batch is one)
        self.sasl_mechanisms: list[str] = []  # the mechanism each connection authenticated with
        self._ready = threading.Event()
        self._stopping = False
        self._commands: queue_mod.Queue[_Command] = queue_mod.Queue()
        self._injector = EventInjector()
        self._connections: set[Any] = set()
        self._counts_lock = threading.Lock()
        self._counts: dict[str, tuple[int, int, int]] = {}
        self._broker = _Broker(self)
        self._container = Container(self._broker)
        self._container.selectable(self._injector)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="servicebus-peer", daemon=True)

    def _run(self) -> None:
        try:
            self._container.run()
        except BaseException as exc:  # a bug in the peer: surfaced by stop()
            self.error = exc
            raise

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> ServiceBusPeer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Service Bus test peer did not start")
        return self

    def stop(self) -> None:
        """Close every connection and the listener; the SDK sees the connection drop.
        Raises if the reactor thread died of an error while running."""
        if self._thread.is_alive():
            self._stopping = True
            self._injector.trigger(ApplicationEvent("peer_stop"))
            self._thread.join(10)
        if self.error is not None:
            raise RuntimeError("the Service Bus test peer crashed") from self.error

    def __enter__(self) -> ServiceBusPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lock_duration_of(self, entity: str) -> float:
        queue = entity.split("/", 1)[0]
        return self.lock_duration(queue) if callable(self.lock_duration) else self.lock_duration

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port}/;SharedAccessKeyName=k;"
            "SharedAccessKey=x;UseDevelopmentEmulator=true"
        )

    # --- inspection (any thread) -------------------------------------------------------

    def depth(self, queue: str) -> int:
        """Active messages (available + locked): what Service Bus reports as ActiveMessageCount."""
        with self._counts_lock:
            available, locked, _ = self._counts.get(queue.lower(), (0, 0, 0))
        return available + locked

    def locked(self, queue: str) -> int:
        with self._counts_lock:
            return self._counts.get(queue.lower(), (0, 0, 0))[1]

    def dead_letter_count(self, queue: str) -> int:
        return self.depth(queue + DLQ_SUFFIX)

    def completed(self, queue: str) -> int:
        with self._counts_lock:
            return self._counts.get(queue.lower(), (0, 0, 0))[2]

    def messages(self, queue: str) -> list[PeerMessage]:
        """Every active message of ``queue`` (or ``queue/$DeadLetterQueue``), by sequence number."""

        def snapshot() -> list[PeerMessage]:
            entity = self._broker.entity(queue)
            locked = {lock.entry.seq: lock.entry for lock in entity.locks.values()}
            entries = {**entity.available, **locked}
            out = []
            for seq in sorted(entries):
                msg = Message()
                msg.decode(entries[seq].raw)
                body = msg.body
                out.append(
                    PeerMessage(
                        seq=seq,
                        body=_body_bytes(body),
                        application_properties={
                            **(msg.properties or {}),
                            **entries[seq].added_properties,
                        },
                        deliveries=entries[seq].deliveries,
                        locked=seq in locked,
                    )
                )
            return out

        return self._call(snapshot)

    def receiver_links(self, entity: str) -> int:
        """Receiver links the clients hold open on ``entity`` (``q`` or ``q/$DeadLetterQueue``)."""
        return self._call(lambda: len(self._broker.entity(entity).receivers))

    # --- interventions (any thread) ------------------------------------------------------

    def expire_locks(self, queue: str) -> int:
        """Make the broker lose every lock on ``queue`` now, as if LockDuration had passed,
        while the clients still believe their locks valid. Returns how many were lost."""

        def expire() -> int:
            entity = self._broker.entity(queue)
            now = time.time()
            for lock in entity.locks.values():
                lock.until = now
            lost = len(entity.locks)
            self._broker.sweep(now)
            return lost

        return self._call(expire)

    def _call(self, fn: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._commands.put((fn, future))
        self._injector.trigger(ApplicationEvent("peer_command"))
        return future.result(timeout=10)

    def _publish_counts(self, entities: dict[str, _Entity]) -> None:
        with self._counts_lock:
            self._counts = {
                key: (len(e.available), len(e.locks), e.completed) for key, e in entities.items()
            }
