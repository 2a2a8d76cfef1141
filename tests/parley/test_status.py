"""Document status on a real Redis: the version swap happens once, at the last batch; redelivered
and superseded batches change nothing; progress events follow every change."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from parley.ids import DocumentId, TenantId
from parley.status import Stage, StatusStore, parse_progress

T = TenantId("acme")
D = DocumentId("doc1")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[StatusStore]:
    client = aioredis.Redis.from_url(redis_url)
    yield StatusStore(client, prefix=f"s{uuid.uuid4().hex[:8]}")
    await client.aclose()


async def test_update_creates_lists_and_publishes(store: StatusStore) -> None:
    first = await store.update(T, D, filename="a.pdf", stage=Stage.QUEUED)
    assert first.stage == Stage.QUEUED and first.created_at == first.updated_at
    second = await store.update(T, D, stage=Stage.EXTRACTING, pages_done=1, pages_total=3)
    assert second.created_at == first.created_at and second.pages_total == 3
    assert [d.document_id for d in await store.documents(T)] == [D]
    assert await store.tenants() == [T]
    events: Any = await store._redis.xrange(store.progress_key(T))
    stages = [parse_progress(fields).stage for _id, fields in events]
    assert stages == [Stage.QUEUED, Stage.EXTRACTING]
    cleared = await store.update(T, D, reason=None)
    assert cleared.reason is None


async def test_last_batch_swaps_version_exactly_once(store: StatusStore) -> None:
    await store.update(T, D, stage=Stage.READY, version="v1")
    await store.update(T, D, stage=Stage.EMBEDDING, pending_version="v2", batches_total=3)
    assert (await store.served_versions(T, [D]))[D] == "v1"  # old served until complete
    assert await store.batch_landed(T, D, "v2", 0, 5) == 0
    assert await store.batch_landed(T, D, "v2", 0, 5) == 0  # redelivered batch: counted once
    assert await store.batch_landed(T, D, "v2", 2, 5) == 0
    assert (await store.served_versions(T, [D]))[D] == "v1"
    results = await asyncio.gather(*(store.batch_landed(T, D, "v2", 1, 5) for _ in range(5)))
    assert sorted(results) == [1, 2, 2, 2, 2]  # one call made it ready; the others saw it ready
    status = await store.get(T, D)
    assert status is not None
    assert (status.stage, status.version, status.pending_version) == (Stage.READY, "v2", None)
    assert status.chunks_done == 15
    assert (await store.served_versions(T, [D]))[D] == "v2"
    assert await store.batch_landed(T, D, "v1", 0, 5) == -1  # superseded version


async def test_a_landed_batch_publishes_the_record_as_the_store_would_in_the_same_step(
    store: StatusStore,
) -> None:
    # Published by the script itself: a worker killed right after a batch made the document
    # ready had left it ready with no "ready" event (its redelivery changes nothing, publishes
    # nothing), which the portal waits for.
    await store.update(T, D, filename="a.pdf", stage=Stage.EMBEDDING, pending_version="v1",
                       batches_total=2, chunks=10)
    assert await store.batch_landed(T, D, "v1", 0, 5) == 0
    assert await store.batch_landed(T, D, "v1", 1, 5) == 1
    assert await store.batch_landed(T, D, "v1", 1, 5) == 2  # redelivered: no event
    events: Any = await store._redis.xrange(store.progress_key(T))
    published = [json.loads(fields[b"d"]) for _id, fields in events]
    assert [e["stage"] for e in published] == ["embedding", "embedding", "ready"]
    assert [e["chunks_done"] for e in published] == [0, 5, 10]
    status = await store.get(T, D)
    assert status is not None
    # Every field, typed and null where unset, as the record's own JSON.
    assert published[-1] == json.loads(status.model_dump_json())
    assert parse_progress(events[-1][1]) == status


async def test_the_ready_event_needs_nothing_after_the_batch_lands(
    store: StatusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker dies the moment the script returns: the event is already in the stream.
    await store.update(T, D, stage=Stage.EMBEDDING, pending_version="v1", batches_total=1)

    async def killed(status: object) -> None:
        raise SystemExit("SIGKILL")

    monkeypatch.setattr(store, "publish", killed)
    assert await store.batch_landed(T, D, "v1", 0, 5) == 1
    events: Any = await store._redis.xrange(store.progress_key(T))
    assert parse_progress(events[-1][1]).stage == Stage.READY


async def test_first_version_is_served_while_pending(store: StatusStore) -> None:
    await store.update(T, D, stage=Stage.EMBEDDING, pending_version="v1", batches_total=2)
    assert (await store.served_versions(T, [D, DocumentId("unknown")])) == {
        D: "v1",
        DocumentId("unknown"): None,
    }


async def test_remove_forgets_and_publishes_deleted(store: StatusStore) -> None:
    await store.update(T, D, filename="a.pdf", stage=Stage.READY)
    await store.remove(T, D)
    assert await store.get(T, D) is None
    assert await store.documents(T) == []
    events: Any = await store._redis.xrange(store.progress_key(T))
    assert parse_progress(events[-1][1]).stage == Stage.DELETED
