"""Every turn stream this gateway process relays, read by one task with one blocking ``XREAD``.

One blocking read per turn would hold one Redis connection per streaming client (redis-py's
pool holds 100 by default: the 101st stream would wait forever) and return one or two entries
per round trip. Here a single loop reads all active turn streams at once, plus a per-process
wake stream: a new subscriber appends to it so the blocked read returns at once and the next one
includes the new turn (so the first token is not delayed by the block time).

Each subscriber has its own queue and offset; a subscriber whose queue is above ``high_water``
batches (a slow client) is left out of the read until it catches up, so it cannot make the
process buffer a whole stream. Nothing is consumed from Redis: other replicas and resumed
clients read the same entries from their own offsets.

A second task watches the workers: every ``watch_every`` seconds, the turns that have had no event
for that long are checked against their worker's heartbeat (:class:`parley.turnstream.
LostWorkers`); a turn whose worker died gets its ``worker_lost`` error written, which the read
loop then delivers like any other event (to every replica relaying the turn).

The read is the one command this process sends for every relayed token, and the one whose
arguments grow with the streams relayed (a key and an offset each), so the loop sends it on a
connection of its own, packed by hiredis in C (:mod:`backends.rawredis`): through redis-py's
command path, packing 200 keys cost ~1 ms of CPU per read, ~3.5x the whole raw read.

Entries are parsed by :func:`parley.turnevents.parse`. An entry of a kind this gateway does not
know (a newer writer's) is skipped; an entry that is not a valid event of its kind ends the
turn for its readers with an ``error`` ``internal`` saying which entry and field (delivered at
that entry's offset, not written: the stream stays as its writer left it), rather than leave
the client waiting or stall the read loop of every turn.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from backends.rawredis import OwnConnection
from parley.keys import Keys
from parley.runtime import tasks
from parley.turnevents import (
    TERMINAL,
    ErrorEvent,
    MalformedEvent,
    TurnEvent,
    UnknownEvent,
    parse,
)
from parley.turnstream import LostWorkers, turn_key

log = structlog.get_logger(__name__)


def _events(key: str, entries: list[Any]) -> list[TurnEvent]:
    """The events of one stream's entries read together, as Redis sends them (``[id, [field,
    value, ...]]``; see the module's note on entries that are not events)."""
    events: list[TurnEvent] = []
    for entry_id, flat in entries:
        offset = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        pairs = iter(flat or ())
        try:
            events.append(parse(offset, dict(zip(pairs, pairs, strict=False))))
        except UnknownEvent as exc:
            log.warning("turn_event_skipped", key=key, error=str(exc))
        except MalformedEvent as exc:
            log.error("turn_event_malformed", key=key, error=str(exc))
            events.append(TurnEvent(offset, ErrorEvent(
                code="internal", message=f"the answer could not be read: {exc.message}")))
            break  # a terminal event: nothing after it is relayed
    return events


def _id(offset: str) -> tuple[int, int]:
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class _Subscriber:
    turn_id: str
    key: str
    last: str
    queue: asyncio.Queue[list[TurnEvent]] = field(default_factory=asyncio.Queue)
    seen: float = field(default_factory=time.monotonic)  # when its last event arrived


class TurnTailer:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        # Below redis-py's default socket_timeout (5 s): a read blocked that long is cut by the
        # client as a timeout, dropping the connection and pausing the relay.
        block: float = 4.0,
        count: int = 128,
        high_water: int = 64,
        stream_ttl: int = 3600,
        watch_every: float | None = 1.0,  # None: no worker watch
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._block_ms = int(block * 1000)
        self._count = count
        self._high_water = high_water
        self._wake_key = Keys(prefix).gateway_wake(uuid.uuid4().hex)
        self._subscribers: set[_Subscriber] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by every new subscriber
        self._waking = False
        self._lost = LostWorkers(client, prefix=prefix, ttl=stream_ttl)
        self._watch_every = watch_every
        self._watcher: asyncio.Task[None] | None = None
        self._reader = OwnConnection(client)  # the read loop's own (module note)

    @property
    def active(self) -> int:
        return len(self._subscribers)

    async def tail(
        self, turn_id: str, *, after: str = "0-0", idle_timeout: float | None = None
    ) -> AsyncIterator[TurnEvent]:
        """Events of the turn after ``after`` until its terminal event (as
        :func:`parley.turnstream.tail`). Raises TimeoutError after ``idle_timeout`` seconds
        without an event. Closing the iterator unsubscribes at once."""
        async for batch in self.batches(turn_id, after=after, idle_timeout=idle_timeout):
            for event in batch:
                yield event

    async def batches(
        self, turn_id: str, *, after: str = "0-0", idle_timeout: float | None = None
    ) -> AsyncIterator[list[TurnEvent]]:
        """As :meth:`tail`, in the batches read together (the last one ends with the terminal
        event), so a relay can coalesce tokens that arrived together into one frame."""
        sub = _Subscriber(turn_id, turn_key(self._prefix, turn_id), after)
        self._subscribers.add(sub)
        self._generation += 1
        self._changed.set()
        if self._watch_every and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(self._watch_every), name="turn-watch")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="turn-tailer")
        elif not self._waking:
            await self._wake()
        try:
            while True:
                # asyncio.timeout, not wait_for: no task per batch (wait_for's was a tenth of
                # the gateway's CPU per token under load, bench.stages).
                async with asyncio.timeout(idle_timeout):
                    batch = await sub.queue.get()
                for i, event in enumerate(batch):
                    if event.kind in TERMINAL:
                        yield batch[: i + 1]
                        return
                yield batch
        finally:
            self._subscribers.discard(sub)

    async def _wake(self) -> None:
        """Unblock the loop's read. One wake in flight at a time (a burst of new subscribers
        costs a few round trips, not one each); repeated while subscribers arrived during it,
        since the loop may have started its next read before they did."""
        self._waking = True
        try:
            seen = -1
            while seen != self._generation:
                seen = self._generation
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
                    pipe.expire(self._wake_key, 60)
                    await pipe.execute()
        finally:
            self._waking = False

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("turn_tail_failed", error=str(exc))
                await asyncio.sleep(0.5)

    async def _step(self) -> None:
        by_key: dict[str, list[_Subscriber]] = {}
        for sub in self._subscribers:
            if sub.queue.qsize() < self._high_water:
                by_key.setdefault(sub.key, []).append(sub)
        if not by_key:
            await asyncio.sleep(0.01)  # every reader is behind: let them drain
            return
        keys = [self._wake_key, *by_key]
        offsets = ["$", *(min((s.last for s in subs), key=_id) for subs in by_key.values())]
        # A reply far later than the block means a dead link (dropped, read again).
        [reply] = await self._reader.run(
            [("XREAD", "COUNT", self._count, "BLOCK", self._block_ms, "STREAMS", *keys,
              *offsets)], timeout=self._block_ms / 1000 + 10.0)
        # RESP2: [[key, entries], ...]; RESP3 (protocol=3 in the URL): {key: entries}.
        for raw_key, entries in (reply.items() if isinstance(reply, dict) else reply or ()):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            readers = by_key.get(key)
            if not readers:
                continue
            events = _events(key, entries)
            read = entries[-1][0]  # past a skipped entry too, so it is not read again
            read = read.decode() if isinstance(read, bytes) else str(read)
            for sub in readers:
                if sub not in self._subscribers:
                    continue
                floor = _id(sub.last)
                if _id(read) > floor:
                    sub.last = read
                fresh = [e for e in events if _id(e.offset) > floor]
                if fresh:
                    sub.seen = time.monotonic()
                    sub.queue.put_nowait(fresh)

    async def _watch(self, every: float) -> None:
        """Until no turn is relayed: every ``every`` s, end the silent turns whose worker died."""
        while self._subscribers:
            await asyncio.sleep(every)
            now = time.monotonic()
            silent = sorted({s.turn_id for s in self._subscribers if now - s.seen >= every})
            try:
                for turn_id in await self._lost.check(silent):
                    log.warning("worker_lost_detected", turn_id=turn_id)
            except Exception as exc:  # Redis hiccup: the next round tries again
                log.warning("worker_watch_failed", error=str(exc))

    async def close(self) -> None:
        await tasks.stop(self._watcher)
        await tasks.stop(self._task)
        await self._reader.close()
