"""The turn streams of every answer one inference worker is writing, flushed together.

One background task, the *flusher*, writes what all running turns produced since its last flush
in ONE Redis pipeline: per turn one ``XADD`` per event (a run of tokens is joined into one
``token`` event), each made by the turn's :class:`parley.turnstream.TurnWriter` (the one writer
of turn streams), an ``EXPIRE`` on the turn's
first write and on its terminal event, and every ``cancel_poll`` seconds one ``MGET`` of all
running turns' cancel flags and gateway holds. A turn's first token, a full buffer and every
other event wake the flusher at once; other tokens wait at most ``flush_interval``. What arrives
while a flush is in flight goes out with the next one (group commit). Turns written for the
first time (a first token) lead the pipeline (see ``_flush``).

Why: a writer per turn costs one round trip per turn per flush, plus a cancel poll per turn
while its model is silent, so the worker's Redis work grew with turns x tokens and, at 200
concurrent streams, the event loop queued first tokens behind other turns' round trips
(``python -m bench.ttft``, figures in ARCHITECTURE.md). Here the round trips per second stay
about ``1 / flush_interval`` + first tokens, whatever the number of turns.

Orphans: a gateway replica relaying a turn holds ``<turn>:attached`` (refreshed every second,
expiring after 3 s; :mod:`chat_gateway.relay`). A client that drops is given a resume grace by
its gateway, which then cancels the turn; if that gateway process dies, its timer dies with it.
So a turn whose hold was seen and then stays absent for ``orphan_after`` seconds (longer than
the gateway's grace plus the hold's expiry) is cancelled here, reason ``orphaned``. A turn never
held (a producer other than the gateway, a bench) is never cancelled this way.

Failure: when a flush fails (Redis unreachable), the turns it carried fail: their pending and
later ``emit`` calls raise the error, and so does their next ``token``; other turns carry on.
The handler then gives the message back to the queue, and the redelivery settles the turn (see
:mod:`inference_worker.handler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from backends.rawredis import Command, OwnConnection
from parley.keys import Keys
from parley.turnevents import TERMINAL, Event, TokenEvent, make
from parley.turnstream import TurnWriter, attached_key

log = structlog.get_logger(__name__)


@dataclass
class _Item:
    event: Event
    written: asyncio.Future[str] | None  # resolved with the entry's offset; None for tokens


class TurnOutput:
    """One turn's share of the :class:`Outbox`. Obtain it with :meth:`Outbox.open`.

    ``token`` never waits (it buffers); ``emit`` waits until its event is written. Not safe
    for use by several tasks at once; one per turn."""

    def __init__(
        self, outbox: Outbox, turn_id: str, on_cancel: Callable[[], object] | None
    ) -> None:
        self._outbox = outbox
        self.writer = TurnWriter(outbox.redis, turn_id, prefix=outbox.prefix, ttl=outbox.ttl)
        self.key = self.writer.key
        self.cancel_key = Keys(outbox.prefix).turn_cancel(turn_id)
        self.attached_key = attached_key(outbox.prefix, turn_id)
        self.held = False  # a gateway's hold was seen at least once
        self.unheld_since: float | None = None
        self.cancel_reason: str | None = None  # "cancelled" (asked for) or "orphaned"
        self.on_cancel = on_cancel  # settable later: the flusher reads it when the flag is seen
        self._tokens: list[str] = []
        self._queue: list[_Item] = []
        self._expiry_set = False
        self.tokens = 0
        self.cancelled = False
        self.finished = False  # a terminal event was written
        self.detached = False
        self.failure: BaseException | None = None

    @property
    def pending(self) -> int:
        """Tokens buffered and not yet handed to a flush."""
        return len(self._tokens)

    def token(self, text: str) -> bool:
        """Buffer one token's text. Returns False once the turn is cancelled; raises the error
        of a failed flush of this turn."""
        if self.failure is not None:
            raise self.failure
        if self.cancelled:
            return False
        self._tokens.append(text)
        self.tokens += 1
        if self.tokens == 1 or len(self._tokens) >= self._outbox.max_pending:
            self._outbox.wake(self, now=True)
        else:
            self._outbox.wake(self, now=False)
        return True

    async def emit(self, event: Event | str, data: Mapping[str, Any] | None = None) -> str:
        """Append one event after the buffered tokens and wait until it is written; returns its
        offset. ``event`` is an event, or its kind with ``data`` (validated into one: a
        malformed event raises :class:`parley.turnevents.MalformedEvent`, nothing queued). A
        terminal event ends the turn's share: nothing more may be written. If the calling task
        is cancelled while waiting, the event is still written by the flusher."""
        if self.failure is not None:
            raise self.failure
        if self.finished:
            raise RuntimeError(f"{self.key}: the turn already ended")
        typed = make(event, data or {}) if isinstance(event, str) else event
        self._seal()
        written: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(typed, written))
        self._outbox.wake(self, now=True)
        return await written

    # used by the flusher ------------------------------------------------------------------
    def _seal(self) -> None:
        if self._tokens:
            text = "".join(self._tokens)
            self._queue.append(_Item(TokenEvent(text=text, n=len(self._tokens)), None))
            self._tokens = []

    def _take(self) -> list[_Item]:
        self._seal()
        items, self._queue = self._queue, []
        return items

    def _cancel(self, reason: str) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.cancel_reason = reason
        if self.on_cancel is not None:
            self.on_cancel()

    def _fail(self, exc: BaseException, items: list[_Item]) -> None:
        self.failure = exc
        for item in items:
            if item.written is not None and not item.written.done():
                item.written.set_exception(exc)
                item.written.exception()  # marked retrieved: the emitter may be gone


def _written_before(turn: TurnOutput) -> bool:
    return turn._expiry_set  # set by a turn's first write


class Outbox:
    """Writes the turn streams of one worker process. The flusher task runs while at least one
    turn is open and exits when the last one is done, so there is nothing to close; ``close``
    waits for what is queued to be written (or the flusher to fail)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "parley",
        ttl: int = 3600,
        flush_interval: float = 0.02,
        cancel_poll: float = 0.25,
        max_pending: int = 256,
        orphan_after: float = 15.0,
    ) -> None:
        self.redis = client
        self.orphan_after = orphan_after
        self.prefix = prefix
        self.ttl = ttl
        self.interval = flush_interval
        self.cancel_poll = cancel_poll
        self.max_pending = max_pending
        self._turns: set[TurnOutput] = set()
        self._dirty: dict[TurnOutput, None] = {}  # insertion-ordered set
        self._urgent = False
        self._wakeup = asyncio.Event()
        self._sleep_until = 0.0
        self._last_flush = 0.0
        self._last_poll = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        # The flusher's own connection, its pipeline packed in C (backends.rawredis): through
        # redis-py's pipeline, packing was a sixth of the worker's CPU per token (bench.stages).
        self._conn = OwnConnection(client)
        self.flushes = 0  # round trips so far (for tests and benches)

    @contextlib.contextmanager
    def open(
        self, turn_id: str, on_cancel: Callable[[], object] | None = None
    ) -> Iterator[TurnOutput]:
        """A turn's output for the duration of the block. ``on_cancel`` is called (once, from
        the flusher) when the turn's cancel flag is seen. Leaving the block detaches the turn:
        what it queued is still written; nothing more may be."""
        turn = TurnOutput(self, turn_id, on_cancel)
        self._turns.add(turn)
        if self._task is None or self._task.done():
            self._last_poll = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")
        try:
            yield turn
        finally:
            turn.detached = True
            if not turn._queue and not turn._tokens:
                self._turns.discard(turn)
                self._dirty.pop(turn, None)

    def wake(self, turn: TurnOutput, *, now: bool) -> None:
        self._dirty[turn] = None
        if now:
            self._urgent = True
            self._wakeup.set()
        elif time.monotonic() + self.interval < self._sleep_until:
            self._wakeup.set()  # the flusher sleeps for the cancel poll: bring it forward

    async def close(self) -> None:
        """Wait for the flusher to write what is queued and exit."""
        task = self._task
        if task is not None:
            for turn in list(self._turns):
                if not turn._queue and not turn._tokens:
                    self._turns.discard(turn)
            self._wakeup.set()
            with contextlib.suppress(Exception):
                await task
        await self._conn.close()

    async def _run(self) -> None:
        while self._turns:
            now = time.monotonic()
            if self._urgent:
                until = now
            elif self._dirty:
                until = min(self._last_flush + self.interval, self._last_poll + self.cancel_poll)
            else:
                until = self._last_poll + self.cancel_poll
            if until > now:
                self._sleep_until = until
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(until - now):
                        await self._wakeup.wait()
                self._sleep_until = 0.0
                continue  # recompute: woken early or due
            await self._flush()

    async def _flush(self) -> None:
        self._urgent = False
        now = time.monotonic()
        self._last_flush = now
        # Turns' first writes lead the pipeline: Redis answers a blocked XREAD (the gateway's)
        # right after the first XADD for a stream it waits on, so a first token behind other
        # turns' tokens would wait for the gateway's next read.
        turns = sorted(self._dirty, key=_written_before)
        self._dirty.clear()
        poll = now - self._last_poll >= self.cancel_poll
        watched = [t for t in self._turns if not t.cancelled and not t.finished] if poll else []
        if poll:
            self._last_poll = now
        plan: list[tuple[TurnOutput, list[_Item], bool]] = []
        commands: list[Command] = []
        for turn in turns:
            items = turn._take()
            if not items:
                continue
            expire = not turn._expiry_set or any(i.event.kind in TERMINAL for i in items)
            for i, item in enumerate(items):
                commands += turn.writer.commands(item.event,
                                                 expire=expire and i == len(items) - 1)
            plan.append((turn, items, expire))
        if watched:
            commands.append(("MGET", *(key for t in watched
                                       for key in (t.cancel_key, t.attached_key))))
        if not plan and not watched:
            self._settle()
            return
        self.flushes += 1
        try:
            replies = await self._conn.run(commands)
        except Exception as exc:
            log.warning("turn_streams_flush_failed", error=str(exc), turns=len(plan))
            for turn, items, _ in plan:
                turn._fail(exc, items)
                turn.finished = True
            self._settle()
            return
        at = 0
        for turn, items, expire in plan:
            for item in items:
                entry = replies[at]
                at += 1
                if item.event.kind in TERMINAL:
                    turn.finished = True
                if item.written is not None and not item.written.done():
                    item.written.set_result(entry.decode() if isinstance(entry, bytes) else entry)
            if expire:
                turn._expiry_set = True
                at += 1
        if watched:
            flags = replies[at]
            for i, turn in enumerate(watched):
                self._check(turn, cancel=flags[2 * i], attached=flags[2 * i + 1], now=now)
        self._settle()

    def _check(self, turn: TurnOutput, *, cancel: object, attached: object, now: float) -> None:
        if cancel:
            turn._cancel("cancelled")
        elif attached:
            turn.held, turn.unheld_since = True, None
        elif turn.held:
            if turn.unheld_since is None:
                turn.unheld_since = now
            elif now - turn.unheld_since >= self.orphan_after:
                log.warning("turn_orphaned", key=turn.key,
                            unheld_for=round(now - turn.unheld_since, 1))
                turn._cancel("orphaned")

    def _settle(self) -> None:
        """Forget turns that ended, or were left with nothing more to write."""
        for turn in list(self._turns):
            if turn.finished or (turn.detached and not turn._queue and not turn._tokens):
                self._turns.discard(turn)
                self._dirty.pop(turn, None)
