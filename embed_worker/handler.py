"""Embed one chunk batch and upsert it; flip the document to ``ready`` when its last batch lands.

Idempotent: chunk ids are derived from (document, version, ordinal), Chroma ``upsert`` overwrites,
and landing a batch is recorded in a set keyed by batch index, so a redelivered batch changes
nothing. A batch of a version that is no longer wanted (the document was replaced or deleted
meanwhile) is dropped, and anything it wrote is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import structlog

from backends.clients import Clients
from parley import metrics, tracing
from parley.broker import Message
from parley.contracts import CHUNKED_AT_HEADER, INGEST_STARTED_HEADER, ChunkBatch
from parley.embedder import Embedder
from parley.embedder.text import document_text
from parley.ids import DocumentId, TenantId
from parley.runtime.service import Service, typed
from parley.status import StatusStore
from parley.vectors.marks import WriteMarks
from parley.vectors.metadata import ChunkMeta
from parley.vectors.store import ChunkRecord, VectorStore

log = structlog.get_logger(__name__)

CLEANUP_GRACE = 5.0  # seconds a superseded version stays after the swap (see chat_gateway.search)


def embedding_text(batch: ChunkBatch, text: str, heading: str | None) -> str:
    """What is embedded for a chunk: a short header naming the document (its context, file name
    and section) before the text (:func:`parley.embedder.text.document_text`)."""
    return document_text(batch.filename, text, heading, batch.context)


class EmbedHandler(Service[ChunkBatch]):
    """The embed queue's service: one ``parley.chunks.v1`` batch a message; no hooks (a batch
    given up on leaves its document ``embedding``, for the stuck sweep)."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        vectors: VectorStore,
        status: StatusStore,
        cleanup_grace: float = CLEANUP_GRACE,
        writes: WriteMarks | None = None,
    ) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.status = status
        self.cleanup_grace = cleanup_grace
        self.writes = writes
        self._cleanups: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    @classmethod
    def from_clients(cls, clients: Clients) -> EmbedHandler:
        return cls(
            embedder=clients.embedder,
            vectors=clients.vectors,
            status=clients.status,
            writes=WriteMarks(clients.redis, prefix=clients.settings.redis_prefix),
        )

    def parse(self, delivery: Message) -> Sequence[ChunkBatch]:
        return (typed(ChunkBatch, delivery, what="parley.chunks.v1 batch"),)

    async def handle(self, item: ChunkBatch, delivery: Message | None = None) -> None:
        """Embed and upsert the batch; land it (``ready`` on the last one). ``delivery``
        carries the stage timings' headers, when there is one."""
        with structlog.contextvars.bound_contextvars(
            document_id=item.document_id, tenant=item.tenant, batch=item.batch_index
        ):
            await self._embed(item, delivery.headers if delivery is not None else {})

    async def _embed(self, batch: ChunkBatch, headers: Mapping[str, str]) -> None:
        current = await self.status.get(batch.tenant, batch.document_id)
        if current is None or batch.version not in (current.pending_version, current.version):
            log.info("stale_batch_dropped", version=batch.version)
            return
        # Chunks stored already (same id = same document, version and ordinal, so the same
        # text and vector): a redelivered batch, or work re-derived after Redis lost its data.
        # Only the others are embedded; the batch still lands.
        stored = await self.vectors.existing(batch.tenant, [c.chunk_id for c in batch.chunks])
        missing = [c for c in batch.chunks if c.chunk_id not in stored]
        log.info("batch_embedding", version=batch.version, chunks=len(batch.chunks),
                 embedded=len(missing), already_stored=len(stored))
        started = time.monotonic()
        with tracing.span("embed", document_id=batch.document_id, batch=batch.batch_index):
            vectors = await self.embedder.embed(
                [embedding_text(batch, c.text, c.heading) for c in missing]
            ) if missing else []
        metrics.EMBED_BATCH_SECONDS.observe(time.monotonic() - started)
        records = [
            ChunkRecord(
                chunk_id=c.chunk_id,
                document_id=batch.document_id,
                version=batch.version,
                text=c.text,
                embedding=vector,
                metadata=ChunkMeta.of(batch, c).to_metadata(),
            )
            for c, vector in zip(missing, vectors, strict=True)
        ]
        if self.writes is not None and records:
            # Before the upsert: the reembed sweep drops an old model's collection only when
            # it has not been marked for a while, and sees a mark that races its drop.
            await self.writes.mark(batch.tenant, self.embedder.model_id)
        await self.vectors.upsert(batch.tenant, records)
        metrics.CHUNKS_EMBEDDED.inc(len(records))
        landed = await self.status.batch_landed(
            batch.tenant, batch.document_id, batch.version, batch.batch_index, len(batch.chunks)
        )
        if landed == 1:
            log.info("document_ready", version=batch.version)
            _observe_ready(headers)
        if landed in (1, 2):
            # Ready with this version (again, on redelivery): the other versions go, after a
            # grace so that a search that read the served versions just before the swap still
            # finds the chunks it will keep (see chat_gateway.search and _remove_superseded).
            self._later(self._remove_superseded(batch.tenant, batch.document_id))
        elif landed == -1:
            # This version was replaced while its batches were on the way: nobody serves it.
            await self.vectors.delete_version(batch.tenant, batch.document_id, batch.version)
            log.info("superseded_batch_removed", version=batch.version)

    def _later(self, cleanup: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        task.add_done_callback(_log_failure)

    async def _remove_superseded(self, tenant: TenantId, document: DocumentId) -> None:
        """After the grace, delete the document's chunks of every version that was neither
        served nor pending when this clean-up started, nor is now.

        The versions of the start are kept because a version swapped out after this clean-up
        started (by this worker or another) must get the whole grace from that swap, not the
        rest of this one's; the swap itself schedules the clean-up that removes it. A version
        swapped out before the start has had its swap before the grace begins. A failure (Redis
        or Chroma down) is logged and not retried: the next swap of the document or the
        reconciliation sweep removes what is left."""
        before = await self.status.get(tenant, document)
        await self._closing_or(self.cleanup_grace)
        status = await self.status.get(tenant, document)
        if status is None:
            return  # deleted meanwhile: the delete removes every chunk
        keep = {
            v
            for s in (before, status)
            if s is not None
            for v in (s.version, s.pending_version)
            if v
        }
        removed = await self.vectors.delete_document(tenant, document, keep=keep)
        log.info("superseded_versions_removed", document_id=document, chunks=removed)

    async def _closing_or(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    async def close(self) -> None:
        """Run pending clean-ups now (skipping their grace) and wait for them. A worker killed
        before that leaves superseded chunks behind: never served (search filters by served
        version), removed by the next swap of that document or the reconciliation sweep."""
        self._closing.set()
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("cleanup_failed", error=repr(exc), exc_info=exc)


def _observe_ready(headers: Mapping[str, str]) -> None:
    metrics.DOCUMENTS.labels("ready").inc()
    now = time.time()
    for stage, header in (("embedding", CHUNKED_AT_HEADER), ("total", INGEST_STARTED_HEADER)):
        # Missing or odd on a batch from an older ingest worker or another tool: not observed.
        with contextlib.suppress(KeyError, ValueError):
            metrics.STAGE_SECONDS.labels(stage).observe(max(0.0, now - float(headers[header])))
