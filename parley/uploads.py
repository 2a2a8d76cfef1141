"""Put a document into the blob store and announce it on the ingest queue: what ``parley ingest``
and the gateway's upload route both do. The upload is announced at once (no waiting for the
watcher) and remembered by the watcher so it is not announced twice."""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from typing import IO

import redis.asyncio as aioredis

from parley.blobstore import BlobInfo, BlobStore
from parley.broker import Broker
from parley.contracts import IngestRequest, dump
from parley.errors import Reject
from parley.ids import TenantId, document_id
from parley.settings import Settings
from parley.status import Stage, StatusStore
from parley.tracing import inject

CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
}
_SAFE = re.compile(r"[^\w.\- ()]+", re.UNICODE)


def safe_name(filename: str) -> str:
    """A blob-path-safe version of an untrusted file name: no directories, no control or
    path characters, normalised unicode, at most 200 characters, never empty or dot-only.

    A name that had to be changed gets 8 hex digits of a hash of the name before its extension
    (``a:b.pdf`` -> ``a_b-<hash>.pdf``), so two different names never end up as one stored
    name, where the second upload would silently replace the first; the same name always
    maps to the same stored name (a new upload of it is a new version)."""
    base = unicodedata.normalize("NFC", filename.replace("\\", "/")).split("/")[-1]
    cleaned = _SAFE.sub("_", base).strip(" .")[:200]
    if not cleaned or set(cleaned) <= {"_", "."}:
        raise Reject(f"unusable file name {filename!r}", reason="bad_filename")
    if cleaned != base:
        stem, ext = posixpath.splitext(cleaned)
        tag = hashlib.sha256(base.encode()).hexdigest()[:8]
        cleaned = f"{stem[: 200 - len(ext) - 9]}-{tag}{ext}"
    return cleaned


def blob_path(tenant: TenantId, filename: str, folder: str = "") -> str:
    parts = [tenant, *(safe_name(p) for p in folder.split("/") if p), safe_name(filename)]
    return posixpath.join(*parts)


async def upload(
    settings: Settings,
    *,
    blobs: BlobStore,
    broker: Broker,
    tenant: TenantId,
    filename: str,
    data: bytes | IO[bytes],
    folder: str = "",
    redis: aioredis.Redis | None = None,
    status: StatusStore | None = None,
) -> tuple[IngestRequest, BlobInfo]:
    """Store ``data`` (bytes, or a file from its current position) under
    ``<tenant>/<folder>/<filename>`` and post an ingest request. With ``redis``, the blob
    watcher is told the blob is announced already; with ``status``, the document shows as
    ``queued`` at once."""
    if isinstance(data, bytes):
        size = len(data)
    else:
        start = data.tell()
        size = data.seek(0, 2) - start
        data.seek(start)
    if size > settings.max_upload_bytes:
        raise Reject(
            f"{filename}: {size / 2**20:.1f} MiB is over the "
            f"{settings.max_upload_bytes / 2**20:.0f} MiB upload limit",
            reason="too_large",
        )
    path = blob_path(tenant, filename, folder)
    extension = posixpath.splitext(path)[1].lower()
    info = await blobs.put(
        path,
        data,
        content_type=CONTENT_TYPES.get(extension, "application/octet-stream"),
        metadata={"filename": filename},
    )
    request = await announce(
        settings, broker=broker, tenant=tenant, path=path, etag=info.etag, filename=filename,
        redis=redis, status=status,
    )
    return request, info


async def announce(
    settings: Settings,
    *,
    broker: Broker,
    tenant: TenantId,
    path: str,
    etag: str,
    filename: str,
    redis: aioredis.Redis | None = None,
    status: StatusStore | None = None,
) -> IngestRequest:
    """Post an ingest request for a blob already in the store (put by :func:`upload`, or by a
    client through a SAS URL, or re-posted to retry a failed document); ``redis`` and
    ``status`` as for :func:`upload`."""
    request = IngestRequest(
        action="upsert",
        container=settings.blob_container,
        path=path,
        tenant=tenant,
        etag=etag,
        filename=filename,
    )
    if status is not None:
        await status.update(
            tenant,
            document_id(tenant, path),
            filename=filename,
            path=path,
            stage=Stage.QUEUED,
            reason=None,
            message=None,
        )
    await post_ingest(settings, broker, request, redis=redis)
    return request


async def post_ingest(
    settings: Settings,
    broker: Broker,
    request: IngestRequest,
    *,
    redis: aioredis.Redis | None = None,
) -> None:
    """Post ``request`` to the ingest queue: the one way Parley itself does (uploads, retries,
    deletes, the maintenance sweeps). With ``redis``, the blob watcher's view of the container
    is updated first, so it does not announce the same blob (or its deletion) a second time.
    The message carries the current trace (the gateway's upload request, if any)."""
    if redis is not None:
        watched = settings.keys.watched(settings.blob_container)
        if request.action == "delete":
            await redis.hdel(watched, request.path)
        elif request.etag:
            await redis.hset(watched, request.path, request.etag)
    await broker.publish(settings.queues.ingest.name, dump(request), dict(inject({})))
