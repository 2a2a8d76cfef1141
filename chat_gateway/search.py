"""Search a tenant's chunks: embed the query with the indexing Embedder, ask the VectorStore for
more than ``k`` hits, and keep only chunks of each document's served version (see
:mod:`parley.status`), so a document being replaced shows its old chunks until the new version
is complete and then only the new ones — never both, never neither.

Order matters: the served versions are read *before* the vector query. A swap that happens
between the two still finds the old chunks in the store, because the embed worker deletes a
superseded version only a grace period after the swap; reading them after the query could see the
new version while the query ran before its chunks were written (both then filtered out).

**During a switch of embedding model.** Collections are per tenant and model
(:mod:`parley.vectors.chroma`). After a deployment moves to a new model, the reembed sweep (the
maintenance worker) fills the tenant's collection of the new model from the old one
and, only once it holds every served version, names the new model in the tenant's marker
``<prefix>:embedding-model:<tenant>`` and drops the old collection. Until then the new collection
holds what was copied so far plus what the embed workers wrote since the switch, and the old one
holds everything served before it. A :class:`Searcher` given a :class:`ModelSwitch` (the previous
model's embedder and store, ``PARLEY_EMBEDDING_PREVIOUS__*``) therefore checks per tenant whether
the marker names the current model; if not, and the tenant still has chunks under the previous
model, it embeds the query with both models, reads the served map, queries both collections and
merges them with :func:`merge_hits`: documents the old collection returned are ranked there, the
others are placed among them through the copied chunks both collections returned (scores of two
embedding spaces are not on one scale). The ordering argument above holds for both collections:
an embed worker deletes superseded chunks only from its own model's collection and only after the
grace, and the old collection is otherwise only dropped whole, after the marker.

The answer "switched or not" is remembered per tenant: "switched" (the marker names the current
model) for the Searcher's life, since only a newer model's sweep could move the marker on; "not
switched" for ``recheck_seconds`` (5 s). A completed switch is therefore seen within 5 s, or at
once by a search whose query of the dropped old collection fails (the marker is then read again
and, naming the current model, the new collection alone answers: it is complete). Without a
:class:`ModelSwitch` a search never reads the marker: the plain path, as before.

**Hybrid search** (a :class:`Lexical` given; the gateway and ``parley search`` give one). The
served map and the tenant's chunk generation are read in one ``MULTI`` while the question is
embedded; the tenant's BM25 index (:mod:`chat_gateway.lexical`, rebuilt from the collection
when the generation moved) gives the served documents' contexts, from which
:func:`chat_gateway.focus.focus` tells which documents the question is about (a period, an entity,
"the latest"). Then the nearest chunks (and, with a focus, the nearest chunks of the focused
documents alone) are found by comparing the question's vector with every served chunk's, which
the index keeps for a tenant of up to :data:`chat_gateway.lexical.EXACT_MAX_CHUNKS` chunks (a
larger tenant's vector store is asked, concurrently with BM25), and BM25 scores the served
chunks. Each side keeps served versions only, the two rankings are fused by reciprocal rank
(:func:`fuse`, weights :data:`DENSE_WEIGHT` and :data:`LEXICAL_WEIGHT`, chosen by
``python -m bench retrieval``), the focused documents' chunks come first, and a question that
spans periods gets one chunk per document first (:func:`spread`; the documents of a comparison
take the ranks in turn: :func:`interleave`). The lexical index obeys the
same ordering argument as the vectors (see :mod:`chat_gateway.lexical`). During a switch of
embedding model the search stays dense-only (the two-collection merge above).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog

from chat_gateway.focus import Focus, expanded, focus
from chat_gateway.lexical import (
    EXACT_MAX_CHUNKS,
    ChunkSource,
    LexicalIndex,
    LexicalIndexes,
    top_rows,
)
from parley.embedder import Embedder
from parley.errors import ConfigError
from parley.ids import ChunkId, DocumentId, TenantId
from parley.keys import Keys
from parley.settings import Settings
from parley.status import StatusStore
from parley.vectors.generations import Generations
from parley.vectors.store import Hit, VectorStore

log = structlog.get_logger(__name__)

OVERFETCH = 3  # hits fetched per hit wanted, to survive filtering of superseded versions
CANDIDATES = 40  # chunks each side of a hybrid search ranks before fusion
RRF_K = 60  # reciprocal rank fusion's constant (the usual one)
# Weights of the two rankings in the fusion, measured with `python -m bench retrieval`: dense 2 :
# lexical 1 ranked answer passages best on both sets (ARCHITECTURE.md).
DENSE_WEIGHT = 2.0
LEXICAL_WEIGHT = 1.0
RECHECK_SECONDS = 5.0  # how long "not yet switched" is believed before the marker is read again


class Markers(Protocol):
    """Where each tenant's switch of embedding model stands."""

    async def model(self, tenant: TenantId) -> str | None:
        """The model whose collection the reembed sweep found complete for ``tenant``; None
        when no switch was ever completed for it."""
        ...


class ModelMarkers:
    """:class:`Markers` read from Redis: ``<prefix>:embedding-model:<tenant>``, the key
    the reembed sweep writes (JSON ``{"model_id": ..., "since": ...}``)."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._keys = Keys(prefix)

    def key(self, tenant: str) -> str:
        return self._keys.embedding_model(tenant)

    async def model(self, tenant: TenantId) -> str | None:
        raw: Any = await self._redis.get(self.key(tenant))
        if raw is None:
            return None
        try:
            return str(json.loads(raw)["model_id"])
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as not switched, the safe side (both are read)


@dataclass(frozen=True)
class ModelSwitch:
    """The embedding model a deployment is switching away from: its embedder, a store bound to
    its collections, and where each tenant's progress is recorded."""

    embedder: Embedder
    vectors: VectorStore
    markers: Markers


@dataclass(frozen=True)
class Lexical:
    """The lexical side of a hybrid search: the per-tenant BM25 indexes and the generations
    that say when they are stale."""

    indexes: LexicalIndexes
    generations: Generations

    @classmethod
    def for_store(cls, store: VectorStore, redis: aioredis.Redis, *, prefix: str,
                  exact_max_chunks: int = EXACT_MAX_CHUNKS) -> Lexical | None:
        """Indexes built from ``store`` (None when the store cannot list its chunks)."""
        if not isinstance(store, ChunkSource):
            return None
        return cls(LexicalIndexes(store, exact_max_chunks=exact_max_chunks),
                   Generations(redis, prefix=prefix))


class Searcher:
    """Searches of every tenant through one embedder (and, during a switch of embedding model,
    the previous one too); hybrid (dense + BM25, with document focus) when given ``lexical``.
    Raises :class:`ConfigError` when ``switch`` names the current model."""

    def __init__(
        self,
        embedder: Embedder,
        vectors: VectorStore,
        status: StatusStore,
        *,
        switch: ModelSwitch | None = None,
        lexical: Lexical | None = None,
        weights: tuple[float, float] = (DENSE_WEIGHT, LEXICAL_WEIGHT),
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if switch is not None and switch.embedder.model_id == embedder.model_id:
            raise ConfigError(
                f"the previous embedding model is the current one ({embedder.model_id})",
                hint="set PARLEY_EMBEDDING_PREVIOUS__* to the model being switched away from, "
                "or unset them",
            )
        self.embedder = embedder
        self.vectors = vectors
        self.status = status
        self.switch = switch
        self.lexical = lexical
        self.weights = weights
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self._known: dict[TenantId, tuple[bool, float]] = {}  # tenant -> (switching, until)

    async def search(self, tenant: TenantId, query: str, *, k: int = 5) -> list[Hit]:
        """The ``k`` best served chunks, best first; [] for a tenant with no documents. Errors
        of the current embedder and store (:class:`parley.errors.Retry`) propagate; during a
        switch, a failure of the previous model's side (its embedder, its collection) is logged
        and the search answers from the current collection alone. Cancelling stops the
        embeddings and queries still running (a local embedding already on its thread ends
        there and is dropped)."""
        if self.switch is not None and await self.switching(tenant):
            return await self._search_both(self.switch, tenant, query, k)
        if self.lexical is not None:
            return await self._hybrid(self.lexical, tenant, query, k)
        # The served map is read while the question is embedded (one round trip off every
        # question's path), and still before the vector query, as the ordering above needs.
        served, [vector] = await asyncio.gather(
            self.status.served_map(tenant), self.embedder.embed([query])
        )
        return await self._served_hits(tenant, vector, served, k)

    async def nearest(self, tenant: TenantId, vector: list[float], *, k: int) -> list[Hit]:
        served = await self.status.served_map(tenant)
        return await self._served_hits(tenant, vector, served, k)

    async def _served_hits(
        self, tenant: TenantId, vector: list[float], served: Mapping[DocumentId, str], k: int
    ) -> list[Hit]:
        if not served:
            return []
        hits = await self.vectors.query(tenant, vector, k=k * OVERFETCH + 2)
        return [h for h in hits if served.get(h.document_id) == h.version][:k]

    async def _hybrid(self, lexical: Lexical, tenant: TenantId, query: str, k: int) -> list[Hit]:
        where_text, query = query, expanded(query)  # abbreviations spelled out: both sides
        # The served map and generation are read (one MULTI) while the question is embedded,
        # and before both queries, as the ordering argument needs.
        (served, generation), [vector] = await asyncio.gather(
            lexical.generations.read_with_served(tenant, self.status.served_key(tenant)),
            self.embedder.embed([query]),
        )
        if not served:
            return []
        index = await lexical.indexes.index(tenant, generation)
        if (respelled := index.respelled(query)) != query:
            # A misspelt word ("pasword") is searched as the documents spell it, by both sides:
            # embedded again (the vectors forgive a typo only partly), which only such a question
            # waits for.
            where_text, query = index.respelled(where_text), respelled
            [vector] = await self.embedder.embed([query])
        contexts = {
            d: ctx for d, v in served.items() if (ctx := index.contexts.get((d, v))) is not None
        }
        where = focus(where_text, contexts)
        fetch = max(CANDIDATES, k * OVERFETCH + 2)
        everything = index.served_rows(served)
        focused = (index.served_rows(served, sorted(where.documents))
                   if where.documents is not None else None)
        dense_task = None
        if index.vectors is None:  # a tenant too large to keep its vectors: Chroma's graph
            queries = [self.vectors.query(tenant, vector, k=fetch)]
            if where.documents is not None:
                queries.append(
                    self.vectors.query(tenant, vector, k=fetch, documents=where.documents))
            dense_task = asyncio.gather(*queries)
        # BM25 runs while the vector queries are on the wire (pure CPU, a few ms).
        scores = index.scores(query)
        lexical_all = top_rows(scores, everything, k=fetch)
        lexical_focus = top_rows(scores, focused, k=fetch) if focused is not None else []
        if dense_task is None:
            masks = [everything] if focused is None else [everything, focused]
            dense = [index.nearest(vector, mask, k=fetch) for mask in masks]
        else:
            dense = [[h for h in hits if served.get(h.document_id) == h.version]
                     for hits in await dense_task]
        ranked = rank(
            index,
            where,
            dense[0],
            dense[1] if len(dense) > 1 else [],
            lexical_all,
            lexical_focus,
            weights=self.weights,
        )
        return ranked[:k]

    async def switching(self, tenant: TenantId) -> bool:
        """Whether ``tenant``'s searches must also read the previous model's collection: its
        marker does not name the current model and it has chunks under the previous one.
        Remembered as the module docstring says; False without a :class:`ModelSwitch`, and
        (not remembered) when the old collection cannot be asked."""
        if self.switch is None:
            return False
        now = self._clock()
        known = self._known.get(tenant)
        if known is not None and now < known[1]:
            return known[0]
        if await self.switch.markers.model(tenant) == self.embedder.model_id:
            self._known[tenant] = (False, math.inf)
            return False
        try:
            switching = await self.switch.vectors.count(tenant) > 0
        except Exception as exc:
            self._degraded(tenant, exc)
            return False
        self._known[tenant] = (switching, now + self.recheck_seconds)
        return switching

    async def _search_both(
        self, switch: ModelSwitch, tenant: TenantId, query: str, k: int
    ) -> list[Hit]:
        current, previous = await asyncio.gather(
            self.embedder.embed([query]), switch.embedder.embed([query]), return_exceptions=True
        )
        if isinstance(current, BaseException):
            raise current
        if isinstance(previous, BaseException):
            if not isinstance(previous, Exception):
                raise previous
            self._degraded(tenant, previous)
            return await self.nearest(tenant, current[0], k=k)
        served = await self.status.served_map(tenant)  # before the queries: see the docstring
        if not served:
            return []
        fetch = k * OVERFETCH + 2
        new, old = await asyncio.gather(
            self.vectors.query(tenant, current[0], k=fetch),
            switch.vectors.query(tenant, previous[0], k=fetch),
            return_exceptions=True,
        )
        if isinstance(new, BaseException):
            raise new
        if isinstance(old, BaseException):
            if not isinstance(old, Exception):
                raise old
            # The sweep drops the old collection right after naming the current model in the
            # marker: if that is why the query failed, the new collection is complete.
            self._known.pop(tenant, None)
            if await self.switching(tenant):
                self._degraded(tenant, old)
            return [h for h in new if served.get(h.document_id) == h.version][:k]
        return merge_hits(old, new, served, k=k)

    def _degraded(self, tenant: TenantId, exc: Exception) -> None:
        assert self.switch is not None
        log.warning(
            "search_previous_model_failed",
            tenant=tenant,
            model_id=self.switch.embedder.model_id,
            error=f"{type(exc).__name__}: {exc}",
            effect="answered from the current model's collection only",
        )


def fuse(rankings: Sequence[Sequence[ChunkId]], weights: Sequence[float]) -> dict[ChunkId, float]:
    """Reciprocal rank fusion: each chunk scores the sum over rankings of
    ``weight / (RRF_K + rank)`` (rank from 1). Pure."""
    fused: dict[ChunkId, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank_, chunk in enumerate(ranking, start=1):
            fused[chunk] = fused.get(chunk, 0.0) + weight / (RRF_K + rank_)
    return fused


def spread(hits: Sequence[Hit]) -> list[Hit]:
    """The best hit of each document first (in their order), then the rest in order. Pure."""
    seen: set[DocumentId] = set()
    first: list[Hit] = []
    rest: list[Hit] = []
    for hit in hits:
        (rest if hit.document_id in seen else first).append(hit)
        seen.add(hit.document_id)
    return first + rest


def interleave(hits: Sequence[Hit]) -> list[Hit]:
    """The hits of each document in turn, in the order the documents first appear: the best of
    each, then the second best of each, and so on. Pure."""
    by_document: dict[DocumentId, list[Hit]] = {}
    for hit in hits:
        by_document.setdefault(hit.document_id, []).append(hit)
    layers = itertools.zip_longest(*by_document.values())
    return [h for layer in layers for h in layer if h is not None]


def rank(
    index: LexicalIndex,
    where: Focus,
    dense_all: Sequence[Hit],
    dense_focus: Sequence[Hit],
    lexical_all: Sequence[Any],
    lexical_focus: Sequence[Any],
    *,
    weights: tuple[float, float],
) -> list[Hit]:
    """The fused order of one hybrid search (see the module docstring): the focused documents'
    chunks by the fusion of their own rankings, then every other chunk by the fusion of the
    whole rankings, spread over documents when the question asks for it. Each hit's ``score``
    is its fused score; its metadata gains ``similarity`` (cosine, when the vectors found it)
    and ``lexical`` (BM25, when BM25 found it). Pure."""
    by_id: dict[ChunkId, Hit] = {}
    similarity: dict[ChunkId, float] = {}
    bm25: dict[ChunkId, float] = {}
    for hit in (*dense_focus, *dense_all):
        by_id.setdefault(hit.chunk_id, hit)
        similarity.setdefault(hit.chunk_id, hit.score)
    for found in (*lexical_focus, *lexical_all):
        hit = index.hit(found.row, found.score)
        by_id.setdefault(hit.chunk_id, hit)
        bm25.setdefault(hit.chunk_id, found.score)
    order: list[tuple[ChunkId, float]] = []
    if where.documents is not None:
        focused = fuse(
            [
                [h.chunk_id for h in dense_focus],
                [index.records[f.row].chunk_id for f in lexical_focus],
            ],
            weights,
        )
        order += sorted(focused.items(), key=lambda item: -item[1])
    taken = {c for c, _ in order}
    whole = fuse(
        [[h.chunk_id for h in dense_all], [index.records[f.row].chunk_id for f in lexical_all]],
        weights,
    )
    order += sorted(((c, s) for c, s in whole.items() if c not in taken), key=lambda item: -item[1])
    hits = []
    for chunk, score in order:
        hit = by_id[chunk]
        extra: dict[str, str | int | float | bool] = {}
        if chunk in similarity:
            extra["similarity"] = round(similarity[chunk], 6)
        if chunk in bm25:
            extra["lexical"] = round(bm25[chunk], 6)
        hits.append(
            Hit(
                hit.chunk_id,
                hit.document_id,
                hit.version,
                hit.text,
                score,
                {**hit.metadata, **extra},
            )
        )
    if not where.spread:
        return hits
    if where.documents is None or not where.within:
        return spread(hits)
    return [
        *interleave([h for h in hits if h.document_id in where.documents]),
        *(h for h in hits if h.document_id not in where.documents),
    ]


def merge_hits(
    old: Sequence[Hit], new: Sequence[Hit], served: Mapping[DocumentId, str], *, k: int
) -> list[Hit]:
    """The ``k`` best served chunks of two result lists of one query, best first: ``old`` from
    the previous model's collection (every document served before the switch), ``new`` from the
    current model's (copies so far, and documents embedded since).

    - A document with served chunks in ``old`` is ranked by those alone: its copies in ``new``
      are dropped, so a copied document neither appears twice nor gets two votes.
    - The other documents' chunks in ``new`` are placed among ``old``'s. Cosine scores of two
      embedding spaces are not on one scale, but the chunks found in both lists (copies) are
      measured in both: the median of their (old - new) score differences shifts the new
      scores onto the old scale, and everything is ordered by score.
    - With no chunk in both lists there is nothing to calibrate with: the lists are merged by
      rank (reciprocal rank fusion with each chunk in one list), rank in ``new`` counted among
      all its served chunks, and the old list's chunk first on equal ranks.

    Hits keep their own cosine score (meaningful within its space only); the order is the
    merged one. A copied document whose chunks are all too far down ``old`` to be fetched is
    placed by its chunks in ``new``."""
    kept_old = [h for h in old if served.get(h.document_id) == h.version]
    kept_new = [h for h in new if served.get(h.document_id) == h.version]
    held = {h.document_id for h in kept_old}
    old_scores = {h.chunk_id: h.score for h in kept_old}
    shifts = [old_scores[h.chunk_id] - h.score for h in kept_new if h.chunk_id in old_scores]
    ranked: list[tuple[float, int, int, Hit]] = []
    if shifts:
        offset = statistics.median(shifts)
        ranked += [(-h.score, 0, i, h) for i, h in enumerate(kept_old)]
        ranked += [
            (-(h.score + offset), 1, i, h)
            for i, h in enumerate(kept_new)
            if h.document_id not in held
        ]
    else:
        ranked += [(i, 0, i, h) for i, h in enumerate(kept_old)]
        ranked += [(i, 1, i, h) for i, h in enumerate(kept_new) if h.document_id not in held]
    ranked.sort(key=lambda item: item[:3])
    return [hit for *_key, hit in ranked[:k]]


async def open_switch(
    stack: contextlib.AsyncExitStack, settings: Settings, redis: aioredis.Redis
) -> ModelSwitch | None:
    """The previous model's embedder and a Chroma store bound to its collections (closed by
    ``stack``) when ``PARLEY_EMBEDDING_PREVIOUS__*`` is set; None otherwise. Raises
    :class:`ConfigError` as :func:`backends.factory.build_embedder` does."""
    from backends.factory import build_previous_embedder
    from parley.vectors.chroma import ChromaStore

    embedder = build_previous_embedder(settings)
    if embedder is None:
        return None
    stack.push_async_callback(embedder.close)
    store = await ChromaStore.connect(settings.chroma_url, embedder.model_id)
    stack.push_async_callback(store.close)
    return ModelSwitch(embedder, store, ModelMarkers(redis, prefix=settings.redis_prefix))
