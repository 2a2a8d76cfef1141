"""Re-embedding a tenant's collection after the embedding model changes: a sweep of
:mod:`maintenance_worker.app`, beside the others in :mod:`maintenance_worker.reconcile`.

After the embedding model changes, the tenant's new collection (collections
are named by tenant and model) is filled from the old one: every served chunk's stored text is
embedded with the new model and upserted under the same chunk id and version, so the status
records stay valid for both collections. Documents with no chunks anywhere are re-indexed
(their served version is forgotten first, so the ingest worker does not skip them). Only
when every served version is wholly in the new collection is the tenant marked switched
(``<p>:embedding-model:<tenant>``) and the old collections dropped, and only once no write
to them was marked (:class:`WriteMarks`) for the quiet period. Safe during a rollout, with
old and new replicas running at once: the deployment's :class:`SwitchTarget` only moves
forward to a model never replaced, and only the target model's sweep copies or drops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog

from maintenance_worker.reconcile import RETRY_MEMORY_SECONDS, SweepReport, requeue
from parley import lua
from parley.broker import Broker
from parley.embedder import Embedder
from parley.ids import DocumentId, TenantId
from parley.settings import Settings
from parley.status import TERMINAL_STAGES, DocumentStatus, Stage, StatusStore
from parley.vectors.chroma import ChromaStore, StoredDocument
from parley.vectors.marks import WriteMarks
from parley.vectors.metadata import ChunkMeta
from parley.vectors.store import ChunkRecord

log = structlog.get_logger(__name__)

_REEMBED_BATCH = 64


def model_key(settings: Settings, tenant: str) -> str:
    """Redis key naming the model whose collection is complete for ``tenant``."""
    return settings.keys.embedding_model(tenant)


def target_key(settings: Settings) -> str:
    """Redis key of the deployment's :class:`SwitchTarget`."""
    return settings.keys.embedding_target()


def verify_key(settings: Settings, tenant: str) -> str:
    """Redis key set when a drop of one of ``tenant``'s collections raced a write to it."""
    return settings.keys.reembed_verify(tenant)


@dataclass(frozen=True)
class SwitchTarget:
    """The embedding model the deployment is on (or moving to), and the models it has left.

    Stored as JSON in ``<p>:embedding-target``. Only the sweep of ``model_id`` copies or drops
    anything, and it only ever copies from, and drops, collections of ``replaced`` models: a
    sweep still running a replaced model (an old replica during a rollout) does nothing, and a
    collection of a model that is neither (a newer one being rolled out whose sweep has not run
    yet, or an abandoned rollout) is left alone."""

    model_id: str
    replaced: frozenset[str] = frozenset()
    since: float = 0.0

    def dump(self) -> str:
        return json.dumps(
            {"model_id": self.model_id, "replaced": sorted(self.replaced), "since": self.since}
        )

    @classmethod
    def parse(cls, raw: bytes | str | None) -> SwitchTarget | None:
        """None when absent; an unreadable record raises ValueError (nothing may be dropped
        on a guess)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(
                str(data["model_id"]), frozenset(map(str, data["replaced"])), float(data["since"])
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"unreadable switch target {raw!r}") from exc


def next_target(
    own: str,
    current: SwitchTarget | None,
    *,
    seen: Collection[str],
    previous: str | None = None,
    now: float,
) -> SwitchTarget | None:
    """The target after a sweep running model ``own`` looked at it, or None when that sweep
    must do nothing (``own`` was replaced). Pure.

    - No target yet (the first sweep of this version): ``own``, with every other model that
      has a collection (``seen``) taken as replaced.
    - ``own`` is the target: unchanged.
    - ``own`` was never replaced: a new model is being rolled out; it becomes the target and
      the old target joins the replaced models. Models move forward only, so an old replica
      that runs after the new model's sweep cannot move the target back.
    - ``own`` was replaced: None, unless ``previous`` (the maintenance worker's
      ``PARLEY_EMBEDDING_PREVIOUS__*``) names the target: going back to a model left earlier
      is a switch too, and only an explicit one is told apart from an old replica.

    ``previous`` is also taken as replaced whenever ``own`` becomes or stays the target."""
    extra = {previous} if previous and previous != own else set()
    if current is None:
        return SwitchTarget(own, frozenset({*seen, *extra} - {own}), now)
    if current.model_id == own:
        if extra <= current.replaced:
            return current
        return SwitchTarget(own, current.replaced | extra, current.since)
    if own in current.replaced and previous != current.model_id:
        return None
    return SwitchTarget(own, frozenset({*current.replaced, current.model_id, *extra} - {own}), now)


# KEYS: key; ARGV: expected value ('' = absent), new value. Compare-and-set.
_SWAP = lua.script(__package__, "reembedding_swap.lua")
# KEYS: hash; ARGV: field, expected value ('' = absent). Compare-and-delete of one field.
async def reembed(
    settings: Settings,
    *,
    redis: aioredis.Redis,
    status: StatusStore,
    store: ChromaStore,
    embedder: Embedder,
    broker: Broker,
    tenants: Sequence[TenantId] | None = None,
    previous_model: str | None = None,
    quiet_seconds: float | None = None,
) -> SweepReport:
    """Fill each tenant's collection of ``embedder``'s model from the collections of the models
    the deployment replaced; switch the tenant and drop them once complete and quiet. ``store``
    must be bound to ``embedder.model_id``.

    Acts only when this model is the deployment's :class:`SwitchTarget` (see
    :func:`next_target`; ``previous_model`` is the model id of the maintenance worker's
    ``PARLEY_EMBEDDING_PREVIOUS__*``). A tenant switches when every served document version is
    wholly in its collection (as many chunks as the record says, so a document whose batches
    were embedded partly by old and partly by new workers is completed first; chunks an old
    worker wrote for a version still being embedded are carried over too); the replaced
    collections are then dropped if no write was marked in them for ``quiet_seconds`` (default
    ``reconcile_grace_seconds``)."""
    if store.model_id != embedder.model_id:
        raise ValueError("reembed: the store and the embedder must name the same model")
    report = SweepReport("reembed")
    chosen = list(tenants if tenants is not None else await status.tenants())
    models = {tenant: await store.models(tenant) for tenant in chosen}
    seen = {m for found in models.values() for m in found}
    target = await _agree_target(settings, redis, store.model_id, seen, previous_model, report)
    if target is None:
        return report
    quiet = settings.reconcile_grace_seconds if quiet_seconds is None else quiet_seconds
    marks = WriteMarks(redis, prefix=settings.redis_prefix)
    for tenant in chosen:
        await _reembed_tenant(
            settings, tenant, models[tenant], target, quiet, marks,
            redis, status, store, embedder, broker, report,
        )
    return report


async def _agree_target(
    settings: Settings,
    redis: aioredis.Redis,
    own: str,
    seen: Collection[str],
    previous: str | None,
    report: SweepReport,
) -> SwitchTarget | None:
    key = target_key(settings)
    raw: Any = await redis.get(key)
    current = SwitchTarget.parse(raw)
    wanted = next_target(own, current, seen=seen, previous=previous, now=time.time())
    if wanted is None:
        assert current is not None
        report.add("replaced_model")
        report.notes.append(
            f"this maintenance worker runs {own}, which the deployment replaced by "
            f"{current.model_id}: nothing done (an old replica; to switch back to {own}, give "
            f"the maintenance worker PARLEY_EMBEDDING_PREVIOUS__* of {current.model_id})"
        )
        return None
    if wanted != current:
        expected = "" if raw is None else bytes(raw).decode()
        if not await redis.eval(_SWAP, 1, key, expected, wanted.dump()):
            report.notes.append("the switch target changed meanwhile: nothing done this run")
            return None
        if current is None or current.model_id != own:
            report.notes.append(
                f"switch target {current.model_id if current else '(none)'} -> {own}"
                f" (replaced: {', '.join(sorted(wanted.replaced)) or 'none'})"
            )
    return wanted


async def _reembed_tenant(
    settings: Settings,
    tenant: TenantId,
    models: Sequence[str],
    target: SwitchTarget,
    quiet: float,
    marks: WriteMarks,
    redis: aioredis.Redis,
    status: StatusStore,
    store: ChromaStore,
    embedder: Embedder,
    broker: Broker,
    report: SweepReport,
) -> None:
    own = target.model_id
    sources = [m for m in models if m in target.replaced]
    others = [m for m in models if m != own and m not in target.replaced]
    if others:
        report.add("collections_left_alone", len(others))
        report.notes.append(
            f"{tenant}: left {', '.join(others)} alone (a newer model being rolled out, or an "
            "abandoned rollout)"
        )
    verifying = bool(await redis.exists(verify_key(settings, tenant)))
    if not sources and not verifying:
        return
    records = await status.documents(tenant)
    for record in records:
        if record.pending_version and record.stage not in TERMINAL_STAGES:
            # Being embedded: an old worker may have written some of its batches during the
            # rollout. Carried over as they are; the version completes through the event path.
            await _carry(tenant, record, record.pending_version, sources, store, embedder, report)
    served = [r for r in records if r.version]
    present = await store.stored_documents(tenant)
    short = [r for r in served if await _held(store, tenant, own, r, present) < _needed(r)]
    for record in short:
        assert record.version is not None
        copied = await _carry(tenant, record, record.version, sources, store, embedder, report)
        if not copied and record.path and record.stage in TERMINAL_STAGES:
            # Missing here and held nowhere to copy from (never embedded, or a write lost to
            # a raced drop): index it afresh. The version is forgotten first, so the ingest
            # worker does not skip the content as "already served"; the document is out of
            # searches until it is ready again.
            await requeue(
                settings,
                record,
                status,
                broker,
                message="re-indexing: its chunks were missing",
                version=None,
            )
            report.add("reposted")
    if short:
        present = await store.stored_documents(tenant)
        short = [r for r in short if await _held(store, tenant, own, r, present) < _needed(r)]
    if short:
        report.notes.append(f"{tenant}: {len(short)} documents not yet in {own}")
        return
    now = time.time()
    seen = {m: await marks.last(tenant, m) for m in sources}
    for model, mark in seen.items():
        if mark and now - float(mark) < quiet:
            report.add("collections_not_quiet")
            report.notes.append(
                f"{tenant}: {model} was written {now - float(mark):.0f} s ago; it is dropped "
                f"after {quiet:.0f} s without writes"
            )
            return
    await redis.set(model_key(settings, tenant), json.dumps({"model_id": own, "since": now}))
    raced = False
    for model, mark in seen.items():
        if await marks.last(tenant, model) != mark:
            continue  # written since the check above: copied, then dropped, by a later run
        dropped = await store.drop(tenant, model)
        if not await marks.clear(tenant, model, mark):
            # Marked between the read above and the drop: its chunks may have gone with the
            # collection. The next runs check the tenant (re-indexing what is missing).
            raced = True
            report.add("drops_raced")
            report.notes.append(f"{tenant}: a write to {model} raced its drop; verifying")
        if dropped:
            report.add("collections_dropped")
            report.notes.append(f"{tenant}: switched to {own}, dropped {model}")
    if raced:
        await redis.set(verify_key(settings, tenant), "1", ex=RETRY_MEMORY_SECONDS)
    elif verifying:
        await redis.delete(verify_key(settings, tenant))


def _needed(record: DocumentStatus) -> int:
    """Chunks of the served version a complete collection holds: the record's count when it
    describes that version (ready, nothing pending), else at least one."""
    if record.stage is Stage.READY and not record.pending_version and record.chunks > 0:
        return record.chunks
    return 1


async def _held(
    store: ChromaStore,
    tenant: TenantId,
    model: str,
    record: DocumentStatus,
    present: dict[DocumentId, StoredDocument],
) -> int:
    """Chunks of ``record``'s served version in the tenant's collection of ``model``."""
    stored = present.get(record.document_id)
    if stored is None or record.version not in stored.versions:
        return 0
    if len(stored.versions) == 1:
        return stored.chunks
    assert record.version is not None
    return len(await store.chunks(tenant, record.document_id, record.version, model_id=model))


async def _carry(
    tenant: TenantId,
    record: DocumentStatus,
    version: str,
    sources: Sequence[str],
    store: ChromaStore,
    embedder: Embedder,
    report: SweepReport,
) -> int:
    """Copy the chunks of ``version`` that the store's collection lacks from the ``sources``
    collections; returns how many were copied."""
    doc = record.document_id
    have = set(await store.ids(tenant, doc))
    copied = 0
    for model in sources:
        chunks = [
            c
            for c in await store.chunks(tenant, doc, version, model_id=model)
            if c.chunk_id not in have
        ]
        if chunks:
            copied += await _copy(tenant, chunks, store, embedder)
            have.update(c.chunk_id for c in chunks)
    if copied:
        report.add("chunks_copied", copied)
        report.add("documents_copied")
    return copied


async def _copy(
    tenant: TenantId, chunks: list[ChunkRecord], store: ChromaStore, embedder: Embedder
) -> int:
    # The embed worker's own rule for what is embedded (a header naming document and section).
    for start in range(0, len(chunks), _REEMBED_BATCH):
        part = chunks[start : start + _REEMBED_BATCH]
        texts = [ChunkMeta.from_metadata(c.metadata).document_text(c.text) for c in part]
        vectors = await embedder.embed(texts)
        await store.upsert(
            tenant,
            [
                ChunkRecord(c.chunk_id, DocumentId(c.document_id), c.version, c.text, v, c.metadata)
                for c, v in zip(part, vectors, strict=True)
            ],
        )
    return len(chunks)
