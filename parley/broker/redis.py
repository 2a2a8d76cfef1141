"""Redis Streams adapter of :class:`parley.broker.Broker`.

Layout per logical queue ``q`` (keys under the settings' prefix ``p``):

- ``p:q:<q>``: the stream; one consumer group ``workers``; entries are deleted once settled,
  so ``XLEN`` is the backlog (waiting + leased) that KEDA's ``streamLength`` trigger sees;
- ``p:q:<q>:delayed``: a sorted set of retries due at a time; each a hash ``p:q:<q>:delayed:<id>``
  moved back into the stream (atomically, by Lua) by a receive once due (looked for: ``CHORES``);
- ``p:q:<q>:dead``: the dead letters: a stream with the body, headers, reason and attempt count.

Other systems post with ``XADD p:q:<q> * body '<json>'`` (optional ``h:<name>`` header fields).

Leases: an entry read by a consumer stays pending until settled. While this process holds it, a
background task refreshes its idle time (``XCLAIM ... JUSTID``) every third of the lease, so a long
handler keeps its message; when the process dies the refresh stops and, after ``lease_seconds``
idle, any consumer reclaims it with ``XAUTOCLAIM`` and sees ``attempt`` increased.

Liveness: a broker that receives keeps a heartbeat, ``p:worker:<consumer>:alive`` (3 s expiry,
renewed every second by the same background task), and names itself in ``p:q:<q>:consumers``.
A receiving consumer looks (at most once a second) at the group's other consumers that hold
messages: one that is named there but whose heartbeat has lapsed for ``DEAD_GRACE`` seconds is
dead, and its messages are taken at once (``XCLAIM``) whatever the lease says, so a killed
worker's messages wait seconds, not ``lease_seconds``. A slow handler in a live process is never
taken from: its heartbeat goes on. A consumer without the heartbeat (an older version during a
rolling upgrade) is never declared dead: its messages wait for the lease as before. A dead
consumer that holds nothing more is removed from the group and the set.

Successors: the consumer name is unique per process unless given (``PARLEY_CONSUMER_NAME``: a
supervisor gives a dead process's name to the one it starts in its place). A broker with a given
name first takes the entries still pending to that name (atomically, attempt increased), so its
predecessor's messages wait for it to start, not for the heartbeat to lapse. The heartbeat holds
a per-process token: a beat finding another's (two live processes given one name) logs
``consumer_name_shared`` and goes on under a unique name, taking its held messages along.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from parley import lua
from parley.broker import DeadLetter, Message
from parley.ids import MessageId
from parley.keys import Keys

GROUP = "workers"
_BODY = b"body"
_ATTEMPTS = b"a"  # deliveries that happened before this entry (it is a retry's copy)
_HEADER = b"h:"
ALIVE_TTL = 3.0  # seconds a heartbeat lives unrenewed
BEAT_INTERVAL = 1.0  # seconds between heartbeats, and between looks for dead consumers
CHORES = 0.1  # seconds between a queue's looks for due retries and lapsed leases
# A lapsed heartbeat must stay lapsed this long before its consumer's messages are taken: a live
# consumer that lost Redis for a moment (a restart, a failover) beats again within a second of
# reaching it, and must not lose its messages to one that reconnected first.
DEAD_GRACE = 2.0

log = structlog.get_logger(__name__)

# Moves due delayed retries into the stream. KEYS: zset, stream; ARGV: now, prefix of hash keys.
_PROMOTE = lua.script(__package__, "redis_promote.lua")


# Claims the entries still pending to this consumer's name that this process does not hold (its
# predecessor's), atomically. KEYS: stream; ARGV: group, consumer, count, held ids...
_TAKE_OWN = lua.script(__package__, "redis_take_own.lua")

# Moves one dead letter back into the stream, atomically (two replays of one id add it once).
# KEYS: dead stream, stream; ARGV: dead letter id. Returns 1 if moved, 0 if not there.
_REPLAY = lua.script(__package__, "redis_replay.lua")


def _fields(
    body: bytes, headers: Mapping[str, str] | None, attempts: int = 0
) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {_BODY: body}
    if attempts:
        fields[_ATTEMPTS] = str(attempts).encode()
    for name, value in (headers or {}).items():
        fields[_HEADER + name.encode()] = value.encode()
    return fields


def _headers(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {
        k[len(_HEADER) :].decode(): v.decode(errors="replace")
        for k, v in fields.items()
        if k.startswith(_HEADER)
    }


def _unique_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """An entry's fields as Lua hands them back: name, value, name, value..."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _no_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)  # anywhere: Redis 6 wraps a script's error in its own


class RedisBroker:
    """Work queues on Redis Streams. ``client`` must be created with ``decode_responses=False``;
    the broker does not close it (its owner does)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "parley",
        lease_seconds: Mapping[str, float] | None = None,
        default_lease: float = 60.0,
        consumer: str | None = None,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._leases = dict(lease_seconds or {})
        self._default_lease = default_lease
        self.consumer = consumer or _unique_name()
        self._given_name = consumer is not None
        # The heartbeat's value: tells this process from another one given the same name.
        self._token = uuid.uuid4().hex.encode()
        self._beaten = False
        self._renamed = False
        # Queues where a predecessor of a given name may have left entries pending to it.
        self._inherited: set[str] = set()
        self._groups: set[str] = set()
        self._held: dict[str, set[bytes]] = {}
        self._promote = self._redis.register_script(_PROMOTE)
        self._replay = self._redis.register_script(_REPLAY)
        self._take_own = self._redis.register_script(_TAKE_OWN)
        self._keeper: asyncio.Task[None] | None = None
        self._queues: set[str] = set()  # received from: named in their consumer sets
        self._next_look: dict[str, float] = {}
        self._next_chores: dict[str, float] = {}
        self._lapsed: dict[str, dict[str, float]] = {}  # queue -> consumer -> lapse first seen

    # keys ------------------------------------------------------------------------------------
    def stream_key(self, queue: str) -> str:
        return self._keys.queue(queue)

    def _lease(self, queue: str) -> float:
        return self._leases.get(queue, self._default_lease)

    async def _ensure_group(self, queue: str) -> None:
        """Create the queue's group (and stream) once per process; again after a NOGROUP."""
        if queue in self._groups:
            return
        try:
            await self._redis.xgroup_create(self.stream_key(queue), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(queue)

    # publishing ---------------------------------------------------------------------------------
    async def publish(
        self, queue: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> MessageId:
        fields: Any = _fields(body, headers)
        entry: Any = await self._redis.xadd(self.stream_key(queue), fields)
        return MessageId(entry.decode())

    def publish_on(
        self, pipe: Pipeline, queue: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue :meth:`publish`'s ``XADD`` (one reply: the id) on ``pipe``, a pipeline of a
        client of this broker's Redis: a message and the caller's writes in one round trip."""
        pipe.xadd(self.stream_key(queue), _fields(body, headers))  # type: ignore[arg-type]

    async def publish_many(
        self, queue: str, items: Sequence[tuple[bytes, Mapping[str, str]]]
    ) -> list[MessageId]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for body, headers in items:
                pipe.xadd(self.stream_key(queue), _fields(body, headers))  # type: ignore[arg-type]
            ids = await pipe.execute()
        return [MessageId(i.decode()) for i in ids]

    # receiving ----------------------------------------------------------------------------------
    async def receive(self, queue: str, *, max_messages: int, wait: float) -> list[Message]:
        try:
            return await self._receive(queue, max_messages, wait)
        except ResponseError as exc:
            if not _no_group(exc):
                raise
        # Redis restarted without its data (or failed over to a replica that lacks the group):
        # the group is created again from the start of the stream, so entries posted since the
        # restart (the blob watcher's, a reconcile's) are delivered. Another consumer may have
        # recreated it first (BUSYGROUP is fine).
        self._groups.discard(queue)
        log.warning("consumer_group_recreated", queue=queue, group=GROUP)
        return await self._receive(queue, max_messages, wait)

    async def _receive(self, queue: str, max_messages: int, wait: float) -> list[Message]:
        await self._ensure_group(queue)
        if queue not in self._queues or self._keeper is None or self._keeper.done():
            if queue not in self._queues and self._given_name:
                self._inherited.add(queue)
            # The heartbeat exists before this consumer holds anything of the queue.
            self._queues.add(queue)
            await self._beat()
            self._start_keeper()
        key, now = self.stream_key(queue), time.monotonic()
        # Due retries, lapsed leases: every CHORES s, not 2 round trips ahead of every read.
        if chores := now >= self._next_chores.get(queue, 0.0):
            self._next_chores[queue] = now + CHORES
            await self._promote(keys=[self._keys.delayed(queue), key],
                                args=[time.time(), self._keys.delayed_prefix(queue)])
        messages = []
        if queue in self._inherited:
            messages += await self._take_inherited(queue, max_messages)
        if chores and len(messages) < max_messages:
            messages += await self._reclaim(queue, max_messages - len(messages))
        if len(messages) < max_messages:
            messages += await self._take_from_dead(queue, max_messages - len(messages))
        if len(messages) < max_messages:
            block = max(1, int(wait * 1000)) if not messages else None
            reply: Any = await self._redis.xreadgroup(
                GROUP, self.consumer, {key: ">"}, count=max_messages - len(messages), block=block
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    messages.append(self._message(queue, entry_id, fields, deliveries=1))
        if messages:
            self._hold(queue, [m.receipt for m in messages])  # type: ignore[misc]
        return messages

    async def _take_inherited(self, queue: str, count: int) -> list[Message]:
        """Up to ``count`` entries pending to this name that this process does not hold (its
        predecessor's); fewer than asked for: nothing more to inherit from ``queue``."""
        key = self.stream_key(queue)
        held = sorted(self._held.get(queue, set()))
        reply: Any = await self._take_own(keys=[key], args=[GROUP, self.consumer, count, *held])
        delivered_flat, claimed = reply
        if len(delivered_flat) // 2 < count:
            self._inherited.discard(queue)
        delivered = {k: int(v) for k, v in _pairs(delivered_flat).items()}
        entries = [(entry_id, _pairs(fields or [])) for entry_id, fields in claimed]
        return await self._claimed(queue, entries, delivered, "taken_from_predecessor",
                                   self.consumer)

    async def _reclaim(self, queue: str, count: int) -> list[Message]:
        key = self.stream_key(queue)
        lease_ms = int(self._lease(queue) * 1000)
        reply: Any = await self._redis.xautoclaim(
            key, GROUP, self.consumer, min_idle_time=lease_ms, start_id="0-0", count=count
        )
        entries, deleted = reply[1], (reply[2] if len(reply) > 2 else [])
        if deleted:  # settled elsewhere while pending: nothing to deliver
            await self._redis.xack(key, GROUP, *deleted)
        if not entries:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(key, GROUP, min=entry_id, max=entry_id, count=1)
            pending = await pipe.execute()
        messages = []
        for (entry_id, fields), info in zip(entries, pending, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else 2
            log.warning("reclaimed", queue=queue, message_id=entry_id.decode(), attempt=deliveries)
            messages.append(self._message(queue, entry_id, fields, deliveries=deliveries))
        return messages

    async def _take_from_dead(self, queue: str, count: int) -> list[Message]:
        """Claim up to ``count`` messages held by consumers of ``queue`` whose heartbeat has
        lapsed for ``DEAD_GRACE`` seconds; at most one look per ``BEAT_INTERVAL``."""
        now = time.monotonic()
        if now < self._next_look.get(queue, 0.0):
            return []
        self._next_look[queue] = now + BEAT_INTERVAL
        key, known = self.stream_key(queue), self._keys.consumers(queue)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xinfo_consumers(key, GROUP)
            pipe.smembers(known)
            infos, members = await pipe.execute()
        named = {m.decode() for m in members} - {self.consumer}
        holding = {i["name"].decode(): int(i["pending"]) for i in infos}
        holding = {name: n for name, n in holding.items() if name in named}
        lapsed = self._lapsed.setdefault(queue, {})
        for name in set(lapsed) - set(holding):
            del lapsed[name]
        if not holding:
            return []
        names = sorted(holding)
        beats: Any = await self._redis.mget([self._keys.worker_alive(n) for n in names])
        messages: list[Message] = []
        for name, beat in zip(names, beats, strict=True):
            if beat is not None:
                lapsed.pop(name, None)
                continue
            if now - lapsed.setdefault(name, now) < DEAD_GRACE:
                continue
            if holding[name] == 0:  # dead and holding nothing: forget it
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xgroup_delconsumer(key, GROUP, name)
                    pipe.srem(known, name)
                    await pipe.execute()
                del lapsed[name]
                continue
            if len(messages) < count:
                messages += await self._claim_from(queue, name, count - len(messages))
        return messages

    async def _claim_from(self, queue: str, dead: str, count: int) -> list[Message]:
        key = self.stream_key(queue)
        pending: Any = await self._redis.xpending_range(
            key, GROUP, min="-", max="+", count=count, consumername=dead
        )
        if not pending:
            return []
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        # The minimum idle time makes two consumers that both found ``dead`` claim each message
        # once: the first claim resets its idle time. A dead consumer's messages have been idle
        # at least since its heartbeat lapsed (the lease refresh stopped with it).
        claimed: Any = await self._redis.xclaim(
            key, GROUP, self.consumer, min_idle_time=int(DEAD_GRACE * 1000),
            message_ids=list(delivered),
        )
        return await self._claimed(queue, claimed, delivered, "reclaimed_from_dead_consumer", dead)

    async def _claimed(
        self, queue: str, entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]],
        delivered: Mapping[bytes, int], event: str, consumer: str,
    ) -> list[Message]:
        """The messages of entries just claimed from ``consumer`` (``delivered``: how often each
        was delivered before), each logged as ``event``."""
        messages = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending (Redis < 7 still returns it): settled
                await self._redis.xack(self.stream_key(queue), GROUP, entry_id)
                continue
            deliveries = delivered.get(entry_id, 1) + 1
            log.warning(event, queue=queue, consumer=consumer, message_id=entry_id.decode(),
                        attempt=deliveries)
            messages.append(self._message(queue, entry_id, fields, deliveries=deliveries))
        return messages

    def _message(
        self, queue: str, entry_id: bytes, fields: Mapping[bytes, bytes], *, deliveries: int
    ) -> Message:
        earlier = int(fields.get(_ATTEMPTS, b"0"))
        return Message(
            queue=queue,
            id=MessageId(entry_id.decode()),
            body=fields.get(_BODY, b""),
            headers=_headers(fields),
            attempt=earlier + deliveries,
            receipt=entry_id,
        )

    # settling -----------------------------------------------------------------------------------
    async def ack(self, message: Message) -> None:
        key = self.stream_key(message.queue)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(key, GROUP, message.receipt)  # type: ignore[arg-type]
            pipe.xdel(key, message.receipt)  # type: ignore[arg-type]
            try:
                await pipe.execute()
            finally:
                # Settled or not, stop refreshing the lease: a delivery whose settle failed
                # (Redis down) is redelivered after the lease unless a later settle lands.
                self._release(message)

    async def retry(self, message: Message, *, delay: float) -> None:
        key = self.stream_key(message.queue)
        token = uuid.uuid4().hex
        fields = _fields(message.body, message.headers, attempts=message.attempt)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.delayed_prefix(message.queue) + token, mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(self._keys.delayed(message.queue), {token: time.time() + max(0.0, delay)})
            pipe.xack(key, GROUP, message.receipt)  # type: ignore[arg-type]
            pipe.xdel(key, message.receipt)  # type: ignore[arg-type]
            try:
                await pipe.execute()
            finally:
                self._release(message)  # as in ack()

    async def dead_letter(self, message: Message, *, reason: str) -> None:
        key = self.stream_key(message.queue)
        fields = _fields(message.body, message.headers)
        fields.update(
            {
                b"reason": reason.encode(),
                b"attempt": str(message.attempt).encode(),
                b"id": str(message.id).encode(),
                b"failed_at": repr(time.time()).encode(),
            }
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            dead = self._keys.dead_letters(message.queue)
            pipe.xadd(dead, fields, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
            pipe.xack(key, GROUP, message.receipt)  # type: ignore[arg-type]
            pipe.xdel(key, message.receipt)  # type: ignore[arg-type]
            try:
                await pipe.execute()
            finally:
                self._release(message)  # as in ack()

    # inspection ---------------------------------------------------------------------------------
    async def depth(self, queue: str) -> int:
        key = self.stream_key(queue)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(key)
            pipe.zcard(self._keys.delayed(queue))
            waiting, delayed = await pipe.execute()
        return int(waiting) + int(delayed)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        entries: Any = await self._redis.xrange(self._keys.dead_letters(queue), count=limit)
        return [
            DeadLetter(
                queue=queue,
                id=entry_id.decode(),
                body=fields.get(_BODY, b""),
                headers=_headers(fields),
                reason=fields.get(b"reason", b"").decode(errors="replace"),
                attempt=int(fields.get(b"attempt", b"0")),
                failed_at=float(fields.get(b"failed_at", b"0")),
            )
            for entry_id, fields in entries
        ]

    async def oldest_message_age(self, queue: str) -> float | None:
        # An entry id starts with its enqueue time in ms; a retry's copy is a new entry, so this
        # is the age of the oldest *delivery* waiting or leased (delayed retries not counted).
        first: Any = await self._redis.xrange(self.stream_key(queue), count=1)
        if not first:
            return None
        millis = int(first[0][0].split(b"-")[0])
        return max(0.0, time.time() - millis / 1000.0)

    async def replay_dead_letter(self, queue: str, dead_letter_id: str) -> bool:
        key = self.stream_key(queue)
        try:
            moved = await self._replay(
                keys=[self._keys.dead_letters(queue), key], args=[dead_letter_id]
            )
        except ResponseError as exc:
            if "Invalid stream ID" in str(exc):
                return False  # not an id of this adapter (e.g. a Service Bus uuid)
            raise
        return bool(moved)

    async def purge_dead_letters(self, queue: str) -> int:
        key = self._keys.dead_letters(queue)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xlen(key)
            pipe.delete(key)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        """Stop the heartbeat and the lease refresh; delete the heartbeat, so that what this
        consumer leaves unsettled is taken by another within ``DEAD_GRACE`` seconds."""
        if self._keeper is not None:
            # Cancelled until it ends: redis-py on Python 3.11 can swallow a cancel that lands
            # mid-command (parley.runtime.tasks), and awaiting the keeper after one cancel then
            # hung for good (seen in the broker suite's last teardown).
            while not self._keeper.done():
                self._keeper.cancel()
                await asyncio.wait({self._keeper}, timeout=0.5)
            self._keeper = None
            with contextlib.suppress(Exception):  # best effort: it expires anyway
                await self._redis.delete(self._keys.worker_alive(self.consumer))

    # heartbeat and lease keeping ----------------------------------------------------------------
    def _hold(self, queue: str, receipts: Sequence[bytes]) -> None:
        self._held.setdefault(queue, set()).update(receipts)
        self._start_keeper()

    def _release(self, message: Message) -> None:
        self._held.get(message.queue, set()).discard(message.receipt)

    def _start_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name="redis-lease-keeper")

    async def _beat(self) -> None:
        """Renew the heartbeat; under a new unique name (``_renamed``) when another live
        process beats under this one."""
        # One transaction: a consumer found in a set has its heartbeat (after Redis lost its
        # data, both come back together with the next beat).
        alive = self._keys.worker_alive(self.consumer)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(alive)
            pipe.set(alive, self._token, px=int(ALIVE_TTL * 1000))
            for queue in self._queues:
                pipe.sadd(self._keys.consumers(queue), self.consumer)
            before, *_ = await pipe.execute()
        # The first beat may find a dead predecessor's token (it lives ALIVE_TTL); a later one
        # finds only this process's, unless another live process beats under the same name.
        shared = self._beaten and before is not None and before != self._token
        self._beaten = True
        if shared:
            renamed = _unique_name()
            log.error("consumer_name_shared", name=self.consumer, consumer=renamed,
                      hint="give each process its own PARLEY_CONSUMER_NAME (or none)")
            self.consumer = renamed
            self._inherited.clear()
            self._renamed = True  # the keeper moves the held entries to the new name at once
            self._beaten = False
            await self._beat()

    async def _keep(self) -> None:
        """Beat every ``BEAT_INTERVAL``; refresh each queue's held leases every third of its
        lease."""
        refreshed: dict[str, float] = {}
        failing = False
        while True:
            leases = [self._lease(q) / 3 for q, held in self._held.items() if held]
            await asyncio.sleep(min([BEAT_INTERVAL, *leases]))
            if self._queues:
                try:
                    await self._beat()
                    failing = False
                except Exception as exc:  # once per outage; the next beat tries again
                    if not failing:
                        log.warning("heartbeat_failed", consumer=self.consumer, error=str(exc))
                    failing = True
            if self._renamed:
                refreshed.clear()
                self._renamed = False
            now = time.monotonic()
            for queue, held in list(self._held.items()):
                due = refreshed.get(queue, -math.inf) + self._lease(queue) / 3 - 0.05
                if not held or now < due:
                    continue
                refreshed[queue] = now
                try:
                    await self._redis.xclaim(
                        self.stream_key(queue),
                        GROUP,
                        self.consumer,
                        min_idle_time=0,
                        message_ids=list(held),
                        justid=True,
                    )
                except ResponseError as exc:
                    if not _no_group(exc):
                        log.warning("lease_refresh_failed", queue=queue, error=str(exc))
                        continue
                    # The group is gone with Redis' data: so are these entries. Nothing to keep;
                    # settling them later is harmless (XACK/XDEL of unknown ids do nothing).
                    held.clear()
                except Exception as exc:  # a blip must not kill the keeper; next round retries
                    log.warning("lease_refresh_failed", queue=queue, error=str(exc))
