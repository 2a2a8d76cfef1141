"""The consumer runtime every worker runs on: receive, dispatch with bounded concurrency, settle.

What a queue's messages mean is a :class:`~parley.runtime.service.Service` (a bare
``async def handler(message)`` is one whose item is the message): the runtime parses each
delivery into its items, hands them to the service one by one, settles the delivery and calls
the service's hooks (see :mod:`parley.runtime.service`). The outcomes:

- every item handled (or ended by a :class:`~parley.errors.UserError`, which ``on_user_error``
  records): ack;
- a body that is not the contract, or :class:`~parley.errors.Reject`: dead letter at once with
  the error as reason, after ``on_rejected``;
- :class:`~parley.errors.Retry` (or any other exception): delivered again after a backoff (the
  Retry's ``delay`` when it has one); after ``max_attempts`` deliveries, ``on_retry_exhausted``
  then the dead letter with the last error.

A delivery whose ``attempt`` is already past ``max_attempts`` (earlier deliveries were never
settled: the handler killed or hung its worker, e.g. an OOM kill) is dead-lettered at receive
without running the handler again (reason ``max_deliveries``), after ``on_retry_exhausted`` has
had its say with :class:`~parley.errors.Unsettled`. On stop the runtime receives nothing more
and waits up to ``drain_seconds`` for in-flight handlers; handlers still running then are
cancelled and their messages left unsettled, so the broker delivers them again
(at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from parley import metrics, tracing
from parley.broker import Broker, Message
from parley.contracts import DOCUMENT_HEADER, TRACE_HEADER, TURN_HEADER
from parley.errors import Reject, Retry, Unsettled, UserError
from parley.runtime import tasks
from parley.runtime.service import Handler, Service, as_service
from parley.settings import QueueSettings

SETTLE_TRIES = 6  # about 0.5+1+2+4+5 s of backoff: a Redis restart or failover

log = structlog.get_logger(__name__)


def backoff(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter in its upper half: attempt 1 -> 0.5..1 s."""
    ceiling: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling * (0.5 + random.random() / 2)


@dataclass
class Stats:
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    in_flight: int = 0


class Consumer:
    def __init__(
        self,
        broker: Broker,
        queue: QueueSettings,
        handler: Service[Any] | Handler,
        *,
        drain_seconds: float = 25.0,
        receive_wait: float = 1.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.service = as_service(handler)
        self.drain_seconds = drain_seconds
        self.receive_wait = receive_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()
        # Set when a task ends: waiting on it costs O(1) per wake-up, where asyncio.wait over
        # every running task costs O(concurrency) (200 turns -> 400 callback edits per turn).
        self._slot_freed = asyncio.Event()
        self.idle = asyncio.Event()
        # False from a failed receive (broker down) until one succeeds: the worker's /readyz.
        self.ready = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain. Receive errors (broker down) are logged and
        retried with backoff, so a worker outlives a broker restart."""
        metrics.track_queue(self.broker, self.queue.name)
        try:
            await self._consume(stop)
        finally:
            metrics.untrack_queue(self.queue.name)

    async def _consume(self, stop: asyncio.Event) -> None:
        async def wake_on_stop() -> None:  # a loop waiting for a free slot must see the stop
            await stop.wait()
            self._slot_freed.set()

        watcher = asyncio.create_task(wake_on_stop())
        try:
            await self._receive_loop(stop)
        finally:
            watcher.cancel()
        await self.drain()

    async def _receive_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        name = self.queue.name
        while not stop.is_set():
            free = self.queue.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                messages = await self.broker.receive(
                    name, max_messages=free, wait=self.receive_wait
                )
                failures = 0
                self.ready = True
            except Exception as exc:
                failures += 1
                self.ready = False
                delay = backoff(failures, base=0.5, cap=10.0)
                log.error("receive_failed", queue=name, error=str(exc), retry_in=round(delay, 2))
                await _sleep_or_stop(delay, stop)
                continue
            if not messages and not self._tasks:
                self.idle.set()
            for message in messages:
                self.idle.clear()
                task = asyncio.create_task(self._handle(message), name=f"{name}:{message.id}")
                self._tasks.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # _handle logs and settles every handler outcome; this is a failure of its own
            # (a settle given up on, a logging error): said here, never left unretrieved.
            log.error("handling_failed", queue=self.queue.name, task=task.get_name(),
                      error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    async def drain(self) -> None:
        if not self._tasks:
            return
        log.info("draining", queue=self.queue.name, in_flight=len(self._tasks))
        _done, pending = await asyncio.wait(self._tasks, timeout=self.drain_seconds)
        if pending:
            log.warning("drain_timeout", queue=self.queue.name, abandoned=len(pending))
        # Cancelled again until they end (a cancel swallowed by redis-py: see parley.runtime.tasks).
        await asyncio.gather(*(tasks.stop(task) for task in pending))

    async def _handle(self, message: Message) -> None:
        headers = message.headers
        bound = {
            "queue": message.queue,
            "message_id": message.id,
            "attempt": message.attempt,
            "trace_id": _trace_id(headers.get(TRACE_HEADER)),
            "document_id": headers.get(DOCUMENT_HEADER),
            "turn_id": headers.get(TURN_HEADER),
        }
        started = time.monotonic()
        self.stats.in_flight += 1
        name = message.queue
        with structlog.contextvars.bound_contextvars(
            **{k: v for k, v in bound.items() if v is not None}
        ), tracing.consuming(name, message.id, headers):
            if message.attempt > self.queue.max_attempts:
                await self._give_up_unsettled(message)
                return
            item: Any = None  # the item being handled, for the hooks
            try:
                for item in self.service.parse(message):
                    try:
                        await self.service.handle(item, message)
                    except UserError as exc:
                        log.info("user_error", reason=exc.reason, error=str(exc))
                        await self.service.on_user_error(message, item, exc)
            except Reject as exc:
                metrics.MESSAGES_FAILED.labels(name).inc()
                log.warning("rejected", reason=exc.reason, error=str(exc))
                await self._hook("on_rejected", self.service.on_rejected(message, item, exc))
                await self._dead_letter(message, str(exc))
            except asyncio.CancelledError:
                log.warning("cancelled_unsettled")  # redelivered after the lease
                raise
            except Exception as exc:
                metrics.MESSAGES_FAILED.labels(name).inc()
                delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
                await self._retry(message, item, exc, delay)
            else:
                await self._settle("ack", lambda: self.broker.ack(message))
                self.stats.handled += 1
                metrics.MESSAGES_HANDLED.labels(name).inc()
                log.info("handled", seconds=round(time.monotonic() - started, 3))
            finally:
                self.stats.in_flight -= 1
                metrics.HANDLE_SECONDS.labels(name).observe(time.monotonic() - started)

    async def _give_up_unsettled(self, message: Message) -> None:
        """Dead-letter a message delivered more often than ``max_attempts`` without ever being
        settled: running it again would kill or hang this worker too."""
        reason = (
            f"max_deliveries: delivered {message.attempt} times, more than max_attempts "
            f"{self.queue.max_attempts}, without being settled (its handling may kill or hang "
            "the worker); not run again"
        )
        metrics.MESSAGES_FAILED.labels(message.queue).inc()
        log.error("poison_message", reason="max_deliveries", attempt=message.attempt)
        error = Unsettled(reason)
        try:
            items = list(self.service.parse(message)) or [None]
        except Exception:  # malformed too: the hooks still hear of it, the dead letter follows
            items = [None]
        for item in items:
            await self._hook("on_retry_exhausted",
                             self.service.on_retry_exhausted(message, item, error))
        await self._dead_letter(message, reason)

    async def _retry(
        self, message: Message, item: object, exc: Exception, delay: float | None
    ) -> None:
        error = str(exc) if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"
        if message.attempt >= self.queue.max_attempts:
            log.error("giving_up", error=error, exc_info=not isinstance(exc, Retry))
            await self._hook("on_retry_exhausted",
                             self.service.on_retry_exhausted(message, item, exc))
            await self._dead_letter(message, f"gave up after {message.attempt} attempts: {error}")
            return
        if delay is None:
            delay = backoff(message.attempt, base=self.backoff_base, cap=self.backoff_cap)
        log.warning(
            "retrying", error=error, retry_in=round(delay, 2), exc_info=not isinstance(exc, Retry)
        )
        await self._settle("retry", lambda: self.broker.retry(message, delay=delay))
        self.stats.retried += 1

    @staticmethod
    async def _hook(name: str, call: Awaitable[None]) -> None:
        """Run a give-up hook: the dead letter that follows matters more than the hook."""
        try:
            await call
        except Exception as exc:
            log.warning("hook_failed", hook=name, error=f"{type(exc).__name__}: {exc}")

    async def _dead_letter(self, message: Message, reason: str) -> None:
        await self._settle("dead_letter", lambda: self.broker.dead_letter(message, reason=reason))
        self.stats.dead_lettered += 1
        metrics.MESSAGES_DEAD_LETTERED.labels(message.queue).inc()

    async def _settle(self, action: str, settle: Callable[[], Awaitable[None]]) -> None:
        """Run a settle, again with backoff while the broker is unreachable (a Redis restart
        takes seconds), for up to ``SETTLE_TRIES`` tries. Given up on, the delivery is left to
        its lease and delivered again (the handler is idempotent); never raised."""
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                await settle()
                return
            except Exception as exc:
                last = attempt == SETTLE_TRIES
                log.warning("settle_failed", action=action, error=f"{type(exc).__name__}: {exc}",
                            tries=attempt, given_up=last)
                if last:
                    return
                await asyncio.sleep(backoff(attempt, base=0.5, cap=5.0))


def _trace_id(traceparent: str | None) -> str | None:
    # W3C traceparent: version-traceid-spanid-flags
    if traceparent and traceparent.count("-") == 3:
        return traceparent.split("-")[1]
    return None


async def _sleep_or_stop(delay: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
