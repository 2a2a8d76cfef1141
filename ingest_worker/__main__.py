"""``python -m ingest_worker``: consume the ingest queue until SIGTERM, then drain."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from parley.clients import open_clients
from parley.consumer import Consumer
from parley.settings import Settings
from parley.worker import main


async def setup(stack: contextlib.AsyncExitStack, settings: Settings) -> Sequence[Consumer]:
    from ingest_worker.handler import IngestHandler

    clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=True)
    handler = IngestHandler(
        settings,
        blobs=clients.blobs,
        broker=clients.brokers.for_queue(settings.queues.embed),
        status=clients.status,
        vectors=clients.vectors,
        tokenizer=clients.embedder.tokenizer,
        tokenizer_id=clients.embedder.model_id,
    )
    queue = settings.queues.ingest
    return [
        Consumer(
            clients.brokers.for_queue(queue), queue, handler, drain_seconds=settings.drain_seconds
        )
    ]


if __name__ == "__main__":
    main("ingest_worker", setup)
