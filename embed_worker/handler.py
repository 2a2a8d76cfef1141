"""Embed one chunk batch and upsert it; flip the document to ``ready`` when its last batch lands.

Idempotent: chunk ids are derived from (document, version, ordinal), Chroma ``upsert`` overwrites,
and landing a batch is recorded in a set keyed by batch index, so a redelivered batch changes
nothing. A batch of a version that is no longer wanted (the document was replaced or deleted
meanwhile) is dropped, and anything it wrote is removed.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from collections.abc import Mapping

import structlog
from pydantic import ValidationError

from parley import metrics, tracing
from parley.broker import Message
from parley.clients import Clients
from parley.contracts import CHUNKED_AT_HEADER, INGEST_STARTED_HEADER, ChunkBatch
from parley.embedder import Embedder
from parley.errors import Reject
from parley.status import StatusStore
from parley.vectorstore import ChunkRecord, VectorStore

log = structlog.get_logger(__name__)


def embedding_text(batch: ChunkBatch, text: str, heading: str | None) -> str:
    """What is embedded for a chunk: a short header naming the document (and section) before
    the text, so questions that name a document or section find its chunks."""
    return document_text(batch.filename, text, heading)


def document_text(filename: str, text: str, heading: str | None) -> str:
    """:func:`embedding_text` from the file name alone (re-embedding reads chunks from Chroma)."""
    title = posixpath.splitext(filename)[0]
    header = f"{title} — {heading}" if heading else title
    return f"{header}\n{text}"


class EmbedHandler:
    def __init__(self, *, embedder: Embedder, vectors: VectorStore, status: StatusStore) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.status = status

    @classmethod
    def from_clients(cls, clients: Clients) -> EmbedHandler:
        return cls(embedder=clients.embedder, vectors=clients.vectors, status=clients.status)

    async def __call__(self, message: Message) -> None:
        try:
            batch = ChunkBatch.model_validate_json(message.body)
        except ValidationError as exc:
            raise Reject(
                f"not a parley.chunks.v1 batch: {exc.errors()[:3]}", reason="malformed_message"
            ) from exc
        with structlog.contextvars.bound_contextvars(
            document_id=batch.document_id, tenant=batch.tenant, batch=batch.batch_index
        ):
            await self.handle(batch, message.headers)

    async def handle(self, batch: ChunkBatch, headers: Mapping[str, str] | None = None) -> None:
        current = await self.status.get(batch.tenant, batch.document_id)
        if current is None or batch.version not in (current.pending_version, current.version):
            log.info("stale_batch_dropped", version=batch.version)
            return
        started = time.monotonic()
        with tracing.span("embed", document_id=batch.document_id, batch=batch.batch_index):
            vectors = await self.embedder.embed(
                [embedding_text(batch, c.text, c.heading) for c in batch.chunks]
            )
        metrics.EMBED_BATCH_SECONDS.observe(time.monotonic() - started)
        records = [
            ChunkRecord(
                chunk_id=c.chunk_id,
                document_id=batch.document_id,
                version=batch.version,
                text=c.text,
                embedding=vector,
                metadata={
                    k: v
                    for k, v in {
                        "filename": batch.filename,
                        "path": batch.path,
                        "page": c.page,
                        "heading": c.heading,
                        "ordinal": c.ordinal,
                        "tokens": c.tokens,
                    }.items()
                    if v is not None
                },
            )
            for c, vector in zip(batch.chunks, vectors, strict=True)
        ]
        await self.vectors.upsert(batch.tenant, records)
        metrics.CHUNKS_EMBEDDED.inc(len(records))
        landed = await self.status.batch_landed(
            batch.tenant, batch.document_id, batch.version, batch.batch_index, len(records)
        )
        if landed in (1, 2):
            # Ready with this version: every other version's chunks go (again, on redelivery).
            removed = await self.vectors.delete_document(
                batch.tenant, batch.document_id, except_version=batch.version
            )
            if landed == 1:
                log.info("document_ready", version=batch.version, old_chunks_removed=removed)
                _observe_ready(headers or {})
        elif landed == -1:
            latest = await self.status.get(batch.tenant, batch.document_id)
            if latest is None:
                await self.vectors.delete_document(batch.tenant, batch.document_id)
            elif latest.version:
                await self.vectors.delete_document(
                    batch.tenant, batch.document_id, except_version=latest.version
                )
            log.info("superseded_batch_removed", version=batch.version)


def _observe_ready(headers: Mapping[str, str]) -> None:
    metrics.DOCUMENTS.labels("ready").inc()
    now = time.time()
    for stage, header in (("embedding", CHUNKED_AT_HEADER), ("total", INGEST_STARTED_HEADER)):
        # Missing or odd on a batch from an older ingest worker or another tool: not observed.
        with contextlib.suppress(KeyError, ValueError):
            metrics.STAGE_SECONDS.labels(stage).observe(max(0.0, now - float(headers[header])))
