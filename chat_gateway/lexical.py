"""The lexical (BM25) side of search: per tenant, an in-memory BM25 index (:mod:`chat_gateway.bm25`)
of the chunks the tenant's collection holds, built from the collection itself and rebuilt when
the tenant's *chunk generation* moves.

Why this shape (measured, ARCHITECTURE.md): Chroma 1.5's own BM25/sparse search (the ``Search``
API) answers "not implemented for local executor" on a ``chroma run`` server, and its
``where_document`` is a filter without ranking. Chroma stays the one store of chunks: the index
is derived from it, so it obeys the vectors' rules by construction. Redelivery adds no duplicate
(chunk ids are the collection's), deletes and superseded versions disappear with the chunks, it
survives restarts (rebuilt from Chroma on first use) and any number of embed workers write
through Chroma as before.

**Staleness.** Every write to a tenant's collection (upsert, delete) increments
``<prefix>:chunk-generation:<tenant>`` *after* it lands (:class:`Generations`; the Chroma store
calls it). A search reads the generation in the same ``MULTI`` as the served map; an index built
from a fetch made after a generation was read holds every chunk written before it. The embed
worker writes a batch, then bumps, then lands the batch (which may swap the served version), so
a served map that names a version comes with a generation whose index holds that version's
chunks; old versions are deleted only a grace after the swap, as for vectors. An index is also
rebuilt when older than ``max_age`` seconds, a safety net for writers that do not bump (an old
replica during a rollout).

**Incremental.** A rebuild after the generation moved reads the tenant's chunk ids and fetches
only the chunks the index before it did not hold; the others' texts, metadata, vectors and BM25
terms are taken from that index (a chunk id names one text of one version), and only the new
chunks are tokenized. After a 32-chunk write to a tenant of ~20,000 chunks that is ~0.8 s
instead of ~9 s with every text read and tokenized again (``python -m bench rebuild``). Past
``max_age`` every text and metadata is read and compared with the held chunk's, so what a writer
changed without a bump, or rewrote under a chunk id, shows within that age.

**Exact vectors.** For a tenant of up to :data:`EXACT_MAX_CHUNKS` chunks the index also keeps
the chunks' vectors (fetched with the texts at the first build; a rebuild takes those it held
from the index before it and fetches only the others), and the search's dense side compares the
question with every served chunk (:meth:`LexicalIndex.nearest`) instead of asking Chroma's HNSW
graph. The graph is approximate, and on real mixed documents it missed whole documents: over the
1,486 chunks of a corpus of forms, scans, manuals and German and Latin texts, "Give me an
overview of the lay down tubulars procedure" got five chunks at cosine 0.27-0.30 from other
files, while the procedure's own chunks stood at 0.70 (recall@10 0.0, whatever ``ef_search``:
the graph's neighbour lists left them unreachable from where the search entered; ``python -m
bench ann``). The vectors then obey the lexical index's rules by construction (served versions,
deletes, generations). A larger tenant is searched through the graph, built with more links per
vector than Chroma's default (:data:`parley.vectors.chroma.HNSW`).

**Tokens.** Lower-cased words, Snowball-stemmed (PyStemmer), English stop words dropped;
numbers keep their digits with thousands separators removed ("81,797" and "81797" match), since
figures are what financial questions look for. The indexed text is the embedding text (the
document's context header + section + chunk text: :mod:`parley.embedder.text`).

**Misspelt words.** A query word the index does not hold ("pasword", "anual", "decsale") is
searched as the index's term one edit away from it (a letter added, dropped, changed, or two
swapped; the one most chunks hold), when it has 5 letters or more and is no whole word of the
packaged embedder's vocabulary (~22,000 common English words: a real word the documents lack is
not turned into another). The vectors forgive a typo partly; BM25 alone would not find the word.
The index's words are counted the first time a query needs them, not at every rebuild (a
rebuild costs what it did: ~0.43 s for 2,944 chunks here, with or without).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import numpy as np
import Stemmer
import structlog
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from chat_gateway.bm25 import BM25, counted
from parley.contracts import DocumentContext
from parley.embedder.local import TOKENIZER_PATH
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.metadata import ChunkMeta
from parley.vectors.store import ChunkRecord, Hit

log = structlog.get_logger(__name__)

MAX_AGE = 300.0  # seconds an index is trusted without a generation change (see above)
MAX_TENANTS = 64  # indexes kept per process; the least recently used goes first
# Chunks kept per process, all tenants' indexes together (the least recently used tenant goes
# first; the one just built stays, however large): ~5.3 KiB a chunk (text, metadata, BM25
# postings, its counted terms for the next rebuild), ~6.8 KiB with its vector: ~580 MB here,
# under the gateway pod's 1 GiB limit (k8s/base), as 100,000 were before the terms were kept.
MAX_CHUNKS = 85_000
# A tenant of at most this many chunks (all versions) keeps its vectors in its index, and the
# dense side of its searches is exact (see "Exact vectors" above): 30 MB of float32 at 384
# dimensions, ~2 ms a search on one core. A larger tenant is searched through Chroma's graph.
EXACT_MAX_CHUNKS = 20_000

_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+", re.UNICODE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_STEMMER = Stemmer.Stemmer("english")
# English function words (the usual IR list): they match everywhere and rank nothing.
_STOP = frozenset(
    re.findall(
        r"\w+",
        """a about above after again against all am an and any are as at be because been before
        being below between both but by can could did do does doing down during each few for from
        further had has have having he her here hers herself him himself his how i if in into is
        it its itself just me more most my myself no nor not now of off on once only or other our
        ours ourselves out over own same she should so some such than that the their theirs them
        themselves then there these they this those through to too under until up very was we
        were what when where which while who whom why will with would you your yours yourself
        yourselves""",
    )
)


# Words whose stem is remembered (every chunk of a first build is tokenized: ~1.4x faster with
# the memo); cleared when full.
STEMS_KEPT = 100_000
_STEMS: dict[str, str] = {}


def tokenize(text: str) -> list[str]:
    """The index's terms of ``text`` (see the module docstring). Pure (the memo aside)."""
    words = _WORD.findall(_THOUSANDS.sub("", text.lower()))
    # Figures are kept whole (and too many to remember).
    return [w if w[0].isdigit() else (_STEMS.get(w) or _stem(w)) for w in words if w not in _STOP]


def _stem(word: str) -> str:
    if len(_STEMS) >= STEMS_KEPT:
        _STEMS.clear()
    stem: str = _STEMMER.stemWord(word)
    _STEMS[word] = stem
    return stem


SPELLING_MIN_LETTERS = 5  # shorter words are one edit away from too many others


@functools.cache
def known_words() -> frozenset[str]:
    """The whole lower-case words of the packaged embedder's WordPiece vocabulary."""
    vocab = json.loads(TOKENIZER_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and w.islower())


@runtime_checkable
class ChunkSource(Protocol):
    """Where an index reads a tenant's chunks from (the Chroma store)."""

    async def records(self, tenant: TenantId, *, vectors: bool = False,
                      only: Sequence[str] | None = None) -> list[ChunkRecord]:
        """Every chunk of the tenant (all versions; of ``only``, those still there, when
        given), with their vectors when asked."""
        ...

    async def count(self, tenant: TenantId) -> int:
        """How many chunks the tenant has (all versions)."""
        ...

    async def ids(self, tenant: TenantId) -> list[str]:
        """The ids of the tenant's chunks (all versions)."""
        ...


@dataclass(frozen=True)
class LexicalHit:
    row: int
    score: float


class LexicalIndex:
    """One tenant's chunks as of one generation, BM25-indexed. Searches are pure CPU."""

    def __init__(
        self, records: Sequence[ChunkRecord], *, previous: LexicalIndex | None = None
    ) -> None:
        """``previous``: an index of the same tenant whose chunks' terms are reused for the
        chunks it holds (a chunk id names one text of one version), so a rebuild after a write
        tokenizes only the new chunks."""
        # The chunks' vectors (unit length), when every record came with one: see `nearest`.
        # Kept once, in the matrix: the records let go of theirs (Chroma's pages of vectors).
        self.vectors: np.ndarray | None = None
        if records and all(len(r.embedding) for r in records):
            matrix = np.asarray([r.embedding for r in records], dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            self.vectors = matrix / np.where(norms > 0, norms, 1.0)
        self.records = [dataclasses.replace(r, embedding=()) if len(r.embedding) else r
                        for r in records]
        self._documents = np.array([r.document_id for r in self.records], dtype=object)
        self._versions = np.array([r.version for r in self.records], dtype=object)
        self._vocab, self._terms = _terms(self.records, previous)
        self._bm25 = BM25(self._terms, len(self._vocab))
        self.contexts: dict[tuple[DocumentId, str], DocumentContext] = {}
        for r in self.records:
            key = (r.document_id, r.version)
            if key in self.contexts:
                continue
            if (ctx := ChunkMeta.from_metadata(r.metadata).context) is not None:
                self.contexts[key] = ctx

    def __len__(self) -> int:
        return len(self.records)

    def served_rows(
        self, served: Mapping[DocumentId, str], documents: Sequence[DocumentId] | None = None
    ) -> np.ndarray:
        """A mask of the rows of each document's served version (and of ``documents`` only,
        when given)."""
        mask = np.array(
            [served.get(d) == v for d, v in zip(self._documents, self._versions, strict=True)],
            dtype=bool,
        )
        if documents is not None:
            mask &= np.isin(self._documents, np.array(list(documents), dtype=object))
        return mask

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every row for ``query`` (zeros when no query term is indexed)."""
        terms = [self._vocab[t] for t in tokenize(self.respelled(query)) if t in self._vocab]
        return self._bm25.scores(terms).astype(np.float64)

    @functools.cached_property
    def _spelling(self) -> tuple[Counter[str], list[str]]:
        """How many chunks hold each word (and the words, for the edit-distance search): read
        once, when a query first has a word the index does not hold, not at every rebuild."""
        held: Counter[str] = Counter()
        for r in self.records:
            held.update({w for w in _WORD.findall(indexed_text(r).lower()) if w.isalpha()})
        return held, list(held)

    def respelled(self, query: str) -> str:
        """``query`` with each misspelt word written as the indexed word one edit away (see the
        module docstring); ``query`` itself when it has none."""
        vocab = self._vocab

        def fix(match: re.Match[str]) -> str:
            word = match.group(0)
            low = word.lower()
            if (len(low) < SPELLING_MIN_LETTERS or not low.isalpha() or low in _STOP
                    or low in known_words() or _STEMMER.stemWord(low) in vocab or not vocab):
                return word
            held, words = self._spelling
            near = process.extract(low, words, scorer=DamerauLevenshtein.distance,
                                   score_cutoff=1, limit=None)
            if not near:
                return word
            best: str = max(near, key=lambda found: held[found[0]])[0]
            if word.isupper():
                return best.upper()
            return best.capitalize() if word[:1].isupper() else best

        return _WORD.sub(fix, query)

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        return {r.chunk_id: i for i, r in enumerate(self.records)}

    def row(self, chunk_id: str) -> int | None:
        """The chunk's row, when this index holds it."""
        return self._rows.get(chunk_id)

    def nearest(self, vector: Sequence[float] | np.ndarray, mask: np.ndarray, *,
                k: int) -> list[Hit]:
        """The ``k`` rows under ``mask`` whose vectors are closest to ``vector`` (cosine, the
        hit's score), best first, by comparing it with every row: exact, where an approximate
        graph can miss whole documents. Raises ``ValueError`` when the index holds no vectors."""
        if self.vectors is None:
            raise ValueError("this index was built without the chunks' vectors")
        query = np.asarray(vector, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)  # not the caller's array
        cosines = np.where(mask, self.vectors @ query, -np.inf)
        count = min(k, int(mask.sum()))
        if count <= 0:
            return []
        top = np.argpartition(-cosines, count - 1)[:count]
        top = top[np.argsort(-cosines[top], kind="stable")]
        return [self.hit(int(i), float(cosines[i])) for i in top]

    def search(self, query: str, mask: np.ndarray, *, k: int) -> list[LexicalHit]:
        """The ``k`` best rows under ``mask`` by BM25, best first; rows without any query term
        are left out."""
        return top_rows(self.scores(query), mask, k=k)

    def hit(self, row: int, score: float) -> Hit:
        r = self.records[row]
        return Hit(
            chunk_id=ChunkId(r.chunk_id),
            document_id=r.document_id,
            version=r.version,
            text=r.text,
            score=score,
            metadata=r.metadata,
        )


def top_rows(scores: np.ndarray, mask: np.ndarray, *, k: int) -> list[LexicalHit]:
    """The ``k`` best rows of ``scores`` under ``mask``, best first, zero scores left out."""
    if k <= 0 or not len(scores):
        return []
    masked = np.where(mask, scores, 0.0)
    top = np.argsort(-masked, kind="stable")[:k]
    return [LexicalHit(int(i), float(masked[i])) for i in top if masked[i] > 0.0]


def indexed_text(record: ChunkRecord) -> str:
    """What is indexed for a stored chunk: the embedding text rebuilt from its metadata."""
    return ChunkMeta.from_metadata(record.metadata).document_text(record.text)


def _same(held: ChunkRecord, read: ChunkRecord) -> bool:
    """Whether two reads of a chunk id give the same chunk (vectors aside)."""
    return (held.text == read.text and held.metadata == read.metadata
            and held.document_id == read.document_id and held.version == read.version)


def _terms(
    records: Sequence[ChunkRecord], previous: LexicalIndex | None
) -> tuple[dict[str, int], list[np.ndarray]]:
    """A vocabulary and each record's counted terms in it (:func:`chat_gateway.bm25.counted`):
    those of a chunk ``previous`` holds unchanged taken from it (tokenizing is most of a build's
    CPU), the others tokenized; terms no record holds any more are dropped, the ids renumbered."""
    vocab = dict(previous._vocab) if previous is not None else {}
    held = previous._rows if previous is not None else {}
    rows = []
    for r in records:
        if previous is not None and (row := held.get(r.chunk_id)) is not None and _same(
                previous.records[row], r):
            rows.append(previous._terms[row])
        else:
            rows.append(counted(tokenize(indexed_text(r)), vocab))
    used = np.zeros(len(vocab), dtype=bool)
    for terms in rows:
        used[terms[0]] = True
    if used.all():
        return vocab, rows
    renumbered = np.cumsum(used, dtype=np.int32) - 1
    return ({t: int(renumbered[i]) for t, i in vocab.items() if used[i]},
            [np.stack([renumbered[terms[0]], terms[1]]) for terms in rows])


class LexicalIndexes:
    """The per-tenant indexes of one process, rebuilt when their generation moved (or they are
    older than ``max_age``); concurrent searches of a stale tenant share one rebuild."""

    def __init__(
        self,
        source: ChunkSource,
        *,
        max_age: float = MAX_AGE,
        max_tenants: int = MAX_TENANTS,
        max_chunks: int = MAX_CHUNKS,
        exact_max_chunks: int = EXACT_MAX_CHUNKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.max_age = max_age
        self.max_tenants = max_tenants
        self.max_chunks = max_chunks
        self.exact_max_chunks = exact_max_chunks
        self._clock = clock
        self._built: dict[TenantId, tuple[str, float, LexicalIndex]] = {}
        self._locks: dict[TenantId, asyncio.Lock] = {}
        self.rebuilds = 0  # how many indexes were built (tests and metrics read it)

    async def index(self, tenant: TenantId, generation: str) -> LexicalIndex:
        """The tenant's index as of ``generation`` or later (see the module docstring)."""
        found = self._fresh(tenant, generation)
        if found is not None:
            return found
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            found = self._fresh(tenant, generation)
            if found is not None:
                return found
            built = self._built.get(tenant)
            before = built[2] if built is not None else None
            # Past max_age every text is read again (the safety net of the module docstring);
            # otherwise the ids, and only the new chunks.
            whole = built is not None and self._clock() - built[1] > self.max_age
            records = await self._records(tenant, before, whole=whole)
            # Indexing is CPU work (tens of ms per thousand chunks): off the event loop.
            index = await asyncio.to_thread(functools.partial(
                LexicalIndex, records, previous=before))
            self.rebuilds += 1
            self._built.pop(tenant, None)
            self._built[tenant] = (generation, self._clock(), index)
            while len(self._built) > 1 and (
                    len(self._built) > self.max_tenants
                    or (kept := sum(len(b[2]) for b in self._built.values())) > self.max_chunks):
                oldest = next(iter(self._built))
                if len(self._built) <= self.max_tenants:
                    # Searches that take turns between tenants larger together than the bound
                    # rebuild at every turn: worth seeing in the logs.
                    log.warning("lexical_index_dropped", tenant=oldest, chunks_kept=kept,
                                tenants_kept=len(self._built), max_chunks=self.max_chunks,
                                effect="the tenant's next search rebuilds its index")
                self._built.pop(oldest)
                self._locks.pop(oldest, None)
            return index

    async def _records(self, tenant: TenantId, before: LexicalIndex | None, *,
                       whole: bool) -> list[ChunkRecord]:
        """The tenant's chunks, with their vectors for a tenant of up to ``exact_max_chunks``.
        With an index ``before``, the chunks it holds are taken from it (a chunk id names one
        text of one version): only the chunk ids are read, then the chunks it does not hold.
        After a 32-chunk write to 20,000 chunks that is a read of ids instead of every text and
        vector (Chroma sends vectors as JSON numbers). ``whole``: every text and metadata is
        read and compared with the held chunk's; a chunk rewritten under its id is fetched."""
        if before is None:
            vectors = await self.source.count(tenant) <= self.exact_max_chunks
            return await self.source.records(tenant, vectors=vectors)
        current: dict[str, ChunkRecord] | None = {
            r.chunk_id: r for r in await self.source.records(tenant)} if whole else None
        ids = list(current) if current is not None else await self.source.ids(tenant)
        vectors = len(ids) <= self.exact_max_chunks
        kept: dict[str, ChunkRecord] = {}
        if before.vectors is not None or not vectors:
            for chunk_id in ids:
                if (row := before.row(chunk_id)) is None or (
                        current is not None and not _same(before.records[row], current[chunk_id])):
                    continue
                held = before.records[row]
                kept[chunk_id] = held if not vectors else dataclasses.replace(held, embedding=(
                    cast(Sequence[float], cast(np.ndarray, before.vectors)[row])))
        missing = [chunk_id for chunk_id in ids if chunk_id not in kept]
        if current is not None and not vectors:
            fetched = {chunk_id: current[chunk_id] for chunk_id in missing}
        else:
            fetched = {r.chunk_id: r for r in await self.source.records(
                tenant, vectors=vectors, only=missing)} if missing else {}
        # A chunk deleted between the two reads (a superseded version) is left out.
        return [found for chunk_id in ids
                if (found := kept.get(chunk_id) or fetched.get(chunk_id)) is not None]

    def _fresh(self, tenant: TenantId, generation: str) -> LexicalIndex | None:
        built = self._built.get(tenant)
        if built is None or built[0] != generation or self._clock() - built[1] > self.max_age:
            return None
        self._built[tenant] = self._built.pop(tenant)  # most recently used last
        return built[2]
