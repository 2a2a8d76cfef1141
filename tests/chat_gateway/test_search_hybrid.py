"""Hybrid search on real parts: the suite's Redis and Chroma server, the real local embedder and
the embed worker's own handler writing the chunks (as the ingest worker cuts them, document
context included).

Each runs on both dense sides: the exact one of a tenant small enough to keep its vectors in its
index, and Chroma's graph (a tenant too large for that, here: a limit of 0 chunks).

- Disambiguation: fictional quarterly reports of several companies and quarters with one layout
  and meaningless file names (tests/fixtures/filings.py); questions that name a company and a
  period find that report, questions spanning quarters find all of them.
- A question with a typo finds what the same question spelt right finds.
- The lexical index obeys the vectors' rules: a replaced document shows old or new chunks, never
  both or neither, even while searches race the swap; deletes are honoured; a redelivered batch
  adds nothing; a fresh process (a restart) finds everything; two embed workers landing one
  document's batches together leave a complete index.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from chat_gateway.lexical import EXACT_MAX_CHUNKS
from chat_gateway.search import Lexical, Searcher, interleave
from embed_worker.handler import EmbedHandler
from ingest_worker.chunking import ChunkDraft, chunk
from ingest_worker.context import document_context
from ingest_worker.extract.dispatch import extract
from ingest_worker.handler import Target, batches
from parley.contracts import ChunkBatch
from parley.embedder.local import MODEL_ID, LocalEmbedder, LocalEmbedderConfig, MiniLMTokenizer
from parley.ids import ChunkId, DocumentId, TenantId, document_id
from parley.status import Stage, StatusStore
from parley.vectors.chroma import ChromaStore
from parley.vectors.generations import Generations
from parley.vectors.store import Hit
from tests.fixtures import filings


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalEmbedder]:
    embedder = LocalEmbedder(LocalEmbedderConfig(threads=1))
    yield embedder
    await embedder.close()


@dataclass
class Parts:
    redis: aioredis.Redis
    store: ChromaStore
    embedder: LocalEmbedder
    prefix: str = field(default_factory=lambda: f"h{uuid.uuid4().hex[:8]}")
    tenant: TenantId = field(default_factory=lambda: TenantId(f"t{uuid.uuid4().hex[:8]}"))
    handlers: list[EmbedHandler] = field(default_factory=list)
    exact_max_chunks: int = EXACT_MAX_CHUNKS

    def __post_init__(self) -> None:
        self.status = StatusStore(self.redis, prefix=self.prefix)
        self.generations = Generations(self.redis, prefix=self.prefix)
        self.store.on_write = self.generations.bump

    def searcher(self) -> Searcher:
        """A searcher with its own (empty) lexical indexes: what a freshly started process has."""
        lexical = Lexical.for_store(self.store, self.redis, prefix=self.prefix,
                                    exact_max_chunks=self.exact_max_chunks)
        assert lexical is not None
        return Searcher(self.embedder, self.store, self.status, lexical=lexical)

    def handler(self) -> EmbedHandler:
        handler = EmbedHandler(embedder=self.embedder, vectors=self.store, status=self.status,
                               cleanup_grace=0.5)
        self.handlers.append(handler)
        return handler

    async def begin(self, parts: list[ChunkBatch]) -> None:
        first = parts[0]
        await self.status.begin_version(
            self.tenant, first.document_id, first.version, batches_total=len(parts),
            chunks=sum(len(b.chunks) for b in parts), stage=Stage.EMBEDDING,
            filename=first.filename, path=first.path,
        )

    async def land(self, parts: list[ChunkBatch], handler: EmbedHandler | None = None) -> None:
        await self.begin(parts)
        handler = handler or self.handler()
        for batch in parts:
            await handler.handle(batch)

    def report_batches(self, report: filings.Report) -> list[ChunkBatch]:
        """What the ingest worker publishes for a report (its own functions)."""
        extraction = extract(report.pdf(), report.filename, max_pages=50, max_bytes=10**8)
        drafts = chunk(extraction.blocks, tokenizer=MiniLMTokenizer(), max_tokens=200,
                       overlap_tokens=30)
        path = f"{self.tenant}/{report.filename}"
        where = Target(self.tenant, path, document_id(self.tenant, path))
        return batches(drafts, target=where, version="v1", filename=report.filename, size=4,
                       context=document_context(extraction.blocks, report.filename))

    def plain_batches(self, name: str, version: str, word: str, count: int) -> list[ChunkBatch]:
        drafts = [
            ChunkDraft(i, f"The {word} pump in bay {i} runs at {1000 + i} rpm.", 1, None, 14)
            for i in range(count)
        ]
        path = f"{self.tenant}/{name}"
        where = Target(self.tenant, path, document_id(self.tenant, path))
        return batches(drafts, target=where, version=version, filename=name, size=2)


@pytest.fixture(params=["exact", "graph"])
async def parts(
    request: pytest.FixtureRequest, redis_url: str, chroma_url: str, local: LocalEmbedder
) -> AsyncIterator[Parts]:
    client = aioredis.Redis.from_url(redis_url)
    store = await ChromaStore.connect(chroma_url, MODEL_ID)
    made = Parts(client, store, local,
                 exact_max_chunks=EXACT_MAX_CHUNKS if request.param == "exact" else 0)
    yield made
    for handler in made.handlers:
        await asyncio.wait_for(handler.close(), 30)
    await store.close()
    await client.aclose()


async def test_questions_naming_a_company_and_a_period_find_that_report(parts: Parts) -> None:
    reports = filings.reports()
    names: dict[DocumentId, str] = {}
    for report in reports:
        out = parts.report_batches(report)
        names[out[0].document_id] = report.filename
        await parts.land(out)
    searcher = parts.searcher()
    for question in filings.questions(reports):
        hits = await searcher.search(parts.tenant, question.text, k=5)
        found = [names[h.document_id] for h in hits]
        wanted = {r.filename for r in question.sources}
        assert wanted <= set(found), (question.text, found)
        if question.only:  # two quarters named: a chunk of each first, then more of them
            assert set(found) == wanted, (question.text, found)
        if len(wanted) == 1:
            assert found[0] in wanted, (question.text, found)
            assert any(question.answer in " ".join(h.text.split()) for h in hits), question.text
        top = hits[0].metadata
        assert top["entity"] in {r.registrant for r in question.sources}  # context on hits
        assert "period" in top and "period_end" in top and "filename" in top


def slipped(question: str) -> str:
    """``question`` with the two middle letters of its longest lower-case word swapped."""
    word = max(re.findall(r"\b[a-z]{6,}\b", question), key=len)
    i = len(word) // 2 - 1
    return question.replace(word, word[:i] + word[i + 1] + word[i] + word[i + 2:], 1)


async def test_a_misspelt_question_finds_what_the_spelt_one_finds(parts: Parts) -> None:
    reports = filings.reports()[:3]
    for report in reports:
        await parts.land(parts.report_batches(report))
    searcher = parts.searcher()
    asked = [q.text for q in filings.questions(reports) if len(q.sources) == 1][:6]
    assert len(asked) == 6
    for question in asked:
        typed = slipped(question)
        assert typed != question
        spelt = await searcher.search(parts.tenant, question, k=5)
        found = await searcher.search(parts.tenant, typed, k=5)
        # Both sides ask the documents' spelling: the same chunks, in the same order.
        assert [h.chunk_id for h in found] == [h.chunk_id for h in spelt], typed


async def test_a_replaced_document_shows_old_or_new_never_both_nor_neither(parts: Parts) -> None:
    old = parts.plain_batches("pumps.pdf", "v1", "zircon", 6)
    new = parts.plain_batches("pumps.pdf", "v2", "quartz", 6)
    await parts.land(old)
    searcher = parts.searcher()
    hits = await searcher.search(parts.tenant, "zircon pump", k=5)
    assert hits and {h.version for h in hits} == {"v1"}
    assert "zircon" in hits[0].text

    seen: list[set[str]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            for query in ("zircon pump", "quartz pump"):
                found = await searcher.search(parts.tenant, query, k=10)
                seen.append({h.version for h in found})
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await parts.land(new)
    await asyncio.sleep(0.3)
    stop.set()
    await watcher
    assert all(len(versions) == 1 for versions in seen), [v for v in seen if len(v) != 1][:3]
    assert {"v1", "v2"} <= set().union(*seen)
    after = await searcher.search(parts.tenant, "zircon pump", k=10)
    assert {h.version for h in after} == {"v2"}
    assert not any("zircon" in h.text for h in after)
    assert "quartz" in (await searcher.search(parts.tenant, "quartz", k=1))[0].text


async def test_deletes_redelivery_restarts_and_two_workers(parts: Parts) -> None:
    lexical = Lexical.for_store(parts.store, parts.redis, prefix=parts.prefix,
                                exact_max_chunks=parts.exact_max_chunks)
    assert lexical is not None
    searcher = Searcher(parts.embedder, parts.store, parts.status, lexical=lexical)
    # Two embed workers land one document's batches together.
    doc = parts.plain_batches("big.pdf", "v1", "garnet", 12)
    await parts.begin(doc)
    one, two = parts.handler(), parts.handler()
    await asyncio.gather(*(
        (one if i % 2 else two).handle(batch) for i, batch in enumerate(doc)
    ))
    hits = await searcher.search(parts.tenant, "garnet pump bay", k=20)
    assert len(hits) == 12 and len({h.chunk_id for h in hits}) == 12
    rebuilds = lexical.indexes.rebuilds
    await searcher.search(parts.tenant, "garnet", k=5)
    assert lexical.indexes.rebuilds == rebuilds  # nothing written: the index is reused

    # A redelivered batch adds no duplicate, neither to the store nor to the index.
    await one.handle(doc[0])
    again = await searcher.search(parts.tenant, "garnet pump bay", k=20)
    assert sorted(h.chunk_id for h in again) == sorted(h.chunk_id for h in hits)
    # Its chunks were stored already, so the embed worker wrote nothing (embed_worker.handler:
    # only missing chunks are embedded and upserted): the generation did not move either.
    assert lexical.indexes.rebuilds == rebuilds

    # A restart: a new process's searcher builds its index from Chroma and finds the same.
    fresh = await parts.searcher().search(parts.tenant, "garnet pump bay", k=20)
    assert sorted(h.chunk_id for h in fresh) == sorted(h.chunk_id for h in hits)

    # Deleted chunks are gone from lexical results too (the served map still names the
    # version here, so only the index's own refresh can hide them).
    other = parts.plain_batches("other.pdf", "v1", "basalt", 2)
    await parts.land(other)
    assert await parts.store.delete_document(parts.tenant, doc[0].document_id) == 12
    left = await searcher.search(parts.tenant, "garnet pump bay", k=20)
    assert left and {h.document_id for h in left} == {other[0].document_id}


class Counted(ChromaStore):
    """The Chroma store, counting the vector queries it is asked."""

    queries = 0

    async def query(self, *args: Any, **kwargs: Any) -> list[Hit]:
        self.queries += 1
        return await super().query(*args, **kwargs)


async def test_a_small_tenants_dense_side_is_exact_and_asks_no_graph(
    redis_url: str, chroma_url: str, local: LocalEmbedder
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = await Counted.connect(chroma_url, MODEL_ID)
    assert isinstance(store, Counted)
    parts = Parts(client, store, local)
    for report in filings.reports()[:4]:
        await parts.land(parts.report_batches(report))
    stored = {r.chunk_id: r.embedding for r in await store.records(parts.tenant, vectors=True)}
    question = "What was the revenue of each company in the latest quarter?"
    [asked] = await local.embed([question])
    hits = await parts.searcher().search(parts.tenant, question, k=len(stored))
    # Every chunk was compared: the cosines the hits carry are the stored vectors' own, and the
    # closest of all the tenant's chunks is among them.
    similar = [(h.chunk_id, h.metadata["similarity"]) for h in hits if "similarity" in h.metadata]
    assert len(similar) == len(stored)  # fewer than the candidates each side ranks
    for chunk_id, similarity in similar:
        assert similarity == pytest.approx(float(np.dot(asked, stored[chunk_id])), abs=1e-5)
    closest = max(float(np.dot(asked, v)) for v in stored.values())
    assert max(s for _, s in similar) == pytest.approx(closest, abs=1e-5)
    assert store.queries == 0
    parts.exact_max_chunks = 0  # the same tenant, too large: asked of Chroma's graph
    assert await parts.searcher().search(parts.tenant, question, k=8)
    assert store.queries > 0
    for handler in parts.handlers:
        await asyncio.wait_for(handler.close(), 30)
    await store.close()
    await client.aclose()


async def test_an_empty_tenant_finds_nothing(parts: Parts) -> None:
    assert await parts.searcher().search(parts.tenant, "anything at all", k=5) == []


def test_the_focused_documents_take_their_turns_in_the_ranks() -> None:
    def hit(doc: str, n: int) -> Hit:
        return Hit(ChunkId(f"{doc}{n}"), DocumentId(doc), "v", "", 1.0, {})

    ranked = [hit("a", 1), hit("a", 2), hit("a", 3), hit("b", 1), hit("a", 4), hit("b", 2)]
    assert [h.chunk_id for h in interleave(ranked)] == ["a1", "b1", "a2", "b2", "a3", "a4"]
    assert interleave([]) == []
