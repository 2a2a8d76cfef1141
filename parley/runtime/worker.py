"""A worker process: one lifespan that opens clients, runs consumers, drains on SIGTERM and
closes clients in reverse order; plus a small HTTP port for ``/metrics``, ``/healthz`` and
``/readyz`` (Kubernetes probes and Prometheus).

``setup(stack, settings)`` opens what the worker needs on ``stack`` (closed in reverse order on
exit) and returns the consumers to run. SIGTERM or SIGINT sets the stop event: consumers stop
receiving, finish in-flight messages within ``settings.drain_seconds``, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from parley import logs
from parley.runtime.consumer import Consumer
from parley.settings import Settings


class Runnable(Protocol):
    """A consumer, the blob watcher, ...: runs until ``stop`` is set, then finishes its work."""

    async def run(self, stop: asyncio.Event) -> None: ...


Setup = Callable[[contextlib.AsyncExitStack, Settings], Awaitable[Sequence[Runnable]]]

log = structlog.get_logger(__name__)


async def serve(
    name: str, settings: Settings, setup: Setup, *, stop: asyncio.Event | None = None
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None)."""
    stop = stop or _signal_stop()
    async with contextlib.AsyncExitStack() as stack:
        from parley import tracing

        provider = tracing.configure(settings, name)
        if provider is not None:
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                stack.callback(shutdown)  # flushes the last spans
        consumers = await setup(stack, settings)
        # Everything built so far (modules, clients, a model's weights) lives as long as the
        # process: keep it out of the cyclic GC's generations, so that a full collection does
        # not walk it again and again while messages are handled (a latency spike each time).
        gc.freeze()
        if settings.metrics_port:
            from parley.runtime.health import serve_health

            await serve_health(stack, settings.metrics_port, consumers)
        queues = [c.queue.name for c in consumers if isinstance(c, Consumer)]
        log.info("worker_started", worker=name, queues=queues)
        await asyncio.gather(*(c.run(stop) for c in consumers))
        log.info("worker_stopped", worker=name)


def _signal_stop() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main(name: str, setup: Setup, settings: Settings | None = None) -> None:
    """Entry point of ``python -m <worker>``."""
    settings = settings or Settings()
    logs.configure(settings.log_level, json=settings.log_json, component=name)
    asyncio.run(serve(name, settings, setup))
