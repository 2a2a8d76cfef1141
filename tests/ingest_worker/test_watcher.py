"""The blob watcher on a real Redis and a blob folder: a blob is announced once, one round after
it is first listed, and never when an upload through Parley records it in between (the race
that had a document extracted and embedded twice)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ingest_worker.watcher import Watcher, settled
from parley.blobstore import BlobInfo
from parley.blobstore.local import LocalBlobStore
from parley.broker.redis import RedisBroker
from parley.ids import TenantId
from parley.settings import Settings
from parley.uploads import announce


@pytest.fixture
async def setup(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Watcher, LocalBlobStore, RedisBroker, Settings]]:
    settings = Settings(redis_url=redis_url, blob_dir=tmp_path,
                        redis_prefix=f"w{uuid.uuid4().hex[:8]}")
    client = aioredis.Redis.from_url(redis_url)
    blobs = LocalBlobStore(tmp_path, settings.blob_container)
    broker = RedisBroker(client, prefix=settings.redis_prefix)
    yield Watcher(settings, blobs=blobs, broker=broker, redis=client), blobs, broker, settings
    await broker.close()
    await client.aclose()


def test_settled_keeps_what_the_previous_round_saw_with_the_same_etag() -> None:
    a, b, c = BlobInfo("t/a.pdf", "e1", 1), BlobInfo("t/b.pdf", "e2", 1), BlobInfo("t/c", "e3", 1)
    assert settled([a, b, c], {"t/a.pdf": "e1", "t/b.pdf": "old"}) == [a]
    assert settled([a], {}) == []


async def test_a_blob_put_by_another_is_announced_once_a_round_later(
    setup: tuple[Watcher, LocalBlobStore, RedisBroker, Settings],
) -> None:
    watcher, blobs, broker, settings = setup
    await blobs.put("acme/report.pdf", b"%PDF-1.4 x", content_type="application/pdf")
    assert await watcher.round() == 0
    assert await watcher.round() == 1
    assert await watcher.round() == 0
    assert await broker.depth(settings.queues.ingest.name) == 1


async def test_an_upload_recorded_between_two_rounds_is_not_announced_again(
    setup: tuple[Watcher, LocalBlobStore, RedisBroker, Settings],
) -> None:
    watcher, blobs, broker, settings = setup
    info = await blobs.put("acme/report.pdf", b"%PDF-1.4 x", content_type="application/pdf")
    assert await watcher.round() == 0  # listed between the upload's put and its announcement
    await announce(settings, broker=broker, tenant=TenantId("acme"), path=info.path,
                   etag=info.etag, filename="report.pdf", redis=watcher.redis)
    assert await watcher.round() == 0
    assert await watcher.round() == 0
    assert await broker.depth(settings.queues.ingest.name) == 1  # the upload's own request
