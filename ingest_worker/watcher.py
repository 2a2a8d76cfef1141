"""Blob events for stores that emit none (the local directory, Azurite): list the container
every few seconds and post BlobCreated / BlobDeleted events, in the EventGridEvent schema that
Event Grid delivers on Azure, to the ingest queue for every blob added, changed or removed since
the last listing. On Azure, Event Grid does this and the watcher is off
(``PARLEY_BLOB_WATCH_SECONDS=0``).

The last listing is kept in Redis (hash ``<p>:watch:<container>``: path -> ETag), so a restart
does not re-announce every blob, and a round is guarded by a short lease so several ingest
replicas do not post the same events (a duplicate would be harmless: unchanged content is
skipped; the lease only saves work).
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
        lease = max(5, int(self.settings.blob_watch_seconds * 3))
        if not await self.redis.set(self.lease_key, self.owner, nx=True, ex=lease):
            return 0
        try:
            raw: Any = await self.redis.hgetall(self.key)
            previous = {k.decode(): v.decode() for k, v in raw.items()}
            current = {info.path: info async for info in self.blobs.list()}
            changed, deleted = diff(previous, current)
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
            await self.redis.delete(self.lease_key)
