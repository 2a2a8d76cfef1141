"""``python -m inference_worker``: consume chat turns from the chat queue (always Redis Streams:
the low-latency path) and stream the configured model's answers into the turns' streams.

Concurrency is ``PARLEY_QUEUES__CHAT__CONCURRENCY`` turns at a time (raise it for a GPU endpoint
that batches); a worker that dies mid-turn loses the message's lease after
``PARLEY_QUEUES__CHAT__LEASE_SECONDS`` and the turn is settled by another worker (see
:mod:`inference_worker.handler`). SIGTERM: stop taking turns, finish the running ones within
``PARLEY_DRAIN_SECONDS``, end the others with ``worker_lost``, exit 0.

The worker loads the packaged sentence embedder for the extractive answerer's reading of a
question's meaning (:mod:`inference_worker.meaning`; ~250 MB, seconds at start);
``PARLEY_ANSWER_MEANING=false`` (``Settings.answer_meaning``) leaves it out (words alone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog

from inference_worker.backend import build_chat_model
from inference_worker.handler import HandlerOptions, TurnHandler
from inference_worker.meaning import Meaning
from parley.broker.redis import RedisBroker
from parley.runtime import worker
from parley.runtime.consumer import Consumer
from parley.settings import Settings

NAME = "inference-worker"
log = structlog.get_logger(__name__)


async def setup(stack: contextlib.AsyncExitStack, settings: Settings) -> Sequence[Consumer]:
    """Open Redis, the broker and the model on ``stack``; one consumer on the chat queue."""
    queue = settings.queues.chat
    # Every starting turn reads its stream's state on its own connection; the outbox writes all
    # turns' tokens on one; plus the receive loop and the lease keeper. A blocking pool waits
    # for a free connection instead of failing the turn (redis-py's default pool raises past
    # 100 connections).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=queue.concurrency + 8, timeout=10
    )
    client = aioredis.Redis(connection_pool=pool)
    stack.push_async_callback(client.aclose)
    broker = RedisBroker(
        client, prefix=settings.redis_prefix, lease_seconds={queue.name: queue.lease_seconds}
    )
    # The broker's heartbeat (``turnstream.alive_key(broker.consumer)``) beats from its first
    # receive until it is closed, after the consumer has drained: a gateway relaying one of this
    # worker's turns sees it die within seconds (parley.turnstream.LostWorkers).
    stack.push_async_callback(broker.close)
    model = build_chat_model(settings)
    stack.push_async_callback(model.close)
    handler = TurnHandler(
        model,
        client,
        HandlerOptions(
            prefix=settings.redis_prefix,
            stream_ttl=settings.stream_ttl_seconds,
            max_attempts=queue.max_attempts,
            worker_id=broker.consumer,
            not_found_guard=settings.answer_not_found_guard,
        ),
    )
    stack.push_async_callback(handler.close)
    if settings.answer_meaning:
        handler.meaning = await _meaning(stack)
    return [Consumer(broker, queue, handler, drain_seconds=settings.drain_seconds)]


async def _meaning(stack: contextlib.AsyncExitStack) -> Meaning | None:
    """The packaged sentence embedder on one thread, for the extractive answerer's second
    reading of a question (:mod:`inference_worker.meaning`); None when its package is missing:
    the answerer then reads words alone."""
    try:
        from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

        embedder = LocalEmbedder(LocalEmbedderConfig(threads=1))
    except (ImportError, OSError) as exc:
        log.warning("answer_meaning_unavailable", error=str(exc))
        return None
    stack.push_async_callback(embedder.close)
    return Meaning(embedder)


def main() -> None:
    with contextlib.suppress(ImportError):
        # uvloop when installed (a dependency except on Windows): less event-loop CPU per
        # streamed token than asyncio's own loop (python -m bench.stages); the gateway's uvicorn
        # picks it the same way.
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    worker.main(NAME, setup)


if __name__ == "__main__":
    main()
