"""``python -m ingest_worker``: consume the ingest queue until SIGTERM, then drain."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import structlog

from backends.clients import open_clients
from parley.runtime.consumer import Consumer
from parley.runtime.worker import Runnable, main
from parley.settings import Settings

log = structlog.get_logger(__name__)


async def setup(stack: contextlib.AsyncExitStack, settings: Settings) -> Sequence[Runnable]:
    from ingest_worker.extract.isolation import (
        ExtractorPool,
        child_memory_limit,
        container_memory_limit,
    )
    from ingest_worker.handler import IngestHandler

    queue = settings.queues.ingest
    # Every concurrent extraction child at its memory limit, and the worker, fit in the pod.
    container = container_memory_limit()
    memory_limit = child_memory_limit(
        queue.concurrency, container_limit=container, explicit=settings.extract_memory_bytes
    )
    log.info("extraction_memory", child_limit=memory_limit, container_limit=container,
             concurrency=queue.concurrency)
    # The model itself is not loaded: chunks are sized with its tokenizer alone.
    clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=False)
    pool = ExtractorPool(memory_limit=memory_limit)
    stack.push_async_callback(pool.close)  # closed first: no extraction outlives us
    handler = IngestHandler.from_clients(clients, pool=pool)
    runners: list[Runnable] = []
    if settings.blob_watch_seconds > 0:
        from ingest_worker.watcher import Watcher

        ingest_broker = clients.brokers.for_queue(queue)
        runners.append(
            Watcher(settings, blobs=clients.blobs, broker=ingest_broker, redis=clients.redis)
        )
    return [
        *runners,
        Consumer(
            clients.brokers.for_queue(queue), queue, handler, drain_seconds=settings.drain_seconds
        ),
    ]


if __name__ == "__main__":
    main("ingest_worker", setup)
