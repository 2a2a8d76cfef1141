"""Blob events for stores that emit none (the local directory, Azurite): list the container
every few seconds and post BlobCreated / BlobDeleted events, in the EventGridEvent schema that
Event Grid delivers on Azure, to the ingest queue for every blob added, changed or removed since
the last listing. On Azure, Event Grid does this and the watcher is off
(``PARLEY_BLOB_WATCH_SECONDS=0``).

The last listing is kept in Redis (hash ``<p>:watch:<container>``: path -> ETag), so a restart
does not re-announce every blob, and a round is guarded by a short lease so several ingest
replicas do not post the same events (redis-py's ``Lock``, released only by its owner; a
duplicate would be harmless: unchanged content is skipped; the lease only saves work).

A blob new or changed since the last listing is announced only when this watcher's previous
round saw it so too, with the same ETag (:func:`settled`): an upload through Parley puts the
blob and records it in the listing a moment later, and a round in between would announce it a
second time, so that its document was extracted twice and its batches embedded twice at once
(the clean soak run's "chunks embedded more than once"). A blob still being written is not
announced half-way either. The cost: a blob put by anyone else waits one more interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import LockNotOwnedError

from ingest_worker import events
from parley.blobstore import BlobInfo, BlobStore
from parley.broker import Broker
from parley.keys import Keys
from parley.settings import Settings

log = structlog.get_logger(__name__)

ACCOUNT = "local"


def diff(
    previous: dict[str, str], current: dict[str, BlobInfo]
) -> tuple[list[BlobInfo], list[str]]:
    """(created or changed blobs, deleted paths) between two listings. Pure."""
    changed = [info for path, info in current.items() if previous.get(path) != info.etag]
    deleted = [path for path in previous if path not in current]
    return changed, deleted


def settled(changed: list[BlobInfo], seen: dict[str, str]) -> list[BlobInfo]:
    """The changed blobs that the previous round (``seen``: path -> ETag of its changed blobs)
    saw changed with the same ETag. Pure."""
    return [info for info in changed if seen.get(info.path) == info.etag]


class Watcher:
    def __init__(
        self, settings: Settings, *, blobs: BlobStore, broker: Broker, redis: aioredis.Redis
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.broker = broker
        self.redis = redis
        keys = Keys(settings.redis_prefix)
        self.key = keys.watched(settings.blob_container)
        self.lease_key = keys.watcher_lease(settings.blob_container)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._seen: dict[str, str] = {}  # the previous round's changed blobs: path -> ETag

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; a failed round is logged and tried again next interval."""
        interval = self.settings.blob_watch_seconds
        while not stop.is_set():
            try:
                await self.round()
            except Exception as exc:
                log.warning("watch_round_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def round(self) -> int:
        """One listing; returns how many events were posted."""
        # A lock with an owner token: a round that outlived it never frees another's.
        ttl = max(5, int(self.settings.blob_watch_seconds * 3))
        lease = self.redis.lock(self.lease_key, timeout=ttl, blocking=False, thread_local=False)
        if not await lease.acquire(token=self.owner):
            return 0
        try:
            raw: Any = await self.redis.hgetall(self.key)
            previous = {k.decode(): v.decode() for k, v in raw.items()}
            current = {info.path: info async for info in self.blobs.list()}
            changed, deleted = diff(previous, current)
            seen, self._seen = self._seen, {info.path: info.etag for info in changed}
            changed = settled(changed, seen)
            items = [
                events.blob_event(
                    "upsert",
                    account=ACCOUNT,
                    container=self.settings.blob_container,
                    path=info.path,
                    etag=info.etag,
                    size=info.size,
                    content_type=info.content_type,
                )
                for info in changed
            ] + [
                events.blob_event(
                    "delete", account=ACCOUNT, container=self.settings.blob_container, path=path
                )
                for path in deleted
            ]
            if items:
                await self.broker.publish_many(
                    self.settings.queues.ingest.name,
                    [(json.dumps([item]).encode(), {}) for item in items],
                )
                async with self.redis.pipeline(transaction=True) as pipe:
                    if changed:
                        pipe.hset(self.key, mapping={i.path: i.etag for i in changed})
                    if deleted:
                        pipe.hdel(self.key, *deleted)
                    await pipe.execute()
                log.info("blob_events_posted", created=len(changed), deleted=len(deleted))
            return len(items)
        finally:
            with contextlib.suppress(LockNotOwnedError):
                await lease.release()
