"""The maintenance sweeps on real Redis, Chroma and a local blob store, with the in-process
ingestion pipeline doing the re-posted work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends.clients import Clients, open_clients
from maintenance_worker import reconcile, reembedding
from parley.contracts import IngestRequest
from parley.ids import ChunkId, DocumentId, TenantId, document_id
from parley.settings import Queues, QueueSettings, Settings
from parley.status import Stage
from parley.vectors.chroma import ChromaStore
from parley.vectors.store import ChunkRecord
from tests.fixtures import documents
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

PDF_TYPE = "application/pdf"


@pytest.fixture
def settings(redis_url: str, chroma_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(
        redis_url,
        chroma_url,
        tmp_path / "blobs",
        reconcile_grace_seconds=0,
        stuck_after_seconds=0.2,
        stuck_max_retries=2,
    )


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    async with running_pipeline(settings) as running:
        yield running


def store_of(pipeline: Pipeline) -> ChromaStore:
    store = pipeline.clients.vectors
    assert isinstance(store, ChromaStore)
    return store


async def reconcile_once(pipeline: Pipeline) -> reconcile.SweepReport:
    clients = pipeline.clients
    return await reconcile.reconcile_blobs(
        pipeline.settings,
        redis=clients.redis,
        blobs=clients.blobs,
        status=clients.status,
        store=store_of(pipeline),
        broker=clients.brokers.for_queue(pipeline.settings.queues.ingest),
    )


def pdf(text: str) -> bytes:
    return documents.text_pdf([text + " " + documents.lorem(60, seed=len(text))])


async def test_a_missed_blob_and_a_changed_blob_are_ingested(pipeline: Pipeline) -> None:
    path = f"{pipeline.tenant}/missed.pdf"
    doc = document_id(pipeline.tenant, path)
    # Written by another tool with no event at all (no Event Grid, no watcher).
    await pipeline.clients.blobs.put(
        path, pdf("Zeta coolant flows at 41 litres a minute."), content_type=PDF_TYPE
    )
    assert await pipeline.clients.status.get(pipeline.tenant, doc) is None

    report = await reconcile_once(pipeline)
    assert report.counts.get("reposted") == 1
    done = await pipeline.wait([doc])
    assert done[doc].stage is Stage.READY
    first_version = done[doc].version
    assert (await reconcile_once(pipeline)).counts.get("reposted") is None  # nothing left

    # Changed behind Parley's back: the record's ETag is stale.
    await pipeline.clients.blobs.put(
        path, pdf("Zeta coolant now flows at 57 litres a minute."), content_type=PDF_TYPE
    )
    assert (await reconcile_once(pipeline)).counts.get("reposted") == 1
    changed = await pipeline.wait(
        [doc],
        until=lambda s: s is not None and s.stage is Stage.READY and s.version != first_version,
    )
    assert changed[doc].etag == (await pipeline.clients.blobs.stat(path)).etag  # type: ignore[union-attr]
    hits = await pipeline.searcher.search(pipeline.tenant, "Zeta coolant flow rate", k=1)
    assert "57 litres" in hits[0].text


async def test_records_and_vectors_of_deleted_blobs_are_purged(pipeline: Pipeline) -> None:
    doc = await pipeline.upload("gone.pdf", pdf("Eta valves close at 300 kPa."))
    await pipeline.wait([doc])
    store = store_of(pipeline)
    assert await store.count(pipeline.tenant, doc) > 0
    kept = await pipeline.upload("kept.pdf", pdf("Theta pumps are blue."))
    await pipeline.wait([kept])
    # Vectors with neither record nor blob (e.g. a crash between two deletes).
    ghost = DocumentId("ghost0000000000000000000")
    await store.upsert(
        pipeline.tenant,
        [
            ChunkRecord(
                ChunkId(f"ghost-{i}"),
                ghost,
                "v1",
                "ghost text",
                [1.0] + [0.0] * 383,
                {"path": f"{pipeline.tenant}/ghost.pdf"},
            )
            for i in range(3)
        ],
    )
    # The blob goes without a BlobDeleted event.
    assert await pipeline.clients.blobs.delete(f"{pipeline.tenant}/gone.pdf")

    report = await reconcile_once(pipeline)
    assert report.counts.get("records_purged") == 1
    assert await pipeline.clients.status.get(pipeline.tenant, doc) is None
    assert await store.count(pipeline.tenant, doc) == 0
    assert await store.count(pipeline.tenant, ghost) == 0
    kept_status = await pipeline.clients.status.get(pipeline.tenant, kept)
    assert kept_status is not None and kept_status.stage is Stage.READY
    assert await store.count(pipeline.tenant, kept) > 0


@contextlib.asynccontextmanager
async def bare_clients(settings: Settings) -> AsyncIterator[Clients]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_clients(stack, settings)


async def test_a_stuck_document_is_retried_then_failed_with_its_reason(
    settings: Settings,
) -> None:
    tenant = TenantId("stuckco")
    path = f"{tenant}/slow.pdf"
    doc = document_id(tenant, path)
    async with bare_clients(settings) as clients:
        broker = clients.brokers.for_queue(settings.queues.ingest)
        await clients.status.update(
            tenant, doc, stage=Stage.EXTRACTING, path=path, filename="slow.pdf", etag="e1"
        )

        async def sweep() -> reconcile.SweepReport:
            await asyncio.sleep(settings.stuck_after_seconds + 0.1)
            return await reconcile.retry_stuck(
                settings, redis=clients.redis, status=clients.status, broker=broker
            )

        for attempt in (1, 2):
            report = await sweep()
            assert report.counts == {"retried": 1}
            status = await clients.status.get(tenant, doc)
            assert status is not None and status.stage is Stage.QUEUED
            assert f"retrying ({attempt} of 2)" in (status.message or "")
        queued = await broker.receive(settings.queues.ingest.name, max_messages=10, wait=0.5)
        assert len(queued) == 2
        request = IngestRequest.model_validate_json(queued[0].body)
        assert (request.path, request.tenant) == (path, tenant)

        # A document that moved recently is not touched.
        fresh = document_id(tenant, f"{tenant}/fresh.pdf")
        report = await sweep()
        await clients.status.update(tenant, fresh, stage=Stage.EMBEDDING, path="x")
        assert report.counts == {"failed": 1}
        failed = await clients.status.get(tenant, doc)
        assert failed is not None and failed.stage is Stage.FAILED
        assert failed.reason == "stuck"
        assert "stuck in 'queued'" in (failed.message or "")
        assert "after 2 retries" in (failed.message or "")
        again = await reconcile.retry_stuck(
            settings, redis=clients.redis, status=clients.status, broker=broker
        )
        assert again.counts == {}  # failed is terminal; fresh has not waited long enough


async def test_chat_state_without_a_ttl_gets_one(settings: Settings) -> None:
    async with bare_clients(settings) as clients:
        redis = clients.redis
        stream = settings.keys.turn("t1")
        conversation = settings.keys.conversation("acme", "c1")
        expiring = settings.keys.turn("t2")
        other = settings.keys.record("acme", "d1")
        await redis.xadd(stream, {"k": "final", "d": "{}"})
        await redis.rpush(conversation, "{}")
        await redis.xadd(expiring, {"k": "token", "d": "{}"})
        await redis.expire(expiring, 50)
        await redis.hset(other, "stage", "ready")

        report = await reconcile.expire_chat_state(settings, redis=redis)
        assert report.counts["ttl_set"] == 2
        assert 0 < await redis.ttl(stream) <= settings.stream_ttl_seconds
        assert settings.stream_ttl_seconds < await redis.ttl(conversation)
        assert await redis.ttl(conversation) <= settings.conversation_ttl_seconds
        assert 0 < await redis.ttl(expiring) <= 50
        assert await redis.ttl(other) == -1  # not chat state


async def test_reembed_fills_the_new_collection_and_drops_the_old_only_when_complete(
    pipeline: Pipeline,
) -> None:
    tenant, clients = pipeline.tenant, pipeline.clients
    store = store_of(pipeline)
    current = store.model_id
    kept = await pipeline.upload("kappa.pdf", pdf("Kappa bearings last 9,000 hours."))
    lost = await pipeline.upload("lambda.pdf", pdf("Lambda filters trap 99 percent of dust."))
    await pipeline.wait([kept, lost])
    kept_version = (await clients.status.get(tenant, kept)).version  # type: ignore[union-attr]

    # The tenant's collection as an older model left it: kappa's chunks (text and metadata,
    # any vectors), lambda's nowhere. The current model's collection does not exist yet.
    old = ChromaStore(store._client, "old-model/v1")
    rows = await store.chunks(tenant, kept, str(kept_version), model_id=current)
    await old.upsert(tenant, [_with_vector(r, [0.5] * 8) for r in rows])
    assert await store.drop(tenant, current)
    assert await store.models(tenant) == ["old-model/v1"]

    # The sweep's re-posts go to a queue nobody consumes, so the first sweep deterministically
    # sees lambda missing (a running ingest worker could re-index it before the sweep ends).
    parked = pipeline.settings.model_copy(
        update={"queues": Queues(ingest=QueueSettings(name=f"parked-{tenant}"))}
    )

    async def sweep() -> reconcile.SweepReport:
        return await reembedding.reembed(
            parked,
            redis=clients.redis,
            status=clients.status,
            store=store,
            embedder=clients.embedder,
            broker=clients.brokers.for_queue(parked.queues.ingest),
            tenants=[tenant],
        )

    first = await sweep()
    assert first.counts.get("chunks_copied") == len(rows)
    assert first.counts.get("reposted") == 1  # lambda: nothing to copy from
    assert "collections_dropped" not in first.counts  # not complete: the old one stays
    assert sorted(await store.models(tenant)) == sorted([current, "old-model/v1"])
    assert await clients.redis.get(reembedding.model_key(pipeline.settings, tenant)) is None
    hits = await pipeline.searcher.search(tenant, "how long do Kappa bearings last", k=1)
    assert "9,000 hours" in hits[0].text  # copied chunks are searchable with the new model

    lost_status = await clients.status.get(tenant, lost)
    assert lost_status is not None and lost_status.stage is Stage.QUEUED
    assert lost_status.version is None  # forgotten, so the ingest worker will not skip it
    # Deliver the re-post to the real ingest queue: lambda is indexed again.
    [reposted] = await clients.brokers.for_queue(parked.queues.ingest).receive(
        parked.queues.ingest.name, max_messages=1, wait=1
    )
    await clients.brokers.for_queue(pipeline.settings.queues.ingest).publish(
        pipeline.settings.queues.ingest.name, reposted.body
    )
    await pipeline.wait(
        [lost], until=lambda s: s is not None and s.stage is Stage.READY and bool(s.version)
    )
    second = await sweep()
    assert second.counts.get("collections_dropped") == 1
    assert await store.models(tenant) == [current]
    assert await clients.redis.get(reembedding.model_key(pipeline.settings, tenant)) is not None
    hits = await pipeline.searcher.search(tenant, "what do Lambda filters trap", k=1)
    assert "99 percent" in hits[0].text


def _with_vector(record: ChunkRecord, vector: list[float]) -> ChunkRecord:
    fields: dict[str, Any] = {**record.__dict__, "embedding": vector}
    return ChunkRecord(**fields)


async def test_superseded_chunks_left_behind_are_purged_and_served_ones_kept(
    pipeline: Pipeline,
) -> None:
    """An embed worker killed within its clean-up grace leaves a superseded version's chunks:
    the sweep removes them and keeps the served version's."""
    doc = await pipeline.upload("swap.pdf", pdf("Iota gears turn twice."))
    status = (await pipeline.wait([doc]))[doc]
    assert status.version
    store = store_of(pipeline)
    served = await store.count(pipeline.tenant, doc)
    await store.upsert(
        pipeline.tenant,
        [
            ChunkRecord(
                ChunkId(f"left-{i}"),
                doc,
                "old-version",
                "left behind",
                [1.0] + [0.0] * 383,
                {"path": status.path},
            )
            for i in range(2)
        ],
    )
    report = await reconcile_once(pipeline)
    assert report.counts.get("superseded_purged") == 2
    assert await store.count(pipeline.tenant, doc) == served
    assert "old-version" not in (await store.stored_documents(pipeline.tenant))[doc].versions
    again = await reconcile_once(pipeline)
    assert "superseded_purged" not in again.counts
