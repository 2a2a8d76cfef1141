"""Redis Streams adapter of :class:`parley.broker.Broker`.

Layout per logical queue ``q`` (keys under the settings' prefix ``p``):

- ``p:q:<q>``: the stream; one consumer group ``workers``; entries are deleted once settled,
  so ``XLEN`` is the backlog (waiting + leased) that KEDA's ``streamLength`` trigger sees;
- ``p:q:<q>:delayed``: a sorted set of retries due at a time; each is a hash
  ``p:q:<q>:delayed:<id>`` moved back into the stream (atomically, by a Lua script) when due;
- ``p:q:<q>:dead``: the dead letters: a stream with the body, headers, reason and attempt count.

Other systems post with ``XADD p:q:<q> * body '<json>'`` (optional ``h:<name>`` header fields).

Leases: an entry read by a consumer stays pending until settled. While this process holds it, a
background task refreshes its idle time (``XCLAIM ... JUSTID``) every third of the lease, so a long
handler keeps its message; when the process dies the refresh stops and, after ``lease_seconds``
idle, any consumer reclaims it with ``XAUTOCLAIM`` and sees ``attempt`` increased.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from parley.broker import DeadLetter, Message
from parley.ids import MessageId
from parley.keys import Keys

GROUP = "workers"
_BODY = b"body"
_ATTEMPTS = b"a"  # deliveries that happened before this entry (it is a retry's copy)
_HEADER = b"h:"

log = structlog.get_logger(__name__)

# Moves due delayed retries into the stream. KEYS: zset, stream; ARGV: now, prefix of hash keys.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"""


# Moves one dead letter back into the stream, atomically (two replays of one id add it once).
# KEYS: dead stream, stream; ARGV: dead letter id. Returns 1 if moved, 0 if not there.
_REPLAY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local keep = {}
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'body' or string.sub(name, 1, 2) == 'h:' then
    keep[#keep + 1] = name
    keep[#keep + 1] = fields[i + 1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(keep))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


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
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._groups: set[str] = set()
        self._held: dict[str, set[bytes]] = {}
        self._promote = self._redis.register_script(_PROMOTE)
        self._replay = self._redis.register_script(_REPLAY)
        self._keeper: asyncio.Task[None] | None = None

    # keys ------------------------------------------------------------------------------------
    def stream_key(self, queue: str) -> str:
        return self._keys.queue(queue)

    def _lease(self, queue: str) -> float:
        return self._leases.get(queue, self._default_lease)

    async def _ensure_group(self, queue: str) -> None:
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
        entry: Any = await self._redis.xadd(
            self.stream_key(queue),
            _fields(body, headers),  # type: ignore[arg-type]
        )
        return MessageId(entry.decode())

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
        await self._ensure_group(queue)
        key = self.stream_key(queue)
        await self._promote(
            keys=[self._keys.delayed(queue), key],
            args=[time.time(), self._keys.delayed_prefix(queue)],
        )
        messages = await self._reclaim(queue, max_messages)
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

    async def _reclaim(self, queue: str, count: int) -> list[Message]:
        key = self.stream_key(queue)
        lease_ms = int(self._lease(queue) * 1000)
        reply: Any = await self._redis.xautoclaim(
            key, GROUP, self.consumer, min_idle_time=lease_ms, start_id="0-0", count=count
        )
        entries = reply[1]
        deleted = reply[2] if len(reply) > 2 else []
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
            await pipe.execute()
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
            await pipe.execute()
        self._release(message)

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
            await pipe.execute()
        self._release(message)

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
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None

    # lease keeping ------------------------------------------------------------------------------
    def _hold(self, queue: str, receipts: Sequence[bytes]) -> None:
        self._held.setdefault(queue, set()).update(receipts)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_leases(), name="redis-lease-keeper")

    def _release(self, message: Message) -> None:
        self._held.get(message.queue, set()).discard(message.receipt)

    async def _keep_leases(self) -> None:
        while True:
            interval = min([self._lease(q) / 3 for q, held in self._held.items() if held] or [1.0])
            await asyncio.sleep(interval)
            for queue, held in list(self._held.items()):
                if not held:
                    continue
                try:
                    await self._redis.xclaim(
                        self.stream_key(queue),
                        GROUP,
                        self.consumer,
                        min_idle_time=0,
                        message_ids=list(held),
                        justid=True,
                    )
                except Exception as exc:  # a blip must not kill the keeper; next round retries
                    log.warning("lease_refresh_failed", queue=queue, error=str(exc))
