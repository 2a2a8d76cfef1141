"""The reembed sweep while a new embedding model is being rolled out, on real Redis, a real Chroma
server and the real local embedder (the in-process pipeline is the new model's deployment).

The old model is the local model seen through a permutation of its dimensions under another
model id (see ``tests/maintenance_worker/test_model_switch.py``). An old-model embed worker is a
real
:class:`EmbedHandler` with that embedder and a store bound to the old collections; an old-model
maintenance worker is the reembed sweep run with them. The new model's collection, embed
worker and sweep are the pipeline's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from embed_worker.handler import EmbedHandler
from ingest_worker.handler import chunk_id
from maintenance_worker import reconcile, reembedding
from maintenance_worker.reembedding import SwitchTarget, next_target
from parley.contracts import Chunk, ChunkBatch
from parley.embedder import Embedder
from parley.embedder.local import MODEL_ID
from parley.ids import DocumentId, TenantId, document_id
from parley.settings import Queues, QueueSettings, Settings
from parley.status import Stage
from parley.uploads import blob_path
from parley.vectors.chroma import ChromaStore
from parley.vectors.marks import WriteMarks
from tests.maintenance_worker.test_model_switch import (
    FACTS,
    OLD_MODEL,
    QUESTIONS,
    MidSwitch,
    mid_switch,
    pdf,
    store_of,
)
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

QUIET = 2.0  # seconds without writes before a replaced collection may be dropped


@pytest.fixture
def settings(redis_url: str, chroma_url: str, tmp_path: Path) -> Settings:
    return pipeline_settings(redis_url, chroma_url, tmp_path / "blobs", reconcile_grace_seconds=0)


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    async with running_pipeline(settings) as running:
        yield running


def parked(settings: Settings, tenant: str) -> Settings:
    """Settings whose ingest queue nobody consumes: a sweep's re-posts stay visible."""
    return settings.model_copy(
        update={"queues": Queues(ingest=QueueSettings(name=f"parked-{tenant}"))}
    )


async def sweep(
    pipeline: Pipeline,
    store: ChromaStore,
    embedder: Embedder,
    *,
    quiet: float = QUIET,
    settings: Settings | None = None,
    previous: str | None = None,
) -> reconcile.SweepReport:
    """One reembed sweep of the pipeline's tenant by a maintenance worker running ``embedder``."""
    clients = pipeline.clients
    settings = settings or parked(pipeline.settings, pipeline.tenant)
    return await reembedding.reembed(
        settings,
        redis=clients.redis,
        status=clients.status,
        store=store,
        embedder=embedder,
        broker=clients.brokers.for_queue(settings.queues.ingest),
        tenants=[pipeline.tenant],
        previous_model=previous,
        quiet_seconds=quiet,
    )


def fresh(pipeline: Pipeline, model_id: str) -> ChromaStore:
    """A store with no collection handles cached, as each maintenance run opens one."""
    return ChromaStore(store_of(pipeline)._client, model_id)


async def new_sweep(pipeline: Pipeline, *, quiet: float = QUIET) -> reconcile.SweepReport:
    """The new model's maintenance worker (the pipeline's model)."""
    store = fresh(pipeline, MODEL_ID)
    return await sweep(pipeline, store, pipeline.clients.embedder, quiet=quiet)


async def old_sweep(
    state: MidSwitch, *, quiet: float = QUIET, previous: str | None = None
) -> reconcile.SweepReport:
    """A maintenance worker still running the old model."""
    store = fresh(state.pipeline, OLD_MODEL)
    return await sweep(state.pipeline, store, state.previous, quiet=quiet, previous=previous)


def old_worker(state: MidSwitch) -> EmbedHandler:
    """An embed worker still running the old model, as the rollout leaves one for a while."""
    clients = state.pipeline.clients
    return EmbedHandler(
        embedder=state.previous,
        vectors=state.old,
        status=clients.status,
        writes=WriteMarks(clients.redis, prefix=state.pipeline.settings.redis_prefix),
    )


def new_worker(pipeline: Pipeline) -> EmbedHandler:
    return EmbedHandler.from_clients(pipeline.clients)


def batches(
    tenant: TenantId, name: str, version: str, texts: Sequence[str], *, per_batch: int = 2
) -> list[ChunkBatch]:
    """The chunk batches an ingest worker would publish for ``texts`` as one version."""
    path = blob_path(tenant, f"{name}.pdf")
    doc = document_id(tenant, path)
    groups = [list(range(i, min(i + per_batch, len(texts)))) for i in
              range(0, len(texts), per_batch)]
    return [
        ChunkBatch(
            tenant=tenant, document_id=doc, version=version, filename=f"{name}.pdf", path=path,
            batch_index=index, batch_count=len(groups),
            chunks=[Chunk(chunk_id=chunk_id(doc, version, i), ordinal=i, text=texts[i], page=1,
                          tokens=len(texts[i].split())) for i in group],
        )
        for index, group in enumerate(groups)
    ]


async def chunked(pipeline: Pipeline, parts: list[ChunkBatch]) -> DocumentId:
    """Record the document as the ingest worker does before publishing its batches."""
    first = parts[0]
    await pipeline.clients.status.update(
        first.tenant, first.document_id, path=first.path, filename=first.filename,
        stage=Stage.EMBEDDING, pending_version=first.version, batches_total=len(parts),
        chunks=sum(len(b.chunks) for b in parts), chunks_done=0,
    )
    return first.document_id


async def models(pipeline: Pipeline) -> list[str]:
    return await store_of(pipeline).models(pipeline.tenant)


async def marker(pipeline: Pipeline) -> str | None:
    marker = reembedding.model_key(pipeline.settings, pipeline.tenant)
    raw = await pipeline.clients.redis.get(marker)
    return None if raw is None else str(json.loads(raw)["model_id"])


async def target(pipeline: Pipeline) -> SwitchTarget | None:
    raw = await pipeline.clients.redis.get(reembedding.target_key(pipeline.settings))
    return SwitchTarget.parse(raw)


async def before_the_rollout(pipeline: Pipeline, chroma_url: str) -> MidSwitch:
    """Five documents in the old model's collection only, and the old maintenance worker's
    sweep has run once (the deployment's target is the old model)."""
    state = await mid_switch(pipeline, chroma_url, copied=(), new_only=())
    assert await store_of(pipeline).drop(pipeline.tenant, MODEL_ID)
    assert await models(pipeline) == [OLD_MODEL]
    report = await old_sweep(state)
    assert report.counts == {}
    assert await target_of(pipeline) == (OLD_MODEL, set())
    return state


async def target_of(pipeline: Pipeline) -> tuple[str, set[str]] | None:
    found = await target(pipeline)
    return None if found is None else (found.model_id, set(found.replaced))


# --- an old maintenance worker during the rollout -------------------------------------------------


async def test_an_old_model_sweep_during_a_rollout_neither_copies_back_nor_drops_the_new(
    pipeline: Pipeline, chroma_url: str
) -> None:
    state = await before_the_rollout(pipeline, chroma_url)
    tenant, store = pipeline.tenant, store_of(pipeline)

    # The rollout starts: the new model's workers embed an upload into the new collection.
    omega = await pipeline.upload("omega.pdf", pdf(FACTS["omega"]))
    await pipeline.wait([omega])
    state.docs["omega"] = omega
    new_count, old_count = await store.count(tenant), await state.old.count(tenant)
    assert new_count > 0 and await state.old.count(tenant, omega) == 0

    # The old maintenance worker runs before any new one: the new collection is not its to
    # absorb (its model was never replaced), so it is left as it is.
    report = await old_sweep(state)
    assert report.counts == {"collections_left_alone": 1}, report
    assert (await store.count(tenant), await state.old.count(tenant)) == (new_count, old_count)
    assert await state.old.count(tenant, omega) == 0  # not copied back
    assert sorted(await models(pipeline)) == sorted([MODEL_ID, OLD_MODEL])
    assert await marker(pipeline) is None

    # An old embed worker embeds an upload: the old collection is still being written.
    late = batches(tenant, "late", "v-late", [
        "Zeta pumps lift water forty metres.", "Zeta pumps draw 3 kW at full speed.",
    ])
    late_doc = await chunked(pipeline, late)
    writer = old_worker(state)
    try:
        for part in late:
            await writer.handle(part)
    finally:
        await writer.close()

    # The first new-model sweep takes the target and copies everything, but the old collection
    # was written within the quiet period: no switch, nothing dropped.
    report = await new_sweep(pipeline)
    assert await target_of(pipeline) == (MODEL_ID, {OLD_MODEL})
    assert report.counts.get("documents_copied") == 6, report  # five documents and 'late'
    assert report.counts.get("collections_not_quiet") == 1
    assert "collections_dropped" not in report.counts
    assert await marker(pipeline) is None

    # The old maintenance worker runs again: its model is replaced, it does nothing at all.
    new_count, old_count = await store.count(tenant), await state.old.count(tenant)
    report = await old_sweep(state)
    assert report.counts == {"replaced_model": 1}, report
    assert any(f"replaced by {MODEL_ID}" in note for note in report.notes)
    assert (await store.count(tenant), await state.old.count(tenant)) == (new_count, old_count)
    assert sorted(await models(pipeline)) == sorted([MODEL_ID, OLD_MODEL])

    # The old workers are gone; after the quiet period the new sweep switches the tenant.
    await asyncio.sleep(QUIET)
    report = await new_sweep(pipeline)
    assert report.counts.get("collections_dropped") == 1, report
    assert "documents_copied" not in report.counts  # everything was copied the first time
    assert await models(pipeline) == [MODEL_ID]
    assert await marker(pipeline) == MODEL_ID
    assert await pipeline.clients.redis.hget(
        WriteMarks(pipeline.clients.redis, prefix=pipeline.settings.redis_prefix).key(tenant),
        OLD_MODEL) is None  # the dropped collection's mark is forgotten

    # An old maintenance worker still running later recreates nothing.
    report = await old_sweep(state)
    assert report.counts == {"replaced_model": 1}
    assert await models(pipeline) == [MODEL_ID]

    # Every document, old, new or written by an old worker during the rollout, is searchable
    # with the new model alone.
    for name, question in QUESTIONS.items():
        [top] = await pipeline.searcher.search(tenant, question, k=1)
        assert top.document_id == state.docs[name], name
    [top] = await pipeline.searcher.search(tenant, "How high do Zeta pumps lift water?", k=1)
    assert top.document_id == late_doc


# --- quiet period, partly written documents -----------------------------------------------------


async def test_a_collection_still_written_is_dropped_only_when_quiet_with_nothing_lost(
    pipeline: Pipeline, chroma_url: str
) -> None:
    state = await mid_switch(pipeline, chroma_url, copied=("kappa",), new_only=())
    tenant, clients, store = pipeline.tenant, pipeline.clients, store_of(pipeline)
    old, new = old_worker(state), new_worker(pipeline)
    try:
        # A document whose batches went partly to a new worker, partly to an old one (both
        # consume the embed queue during the rollout). Its version is in the new collection,
        # but not all of it.
        mixed = batches(tenant, "mixed", "v-mixed", [
            "Eta gauges read pressure to 0.1 bar.", "Eta gauges are calibrated yearly.",
            "Eta gauges survive 80 degrees.", "Eta gauges fit a 1/4 inch thread.",
        ])
        mixed_doc = await chunked(pipeline, mixed)
        await new.handle(mixed[0])
        await old.handle(mixed[1])
        record = await clients.status.get(tenant, mixed_doc)
        assert record is not None and record.stage is Stage.READY and record.chunks == 4
        assert await store.count(tenant, mixed_doc) == 2
        # And one still being embedded, whose first batch an old worker wrote.
        pending = batches(tenant, "pending", "v-pending", [
            "Mu presses close with 200 tonnes.", "Mu presses cycle 30 times a minute.",
            "Mu presses need 400 V.",
        ])
        pending_doc = await chunked(pipeline, pending)
        await old.handle(pending[0])

        report = await new_sweep(pipeline)
        # 4 old-only documents, mixed, and the old worker's batch of pending.
        assert report.counts.get("documents_copied") == 6, report
        assert await store.count(tenant, mixed_doc) == 4  # the old worker's half copied
        assert await store.count(tenant, pending_doc) == 2
        await new.handle(pending[1])  # the rest of it, by a new worker
        record = await clients.status.get(tenant, pending_doc)
        assert record is not None and record.stage is Stage.READY
        assert report.counts.get("collections_not_quiet") == 1
        assert await models(pipeline) == sorted([MODEL_ID, OLD_MODEL])

        # Still written: a document embedded wholly by an old worker after that sweep.
        later = batches(tenant, "later", "v-later", ["Theta rails carry 40 tonnes per axle."])
        later_doc = await chunked(pipeline, later)
        await asyncio.sleep(QUIET / 2)
        await old.handle(later[0])
        await asyncio.sleep(QUIET / 2 + 0.2)  # quiet since the first writes, not since this one
        report = await new_sweep(pipeline)
        assert report.counts.get("collections_not_quiet") == 1, report
        assert report.counts.get("documents_copied") == 1  # 'later', copied at once
        assert "collections_dropped" not in report.counts
        assert await marker(pipeline) is None
        # Searches that read both collections meanwhile (the gateway with the old model as
        # PARLEY_EMBEDDING_PREVIOUS__*) still see everything: nothing was dropped.
        assert await state.old.count(tenant, later_doc) == 1
    finally:
        await old.close()
        await new.close()

    await asyncio.sleep(QUIET + 0.2)
    report = await new_sweep(pipeline)
    assert report.counts == {"collections_dropped": 1}, report
    assert await models(pipeline) == [MODEL_ID] and await marker(pipeline) == MODEL_ID
    assert await store.count(tenant, mixed_doc) == 4 and await store.count(tenant, later_doc) == 1
    assert await store.count(tenant, pending_doc) == 3
    [top] = await pipeline.searcher.search(tenant, "How much do Theta rails carry?", k=1)
    assert top.document_id == later_doc
    [top] = await pipeline.searcher.search(tenant, "What thread do Eta gauges fit?", k=1)
    assert top.document_id == mixed_doc and "1/4 inch" in top.text


class RacingStore(ChromaStore):
    """The new model's store, where an old worker's write lands in the old collection just
    before the drop (after the sweep's last look at its mark)."""

    def __init__(self, client: object, model_id: str, worker: EmbedHandler,
                 race: list[ChunkBatch]) -> None:
        super().__init__(client, model_id)
        self.worker = worker
        self.race = race

    async def drop(self, tenant: TenantId, model_id: str) -> bool:
        for part in self.race:
            await self.worker.handle(part)
        return await super().drop(tenant, model_id)


async def test_a_write_racing_the_drop_is_found_and_the_document_reindexed(
    pipeline: Pipeline, chroma_url: str
) -> None:
    state = await mid_switch(pipeline, chroma_url, copied=list(FACTS), new_only=())
    tenant, clients = pipeline.tenant, pipeline.clients
    # The racing document is a real blob (re-indexing reads it) embedded by an old worker.
    text = "Iota cranes lift 12 tonnes to a height of 30 metres. " + FACTS["tau"]
    path = blob_path(tenant, "raced.pdf")
    await clients.blobs.put(path, pdf(text), content_type="application/pdf")
    raced = batches(tenant, "raced", "v-raced", ["Iota cranes lift 12 tonnes to 30 metres."])
    raced_doc = await chunked(pipeline, raced)
    racing = RacingStore(store_of(pipeline)._client, MODEL_ID, old_worker(state), raced)
    try:
        report = await sweep(pipeline, racing, clients.embedder, quiet=0)
    finally:
        await racing.worker.close()
    assert report.counts == {"drops_raced": 1, "collections_dropped": 1}, report
    assert await clients.redis.exists(reembedding.verify_key(pipeline.settings, tenant))
    record = await clients.status.get(tenant, raced_doc)
    assert record is not None and record.stage is Stage.READY  # but its chunks went
    assert await store_of(pipeline).count(tenant, raced_doc) == 0

    # The next run verifies the tenant: the document is nowhere, so it is indexed again (on
    # the real ingest queue: the pipeline, on the new model, does it).
    report = await sweep(pipeline, store_of(pipeline), clients.embedder,
                         settings=pipeline.settings, quiet=0)
    assert report.counts == {"reposted": 1}, report
    await pipeline.wait([raced_doc], until=lambda s: s is not None and s.stage is Stage.READY
                        and bool(s.version) and s.version != "v-raced")
    report = await sweep(pipeline, store_of(pipeline), clients.embedder, quiet=0)
    assert report.counts == {}, report
    assert not await clients.redis.exists(reembedding.verify_key(pipeline.settings, tenant))
    [top] = await pipeline.searcher.search(tenant, "How much can Iota cranes lift?", k=1)
    assert top.document_id == raced_doc


# --- who may switch ------------------------------------------------------------------------------


async def test_going_back_to_a_replaced_model_needs_it_said(
    pipeline: Pipeline, chroma_url: str
) -> None:
    """After a switch to the new model, the old model's sweep does nothing, unless its
    maintenance worker is told (PARLEY_EMBEDDING_PREVIOUS__*) that it leaves the new model:
    then it switches back, like any switch."""
    state = await mid_switch(pipeline, chroma_url, copied=(), new_only=("omega",))
    report = await new_sweep(pipeline, quiet=0)
    assert report.counts.get("collections_dropped") == 1 and await marker(pipeline) == MODEL_ID
    assert (await old_sweep(state, quiet=0)).counts == {"replaced_model": 1}
    assert await models(pipeline) == [MODEL_ID]

    report = await old_sweep(state, quiet=0, previous=MODEL_ID)
    assert report.counts.get("documents_copied") == len(FACTS), report
    assert report.counts.get("collections_dropped") == 1
    assert await models(pipeline) == [OLD_MODEL] and await marker(pipeline) == OLD_MODEL
    assert await target_of(pipeline) == (OLD_MODEL, {MODEL_ID})
    # And now the new model's sweep is the one that was replaced.
    assert (await new_sweep(pipeline, quiet=0)).counts == {"replaced_model": 1}


def test_the_target_moves_forward_only() -> None:
    a, b, c = "model-a", "model-b", "model-c"
    # The first sweep of this version: its model, the others it sees replaced.
    assert next_target(a, None, seen=[a], now=1) == SwitchTarget(a, frozenset(), 1)
    assert next_target(b, None, seen=[a, b], now=1) == SwitchTarget(b, frozenset({a}), 1)
    on_a = SwitchTarget(a, frozenset(), 1)
    assert next_target(a, on_a, seen=[a, b], now=2) is on_a  # b: not replaced, not absorbed
    # A new model takes over; the old one is replaced and stays so.
    on_b = next_target(b, on_a, seen=[a, b], now=2)
    assert on_b == SwitchTarget(b, frozenset({a}), 2)
    assert next_target(a, on_b, seen=[a, b], now=3) is None
    assert next_target(a, on_b, seen=[a, b], previous="model-z", now=3) is None
    # A third model during the switch replaces both.
    assert next_target(c, on_b, seen=[a, b, c], now=4) == SwitchTarget(c, frozenset({a, b}), 4)
    # Going back, said explicitly.
    assert next_target(a, on_b, seen=[a, b], previous=b, now=5) == SwitchTarget(
        a, frozenset({b}), 5)
    # The target's own previous model counts as replaced (the first sweep saw no collection).
    assert next_target(b, SwitchTarget(b, frozenset(), 1), seen=[b], previous=a, now=6) == (
        SwitchTarget(b, frozenset({a}), 1))
    assert SwitchTarget.parse(on_b.dump()) == on_b
    with pytest.raises(ValueError):
        SwitchTarget.parse(b"not json")


async def test_the_embed_worker_marks_its_writes_before_upserting(pipeline: Pipeline) -> None:
    marks = WriteMarks(pipeline.clients.redis, prefix=pipeline.settings.redis_prefix)
    assert await marks.last(pipeline.tenant, MODEL_ID) == ""
    doc = await pipeline.upload("omega.pdf", pdf(FACTS["omega"]))
    await pipeline.wait([doc])
    mark = await marks.last(pipeline.tenant, MODEL_ID)
    assert mark and float(mark) > 0
    assert not await marks.clear(pipeline.tenant, MODEL_ID, "1.0")  # not what it is: kept
    assert await marks.clear(pipeline.tenant, MODEL_ID, mark)
    assert await marks.last(pipeline.tenant, MODEL_ID) == ""
