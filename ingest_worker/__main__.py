"""``python -m ingest_worker``: consume the ingest queue until SIGTERM, then drain."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from parley.runtime.clients import open_clients
from parley.runtime.consumer import Consumer
from parley.runtime.worker import Runnable, main
from parley.settings import Settings


async def setup(stack: contextlib.AsyncExitStack, settings: Settings) -> Sequence[Runnable]:
    from ingest_worker.extract.isolation import close_default_pool
    from ingest_worker.handler import IngestHandler

    # The model itself is not loaded: chunks are sized with its tokenizer alone.
    clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=False)
    stack.push_async_callback(close_default_pool)  # closed first: no extraction outlives us
    handler = IngestHandler.from_clients(clients)
    queue = settings.queues.ingest
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
