"""Prometheus metrics of every component, in the process-wide default registry.

Workers serve them on ``PARLEY_METRICS_PORT`` (:mod:`parley.runtime.health`), the gateway on
``/metrics``.
Counters and histograms are updated where the work happens (consumer runtime, ingest and embed
handlers, embedder, inference worker, gateway sessions). Queue depth and oldest-message age are
asked of the broker at scrape time (:func:`scrape`), at most once per :data:`QUEUE_PROBE_TTL`
seconds, for the queues this process registered with :func:`track_queue`.

Names are the contract of ``dashboards/parley.json``; a test checks that every metric the
dashboard queries exists here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from parley.broker import Broker

log = structlog.get_logger(__name__)

QUEUE_PROBE_TTL = 5.0
_PROBE_TIMEOUT = 3.0

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SLOW = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# --- consumer runtime (every worker) ---------------------------------------------------------
MESSAGES_HANDLED = Counter(
    "parley_messages_handled", "Messages handled successfully (acked)", ["queue"]
)
MESSAGES_FAILED = Counter(
    "parley_messages_failed", "Deliveries whose handler raised (then retried or dead-lettered)",
    ["queue"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "parley_messages_dead_lettered", "Messages moved to the dead letters", ["queue"]
)
HANDLE_SECONDS = Histogram(
    "parley_message_handle_seconds", "Time a handler took with one delivery", ["queue"],
    buckets=_FAST,
)
QUEUE_DEPTH = Gauge("parley_queue_depth", "Messages waiting or leased", ["queue"])
QUEUE_OLDEST_AGE = Gauge(
    "parley_queue_oldest_message_age_seconds", "Age of the oldest waiting or leased message",
    ["queue"],
)

# --- documents (ingest and embed workers) ----------------------------------------------------
STAGE_SECONDS = Histogram(
    "parley_document_stage_seconds",
    "Per document: extracting, chunking, embedding (chunked -> ready) and total (ingest -> ready)",
    ["stage"], buckets=_SLOW,
)
DOCUMENTS = Counter(
    "parley_documents", "Documents finished by outcome (ready, failed, unchanged)", ["outcome"]
)
PAGES = Counter("parley_pages_extracted", "Pages extracted")
CHUNKS_CREATED = Counter("parley_chunks_created", "Chunks cut from extracted text")
CHUNKS_EMBEDDED = Counter("parley_chunks_embedded", "Chunks embedded and stored")
EMBED_BATCH_SECONDS = Histogram(
    "parley_embed_batch_seconds", "Time to embed one chunk batch", buckets=_FAST
)
EMBEDDER_THROTTLED = Counter(
    "parley_embedder_throttled", "Embedding requests answered 429 (rate limited)"
)

# --- chat (gateway and inference worker) ------------------------------------------------------
CHAT_TTFT = Histogram(
    "parley_chat_time_to_first_token_seconds",
    "Inference worker: turn received -> first token written", buckets=_FAST,
)
CHAT_TOKENS_PER_SECOND = Histogram(
    "parley_chat_tokens_per_second", "Decode rate of one answer (after its first token)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
CHAT_TOKENS = Counter("parley_chat_tokens", "Tokens generated")
WS_SESSIONS = Gauge("parley_ws_sessions_active", "Open websocket sessions")
CHAT_STREAMS = Gauge("parley_chat_streams_active", "Turn streams being relayed to a client")
FEEDBACK = Counter(
    "parley_feedback", "Ratings of answers by users (rating: up/down; face: websocket/openai)",
    ["rating", "face"],
)


class QueueProbe:
    """The queues whose depth this process reports, with the broker each lives on."""

    def __init__(self, ttl: float = QUEUE_PROBE_TTL) -> None:
        self.ttl = ttl
        self._queues: dict[str, tuple[Broker, int]] = {}
        self._refreshed = 0.0

    def track(self, broker: Broker, queue: str) -> None:
        """Report ``queue`` from now on. Tracking is counted: N tracks need N untracks."""
        _old, count = self._queues.get(queue, (broker, 0))
        self._queues[queue] = (broker, count + 1)
        self._refreshed = 0.0

    def untrack(self, queue: str) -> None:
        found = self._queues.get(queue)
        if found is None:
            return
        broker, count = found
        if count > 1:
            self._queues[queue] = (broker, count - 1)
            return
        del self._queues[queue]
        for gauge in (QUEUE_DEPTH, QUEUE_OLDEST_AGE):
            with contextlib.suppress(KeyError):
                gauge.remove(queue)

    async def refresh(self, *, force: bool = False) -> None:
        """Ask each broker, unless asked less than ``ttl`` seconds ago. A broker that fails or
        is slow keeps its last values (logged); the others are still updated."""
        now = time.monotonic()
        if not force and now - self._refreshed < self.ttl:
            return
        self._refreshed = now  # before awaiting: concurrent scrapes do not stack up
        await asyncio.gather(
            *(self._probe(queue, broker) for queue, (broker, _n) in list(self._queues.items()))
        )

    async def _probe(self, queue: str, broker: Broker) -> None:
        try:
            depth, oldest = await asyncio.wait_for(
                asyncio.gather(broker.depth(queue), broker.oldest_message_age(queue)),
                _PROBE_TIMEOUT,
            )
        except Exception as exc:
            log.warning("queue_probe_failed", queue=queue, error=f"{type(exc).__name__}: {exc}")
            return
        if depth >= 0:  # -1: the backend would not say (Service Bus without Manage rights)
            QUEUE_DEPTH.labels(queue).set(depth)
        QUEUE_OLDEST_AGE.labels(queue).set(oldest or 0.0)


PROBE = QueueProbe()


def track_queue(broker: Broker, queue: str) -> None:
    PROBE.track(broker, queue)


def untrack_queue(queue: str) -> None:
    PROBE.untrack(queue)


async def scrape() -> bytes:
    """The Prometheus text exposition, with queue gauges refreshed when stale."""
    await PROBE.refresh()
    return generate_latest(REGISTRY)
