"""A chat turn's event stream in Redis Streams: the inference worker writes, any gateway replica
reads. One stream per turn (``<prefix>:turn:<turn_id>``), so a client that reconnects to another
replica resumes from the last offset it saw with no gap and no duplicate.

The events are typed in :mod:`parley.turnevents`: ``sources`` (once, written by the gateway),
``token`` (many; each entry carries the text of one or more tokens appended in one flush), then
exactly one terminal event: ``final``, ``error`` or ``cancelled``. The offset of an event is its
Redis entry id. Streams are capped (``MAXLEN``) and expire ``ttl`` seconds after their last write.
:class:`TurnWriter` is the one writer (the gateway's ask and relay, the worker's outbox);
:func:`parley.turnevents.parse` the one parser.

Cancellation: ``cancel()`` sets ``<prefix>:turn:<turn_id>:cancel``; the writer checks it on every
flush (every ``flush_interval`` seconds while tokens flow), so generation stops within about one
flush interval plus one token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from parley import lua
from parley.keys import Keys
from parley.turnevents import TERMINAL as TERMINAL
from parley.turnevents import ErrorEvent, Event, TokenEvent, fields, make
from parley.turnevents import TurnEvent as TurnEvent

MAX_EVENTS = 20_000


def turn_key(prefix: str, turn_id: str) -> str:
    return Keys(prefix).turn(turn_id)


def attached_key(prefix: str, turn_id: str) -> str:
    """Held (with a short expiry, refreshed) by a gateway replica while it relays the turn; the
    inference worker cancels a turn whose hold has lapsed for too long (its gateway died)."""
    return Keys(prefix).turn_attached(turn_id)


class TurnWriter:
    """Appends one turn's events: the one place a stream entry is made. :meth:`append` adds an
    event to a caller's pipeline (the gateway's ask, the worker's outbox, which writes every
    running turn in one pipeline); :meth:`emit` writes one in its own round trip. Tokens given to
    :meth:`token` are buffered and written every ``flush_interval`` seconds (or ``max_pending``
    tokens), in one round trip that also reads the cancel flag.

    Not safe for concurrent use by several tasks; one writer per turn."""

    def __init__(
        self,
        client: aioredis.Redis,
        turn_id: str,
        *,
        prefix: str = "parley",
        ttl: int = 3600,
        flush_interval: float = 0.02,
        max_pending: int = 256,
    ) -> None:
        self._redis = client
        self.turn_id = turn_id
        self.key = turn_key(prefix, turn_id)
        self._cancel_key = Keys(prefix).turn_cancel(turn_id)
        self._ttl = ttl
        self._interval = flush_interval
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self.cancelled = False
        self.tokens = 0

    @property
    def pending(self) -> int:
        """Tokens buffered and not yet written (a writer whose model pauses flushes them)."""
        return len(self._pending)

    def append(self, pipe: Pipeline, event: Event, *, expire: bool = True) -> None:
        """Queue ``event`` on ``pipe`` (one reply: its offset), then, when ``expire``, the
        stream's expiry (one more reply)."""
        for command in self.commands(event, expire=expire):
            pipe.execute_command(*command)

    def commands(self, event: Event, *, expire: bool = True) -> list[tuple[str | int, ...]]:
        """The commands :meth:`append` queues, for a caller that sends them itself (the
        worker's outbox, raw: ``backends.rawredis``)."""
        entry = fields(event)
        xadd = ("XADD", self.key, "MAXLEN", "~", MAX_EVENTS, "*", "k", entry["k"], "d", entry["d"])
        return [xadd, ("EXPIRE", self.key, self._ttl)] if expire else [xadd]

    async def emit(self, event: Event | str, data: Mapping[str, Any] | None = None) -> str:
        """Flush buffered tokens, then append one event now; returns its offset. ``event`` is
        an event, or its kind with ``data`` (validated into one: a malformed event raises
        :class:`parley.turnevents.MalformedEvent` and nothing is written)."""
        typed = make(event, data or {}) if isinstance(event, str) else event
        await self.flush()
        async with self._redis.pipeline(transaction=False) as pipe:
            self.append(pipe, typed)
            pipe.exists(self._cancel_key)
            entry, _, cancelled = await pipe.execute()
        self.cancelled = self.cancelled or bool(cancelled)
        return str(entry.decode() if isinstance(entry, bytes) else entry)

    async def token(self, text: str) -> bool:
        """Buffer one token's text; flushes when due. Returns False once the turn is cancelled."""
        self._pending.append(text)
        self.tokens += 1
        if (
            len(self._pending) >= self._max_pending
            or time.monotonic() - self._last_flush >= self._interval
        ):
            await self.flush()
        return not self.cancelled

    async def flush(self) -> bool:
        """Write buffered tokens as one event and read the cancel flag. Returns not cancelled."""
        self._last_flush = time.monotonic()
        async with self._redis.pipeline(transaction=False) as pipe:
            if self._pending:
                self.append(pipe, TokenEvent(text="".join(self._pending), n=len(self._pending)))
                self._pending = []
            pipe.exists(self._cancel_key)
            replies = await pipe.execute()
        self.cancelled = self.cancelled or bool(replies[-1])
        return not self.cancelled


async def cancel(client: aioredis.Redis, turn_id: str, *, prefix: str = "parley") -> None:
    """Ask the writer of ``turn_id`` to stop. Idempotent; the flag expires on its own."""
    await client.set(Keys(prefix).turn_cancel(turn_id), b"1", ex=3600)


async def is_cancelled(client: aioredis.Redis, turn_id: str, *, prefix: str = "parley") -> bool:
    return bool(await client.exists(Keys(prefix).turn_cancel(turn_id)))


# Liveness of the worker answering a turn ---------------------------------------------------------
# A worker that takes a turn names itself in ``<turn>:worker``; while it runs, it keeps
# ``<prefix>:worker:<id>:alive`` (its broker's heartbeat, parley.broker.redis: 3 s expiry renewed
# every second). A gateway relaying a silent turn whose worker's key has lapsed ends the turn with
# ``error`` ``worker_lost`` at once, instead of after the chat queue's lease and a redelivery.

WORKER_LOST: dict[str, str] = {
    "code": "worker_lost",
    "message": "the model worker stopped mid-answer; ask again",
}


def owner_key(prefix: str, turn_id: str) -> str:
    """The id of the worker answering the turn (written when it takes the turn)."""
    return Keys(prefix).turn_worker(turn_id)


def alive_key(prefix: str, worker_id: str) -> str:
    """Present (with a short expiry, renewed) while the worker ``worker_id`` runs."""
    return Keys(prefix).worker_alive(worker_id)


# KEYS: turn stream, owner key, the owner's alive key; ARGV: owner, ttl, maxlen, k, d.
# Appends the terminal event only if the turn is still the owner's, the owner is not alive and
# the stream has no terminal event yet: exactly one terminal event, whoever writes it.
_END_IF_LOST = lua.script(__package__, "turnstream_end_if_lost.lua")


class LostWorkers:
    """Ends turns whose worker died: :meth:`check` of a gateway's silent turns, one or two
    pipelined round trips, plus one script call per turn found lost."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "parley", ttl: int = 3600) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl
        self._end = client.register_script(_END_IF_LOST)

    async def check(self, turn_ids: list[str]) -> list[str]:
        """The turns among ``turn_ids`` that were ended now with ``worker_lost``."""
        if not turn_ids:
            return []
        owners: list[Any] = await self._redis.mget([owner_key(self._prefix, t) for t in turn_ids])
        taken = {
            t: (o.decode() if isinstance(o, bytes) else str(o))
            for t, o in zip(turn_ids, owners, strict=True)
            if o is not None
        }
        if not taken:
            return []
        workers = sorted(set(taken.values()))
        alive: list[Any] = await self._redis.mget([alive_key(self._prefix, w) for w in workers])
        dead = {w for w, a in zip(workers, alive, strict=True) if a is None}
        ended = []
        lost = fields(ErrorEvent.model_validate(WORKER_LOST))
        for turn_id, worker in taken.items():
            if worker not in dead:
                continue
            keys = [turn_key(self._prefix, turn_id), owner_key(self._prefix, turn_id),
                    alive_key(self._prefix, worker)]
            args: list[str | int] = [worker, self._ttl, MAX_EVENTS, lost["k"], lost["d"]]
            if await self._end(keys=keys, args=args):
                ended.append(turn_id)
        return ended
