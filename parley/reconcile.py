"""The maintenance sweeps as plain async functions over the clients they need, so they run (and
are tested) without Celery; :mod:`parley.maintenance` schedules them and holds their leases.

Every sweep is idempotent: running it twice, or on two replicas at once, converges to the same
state, because each action is either a re-posted ingest request (the ingest worker skips content
it already serves) or a deletion of something that must not exist.

- :func:`reconcile_blobs`: the blob container against the index. A blob with no document record,
  or whose ready/failed record names another ETag, had its event lost: an ingest request is
  re-posted (at most once per ``stuck_after_seconds`` for one ETag). A record whose blob is gone
  is purged with its vectors; vectors of a document with neither record nor blob are purged.
  Blobs and records changed within ``reconcile_grace_seconds`` are left to the event path.
- :func:`retry_stuck`: a document in a non-terminal stage whose record has not moved for
  ``stuck_after_seconds`` is re-posted and shown ``queued`` with why; after
  ``stuck_max_retries`` re-posts of the same content it is ``failed`` with reason ``stuck``.
- :func:`expire_chat_state`: turn streams and conversations expire by their own TTLs
  (:mod:`parley.turnstream`, :mod:`chat_gateway.conversation`); this puts a TTL on any such key
  left without one (a writer that died between its XADD and EXPIRE, or keys from older code).
- :func:`reembed`: after the embedding model changes, the tenant's new collection (collections
  are named by tenant and model) is filled from the old one: every served chunk's stored text is
  embedded with the new model and upserted under the same chunk id and version, so the status
  records stay valid for both collections. Documents with no chunks anywhere are re-indexed
  (their served version is forgotten first, so the ingest worker does not skip them). Only
  when every served version is in the new collection is the tenant marked switched
  (``<p>:embedding-model:<tenant>``) and the old collections dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from parley.blobstore import BlobInfo, BlobStore
from parley.broker import Broker
from parley.chroma import ChromaStore, StoredDocument
from parley.contracts import IngestRequest, dump
from parley.embedder import Embedder
from parley.ids import DocumentId, TenantId
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus, Stage, StatusStore
from parley.vectorstore import ChunkRecord

log = structlog.get_logger(__name__)

_RETRY_MEMORY_SECONDS = 7 * 24 * 3600
_SCAN_COUNT = 500
_REEMBED_BATCH = 64


@dataclass
class SweepReport:
    """What one sweep did; counts by action, plus notes for the log."""

    sweep: str
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, action: str, n: int = 1) -> None:
        self.counts[action] = self.counts.get(action, 0) + n

    def as_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "counts": self.counts, "notes": self.notes[:50]}


async def _records(status: StatusStore) -> list[DocumentStatus]:
    return [d for tenant in await status.tenants() for d in await status.documents(tenant)]


async def _post(settings: Settings, broker: Broker, request: IngestRequest) -> None:
    await broker.publish(settings.queues.ingest.name, dump(request))


# --- blobs vs index --------------------------------------------------------------------------


async def reconcile_blobs(
    settings: Settings,
    *,
    redis: aioredis.Redis,
    blobs: BlobStore,
    status: StatusStore,
    store: ChromaStore,
    broker: Broker,
) -> SweepReport:
    report = SweepReport("reconcile")
    now = time.time()
    grace = settings.reconcile_grace_seconds
    listing: dict[str, BlobInfo] = {info.path: info async for info in blobs.list()}
    records = await _records(status)
    by_path = {r.path: r for r in records if r.path}
    report.add("blobs", len(listing))
    report.add("records", len(records))

    for path, info in listing.items():
        if info.last_modified is not None and now - info.last_modified < grace:
            continue
        record = by_path.get(path)
        if record is None:
            why = "no document record"
        elif (
            record.stage in (Stage.READY, Stage.FAILED)
            and record.etag
            and record.etag != info.etag
            and now - record.updated_at >= grace
        ):
            why = f"record has ETag {record.etag}, blob {info.etag}"
        else:
            continue
        # Once per ETag per stuck_after_seconds: a backlog must not collect copies every run.
        marker = settings.key("reconcile", "posted", path)
        memory = max(1, int(settings.stuck_after_seconds * 1000))
        if not await redis.set(marker, info.etag, nx=True, px=memory):
            seen: Any = await redis.get(marker)
            if seen is not None and bytes(seen).decode() == info.etag:
                continue
            await redis.set(marker, info.etag, px=memory)
        await _post(
            settings,
            broker,
            IngestRequest(
                container=settings.blob_container,
                path=path,
                etag=info.etag,
                filename=info.metadata.get("filename") or None,
                content_type=info.content_type,
            ),
        )
        report.add("reposted")
        report.notes.append(f"re-posted {path}: {why}")

    for record in records:
        if not record.path or record.path in listing or now - record.updated_at < grace:
            continue
        # Check the one blob again: it may have been written since the listing.
        if await blobs.stat(record.path) is not None:
            continue
        removed = await store.delete_document(record.tenant, record.document_id)
        await status.remove(record.tenant, record.document_id)
        report.add("records_purged")
        report.add("vectors_purged", removed)
        report.notes.append(f"purged {record.path}: blob gone ({removed} chunks)")

    known = {(r.tenant, r.document_id) for r in records}
    for tenant in {r.tenant for r in records} | set(await status.tenants()):
        for doc, stored in (await store.stored_documents(tenant)).items():
            if (tenant, doc) in known:
                removed = await _purge_superseded(status, store, tenant, doc, stored, grace, now)
                if removed:
                    report.add("superseded_purged", removed)
                    report.notes.append(f"purged {removed} superseded chunks of {stored.path}")
                continue
            if stored.path and stored.path in listing:
                continue
            if stored.path and await blobs.stat(stored.path) is not None:
                continue
            removed = await store.delete_document(tenant, doc)
            report.add("vectors_purged", removed)
            report.notes.append(f"purged {removed} orphaned chunks of {stored.path or doc}")
    return report


async def _purge_superseded(
    status: StatusStore,
    store: ChromaStore,
    tenant: TenantId,
    doc: DocumentId,
    stored: StoredDocument,
    grace: float,
    now: float,
) -> int:
    """Chunks of versions that are neither served nor pending (an embed worker killed within
    its clean-up grace leaves them): never served, only wasted space. The record is read again
    just before, and a document updated within ``grace`` is left alone, so a version that became
    pending since the listing is never touched."""
    record = await status.get(tenant, doc)
    if record is None or now - record.updated_at < grace:
        return 0
    keep = {v for v in (record.version, record.pending_version) if v}
    if not keep or not stored.versions - keep:
        return 0
    return await store.delete_document(tenant, doc, keep=keep)


# --- stuck documents -------------------------------------------------------------------------


async def retry_stuck(
    settings: Settings, *, redis: aioredis.Redis, status: StatusStore, broker: Broker
) -> SweepReport:
    report = SweepReport("stuck")
    now = time.time()
    deadline = settings.stuck_after_seconds
    for record in await _records(status):
        if record.stage in TERMINAL_STAGES or now - record.updated_at < deadline:
            continue
        waited = _duration(now - record.updated_at)
        # Counted per content (ETag): a new upload of the document gets its own tries.
        key = settings.key("stuck", record.tenant, record.document_id, record.etag or "-")
        tries = int(await redis.incr(key))
        await redis.expire(key, _RETRY_MEMORY_SECONDS)
        if tries > settings.stuck_max_retries or not record.path:
            await status.update(
                record.tenant,
                record.document_id,
                stage=Stage.FAILED,
                reason="stuck",
                message=(
                    f"stuck in '{record.stage.value}' for {waited}"
                    + (f" after {tries - 1} retries" if tries > 1 else "")
                    + "; upload it again, or ask an administrator to check the workers "
                    "(parley doctor, parley dlq list)"
                ),
            )
            report.add("failed")
            report.notes.append(f"failed {record.path or record.document_id}: stuck")
            continue
        await status.update(
            record.tenant,
            record.document_id,
            stage=Stage.QUEUED,
            message=(
                f"was stuck in '{record.stage.value}' for {waited}; "
                f"retrying ({tries} of {settings.stuck_max_retries})"
            ),
        )
        await _post(
            settings,
            broker,
            IngestRequest(
                container=settings.blob_container,
                path=record.path,
                tenant=record.tenant,
                filename=record.filename or None,
            ),
        )
        report.add("retried")
        report.notes.append(f"retried {record.path} ({tries}/{settings.stuck_max_retries})")
    return report


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- chat state ------------------------------------------------------------------------------


async def expire_chat_state(settings: Settings, *, redis: aioredis.Redis) -> SweepReport:
    report = SweepReport("expire")
    patterns = (
        (settings.key("turn", "*"), settings.stream_ttl_seconds),
        (settings.key("conv", "*"), settings.conversation_ttl_seconds),
    )
    for pattern, ttl in patterns:
        cursor: Any = 0
        while True:
            cursor, keys = await redis.scan(cursor=cursor, match=pattern, count=_SCAN_COUNT)
            if keys:
                async with redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.ttl(key)
                    ttls = await pipe.execute()
                immortal = [k for k, t in zip(keys, ttls, strict=True) if int(t) == -1]
                if immortal:
                    async with redis.pipeline(transaction=False) as pipe:
                        for key in immortal:
                            pipe.expire(key, ttl, nx=True)
                        await pipe.execute()
                    report.add("ttl_set", len(immortal))
                report.add("keys_seen", len(keys))
            if int(cursor) == 0:
                break
    return report


# --- re-embedding after a model change ---------------------------------------------------------


def model_key(settings: Settings, tenant: str) -> str:
    """Redis key naming the model whose collection is complete for ``tenant``."""
    return settings.key("embedding-model", tenant)


async def reembed(
    settings: Settings,
    *,
    redis: aioredis.Redis,
    status: StatusStore,
    store: ChromaStore,
    embedder: Embedder,
    broker: Broker,
    tenants: Sequence[TenantId] | None = None,
) -> SweepReport:
    """Fill each tenant's collection of ``embedder``'s model from its older collections; switch
    and drop the old ones once complete. ``store`` must be bound to ``embedder.model_id``."""
    if store.model_id != embedder.model_id:
        raise ValueError("reembed: the store and the embedder must name the same model")
    report = SweepReport("reembed")
    for tenant in tenants if tenants is not None else await status.tenants():
        await _reembed_tenant(settings, tenant, redis, status, store, embedder, broker, report)
    return report


async def _reembed_tenant(
    settings: Settings,
    tenant: TenantId,
    redis: aioredis.Redis,
    status: StatusStore,
    store: ChromaStore,
    embedder: Embedder,
    broker: Broker,
    report: SweepReport,
) -> None:
    target = store.model_id
    old_models = [m for m in await store.models(tenant) if m != target]
    if not old_models:
        return
    served = {d.document_id: d for d in await status.documents(tenant) if d.version}
    present = await store.stored_documents(tenant)
    missing = {
        doc: record
        for doc, record in served.items()
        if doc not in present or record.version not in present[doc].versions
    }
    for doc, record in missing.items():
        assert record.version is not None
        copied = 0
        for model in old_models:
            chunks = await store.chunks(tenant, doc, record.version, model_id=model)
            if chunks:
                copied = await _copy(tenant, chunks, store, embedder)
                break
        if copied:
            report.add("chunks_copied", copied)
            report.add("documents_copied")
        elif record.path:
            # Nothing to copy from: index it afresh. Its served version has no chunks anywhere,
            # so forgetting it hides nothing, and the ingest worker will not skip the content
            # as "already served".
            await status.update(
                tenant,
                doc,
                version=None,
                stage=Stage.QUEUED,
                message="re-indexing: its chunks were missing",
            )
            await _post(
                settings,
                broker,
                IngestRequest(
                    container=settings.blob_container,
                    path=record.path,
                    tenant=tenant,
                    filename=record.filename or None,
                ),
            )
            report.add("reposted")
    present = await store.stored_documents(tenant)
    still = [
        doc
        for doc, record in served.items()
        if doc not in present or record.version not in present[doc].versions
    ]
    if still:
        report.notes.append(f"{tenant}: {len(still)} documents not yet in {target}")
        return
    await redis.set(
        model_key(settings, tenant), json.dumps({"model_id": target, "since": time.time()})
    )
    for model in old_models:
        if await store.drop(tenant, model):
            report.add("collections_dropped")
            report.notes.append(f"{tenant}: switched to {target}, dropped {model}")


async def _copy(
    tenant: TenantId, chunks: list[ChunkRecord], store: ChromaStore, embedder: Embedder
) -> int:
    # The embed worker's own rule for what is embedded (a header naming document and section).
    from embed_worker.handler import document_text

    for start in range(0, len(chunks), _REEMBED_BATCH):
        part = chunks[start : start + _REEMBED_BATCH]
        texts = []
        for chunk in part:
            heading = chunk.metadata.get("heading")
            texts.append(
                document_text(
                    str(chunk.metadata.get("filename", "")),
                    chunk.text,
                    str(heading) if heading else None,
                )
            )
        vectors = await embedder.embed(texts)
        await store.upsert(
            tenant,
            [
                ChunkRecord(c.chunk_id, DocumentId(c.document_id), c.version, c.text, v, c.metadata)
                for c, v in zip(part, vectors, strict=True)
            ],
        )
    return len(chunks)
