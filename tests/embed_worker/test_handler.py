"""The embed handler on its own, on real parts: the suite's Redis (status, queue) and Chroma
server, the real local embedder, and the real RedisBroker + Consumer where the delivery path
matters. Batches are made by the ingest worker's own ``batches``; the status record is set as
the ingest worker sets it before publishing them. End-to-end runs are in tests/test_pipeline.py
and tests/test_faults.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog.testing

from embed_worker.handler import EmbedHandler
from ingest_worker.chunking import ChunkDraft
from ingest_worker.handler import Target, batches
from parley.broker import Message
from parley.broker.redis import RedisBroker
from parley.contracts import ChunkBatch, dump
from parley.embedder import Embedder
from parley.embedder.local import MODEL_ID, LocalEmbedder, LocalEmbedderConfig
from parley.embedder.text import document_text
from parley.errors import Reject, Retry
from parley.ids import MessageId, TenantId, document_id
from parley.runtime.consumer import Consumer, Stats
from parley.settings import QueueSettings
from parley.status import DocumentStatus, Stage, StatusStore, parse_progress
from parley.vectors.chroma import ChromaStore
from parley.vectors.marks import WriteMarks

LEASE = 0.5  # seconds: a crashed consumer's message is reclaimed after this


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalEmbedder]:
    embedder = LocalEmbedder(LocalEmbedderConfig(threads=1))
    yield embedder
    await embedder.close()


@pytest.fixture(scope="module")
async def chroma(chroma_url: str) -> AsyncIterator[ChromaStore]:
    store = await ChromaStore.connect(chroma_url, MODEL_ID)
    yield store
    await store.close()


class StandIn:
    """An :class:`Embedder` that runs ``before`` on its first call, then delegates to the real
    local embedder; records when it was called."""

    def __init__(self, real: Embedder, before: Callable[[], Awaitable[None]]) -> None:
        self.real, self.before = real, before
        self.model_id, self.dimensions = real.model_id, real.dimensions
        self.max_tokens, self.tokenizer = real.max_tokens, real.tokenizer
        self.calls: list[float] = []
        self.texts: list[int] = []  # texts per call

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(time.monotonic())
        self.texts.append(len(texts))
        if len(self.calls) == 1:
            await self.before()
        return await self.real.embed(texts)

    async def close(self) -> None:
        pass  # the real embedder is the module's


@dataclass
class Bench:
    redis: aioredis.Redis
    chroma: ChromaStore
    local: LocalEmbedder
    prefix: str = field(default_factory=lambda: f"e{uuid.uuid4().hex[:8]}")
    tenant: TenantId = field(default_factory=lambda: TenantId(f"t{uuid.uuid4().hex[:8]}"))
    handlers: list[EmbedHandler] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = StatusStore(self.redis, prefix=self.prefix)
        self.marks = WriteMarks(self.redis, prefix=self.prefix)
        self.path = f"{self.tenant}/report.pdf"
        self.doc = document_id(self.tenant, self.path)

    def handler(self, embedder: Embedder | None = None, grace: float = 5.0) -> EmbedHandler:
        handler = EmbedHandler(embedder=embedder or self.local, vectors=self.chroma,
                               status=self.status, cleanup_grace=grace, writes=self.marks)
        self.handlers.append(handler)
        return handler

    def version(self, version: str, count: int, *, size: int = 4) -> list[ChunkBatch]:
        """The batches an ingest worker publishes for ``count`` chunks of one version."""
        drafts = [
            ChunkDraft(i, f"{version}: the pump in bay {i} runs at {1000 + i} rpm.",
                       None if i == 1 else 1 + i // 3, "Maintenance" if i % 2 else None, 12 + i)
            for i in range(count)
        ]
        where = Target(self.tenant, self.path, self.doc)
        return batches(drafts, target=where, version=version, filename="report.pdf", size=size)

    async def chunked(self, parts: list[ChunkBatch]) -> None:
        """What the ingest worker records just before it publishes ``parts``."""
        await self.status.begin_version(
            self.tenant, self.doc, parts[0].version, batches_total=len(parts),
            chunks=sum(len(b.chunks) for b in parts), stage=Stage.EMBEDDING,
            filename="report.pdf", path=self.path,
        )

    async def get(self) -> DocumentStatus:
        status = await self.status.get(self.tenant, self.doc)
        assert status is not None
        return status

    async def stored(self, version: str) -> set[str]:
        records = await self.chroma.chunks(self.tenant, self.doc, version, model_id=MODEL_ID)
        return {r.chunk_id for r in records}

    async def gone(self, version: str) -> bool:
        return not await self.stored(version)

    async def progress(self) -> list[DocumentStatus]:
        entries: Any = await self.redis.xrange(self.status.progress_key(self.tenant))
        return [parse_progress(fields) for _id, fields in entries]

    def broker(self) -> RedisBroker:
        return RedisBroker(self.redis, prefix=self.prefix, lease_seconds={"embed": LEASE})


def message(batch: ChunkBatch | bytes) -> Message:
    body = batch if isinstance(batch, bytes) else dump(batch)
    return Message(queue="embed", id=MessageId("1-0"), body=body)


def ids(batch: ChunkBatch) -> set[str]:
    return {c.chunk_id for c in batch.chunks}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.05)


@pytest.fixture
async def bench(redis_url: str, chroma: ChromaStore, local: LocalEmbedder) -> AsyncIterator[Bench]:
    client = aioredis.Redis.from_url(redis_url)
    bench = Bench(client, chroma, local)
    yield bench
    for handler in bench.handlers:  # pending clean-ups use the client: end them first
        await asyncio.wait_for(handler.close(), 30)
    await client.aclose()


async def crash_after_handling(bench: Bench, handler: EmbedHandler) -> None:
    """A worker takes the next batch, handles it, and dies before its ack."""
    crashed = bench.broker()
    [delivery] = await crashed.receive("embed", max_messages=1, wait=1.0)
    await handler(delivery)
    await crashed.close()  # its lease is no longer kept: another consumer reclaims it


async def settle(bench: Bench, handler: Callable[[Message], Awaitable[None]]) -> Stats:
    """Run a consumer until the queue is empty (acked, dead-lettered or retried and done)."""
    broker = bench.broker()
    queue = QueueSettings(name="embed", lease_seconds=LEASE, max_attempts=3)
    consumer = Consumer(broker, queue, handler, receive_wait=0.1, backoff_base=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))

    async def quiet() -> bool:
        return not await broker.depth("embed") and not consumer.stats.in_flight

    try:
        await eventually(quiet, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await broker.close()
    return consumer.stats


async def test_batches_land_under_their_ids_and_the_last_makes_it_ready(bench: Bench) -> None:
    first, last = parts = bench.version("v1", 6)  # sizes 4, 2
    await bench.chunked(parts)
    handler = bench.handler()
    await handler(message(last))  # batches may land in any order
    status = await bench.get()
    assert (status.stage, status.chunks_done, status.version) == (Stage.EMBEDDING, 2, None)
    assert await bench.status.served_map(bench.tenant) == {bench.doc: "v1"}  # first version
    assert await bench.stored("v1") == ids(last)
    assert (await bench.progress())[-1].chunks_done == 2
    assert float(await bench.marks.last(bench.tenant, MODEL_ID)) > 0

    await handler(message(first))
    status = await bench.get()
    assert (status.stage, status.version, status.pending_version) == (Stage.READY, "v1", None)
    assert status.chunks_done == status.chunks == 6
    assert [s.stage for s in await bench.progress()].count(Stage.READY) == 1
    record = bench.status.record_key(bench.tenant, bench.doc)
    assert not await bench.redis.exists(f"{record}:landed:v1")  # no state left behind
    records = await bench.chroma.chunks(bench.tenant, bench.doc, "v1", model_id=MODEL_ID)
    by_id = {r.chunk_id: r for r in records}
    assert set(by_id) == ids(first) | ids(last)
    for chunk in first.chunks + last.chunks:
        stored = by_id[chunk.chunk_id]
        assert stored.text == chunk.text
        expected = {"filename": "report.pdf", "path": bench.path, "ordinal": chunk.ordinal,
                    "tokens": chunk.tokens, "page": chunk.page, "heading": chunk.heading}
        assert stored.metadata == {k: v for k, v in expected.items() if v is not None}
    # The vector is the chunk's text under a header naming the document and section.
    chunk = first.chunks[1]
    [query] = await bench.local.embed([document_text("report.pdf", chunk.text, chunk.heading)])
    [hit] = await bench.chroma.query(bench.tenant, query, k=1)
    # Not 1.0: the int8 graph quantizes activations per mini-batch, and the stored vector was
    # embedded beside the batch's other chunks.
    assert hit.chunk_id == chunk.chunk_id and hit.score > 0.995


async def test_a_batch_redelivered_after_a_crash_before_its_ack_counts_once(bench: Bench) -> None:
    first, last = parts = bench.version("v1", 6)
    await bench.chunked(parts)
    attempts: list[int] = []
    handler = bench.handler()

    async def recorded(delivery: Message) -> None:
        attempts.append(delivery.attempt)
        await handler(delivery)

    broker = bench.broker()
    await broker.publish("embed", dump(first))
    await crash_after_handling(bench, handler)  # landed, never acked
    stats = await settle(bench, recorded)  # reclaimed after the lease, handled again, acked
    assert attempts == [2] and stats.handled == 1
    status = await bench.get()
    assert (status.stage, status.chunks_done) == (Stage.EMBEDDING, 4)

    await broker.publish("embed", dump(last))
    await crash_after_handling(bench, handler)  # the document became ready, never acked
    stats = await settle(bench, recorded)
    assert attempts == [2, 2] and stats.handled == 1
    status = await bench.get()
    assert (status.stage, status.chunks_done, status.chunks) == (Stage.READY, 6, 6)
    assert [s.stage for s in await bench.progress()].count(Stage.READY) == 1
    stored = await bench.chroma.ids(bench.tenant, bench.doc)
    assert len(stored) == len(set(stored)) == 6


@pytest.mark.parametrize("case", ["replaced", "unknown"])
async def test_a_batch_of_a_version_nobody_wants_is_dropped_unwritten(
    bench: Bench, case: str
) -> None:
    [stale] = bench.version("v0", 3)
    if case == "replaced":  # v1 served, v2 being embedded: v0 is neither
        [v1] = bench.version("v1", 3)
        await bench.chunked([v1])
        await bench.handler()(message(v1))
        await bench.chunked(bench.version("v2", 3))
        await bench.redis.delete(bench.marks.key(bench.tenant))
    record = bench.status.record_key(bench.tenant, bench.doc)
    before = await bench.redis.hgetall(record), len(await bench.progress())
    await bench.handler()(message(stale))
    assert await bench.stored("v0") == set()
    assert (await bench.redis.hgetall(record), len(await bench.progress())) == before
    assert await bench.marks.last(bench.tenant, MODEL_ID) == ""  # not even embedded


@pytest.mark.parametrize("meanwhile", ["replaced", "deleted"])
async def test_a_version_replaced_while_its_batch_embeds_leaves_no_chunk(
    bench: Bench, meanwhile: str
) -> None:
    first, _ = parts = bench.version("v1", 6)
    await bench.chunked(parts)
    newer = bench.version("v2", 6)

    async def replace() -> None:  # the ingest worker of a newer upload, or a delete, acts now
        if meanwhile == "replaced":
            await bench.chunked(newer)
        else:
            await bench.status.remove(bench.tenant, bench.doc)

    await bench.handler(StandIn(bench.local, replace))(message(first))
    assert await bench.chroma.ids(bench.tenant, bench.doc) == []
    served = await bench.status.served_map(bench.tenant)
    if meanwhile == "replaced":
        status = await bench.get()
        assert (status.pending_version, status.chunks_done, status.stage, served) == (
            "v2", 0, Stage.EMBEDDING, {bench.doc: "v2"})
    else:  # the late batch brings back neither the record nor the served entry
        assert await bench.status.get(bench.tenant, bench.doc) is None and served == {}


MALFORMED = {
    "not JSON": (b"{not json", "Invalid JSON"),
    "not UTF-8": (b"\xff\xfe", "Invalid JSON"),
    "an array": (b"[]", "object"),
    "a newer major version": (b'{"schema": "parley.chunks.v2"}', "schema"),
    "a missing field": (b'{"schema": "parley.chunks.v1", "tenant": "t"}', "version"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_body_is_rejected_with_its_reason_and_nothing_written(
    bench: Bench, case: str
) -> None:
    body, says = MALFORMED[case]
    with pytest.raises(Reject) as caught:
        await bench.handler()(message(body))
    reason = str(caught.value)
    assert caught.value.reason == "malformed_message" and says in reason
    assert reason.startswith("not a parley.chunks.v1 batch")
    assert await bench.redis.keys(f"{bench.prefix}:*") == []
    assert await bench.chroma.count(bench.tenant) == 0


async def test_a_malformed_batch_is_dead_lettered_at_once(bench: Bench) -> None:
    bad = dump(bench.version("v1", 3)[0]).replace(b'"batch_index":0', b'"batch_index":-1')
    await bench.broker().publish("embed", bad)
    stats = await settle(bench, bench.handler())
    [dead] = await bench.broker().dead_letters("embed")
    assert (stats.dead_lettered, stats.retried, dead.attempt, dead.body) == (1, 0, 1, bad)
    assert "batch_index" in dead.reason and "malformed_message" in dead.reason
    assert await bench.status.get(bench.tenant, bench.doc) is None


async def test_a_rejection_reason_does_not_quote_the_document(bench: Bench) -> None:
    batch = bench.version("v1", 8)[0].model_dump(mode="json", by_alias=True)
    del batch["version"]
    for chunk in batch["chunks"]:
        chunk["text"] = "CONFIDENTIAL " + chunk["text"] * 10
    with pytest.raises(Reject) as caught:
        await bench.handler()(message(json.dumps(batch).encode()))
    reason = str(caught.value)
    assert "version" in reason
    assert "CONFIDENTIAL" not in reason and len(reason) < 500, (len(reason), reason[:300])


async def test_a_rate_limited_batch_is_retried_after_the_delay_asked(bench: Bench) -> None:
    async def throttled() -> None:
        # A stand-in for the Azure OpenAI service answering 429 with Retry-After: 0.6 s.
        raise Retry("429 Too Many Requests", reason="rate_limited", delay=0.6)

    [batch] = parts = bench.version("v1", 3)
    await bench.chunked(parts)
    embedder = StandIn(bench.local, throttled)
    await bench.broker().publish("embed", dump(batch))
    # The consumer's own backoff (base 30 s) would not bring the batch back within the test.
    stats = await settle(bench, bench.handler(embedder))
    assert (stats.retried, stats.handled, stats.dead_lettered) == (1, 1, 0)
    waited = embedder.calls[1] - embedder.calls[0]
    assert 0.6 <= waited < 5, waited
    status = await bench.get()
    assert (status.stage, status.chunks_done) == (Stage.READY, 3)
    assert await bench.stored("v1") == ids(batch)


async def test_a_superseded_version_stays_for_the_grace_then_goes(bench: Bench) -> None:
    [old], [new] = bench.version("v1", 3), bench.version("v2", 3)
    await bench.chunked([old])
    await bench.handler(grace=600)(message(old))  # served long ago (its own clean-up: later)
    await bench.chunked([new])
    await bench.handler(grace=1.0)(message(new))
    swapped = time.monotonic()
    assert await bench.status.served_map(bench.tenant) == {bench.doc: "v2"}
    # A search that read the served map just before the swap still finds its chunks.
    await asyncio.sleep(0.5)
    assert await bench.stored("v1") == ids(old)
    await eventually(lambda: bench.gone("v1"))
    assert time.monotonic() - swapped >= 1.0
    assert await bench.stored("v2") == ids(new)


async def test_a_superseded_version_gets_the_whole_grace_after_the_swap(bench: Bench) -> None:
    handler = bench.handler(grace=2.0)
    [old], [new] = bench.version("v1", 3), bench.version("v2", 3)
    await bench.chunked([old])
    await handler(message(old))  # ready at t=0
    await asyncio.sleep(1.0)
    await bench.chunked([new])
    await handler(message(new))  # swap at t=1: v1 should stay until t=3
    await asyncio.sleep(1.6)
    assert await bench.stored("v1") == ids(old)


async def test_close_runs_pending_cleanups_now_keeping_served_and_pending(bench: Bench) -> None:
    handler = bench.handler(grace=600)
    [v1], [v2], v3 = bench.version("v1", 3), bench.version("v2", 3), bench.version("v3", 6)
    for parts in ([v1], [v2]):
        await bench.chunked(parts)
        await handler(message(parts[0]))
    await bench.chunked(v3)  # a third upload, half embedded when the worker stops
    await handler(message(v3[0]))
    assert await bench.stored("v1") == ids(v1)  # within its grace
    await asyncio.wait_for(handler.close(), 10)  # not after the 600 s grace
    left = [await bench.stored(v) for v in ("v1", "v2", "v3")]
    assert left == [set(), ids(v2), ids(v3[0])]


async def test_a_version_uploaded_again_counts_its_batches_afresh(bench: Bench) -> None:
    handler = bench.handler(grace=0)
    a, b = bench.version("vA", 6), bench.version("vB", 3)
    await bench.chunked(a)
    await handler(message(a[0]))  # vA half embedded ...
    await bench.chunked(b)  # ... when vB is uploaded, and lands: vA's chunks go
    await handler(message(b[0]))
    await eventually(lambda: bench.gone("vA"))
    await bench.chunked(a)  # vA uploaded again (a revert): every batch is published again
    await handler(message(a[1]))
    status = await bench.get()
    assert status.stage != Stage.READY, f"ready with {await bench.stored('vA')!r} only"
    await handler(message(a[0]))
    assert (await bench.get()).chunks_done == 6


async def test_an_ingest_request_redelivered_after_publishing_still_counts_each_batch_once(
    bench: Bench,
) -> None:
    handler = bench.handler()
    first, last = parts = bench.version("v1", 6)  # sizes 4, 2
    await bench.chunked(parts)
    await handler(message(first))
    assert (await bench.get()).chunks_done == 4
    await bench.chunked(parts)  # the request again (its ack was lost): counting starts anew ...
    assert (await bench.get()).chunks_done == 0
    await handler(message(last))  # ... a batch of the first publication counts ...
    status = await bench.get()
    assert (status.stage, status.chunks_done) == (Stage.EMBEDDING, 2)
    await handler(message(first))  # ... and the republished ones complete it
    status = await bench.get()
    assert (status.stage, status.version, status.chunks_done) == (Stage.READY, "v1", 6)
    await handler(message(last))  # the republished copy of a counted batch: nothing changes
    assert (await bench.get()).chunks_done == 6
    assert [s.stage for s in await bench.progress()].count(Stage.READY) == 1


class Unreachable:
    """The Chroma store, except that deleting fails as when the server is down."""

    def __init__(self, real: ChromaStore) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def delete_document(self, *args: Any, **kwargs: Any) -> int:
        raise ConnectionError("chroma: connection refused")


async def test_a_failed_cleanup_is_logged(bench: Bench) -> None:
    handler = EmbedHandler(embedder=bench.local, vectors=Unreachable(bench.chroma),
                           status=bench.status, cleanup_grace=0.0)
    bench.handlers.append(handler)
    [v1] = parts = bench.version("v1", 3)
    await bench.chunked(parts)
    with structlog.testing.capture_logs() as logs:
        await handler(message(v1))
        await asyncio.wait_for(handler.close(), 10)
    [failed] = [e for e in logs if e["event"] == "cleanup_failed"]
    assert "connection refused" in failed["error"] and failed["log_level"] == "warning"


async def test_batches_rederived_after_redis_lost_its_data_embed_only_what_chroma_lacks(
    bench: Bench,
) -> None:
    first, last = parts = bench.version("v1", 6)  # sizes 4, 2
    await bench.chunked(parts)
    await bench.handler()(message(first))  # in Chroma; then Redis loses every key
    bench.prefix = f"e{uuid.uuid4().hex[:8]}"
    bench.status = StatusStore(bench.redis, prefix=bench.prefix)

    async def nothing() -> None:
        pass

    counting = StandIn(bench.local, nothing)
    await bench.chunked(parts)  # the blob watcher's re-post, extracted and chunked again
    handler = bench.handler(counting)
    await handler(message(first))
    assert counting.texts == []  # all four chunks were stored: nothing embedded again
    await handler(message(last))
    assert counting.texts == [2]  # only the chunks Chroma lacked
    status = await bench.get()
    assert (status.stage, status.version, status.chunks_done) == (Stage.READY, "v1", 6)
    stored = await bench.chroma.ids(bench.tenant, bench.doc)
    assert len(stored) == len(set(stored)) == 6
