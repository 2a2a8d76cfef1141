"""Ingest: one queue message (an Event Grid event, several, or a plain request) -> the blob's
text extracted in a child process, chunked in tokens of the embedding model, and published as
chunk batches on the embed queue. The document's status record follows every step.

Outcomes, all acked unless said otherwise:
- the same content as the served version (unchanged re-upload): nothing to do;
- an event older (by ``sequencer``) than the last one applied to that blob: ignored;
- a blob that does not exist: status ``failed`` with reason ``not_found``, except for a
  BlobCreated event of a document without a record (a delete overtook it): ignored;
- a file with no usable text (encrypted, scanned, broken, too large ...): a
  :class:`~parley.errors.UserError`, which the ``on_user_error`` hook records as status
  ``failed`` with the reason in plain words — a terminal outcome for the document, not a dead
  letter;
- malformed messages: dead-lettered with the reason (``Reject``);
- anything transient (blob store, Redis): retried; when the runtime gives up, the
  ``on_retry_exhausted`` hook marks the document ``failed`` (``gave_up``) before the message
  goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from backends.clients import Clients
from ingest_worker import events
from ingest_worker.chunking import ChunkDraft, chunk
from ingest_worker.context import document_context, docx_properties
from ingest_worker.extract.isolation import ExtractorPool, default_pool
from ingest_worker.extract.ocr import options_from
from parley import metrics, tracing
from parley.blobstore import BLOCK_BYTES, BlobInfo, BlobStore
from parley.broker import Broker, Message
from parley.contracts import (
    CHUNKED_AT_HEADER,
    DOCUMENT_HEADER,
    INGEST_STARTED_HEADER,
    TRACE_HEADER,
    Chunk,
    ChunkBatch,
    DocumentContext,
    IngestRequest,
    dump,
)
from parley.embedder import Tokenizer
from parley.errors import NotFound, Reject, TooLarge, Unsettled, UserError
from parley.filetypes import FileKind
from parley.ids import (
    ChunkId,
    DocumentId,
    TenantId,
    document_id,
    is_tenant,
    new_trace_id,
    path_tenant,
)
from parley.runtime.service import Service
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus, Stage, StatusStore
from parley.vectors.store import VectorStore

log = structlog.get_logger(__name__)

PROGRESS_EVERY = 0.25  # seconds between page-progress updates


@dataclass(frozen=True)
class Target:
    tenant: TenantId
    path: str
    document_id: DocumentId


def target(request: IngestRequest, settings: Settings) -> Target:
    """Which tenant and document a request is about: the path's first segment names the tenant;
    a one-segment path belongs to the default tenant. Raises Reject (to the dead letters) for a
    request whose ``tenant`` is not the path's (``tenant_mismatch``: it would index one
    tenant's blob into another's collection, and let that tenant delete it) and for a path
    whose tenant is not a valid tenant name (``invalid_tenant``)."""
    if request.container is not None and request.container != settings.blob_container:
        raise Reject(
            f"event for container {request.container!r}; this deployment ingests "
            f"{settings.blob_container!r}",
            reason="unknown_container",
            hint="check the Event Grid subscription's subject filter",
        )
    path = request.path.lstrip("/")
    tenant = path_tenant(path, settings.default_tenant)
    if request.tenant is not None and request.tenant != tenant:
        raise Reject(
            f"the message names tenant {request.tenant!r} for {path!r}, a blob of tenant "
            f"{tenant!r}",
            reason="tenant_mismatch",
            hint="a tenant's blobs live under '<tenant>/' in the container",
        )
    if not is_tenant(tenant):
        raise Reject(
            f"{tenant!r} (the first segment of {path!r}) is not a valid tenant name",
            reason="invalid_tenant",
            hint="tenant names are letters, digits, '_', '.' and '-' (at most 64)",
        )
    return Target(TenantId(tenant), path, document_id(tenant, path))


def version_of(data: bytes | IO[bytes], settings: Settings, tokenizer_id: str) -> str:
    """Content hash + the chunking config: a new chunking config is a new version too. A file
    is hashed from its start, block by block."""
    if isinstance(data, bytes):
        digest = hashlib.sha256(data)
    else:
        data.seek(0)
        digest = hashlib.sha256()
        for block in iter(lambda: data.read(BLOCK_BYTES), b""):
            digest.update(block)
    digest.update(
        f"|{settings.chunk_tokens}|{settings.chunk_overlap_tokens}|{tokenizer_id}".encode()
    )
    return digest.hexdigest()[:32]


def chunk_id(document: DocumentId, version: str, ordinal: int) -> ChunkId:
    return ChunkId(hashlib.sha256(f"{document}|{version}|{ordinal}".encode()).hexdigest()[:32])


FIRST_BATCH = 4


def batch_sizes(total: int, size: int) -> list[int]:
    """Batch sizes that start small and double up to ``size``: the first chunks of a long
    document become searchable after one small batch, the rest go in full batches. Pure."""
    sizes: list[int] = []
    step = min(FIRST_BATCH, size)
    while total > 0:
        sizes.append(min(step, total))
        total -= sizes[-1]
        step = min(step * 2, size)
    return sizes


def batches(
    drafts: list[ChunkDraft],
    *,
    target: Target,
    version: str,
    filename: str,
    size: int,
    context: DocumentContext | None = None,
    kind: FileKind | None = None,
) -> list[ChunkBatch]:
    groups: list[list[ChunkDraft]] = []
    start = 0
    for count in batch_sizes(len(drafts), size):
        groups.append(drafts[start : start + count])
        start += count
    return [
        ChunkBatch(
            tenant=target.tenant,
            document_id=target.document_id,
            version=version,
            filename=filename,
            path=target.path,
            batch_index=index,
            batch_count=len(groups),
            kind=kind,
            chunks=[
                Chunk(
                    chunk_id=chunk_id(target.document_id, version, d.ordinal),
                    ordinal=d.ordinal,
                    text=d.text,
                    page=d.page,
                    heading=d.heading,
                    tokens=d.tokens,
                    ocr=d.ocr,
                    unit=d.unit,
                )
                for d in group
            ],
            context=context,
        )
        for index, group in enumerate(groups)
    ]


class IngestHandler(Service[IngestRequest]):
    """The ingest queue's service: the items of a message are its ingest requests (Event Grid
    may deliver several events at once), the latest of each blob's."""

    def __init__(
        self,
        settings: Settings,
        *,
        blobs: BlobStore,
        broker: Broker,
        status: StatusStore,
        vectors: VectorStore,
        tokenizer: Tokenizer,
        tokenizer_id: str,
        extract_timeout: float = 300.0,
        pool: ExtractorPool | None = None,
    ) -> None:
        """``pool``: the extraction children (default: the running loop's default pool)."""
        self.settings = settings
        self.blobs = blobs
        self.broker = broker
        self.status = status
        self.vectors = vectors
        self.tokenizer = tokenizer
        self.tokenizer_id = tokenizer_id
        self.extract_timeout = extract_timeout
        self.pool = pool
        self.ocr = options_from(settings)

    @classmethod
    def from_clients(cls, clients: Clients, *, pool: ExtractorPool | None = None) -> IngestHandler:
        """Wired as ``python -m ingest_worker`` wires it: publishes to the embed queue, sizes
        chunks with the configured embedder's tokenizer (the model itself is not loaded)."""
        from backends.factory import build_tokenizer

        settings = clients.settings
        return cls(
            settings,
            pool=pool,
            blobs=clients.blobs,
            broker=clients.brokers.for_queue(settings.queues.embed),
            status=clients.status,
            vectors=clients.vectors,
            tokenizer=build_tokenizer(settings),
            tokenizer_id=clients.model_id,
        )

    def parse(self, delivery: Message) -> Sequence[IngestRequest]:
        return events.latest(events.parse(delivery.body))

    async def handle(self, item: IngestRequest, delivery: Message) -> None:
        where = target(item, self.settings)
        headers = dict(delivery.headers)
        tracing.inject(headers)  # batches become children of this delivery's span
        headers.setdefault(TRACE_HEADER, f"00-{new_trace_id()}-{new_trace_id()[:16]}-01")
        with _bound(where):
            await self._handle(
                item, where, {**headers, DOCUMENT_HEADER: where.document_id},
                attempt=delivery.attempt,
            )

    async def on_user_error(
        self, delivery: Message, item: IngestRequest, error: UserError
    ) -> None:
        """The file cannot be used (no text, encrypted, too many chunks ...): the document is
        ``failed`` with the reason, in words its user reads."""
        where = target(item, self.settings)
        with _bound(where):
            log.warning("document_failed", reason=error.reason, error=error.message)
            metrics.DOCUMENTS.labels("failed").inc()
            await self.status.update(
                where.tenant, where.document_id, stage=Stage.FAILED, reason=error.reason,
                message=error.message,
            )

    async def on_retry_exhausted(
        self, delivery: Message, item: IngestRequest | None, error: Exception
    ) -> None:
        """The runtime gives up on the request: its document is ``failed`` (``gave_up``) with a
        reason the user sees, instead of staying ``extracting`` until the stuck sweep. For a
        message that was never settled (its handling killed or hung the worker, again and
        again) only uploads are marked: nothing of a delete ran."""
        if item is None:
            return
        try:
            where = target(item, self.settings)
        except Reject:
            return
        if isinstance(error, Unsettled):
            if item.action != "upsert":
                return
            message = (f"the worker stopped {delivery.attempt - 1} times while processing this "
                       "file (out of memory or hung?); it was not tried again")
        else:
            message = f"could not process after {delivery.attempt} attempts: {error}"
        await self.status.update(
            where.tenant, where.document_id, stage=Stage.FAILED, reason="gave_up", message=message
        )

    async def _handle(
        self, request: IngestRequest, where: Target, headers: Mapping[str, str], *, attempt: int
    ) -> None:
        current = await self.status.get(where.tenant, where.document_id)
        if (
            current is not None
            and request.sequencer is not None
            and current.sequencer is not None
            and not events.sequenced_after(request.sequencer, current.sequencer)
        ):
            # The same event again while its document is not settled: the worker that took it
            # first died mid-way (its status stops at extracting or embedding); this delivery
            # finishes the work, which is idempotent. An older event, or one already settled,
            # is dropped.
            if request.sequencer != current.sequencer or current.stage in TERMINAL_STAGES:
                log.info("stale_event_ignored", sequencer=request.sequencer,
                         seen=current.sequencer)
                return
            log.info("unsettled_event_resumed", sequencer=request.sequencer,
                     stage=current.stage.value)
        if request.action == "delete":
            await self._delete(request, where)
            return
        # The blob goes to a temporary file, block by block (never whole into memory); its size
        # is checked from its properties before the download starts. The extraction child reads
        # the file itself.
        with tempfile.NamedTemporaryFile(prefix="parley-ingest-") as file:
            try:
                info = await self.blobs.download(
                    where.path, file, max_bytes=self.settings.max_document_bytes
                )
            except NotFound:
                await self._not_found(request, where, current)
                return
            except TooLarge as exc:
                await self._too_large(request, where, current, exc)
                return
            file.flush()
            await self._ingest(
                request, where, headers, attempt=attempt, current=current, file=file, info=info
            )

    async def _ingest(
        self,
        request: IngestRequest,
        where: Target,
        headers: Mapping[str, str],
        *,
        attempt: int,
        current: DocumentStatus | None,
        file: IO[bytes],
        info: BlobInfo,
    ) -> None:
        filename = (
            info.metadata.get("filename") or request.filename or posixpath.basename(where.path)
        )
        version = await asyncio.to_thread(version_of, file, self.settings, self.tokenizer_id)
        if current is not None and current.version == version:
            # The served version is this very content: nothing to extract or embed. A version
            # still in flight from an upload in between is dropped (the latest upload wins).
            log.info("unchanged_skipped", version=version)
            metrics.DOCUMENTS.labels("unchanged").inc()
            await self.status.update(
                where.tenant,
                where.document_id,
                stage=Stage.READY,
                pending_version=None,
                etag=info.etag,
                sequencer=request.sequencer,
                reason=None,
                message="unchanged re-upload: nothing to do",
            )
            return
        await self.status.update(
            where.tenant,
            where.document_id,
            filename=filename,
            path=where.path,
            stage=Stage.EXTRACTING,
            etag=info.etag,
            sequencer=request.sequencer,
            reason=None,
            message=None,
            pages_done=0,
            pages_total=None,
            attempts=attempt,
        )
        started = time.time()
        # ExtractionFailed (no usable text) is a UserError: on_user_error records it.
        with tracing.span("extract", document_id=where.document_id):
            extraction = await (self.pool or default_pool()).extract(
                Path(file.name),
                filename,
                max_pages=self.settings.max_pages,
                max_bytes=self.settings.max_document_bytes,
                max_chars=self.settings.max_document_chars,
                timeout=self.extract_timeout,
                on_progress=self._progress(where),
                ocr=self.ocr,
            )
        extracted = time.time()
        metrics.STAGE_SECONDS.labels("extracting").observe(extracted - started)
        metrics.PAGES.inc(extraction.pages or 0)
        await self.status.update(
            where.tenant,
            where.document_id,
            stage=Stage.CHUNKING,
            pages_done=extraction.pages or 0,
            pages_total=extraction.pages,
            message="; ".join(extraction.warnings) or None,
        )
        drafts = chunk(
            extraction.blocks,
            tokenizer=self.tokenizer,
            max_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.chunk_overlap_tokens,
        )
        if not drafts:
            raise UserError("the document holds no text to index", reason="empty")
        if len(drafts) > self.settings.max_document_chunks:
            raise UserError(
                f"the document makes {len(drafts):,} chunks of text, over the limit of "
                f"{self.settings.max_document_chunks:,}; split it into smaller documents",
                reason="too_many_chunks",
            )
        # What the document says about itself (company, period, title): in every chunk's
        # metadata and embedded text, so "the quarter ended July 1, 2023" finds this report.
        context = document_context(
            extraction.blocks,
            filename,
            await asyncio.to_thread(docx_properties, file.name)
            if extraction.kind == "docx"
            else None,
            stored_title=extraction.title,
        )
        out = batches(
            drafts,
            target=where,
            version=version,
            filename=filename,
            size=self.settings.embed_batch_size,
            context=context,
            kind=extraction.kind,
        )
        await self.status.begin_version(
            where.tenant,
            where.document_id,
            version,
            batches_total=len(out),
            chunks=len(drafts),
            stage=Stage.EMBEDDING,
        )
        chunked = time.time()
        metrics.STAGE_SECONDS.labels("chunking").observe(chunked - extracted)
        metrics.CHUNKS_CREATED.inc(len(drafts))
        timing = {INGEST_STARTED_HEADER: repr(started), CHUNKED_AT_HEADER: repr(chunked)}
        await self.broker.publish_many(
            self.settings.queues.embed.name,
            [(dump(batch), {**headers, **timing}) for batch in out],
        )
        log.info(
            "chunked",
            version=version,
            chunks=len(drafts),
            batches=len(out),
            pages=extraction.pages,
            extractor=extraction.extractor,
        )

    async def _too_large(
        self,
        request: IngestRequest,
        where: Target,
        current: DocumentStatus | None,
        exc: TooLarge,
    ) -> None:
        """A blob over ``max_document_bytes``, refused from its properties: not downloaded."""
        size = f"{exc.size / 2**20:.1f} MiB" if exc.size is not None else "larger"
        log.warning("too_large", bytes=exc.size, limit=exc.limit)
        metrics.DOCUMENTS.labels("failed").inc()
        await self.status.update(
            where.tenant,
            where.document_id,
            filename=(current.filename if current is not None else None)
            or request.filename
            or posixpath.basename(where.path),
            path=where.path,
            stage=Stage.FAILED,
            sequencer=request.sequencer,
            reason="too_large",
            message=f"the file is {size}, over the {exc.limit / 2**20:.1f} MiB limit",
        )

    async def _not_found(
        self, request: IngestRequest, where: Target, current: DocumentStatus | None
    ) -> None:
        """No such blob: the document ends ``failed`` (``not_found``), except for a BlobCreated
        event of a document without a record (a delete overtook it and removed it)."""
        if request.sequencer is not None and current is None:
            log.info("blob_gone_ignored")
            return
        log.warning("blob_not_found")
        named = {} if current is not None else {
            "filename": request.filename or posixpath.basename(where.path)}
        await self.status.update(
            where.tenant, where.document_id, **named, path=where.path, stage=Stage.FAILED,
            reason="not_found", sequencer=request.sequencer,
            message=f"there is no file {where.path!r} in the store (deleted, or never "
            "uploaded): upload it again",
        )

    async def _delete(self, request: IngestRequest, where: Target) -> None:
        if await self.blobs.stat(where.path) is not None:
            # The blob exists again (re-created after this delete): keep the document.
            log.info("delete_ignored_blob_exists")
            return
        removed = await self.vectors.delete_document(where.tenant, where.document_id)
        await self.status.remove(where.tenant, where.document_id)
        log.info("document_deleted", chunks_removed=removed)

    def _progress(self, where: Target):  # type: ignore[no-untyped-def]
        last = 0.0

        async def report(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done == total or now - last >= PROGRESS_EVERY:
                last = now
                await self.status.update(
                    where.tenant, where.document_id, pages_done=done, pages_total=total
                )

        return report


def _bound(where: Target) -> contextlib.AbstractContextManager[object]:
    return structlog.contextvars.bound_contextvars(
        document_id=where.document_id, tenant=where.tenant, path=where.path
    )
