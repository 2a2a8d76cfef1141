"""The maintenance sweeps as plain async functions over the clients they need, so they run (and
are tested) without Celery; :mod:`maintenance_worker.app` schedules them and holds their leases.

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
- re-embedding after a change of embedding model lives in :mod:`maintenance_worker.reembedding`
  (same report, same scheduling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog

from parley.blobstore import BlobInfo, BlobStore
from parley.broker import Broker
from parley.contracts import IngestRequest
from parley.ids import DocumentId, TenantId
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus, Stage, StatusStore
from parley.uploads import post_ingest
from parley.vectors.chroma import ChromaStore, StoredDocument

log = structlog.get_logger(__name__)

RETRY_MEMORY_SECONDS = 7 * 24 * 3600  # how long a sweep remembers what it re-posted
_SCAN_COUNT = 500


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
        marker = settings.keys.reconcile_posted(path)
        memory = max(1, int(settings.stuck_after_seconds * 1000))
        if not await redis.set(marker, info.etag, nx=True, px=memory):
            seen: Any = await redis.get(marker)
            if seen is not None and bytes(seen).decode() == info.etag:
                continue
            await redis.set(marker, info.etag, px=memory)
        await post_ingest(
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
        key = settings.keys.stuck_retries(record.tenant, record.document_id, record.etag or "-")
        tries = int(await redis.incr(key))
        await redis.expire(key, RETRY_MEMORY_SECONDS)
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
        await requeue(
            settings,
            record,
            status,
            broker,
            message=(
                f"was stuck in '{record.stage.value}' for {waited}; "
                f"retrying ({tries} of {settings.stuck_max_retries})"
            ),
        )
        report.add("retried")
        report.notes.append(f"retried {record.path} ({tries}/{settings.stuck_max_retries})")
    return report


async def requeue(
    settings: Settings,
    record: DocumentStatus,
    status: StatusStore,
    broker: Broker,
    *,
    message: str,
    **fields: Any,
) -> None:
    """Mark the document ``queued`` with ``message`` (and any other ``fields`` of its record),
    then post an ingest request for its blob: the worker takes it up again from the start."""
    assert record.path
    await status.update(
        record.tenant, record.document_id, **fields, stage=Stage.QUEUED, message=message
    )
    await post_ingest(
        settings,
        broker,
        IngestRequest(
            container=settings.blob_container,
            path=record.path,
            tenant=record.tenant,
            filename=record.filename or None,
        ),
    )


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
        (settings.keys.turns_pattern(), settings.stream_ttl_seconds),
        (settings.keys.conversations_pattern(), settings.conversation_ttl_seconds),
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
