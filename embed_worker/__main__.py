"""``python -m embed_worker``: consume the embed queue until SIGTERM, then drain."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from backends.clients import open_clients
from parley.runtime.consumer import Consumer
from parley.runtime.worker import main
from parley.settings import Settings


async def setup(stack: contextlib.AsyncExitStack, settings: Settings) -> Sequence[Consumer]:
    from embed_worker.handler import EmbedHandler

    clients = await open_clients(stack, settings, vectors=True, embedder=True)
    handler = EmbedHandler.from_clients(clients)
    stack.push_async_callback(handler.close)  # before the clients close: clean-ups use them
    queue = settings.queues.embed
    return [
        Consumer(
            clients.brokers.for_queue(queue), queue, handler, drain_seconds=settings.drain_seconds
        )
    ]


if __name__ == "__main__":
    main("embed_worker", setup)
