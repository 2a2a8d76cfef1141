"""The ingest worker against untrusted queue messages and blobs (issue 12, items 8 and 9), on the
in-process pipeline (real Redis, Chroma server, local blob store, the real embedder): a message
cannot move one tenant's blob into another tenant's collection, tenant names are checked, a blob
over the size limit is refused from its properties without being downloaded, what one document
may produce is capped, and the extraction children fit in the pod's memory."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from parley.broker import DeadLetter, Message
from parley.contracts import IngestRequest, dump
from parley.errors import ConfigError, Unsettled
from parley.ids import MessageId, TenantId, document_id
from parley.status import Stage
from tests.fixtures import documents
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

MIB = 1024 * 1024
TEXT = "The Alpha reactor produced 4,213 megawatts in March. " + documents.lorem(300, seed=1)

MakePipeline = Callable[..., AbstractAsyncContextManager[Pipeline]]


@pytest.fixture
def make_pipeline(redis_url: str, chroma_url: str, tmp_path: Path) -> MakePipeline:
    def make(**extra: Any) -> AbstractAsyncContextManager[Pipeline]:
        return running_pipeline(pipeline_settings(redis_url, chroma_url, tmp_path, **extra))

    return make


@pytest.fixture
async def pipeline(make_pipeline: MakePipeline) -> AsyncIterator[Pipeline]:
    async with make_pipeline() as running:
        yield running


async def dead_letters(pipeline: Pipeline, count: int) -> list[DeadLetter]:
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    for _ in range(100):
        dead = await broker.dead_letters(pipeline.settings.queues.ingest.name)
        if len(dead) >= count:
            return dead
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} dead letters, found {len(dead)}")


async def post(pipeline: Pipeline, body: dict[str, Any]) -> None:
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    await broker.publish(pipeline.settings.queues.ingest.name, json.dumps(body).encode())


# --- 9: tenants ----------------------------------------------------------------------------------


async def test_a_message_cannot_index_a_blob_into_another_tenant(pipeline: Pipeline) -> None:
    alice = pipeline.tenant
    bob = TenantId(f"bob{alice}")
    secret = await pipeline.upload("secret.pdf", documents.text_pdf([TEXT]))
    status = (await pipeline.wait([secret]))[secret]
    assert status.stage == Stage.READY and status.path is not None
    await post(pipeline, {"schema": "parley.ingest.v1", "path": status.path, "tenant": bob})
    await post(pipeline, {"schema": "parley.ingest.v1", "path": status.path,
                          "tenant": "Evil tenant:../x"})
    await pipeline.clients.blobs.put("Evil tenant/x.pdf", documents.text_pdf([TEXT]))
    await post(pipeline, {"schema": "parley.ingest.v1", "path": "Evil tenant/x.pdf"})
    dead = await dead_letters(pipeline, 3)
    reasons = sorted(d.reason for d in dead)
    assert any("tenant_mismatch" in r and repr(bob) in r for r in reasons), reasons
    assert any("malformed_message" in r and "tenant" in r for r in reasons), reasons
    assert any("invalid_tenant" in r for r in reasons), reasons
    crossed = document_id(bob, status.path)
    assert await pipeline.clients.status.get(bob, crossed) is None
    assert await pipeline.clients.vectors.count(bob, crossed) == 0
    assert await pipeline.clients.status.documents(TenantId("Evil tenant")) == []
    # Alice's document is untouched.
    assert (await pipeline.clients.status.get(alice, secret)) == status


# --- 8: sizes ------------------------------------------------------------------------------------


async def test_a_blob_over_the_limit_fails_without_being_downloaded(
    make_pipeline: MakePipeline,
) -> None:
    async with make_pipeline(max_document_bytes=16 * MIB) as pipeline:
        path = f"{pipeline.tenant}/huge.pdf"
        await pipeline.clients.blobs.put(path, b"%PDF-1.7\n" + b"\0" * (24 * MIB))
        doc = document_id(pipeline.tenant, path)
        tracemalloc.start()
        try:
            await post(pipeline, {"schema": "parley.ingest.v1", "path": path})
            status = (await pipeline.wait([doc]))[doc]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert status.stage == Stage.FAILED and status.reason == "too_large", status
    assert status.message is not None and "24.0 MiB" in status.message
    assert "16.0 MiB" in status.message
    # Downloaded (as before) it would have cost 24 MiB at least.
    assert peak < 4 * MIB, peak


async def test_text_and_chunks_per_document_are_capped(make_pipeline: MakePipeline) -> None:
    async with make_pipeline(max_document_chars=len(TEXT) - 1) as pipeline:
        wordy = await pipeline.upload("wordy.pdf", documents.text_pdf([TEXT]))
        status = (await pipeline.wait([wordy]))[wordy]
    assert status.stage == Stage.FAILED and status.reason == "too_much_text", status
    assert status.message is not None and f"{len(TEXT) - 1:,}" in status.message
    async with make_pipeline(max_document_chunks=2) as pipeline:
        long = await pipeline.upload("long.pdf", documents.text_pdf([TEXT, TEXT, TEXT]))
        status = (await pipeline.wait([long]))[long]
        assert await pipeline.clients.vectors.count(pipeline.tenant, long) == 0
    assert status.stage == Stage.FAILED and status.reason == "too_many_chunks", status
    assert status.message is not None and "over the limit of 2" in status.message


async def test_a_message_given_up_on_fails_its_document(pipeline: Pipeline) -> None:
    """The consumer runtime gives up on a message whose handling killed the worker again and
    again (``max_deliveries``); the ingest worker's hook fails the document with a reason."""
    from ingest_worker.handler import IngestHandler

    handler = IngestHandler.from_clients(pipeline.clients)
    path = f"{pipeline.tenant}/killer.pdf"
    doc = document_id(pipeline.tenant, path)
    await pipeline.clients.status.update(pipeline.tenant, doc, path=path, stage=Stage.EXTRACTING)
    message = Message(queue="q", id=MessageId("1"), body=dump(IngestRequest(path=path)),
                      attempt=6)
    [request] = handler.parse(message)
    await handler.on_retry_exhausted(
        message, request, Unsettled("max_deliveries: delivered 6 times")
    )
    status = await pipeline.clients.status.get(pipeline.tenant, doc)
    assert status is not None and status.stage == Stage.FAILED and status.reason == "gave_up"
    assert status.message is not None and "5 times" in status.message


async def test_the_give_up_hook_fails_the_request_it_is_handed_alone(pipeline: Pipeline) -> None:
    """An Event Grid delivery of two events whose second keeps failing: the runtime hands the
    ingest worker's hook that request alone, and its document ends ``failed`` (``gave_up``) with
    the error; a delete given up on for never being settled leaves its document as it is."""
    from ingest_worker.handler import IngestHandler

    handler = IngestHandler.from_clients(pipeline.clients)
    paths = [f"{pipeline.tenant}/fine.pdf", f"{pipeline.tenant}/flaky.pdf"]
    docs = [document_id(pipeline.tenant, path) for path in paths]
    for path, doc in zip(paths, docs, strict=True):
        await pipeline.clients.status.update(pipeline.tenant, doc, path=path, stage=Stage.READY)
    body = json.dumps([json.loads(dump(IngestRequest(path=path))) for path in paths]).encode()
    message = Message(queue="q", id=MessageId("1"), body=body, attempt=3)
    _fine, flaky = handler.parse(message)
    await handler.on_retry_exhausted(message, flaky, ConnectionError("blob store down"))
    deleted = IngestRequest(path=paths[0], action="delete")
    await handler.on_retry_exhausted(message, deleted, Unsettled("max_deliveries"))
    first, second = [await pipeline.clients.status.get(pipeline.tenant, doc) for doc in docs]
    assert first is not None and first.stage == Stage.READY
    assert second is not None and second.stage == Stage.FAILED and second.reason == "gave_up"
    assert second.message == "could not process after 3 attempts: blob store down"


# --- 8: the extraction children fit in the pod ---------------------------------------------------
# (imported inside the tests: the functions are new, and the tests above must run without them)


def test_child_memory_limit_keeps_every_child_and_the_worker_in_the_pod() -> None:
    from ingest_worker.extract.isolation import (
        DEFAULT_MEMORY_LIMIT,
        WORKER_RESERVE,
        child_memory_limit,
    )

    gib = 1024 * MIB
    for pod, concurrency in ((2 * gib, 2), (4 * gib, 3), (8 * gib, 2), (1536 * MIB, 1)):
        limit = child_memory_limit(concurrency, container_limit=pod)
        assert limit * concurrency + WORKER_RESERVE <= pod
        assert limit <= DEFAULT_MEMORY_LIMIT
    assert child_memory_limit(2, container_limit=None) == DEFAULT_MEMORY_LIMIT
    assert child_memory_limit(2, container_limit=4 * gib, explicit=gib) == gib
    with pytest.raises(ConfigError, match="do not fit"):
        child_memory_limit(2, container_limit=2 * gib, explicit=gib)  # 2 x 1 GiB + the worker
    with pytest.raises(ConfigError, match="CONCURRENCY"):
        child_memory_limit(8, container_limit=2 * gib)


def test_container_memory_limit_is_read_from_the_cgroup(tmp_path: Path) -> None:
    from ingest_worker.extract.isolation import container_memory_limit

    assert container_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text("max\n")
    assert container_memory_limit(tmp_path) is None
    (tmp_path / "memory.max").write_text(f"{2 * 1024 * MIB}\n")
    assert container_memory_limit(tmp_path) == 2 * 1024 * MIB
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(3 * 1024 * MIB))
    assert container_memory_limit(v1) == 3 * 1024 * MIB


async def test_a_child_at_the_aks_limit_still_extracts(tmp_path: Path) -> None:
    """The ingest worker's pod on AKS has 2 GiB and consumes 2 documents at once: its children
    get (2 GiB - the worker's reserve) / 2 each, and a document of many pages extracts."""
    from ingest_worker.extract.isolation import ExtractorPool, child_memory_limit

    limit = child_memory_limit(2, container_limit=2 * 1024 * MIB)
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(documents.text_pdf([TEXT] * 200))
    pool = ExtractorPool(memory_limit=limit)
    try:
        extraction = await pool.extract(pdf, "long.pdf", max_pages=2000, max_bytes=100 * MIB,
                                        timeout=120)
    finally:
        await pool.close()
    assert extraction.pages == 200
