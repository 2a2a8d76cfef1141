"""Searches during a switch of embedding model, on real Redis, a real Chroma server and the real
local embedder with the in-process pipeline.

The model being left is the same MiniLM under another model id, its dimensions permuted and half
their signs flipped: a genuinely different vector space (a query embedded by one model finds
nothing meaningful in the other's collection) whose cosine scores are on the same scale. The
tenant's old collection is built from the pipeline's chunks as an older deployment would have
left it; the current collection is then cut back to what the reembed sweep would have copied so
far, and a document is uploaded after the switch (so it is only in the current collection)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from backends.factory import build_previous_embedder, model_id_of, previous_settings
from chat_gateway.search import ModelMarkers, ModelSwitch, Searcher, merge_hits
from maintenance_worker import reconcile, reembedding
from parley.embedder import Embedder, Tokenizer
from parley.embedder.local import MODEL_ID
from parley.embedder.text import context_of, document_text
from parley.errors import ConfigError, Retry
from parley.ids import ChunkId, DocumentId, TenantId
from parley.settings import PreviousEmbedding, Settings
from parley.status import Stage
from parley.vectors.chroma import ChromaStore
from parley.vectors.store import ChunkRecord, Hit
from parley_cli import doctor
from parley_cli.doctor import Outcome
from tests.fixtures import documents
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

PDF_TYPE = "application/pdf"
OLD_MODEL = "all-MiniLM-L6-v2-int8-permuted"

FACTS = {
    "kappa": "Kappa bearings last 9,000 hours before they need replacing.",
    "lambda": "Lambda filters trap 99 percent of fine dust particles.",
    "sigma": "Sigma valves open at a pressure of 12 bar.",
    "tau": "Tau conveyor belts move crates at two metres per second.",
    "phi": "Phi boilers heat water to 85 degrees Celsius.",
    "omega": "Omega turbines spin at 3,600 revolutions per minute.",
}
QUESTIONS = {
    "kappa": "How long do Kappa bearings last?",
    "lambda": "What do Lambda filters trap?",
    "sigma": "At what pressure do Sigma valves open?",
    "tau": "How fast do Tau conveyor belts move crates?",
    "phi": "What temperature do Phi boilers heat water to?",
    "omega": "How fast do Omega turbines spin?",
}


class PermutedEmbedder:
    """The local model seen through a fixed permutation and sign flip of its dimensions, under
    another model id; counts its calls."""

    def __init__(self, inner: Embedder, model_id: str = OLD_MODEL, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self._inner = inner
        self._order = rng.permutation(inner.dimensions)
        self._signs = rng.choice([-1.0, 1.0], size=inner.dimensions)
        self.model_id = model_id
        self.dimensions = inner.dimensions
        self.max_tokens = inner.max_tokens
        self.tokenizer: Tokenizer = inner.tokenizer
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        vectors = np.asarray(await self._inner.embed(texts), dtype=np.float64)
        return (vectors[:, self._order] * self._signs).tolist()  # type: ignore[no-any-return]

    async def close(self) -> None:
        pass  # the inner embedder is the pipeline's


class FailingEmbedder(PermutedEmbedder):
    """The old model, unavailable (its deployment deleted too early, say)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        raise Retry("the old deployment answered 404", reason="gone")


class CountingStore(ChromaStore):
    """The real Chroma adapter, counting the calls a search makes."""

    queries = 0
    counts = 0

    async def query(
        self, tenant: TenantId, embedding: Sequence[float], *, k: int,
        documents: Collection[DocumentId] | None = None,
    ) -> list[Hit]:
        self.queries += 1
        return await super().query(tenant, embedding, k=k, documents=documents)

    async def count(self, tenant: TenantId, document_id: DocumentId | None = None) -> int:
        self.counts += 1
        return await super().count(tenant, document_id)


class CountingMarkers(ModelMarkers):
    reads = 0

    async def model(self, tenant: TenantId) -> str | None:
        self.reads += 1
        return await super().model(tenant)


@pytest.fixture
def settings(redis_url: str, chroma_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(redis_url, chroma_url, tmp_path / "blobs", reconcile_grace_seconds=0)


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    async with running_pipeline(settings) as running:
        yield running


def pdf(text: str) -> bytes:
    return documents.text_pdf([text + " " + documents.lorem(40, seed=len(text))])


def store_of(pipeline: Pipeline) -> ChromaStore:
    store = pipeline.clients.vectors
    assert isinstance(store, ChromaStore)
    return store


@dataclass
class MidSwitch:
    """A tenant whose old collection holds ``old_docs`` and whose current collection holds
    ``copied`` plus ``new_only`` (uploaded after the switch); the marker is not set."""

    pipeline: Pipeline
    tenant: TenantId
    docs: dict[str, DocumentId]
    old: CountingStore
    previous: PermutedEmbedder
    markers: CountingMarkers

    def searcher(self) -> Searcher:
        clients = self.pipeline.clients
        switch = ModelSwitch(self.previous, self.old, self.markers)
        return Searcher(clients.embedder, clients.vectors, clients.status, switch=switch)


async def mid_switch(
    pipeline: Pipeline,
    chroma_url: str,
    *,
    tenant: TenantId | None = None,
    old_docs: Sequence[str] = ("kappa", "lambda", "sigma", "tau", "phi"),
    copied: Sequence[str] = ("kappa",),
    new_only: Sequence[str] = ("omega",),
    facts: dict[str, str] = FACTS,
) -> MidSwitch:
    tenant = tenant or pipeline.tenant
    uploader = Pipeline(pipeline.settings, pipeline.clients, tenant, pipeline.searcher)
    clients, store = pipeline.clients, store_of(pipeline)
    docs = {name: await uploader.upload(f"{name}.pdf", pdf(facts[name])) for name in old_docs}
    await uploader.wait(docs.values())

    # The old deployment's collection: the same chunks, embedded by the old model.
    previous = PermutedEmbedder(clients.embedder)
    old = await CountingStore.connect(chroma_url, OLD_MODEL)
    assert isinstance(old, CountingStore)
    for doc in docs.values():
        record = await clients.status.get(tenant, doc)
        assert record is not None and record.version
        rows = await store.chunks(tenant, doc, record.version, model_id=store.model_id)
        texts = [
            document_text(str(r.metadata.get("filename", "")), r.text,
                          str(r.metadata["heading"]) if r.metadata.get("heading") else None,
                          context_of(r.metadata))
            for r in rows
        ]
        vectors = await previous.embed(texts)
        await old.upsert(tenant, [
            ChunkRecord(r.chunk_id, r.document_id, r.version, r.text, v, r.metadata)
            for r, v in zip(rows, vectors, strict=True)
        ])
    # The current collection as the sweep leaves it part way: only ``copied`` so far.
    for name, doc in docs.items():
        if name not in copied:
            await store.delete_document(tenant, doc)
    later = {name: await uploader.upload(f"{name}.pdf", pdf(facts[name])) for name in new_only}
    await uploader.wait(later.values())
    docs.update(later)
    previous.calls = 0
    markers = CountingMarkers(clients.redis, prefix=pipeline.settings.redis_prefix)
    return MidSwitch(pipeline, tenant, docs, old, previous, markers)


async def sweep(pipeline: Pipeline, tenant: TenantId) -> reconcile.SweepReport:
    """The reembed sweep for one tenant, with the pipeline's (current) model."""
    clients = pipeline.clients
    return await reembedding.reembed(
        pipeline.settings, redis=clients.redis, status=clients.status, store=store_of(pipeline),
        embedder=clients.embedder,
        broker=clients.brokers.for_queue(pipeline.settings.queues.ingest), tenants=[tenant],
    )


async def test_mid_switch_a_search_finds_old_only_and_new_only_documents(
    pipeline: Pipeline, chroma_url: str
) -> None:
    state = await mid_switch(pipeline, chroma_url)
    tenant, docs, store = state.tenant, state.docs, store_of(pipeline)
    # The state is what it claims: lambda only in the old collection, omega only in the new.
    assert await store.count(tenant, docs["lambda"]) == 0
    assert await state.old.count(tenant, docs["lambda"]) > 0
    assert await state.old.count(tenant, docs["omega"]) == 0
    assert await store.count(tenant, docs["omega"]) > 0
    marker = reembedding.model_key(pipeline.settings, tenant)
    assert await pipeline.clients.redis.get(marker) is None

    # The plain search (no previous model configured) misses what is not copied yet.
    plain = await pipeline.searcher.search(tenant, QUESTIONS["lambda"], k=5)
    assert docs["lambda"] not in {h.document_id for h in plain}

    searcher = state.searcher()
    for name, question in QUESTIONS.items():
        [top] = await searcher.search(tenant, question, k=1)
        assert top.document_id == docs[name], (name, top.text)
        assert FACTS[name].split(" ")[0] in top.text
    # The old collection was asked with the old model's vectors (else lambda, sigma, tau and
    # phi could not all come first: the current model's vector is noise in the permuted space).
    assert state.previous.calls == len(QUESTIONS)
    assert state.old.queries == len(QUESTIONS)

    hits = await searcher.search(tenant, "machine parts and their ratings", k=20)
    assert len({h.chunk_id for h in hits}) == len(hits)  # kappa is in both: listed once
    served = await pipeline.clients.status.served_map(tenant)
    assert all(served[h.document_id] == h.version for h in hits)
    assert {h.document_id for h in hits} == set(docs.values())  # every served document

    # The old model failing does not fail searches: they answer from the current collection.
    clients = pipeline.clients
    failing = FailingEmbedder(clients.embedder)
    broken = Searcher(clients.embedder, clients.vectors, clients.status,
                      switch=ModelSwitch(failing, state.old, state.markers))
    [top] = await broken.search(tenant, QUESTIONS["omega"], k=1)
    assert top.document_id == docs["omega"] and failing.calls == 1
    hits = await broken.search(tenant, QUESTIONS["lambda"], k=5)
    assert hits and docs["lambda"] not in {h.document_id for h in hits}


async def test_after_the_sweep_flips_searches_use_the_new_collection_only(
    pipeline: Pipeline, chroma_url: str
) -> None:
    state = await mid_switch(pipeline, chroma_url)
    tenant, docs, clients = state.tenant, state.docs, pipeline.clients
    searcher = state.searcher()
    [top] = await searcher.search(tenant, QUESTIONS["lambda"], k=1)
    assert top.document_id == docs["lambda"] and state.old.queries == 1

    report = await sweep(pipeline, tenant)
    assert report.counts.get("documents_copied") == 4
    assert report.counts.get("collections_dropped") == 1
    assert await state.markers.model(tenant) == MODEL_ID

    # Within the 5 s the searcher still believes "switching": its query of the dropped old
    # collection fails, the marker is read again, and the (complete) new collection answers.
    [top] = await searcher.search(tenant, QUESTIONS["lambda"], k=1)
    assert top.document_id == docs["lambda"]
    assert state.old.queries == 2

    reads, queries, counts, calls = (state.markers.reads, state.old.queries, state.old.counts,
                                     state.previous.calls)
    for name, question in QUESTIONS.items():
        [top] = await searcher.search(tenant, question, k=1)
        assert top.document_id == docs[name], name
    # Switched is remembered: no marker read, no old model, no old collection any more.
    assert (state.markers.reads, state.old.queries, state.old.counts, state.previous.calls) == (
        reads, queries, counts, calls)

    # A new searcher (another gateway process) reads the marker once, then never again.
    now = [0.0]
    fresh = Searcher(clients.embedder, clients.vectors, clients.status,
                     switch=ModelSwitch(state.previous, state.old, state.markers),
                     clock=lambda: now[0])
    for question in QUESTIONS.values():
        await fresh.search(tenant, question, k=1)
        now[0] += 3600
    assert state.markers.reads == reads + 1
    assert state.old.queries == queries and state.previous.calls == calls


async def test_a_tenant_without_an_old_collection_takes_the_plain_path(
    pipeline: Pipeline, chroma_url: str
) -> None:
    doc = await pipeline.upload("omega.pdf", pdf(FACTS["omega"]))
    await pipeline.wait([doc])
    clients = pipeline.clients
    previous = PermutedEmbedder(clients.embedder)
    old = await CountingStore.connect(chroma_url, OLD_MODEL)
    assert isinstance(old, CountingStore)
    markers = CountingMarkers(clients.redis, prefix=pipeline.settings.redis_prefix)
    now = [100.0]
    searcher = Searcher(clients.embedder, clients.vectors, clients.status,
                        switch=ModelSwitch(previous, old, markers), clock=lambda: now[0])
    for _ in range(3):
        [top] = await searcher.search(pipeline.tenant, QUESTIONS["omega"], k=1)
        assert top.document_id == doc
    # One look (marker, old collection) per 5 s; no old query, no old embedding.
    assert (markers.reads, old.counts, old.queries, previous.calls) == (1, 1, 0, 0)
    now[0] += 5.1
    await searcher.search(pipeline.tenant, QUESTIONS["omega"], k=1)
    assert (markers.reads, old.counts, old.queries, previous.calls) == (2, 2, 0, 0)


async def test_tenants_stay_apart_during_a_switch(pipeline: Pipeline, chroma_url: str) -> None:
    other = TenantId(f"other{uuid.uuid4().hex[:6]}")
    secret = {"lambda": "Lambda filters of the other tenant trap 42 percent of pollen."}
    mine = await mid_switch(pipeline, chroma_url, old_docs=("kappa", "lambda"),
                            copied=("kappa",), new_only=())
    await mid_switch(pipeline, chroma_url, tenant=other, old_docs=("lambda",),
                              copied=(), new_only=(), facts=secret)
    clients = pipeline.clients
    searcher = mine.searcher()
    served_mine = await clients.status.served_map(mine.tenant)
    served_theirs = await clients.status.served_map(other)
    hits = await searcher.search(mine.tenant, "What do Lambda filters trap? pollen", k=20)
    assert {h.document_id for h in hits} == set(served_mine)
    assert all("42 percent" not in h.text for h in hits)
    hits = await searcher.search(other, "What do Lambda filters trap?", k=20)
    assert {h.document_id for h in hits} == set(served_theirs)
    assert "42 percent" in hits[0].text

    # One tenant's completed switch does not switch the other.
    await sweep(pipeline, other)
    fresh = mine.searcher()
    assert await fresh.switching(mine.tenant) and not await fresh.switching(other)
    [top] = await fresh.search(mine.tenant, QUESTIONS["lambda"], k=1)
    assert top.document_id == mine.docs["lambda"]  # still only in my old collection
    [top] = await fresh.search(other, QUESTIONS["lambda"], k=1)
    assert "42 percent" in top.text


# --- merging (pure) ------------------------------------------------------------------------------


def hit(chunk: str, doc: str, score: float, version: str = "v1") -> Hit:
    return Hit(ChunkId(chunk), DocumentId(doc), version, chunk, score)


def test_merge_calibrates_new_scores_through_the_copies() -> None:
    served = {DocumentId(d): "v1" for d in ("copied", "old-only", "new-only", "weak-new")}
    # The new space scores everything 0.3 lower; the copy measures that.
    old = [hit("old-only-1", "old-only", 0.80), hit("copied-1", "copied", 0.60),
           hit("stale", "old-only", 0.99, version="v0")]
    new = [hit("new-only-1", "new-only", 0.55), hit("copied-1", "copied", 0.30),
           hit("copied-2", "copied", 0.29), hit("weak-new-1", "weak-new", 0.05)]
    merged = merge_hits(old, new, served, k=10)
    # new-only 0.55 + 0.30 = 0.85 beats old-only's 0.80; weak-new 0.35 comes last; copied's
    # chunks come from the old list only (its copy-only chunk copied-2 is dropped).
    assert [h.chunk_id for h in merged] == ["new-only-1", "old-only-1", "copied-1", "weak-new-1"]
    assert merged[2].score == 0.60  # scores are the hits' own
    assert [h.chunk_id for h in merge_hits(old, new, served, k=2)] == [
        "new-only-1", "old-only-1"]


def test_merge_without_common_chunks_interleaves_by_rank_old_first() -> None:
    served = {DocumentId(d): "v1" for d in ("a", "b", "c", "d")}
    old = [hit("a1", "a", 0.9), hit("b1", "b", 0.8), hit("a2", "a", 0.7)]
    new = [hit("c1", "c", 0.2), hit("b9", "b", 0.19), hit("d1", "d", 0.1)]
    merged = merge_hits(old, new, served, k=10)
    # b is held by the old list, so its new chunk is dropped; d keeps its rank (2) in new.
    assert [h.chunk_id for h in merged] == ["a1", "c1", "b1", "a2", "d1"]
    assert merge_hits([], [], served, k=5) == []
    assert merge_hits(old, new, {}, k=5) == []  # nothing served


# --- configuration -------------------------------------------------------------------------------


def test_previous_embedding_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_EMBEDDER", "azure-openai")
    monkeypatch.setenv("PARLEY_AZURE_OPENAI_ENDPOINT", "https://current.openai.azure.com")
    monkeypatch.setenv("PARLEY_AZURE_OPENAI_API_KEY", "current-key")
    monkeypatch.setenv("PARLEY_AZURE_OPENAI_EMBEDDING_DEPLOYMENT", "text-embedding-3-large")
    monkeypatch.setenv("PARLEY_EMBEDDING_PREVIOUS__EMBEDDER", "azure-openai")
    monkeypatch.setenv("PARLEY_EMBEDDING_PREVIOUS__AZURE_OPENAI_EMBEDDING_DEPLOYMENT",
                       "text-embedding-ada-002")
    settings = Settings(_env_file=None)
    before = previous_settings(settings)
    assert before is not None and before.embedding_previous is None
    assert before.azure_openai_embedding_deployment == "text-embedding-ada-002"
    # Where the service is and how to sign in are inherited; the model is not.
    assert before.azure_openai_endpoint == "https://current.openai.azure.com"
    assert before.azure_openai_api_key == SecretStr("current-key")
    assert settings.azure_openai_embedding_deployment == "text-embedding-3-large"


async def test_previous_embedder_is_built_from_its_own_fields() -> None:
    settings = Settings(
        embedder="azure-openai", azure_openai_endpoint="https://x.openai.azure.com",
        azure_openai_api_key=SecretStr("k"),
        embedding_previous=PreviousEmbedding(embedder="local", embed_device="cpu"),
    )
    previous = build_previous_embedder(settings)
    assert previous is not None and previous.model_id == MODEL_ID
    await previous.close()
    assert await model_id_of(settings) == "azure-openai/text-embedding-3-small/1536"
    assert build_previous_embedder(Settings()) is None


def test_an_unknown_previous_field_is_named() -> None:
    with pytest.raises(ValidationError) as error:
        Settings.model_validate({"embedding_previous": {"embeder": "local"}})
    text = doctor.explain_settings_error(error.value)
    assert "PARLEY_EMBEDDING_PREVIOUS__EMBEDDER: Field required" in text
    assert "PARLEY_EMBEDDING_PREVIOUS__EMBEDER: Extra inputs" in text


async def test_a_previous_model_equal_to_the_current_is_refused(pipeline: Pipeline) -> None:
    clients = pipeline.clients
    same = ModelSwitch(clients.embedder, clients.vectors,
                       ModelMarkers(clients.redis, prefix="x"))
    with pytest.raises(ConfigError, match="previous embedding model is the current one"):
        Searcher(clients.embedder, clients.vectors, clients.status, switch=same)


# --- parley doctor -------------------------------------------------------------------------------


async def test_doctor_says_what_to_set_while_a_tenant_is_mid_switch(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    from parley.status import StatusStore

    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    tenant = TenantId(f"doc{uuid.uuid4().hex[:6]}")
    ada = "azure-openai/text-embedding-ada-002/1536"
    client = aioredis.Redis.from_url(redis_url)
    old = await ChromaStore.connect(chroma_url, ada)
    try:
        assert (await doctor.check_model_switch(settings)).outcome is Outcome.OK
        await StatusStore(client, prefix=settings.redis_prefix).update(
            tenant, DocumentId("d1"), version="v1", stage=Stage.READY)
        await old.upsert(tenant, [ChunkRecord(ChunkId("c1"), DocumentId("d1"), "v1", "text",
                                              [1.0, 0.0, 0.0], {})])

        check = await doctor.check_model_switch(settings)
        assert check.outcome is Outcome.WARN, check
        assert f"1 tenant still being re-embedded from {ada} to {MODEL_ID}" in check.detail
        assert "searches see only the documents already in" in check.detail
        assert check.fix is not None and "PARLEY_EMBEDDING_PREVIOUS__EMBEDDER" in check.fix

        azure = {"embedder": "azure-openai", "azure_openai_endpoint": "https://x.openai.azure.com",
                 "azure_openai_api_key": SecretStr("k")}
        with_ada = settings.model_copy(update={"embedding_previous": PreviousEmbedding(
            **azure, azure_openai_embedding_deployment="text-embedding-ada-002")})
        check = await doctor.check_model_switch(with_ada)
        assert check.outcome is Outcome.OK and "searches read both" in check.detail, check
        with_other = settings.model_copy(update={"embedding_previous": PreviousEmbedding(**azure)})
        check = await doctor.check_model_switch(with_other)
        assert check.outcome is Outcome.WARN and f"do not read {ada}" in check.detail, check
        same = settings.model_copy(update={"embedding_previous": PreviousEmbedding(
            embedder="local")})
        assert (await doctor.check_model_switch(same)).outcome is Outcome.FAIL

        # Switched (the sweep names the current model): nothing left to read.
        await client.set(reembedding.model_key(settings, tenant),
                         json.dumps({"model_id": MODEL_ID, "since": time.time()}))
        check = await doctor.check_model_switch(with_ada)
        assert check.outcome is Outcome.OK and "can be removed" in check.detail, check
        out = io.StringIO()
        doctor.report([check], out)
        assert "model switch" in out.getvalue()
    finally:
        await old.drop(tenant, ada)
        await client.aclose()


def test_the_marker_key_is_the_sweeps() -> None:
    settings = Settings(redis_prefix="p")
    markers = ModelMarkers(None, prefix="p")  # type: ignore[arg-type]
    assert markers.key("t1") == reembedding.model_key(settings, "t1")
