"""Every turn stream this gateway process relays, read by one task with one blocking ``XREAD``.

One blocking read per turn would hold one Redis connection per streaming client (redis-py's
pool holds 100 by default: the 101st stream would wait forever) and return one or two entries
per round trip. Here a single loop reads all active turn streams at once, plus a per-process
wake stream: a new subscriber that comes while a read is in flight appends to it so the blocked
read returns at once and the next one includes the new turn (so the first token is not delayed
by the block time). One that comes between reads needs no wake: the next read, not yet sent,
names it. The wake goes out packed once in RESP on a connection of its own (one wake in flight
at a time), not as a redis-py pipeline: at 200 streams x 10 tokens/s that is 67 new turns a
second.

Each subscriber has its own offset and batches read for it (a deque, and a future its reader
awaits while it is empty: one wake-up per batch is a ``set_result``); a subscriber holding
``high_water`` batches (a slow client) is left out of the read until it catches up, so it cannot
make the process buffer a whole stream. Subscribers are kept by stream key as they come and go,
and each one's key and offset are kept packed in RESP (the offset re-packed when it moves), so
building the read for 200 turns is a join of pieces, not a regrouping and a ``pack_command`` of
every key and offset per read. Nothing is consumed from Redis: other replicas and resumed
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
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog

from backends.rawredis import OwnConnection, bulk, command
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


_NEW = bulk("$")  # the wake stream's offset: entries added after the read starts


def _id(offset: str) -> tuple[int, int]:
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


class _Subscriber:
    """One reader of one turn: its offset, the batches read for it and not yet taken, and the
    future its reader waits on while it has none (a list and a future, not an
    ``asyncio.Queue``: one wake-up is a ``set_result``, and nothing else is allocated)."""

    __slots__ = ("batches", "floor", "gone", "key", "last", "packed_key", "packed_last", "seen",
                 "timer", "turn_id", "waited", "waiter")

    def __init__(self, turn_id: str, key: str, last: str, now: float) -> None:
        self.turn_id = turn_id
        self.key = key
        self.last = last  # the offset read up to
        self.floor = _id(last)  # the same, comparable
        # Key and offset as arguments of the read, packed when they change, not for every read.
        self.packed_key = bulk(key)
        self.packed_last = bulk(last)
        self.batches: collections.deque[list[TurnEvent]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.waited = now  # when its reader last began to wait (loop time)
        self.seen = now  # when its last batch arrived (loop time)
        self.timer: asyncio.TimerHandle | None = None  # the idle timeout's check
        self.gone = False  # unsubscribed (a read in flight may still name it)

    def read_up_to(self, offset: str, floor: tuple[int, int]) -> None:
        self.last, self.floor, self.packed_last = offset, floor, bulk(offset)

    def put(self, batch: list[TurnEvent], now: float) -> None:
        self.batches.append(batch)
        self.seen = now
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, loop: asyncio.AbstractEventLoop) -> list[TurnEvent]:
        while not self.batches:
            waiter = loop.create_future()
            self.waiter, self.waited = waiter, loop.time()
            try:
                await waiter
            finally:
                self.waiter = None
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()  # a timeout set as the reader was cancelled: seen
        return self.batches.popleft()

    def expire_after(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """End the reader's wait with TimeoutError once it has waited ``seconds`` for a batch.
        One timer per ``seconds`` that re-arms itself, not an ``asyncio.timeout`` around every
        wait (~1.5 % of the gateway's CPU at 200 streams x 10 tokens/s, sampled by py-spy)."""

        def check() -> None:
            waiter, now = self.waiter, loop.time()
            if waiter is None or waiter.done():  # not waiting: it has at least ``seconds`` left
                self.timer = loop.call_at(now + seconds, check)
            elif now >= self.waited + seconds - 0.001:  # (a timer may fire a hair early)
                self.timer = None
                waiter.set_exception(TimeoutError())
            else:
                self.timer = loop.call_at(self.waited + seconds, check)

        self.timer = loop.call_at(loop.time() + seconds, check)

    def close(self) -> None:
        self.gone = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _floor(sub: _Subscriber) -> tuple[int, int]:
    return sub.floor


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
        # The subscribers by stream key, kept as they come and go (not rebuilt for every read).
        self._by_key: dict[str, list[_Subscriber]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by every new subscriber
        self._waking = False
        self._reading = False  # a read is built or in flight: a new subscriber needs a wake
        self.wakes = 0  # sent so far (for tests and benches)
        self._lost = LostWorkers(client, prefix=prefix, ttl=stream_ttl)
        self._watch_every = watch_every
        self._watcher: asyncio.Task[None] | None = None
        self._reader = OwnConnection(client)  # the read loop's own (module note)
        self._waker = OwnConnection(client)
        self._packed_wake = bulk(self._wake_key)
        self._wake_commands = (
            command(*(bulk(a) for a in ("XADD", self._wake_key, "MAXLEN", 1, "*", "w", 1)))
            + command(*(bulk(a) for a in ("EXPIRE", self._wake_key, 60))))
        self._xread_head = tuple(bulk(a) for a in ("XREAD", "COUNT", count, "BLOCK",
                                                     self._block_ms, "STREAMS"))

    @property
    def active(self) -> int:
        return sum(len(subs) for subs in self._by_key.values())

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
        loop = asyncio.get_running_loop()
        sub = _Subscriber(turn_id, turn_key(self._prefix, turn_id), after, loop.time())
        self._by_key.setdefault(sub.key, []).append(sub)
        self._generation += 1
        self._changed.set()
        try:
            if idle_timeout is not None:
                sub.expire_after(loop, idle_timeout)
            if self._watch_every and (self._watcher is None or self._watcher.done()):
                self._watcher = asyncio.create_task(self._watch(self._watch_every),
                                                    name="turn-watch")
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="turn-tailer")
            elif self._reading and not self._waking:
                await self._wake()
            while True:
                batch = await sub.get(loop)
                for i, event in enumerate(batch):
                    if event.kind in TERMINAL:
                        yield batch[: i + 1]
                        return
                yield batch
        finally:
            sub.close()
            readers = self._by_key.get(sub.key)
            if readers is not None:
                readers.remove(sub)
                if not readers:
                    del self._by_key[sub.key]

    async def _wake(self) -> None:
        """Unblock the loop's read. One wake in flight at a time (a burst of new subscribers
        costs a few round trips, not one each); repeated while subscribers arrived during it,
        since the loop may have started its next read before they did."""
        self._waking = True
        try:
            seen = -1
            while seen != self._generation:
                seen = self._generation
                self.wakes += 1
                await self._waker.run_packed(self._wake_commands, 2)
        finally:
            self._waking = False

    async def _run(self) -> None:
        while True:
            if not self._by_key:
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
        self._reading = True  # from here a new subscriber is not in this read
        try:
            await self._read()
        finally:
            self._reading = False

    async def _read(self) -> None:
        high_water = self._high_water
        keys: list[bytes] = [self._packed_wake]
        offsets: list[bytes] = [_NEW]
        # Who this read is for, as it is sent: a subscriber that comes (or leaves) while it is
        # in flight is read for from its own offset next time.
        reading: dict[str, list[_Subscriber]] = {}
        for key, subs in self._by_key.items():
            if len(subs) == 1:  # the usual case: one reader of a turn in this process
                sub = subs[0]
                if len(sub.batches) >= high_water:
                    continue
                readers = [sub]
            else:
                readers = [s for s in subs if len(s.batches) < high_water]
                if not readers:
                    continue
                sub = min(readers, key=_floor)
            keys.append(sub.packed_key)
            offsets.append(sub.packed_last)
            reading[key] = readers
        if not reading:
            await asyncio.sleep(0.01)  # every reader is behind: let them drain
            return
        # A reply far later than the block means a dead link (dropped, read again).
        [reply] = await self._reader.run_packed(
            command(*self._xread_head, *keys, *offsets), 1, timeout=self._block_ms / 1000 + 10.0)
        now = asyncio.get_running_loop().time()
        # RESP2: [[key, entries], ...]; RESP3 (protocol=3 in the URL): {key: entries}.
        for raw_key, entries in (reply.items() if isinstance(reply, dict) else reply or ()):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            to = reading.get(key)
            if not to:
                continue
            events = _events(key, entries)
            read = entries[-1][0]  # past a skipped entry too, so it is not read again
            read = read.decode() if isinstance(read, bytes) else str(read)
            read_floor = _id(read)
            for sub in to:
                if sub.gone:
                    continue
                floor = sub.floor
                if read_floor > floor:
                    sub.read_up_to(read, read_floor)
                # Offsets ascend: all are new unless this reader is ahead of the read's offset.
                fresh = (events if not events or _id(events[0].offset) > floor
                         else [e for e in events if _id(e.offset) > floor])
                if fresh:
                    sub.put(fresh, now)

    async def _watch(self, every: float) -> None:
        """Until no turn is relayed: every ``every`` s, end the silent turns whose worker died."""
        while self._by_key:
            await asyncio.sleep(every)
            now = asyncio.get_running_loop().time()
            silent = sorted({s.turn_id for subs in self._by_key.values() for s in subs
                             if now - s.seen >= every})
            try:
                for turn_id in await self._lost.check(silent):
                    log.warning("worker_lost_detected", turn_id=turn_id)
            except Exception as exc:  # Redis hiccup: the next round tries again
                log.warning("worker_watch_failed", error=str(exc))

    async def close(self) -> None:
        await tasks.stop(self._watcher)
        await tasks.stop(self._task)
        await self._reader.close()
        await self._waker.close()
