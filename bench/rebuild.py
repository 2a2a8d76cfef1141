"""How long a search waits for its tenant's index after a write (``chat_gateway.lexical``).

A gateway rebuilds a tenant's index (BM25, and the vectors of a tenant of up to 20,000 chunks)
at the first search after each write to the tenant's collection: while a tenant is being
written to, every search can pay it. One private Chroma server (started here) holds one tenant
of ``--chunks`` synthetic chunks (~150 words drawn by Zipf's law from the embedder's
vocabulary, random unit vectors: the cost does not depend on what the words say), written as
the embed workers write. Rows, side by side in one run, each ``--writes`` times:

- *first build* (nothing held: a gateway's first search of the tenant): every text, metadata
  and vector read, every chunk tokenized;
- after a write of 32 chunks (one embed batch), and after a document's 50 chunks deleted;
- past ``max_age`` (5 minutes) without a write: the safety net for writers that do not bump.

Each against *before*, what it cost until this change: every text and metadata read again (the
vectors of the new chunks only; past ``max_age``, everything: a first build), every chunk
tokenized word by word, ``bm25s`` indexing the tokens. *Shipped* is
:class:`chat_gateway.lexical.LexicalIndexes` itself: after a write, the chunk ids read, only the
new chunks fetched and tokenized, the others' texts, vectors and terms taken from the index
before; past ``max_age``, every text and metadata read and compared with the held chunk's, the
unchanged chunks' terms and vectors kept; numpy BM25 (:mod:`chat_gateway.bm25`) and the stem
memo of :func:`chat_gateway.lexical.tokenize` everywhere. *Every text read, numpy BM25* is the
old reading with the new index, to show where the time went.

Run: python -m bench rebuild [--chunks 19900] [--writes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path

import numpy as np

from bench.table import render
from chat_gateway import lexical
from chat_gateway.lexical import LexicalIndex, LexicalIndexes, indexed_text, known_words
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.chroma import ChromaStore
from parley.vectors.store import ChunkRecord
from parley_cli import localstack

TENANT = TenantId("bench")
PER_DOCUMENT = 50
BATCH = 32
BEFORE = "before: every text read, bm25s"
SHIPPED = "shipped"
FIRST = "first build (nothing held)"
AGED = "past max_age, no write"
WORDS = 150


class Chunks:
    """Synthetic chunks of documents of ``PER_DOCUMENT`` chunks each (see the docstring)."""

    def __init__(self, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        self.words = np.array(sorted(known_words()))
        weights = 1.0 / np.arange(1, len(self.words) + 1)
        self.weights = weights / weights.sum()
        self.rng.shuffle(self.words)

    def document(self, n: int, size: int = PER_DOCUMENT) -> list[ChunkRecord]:
        out = []
        for ordinal in range(size):
            text = " ".join(self.rng.choice(self.words, size=WORDS, p=self.weights))
            vector = self.rng.normal(size=384)
            out.append(ChunkRecord(
                ChunkId(f"d{n}-{ordinal}"), DocumentId(f"d{n}"), "v1", text,
                (vector / np.linalg.norm(vector)).tolist(),
                {"filename": f"report-{n}.pdf", "ordinal": ordinal, "heading": f"Part {ordinal}"}))
        return out


def tokenize_before(text: str) -> list[str]:
    """The tokenizer until this change: each word stemmed as it comes, nothing remembered."""
    words = [w for w in lexical._WORD.findall(lexical._THOUSANDS.sub("", text.lower()))
             if w not in lexical._STOP]
    return [w if w[0].isdigit() else lexical._STEMMER.stemWord(w) for w in words]


async def reread(store: ChromaStore, previous: LexicalIndex | None, tenant: TenantId,
                 ) -> list[ChunkRecord]:
    """The tenant's chunks as a rebuild read them until this change: every text and metadata
    again, the vectors of the chunks ``previous`` does not hold (all, without one)."""
    if previous is None:
        return await store.records(tenant, vectors=True)
    records = await store.records(tenant)
    held = previous.vectors
    assert held is not None
    vectors: dict[str, Sequence[float]] = {
        r.chunk_id: held[row] for r in records if (row := previous.row(r.chunk_id)) is not None}
    vectors.update((r.chunk_id, r.embedding) for r in await store.records(
        tenant, vectors=True, only=[r.chunk_id for r in records if r.chunk_id not in vectors]))
    return [dataclasses.replace(r, embedding=vectors[r.chunk_id]) for r in records
            if r.chunk_id in vectors]


async def before(store: ChromaStore, previous: LexicalIndex | None, tenant: TenantId) -> None:
    """The rebuild as it was: every text read and tokenized word by word, ``bm25s`` indexing
    the tokens (the records' copies and contexts left out: a little less than it did)."""
    import bm25s

    records = await reread(store, previous, tenant)

    def build() -> None:
        np.asarray([r.embedding for r in records], dtype=np.float32)
        bm25s.BM25().index([tokenize_before(indexed_text(r)) for r in records],
                           show_progress=False)

    await asyncio.to_thread(build)


async def afresh(store: ChromaStore, previous: LexicalIndex, tenant: TenantId) -> None:
    """Every text read again and tokenized; numpy BM25."""
    records = await reread(store, previous, tenant)
    await asyncio.to_thread(LexicalIndex, records)


async def timings(url: str, chunks: int, writes: int, tenant: TenantId = TENANT,
                  ) -> tuple[dict[str, list[float]], int]:
    """Seconds per rebuild, by row label (see the module docstring), and the chunks the tenant
    holds at the end, measured on the Chroma server at ``url``."""
    made = Chunks()
    documents = chunks // PER_DOCUMENT
    store = await ChromaStore.connect(url, "bench-model")
    took: dict[str, list[float]] = {}

    async def timed(label: str, rebuild: Awaitable[object]) -> None:
        started = time.perf_counter()
        await rebuild
        took.setdefault(label, []).append(time.perf_counter() - started)

    try:
        for n in range(documents):
            await store.upsert(tenant, made.document(n))
        for _ in range(writes):  # a new LexicalIndexes each time: nothing held
            await timed(f"{FIRST}: {BEFORE}", before(store, None, tenant))
            await timed(f"{FIRST}: {SHIPPED}", LexicalIndexes(store).index(tenant, "first"))
        now = [0.0]
        shipped = LexicalIndexes(store, clock=lambda: now[0])
        index = await shipped.index(tenant, "0")
        for step in range(2 * writes):
            if step % 2 == 0:
                await store.upsert(tenant, made.document(documents + step, size=BATCH))
                what = f"after a write of {BATCH} chunks"
            else:
                await store.delete_document(tenant, DocumentId(f"d{step}"))
                what = f"after a document's {PER_DOCUMENT} chunks deleted"
            ways: list[tuple[str, Awaitable[object]]] = [
                (BEFORE, before(store, index, tenant)),
                ("every text read, numpy BM25", afresh(store, index, tenant)),
                (SHIPPED, shipped.index(tenant, str(step + 1)))]
            for label, rebuild in ways[step % 3:] + ways[:step % 3]:  # each goes first in turn
                await timed(f"{what}: {label}", rebuild)
            index = await shipped.index(tenant, str(step + 1))
        for _ in range(writes):
            await timed(f"{AGED}: {BEFORE}", before(store, None, tenant))  # it was a first build
            now[0] += shipped.max_age + 1  # no write, but the index is past its age
            await timed(f"{AGED}: {SHIPPED}", shipped.index(tenant, str(2 * writes)))
        return took, len(index)
    finally:
        await store.close()


async def run(chunks: int, writes: int) -> str:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as state:
        chroma = localstack.start_chroma(Path(state))
        try:
            took, held = await timings(chroma.url, chunks, writes)
        finally:
            chroma.stop()
    rows: list[list[object]] = []
    for label, seconds in took.items():
        reference = took.get(label.split(": ")[0] + f": {BEFORE}")
        ratio = statistics.median(reference) / statistics.median(seconds) if reference else "-"
        rows.append([label, len(seconds), statistics.median(seconds), max(seconds), ratio])
    title = (f"A tenant's index rebuilt after a write ({held:,} chunks of ~{WORDS} words, vectors "
             f"kept; private Chroma; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})")
    return render(title, ["rebuild", "runs", "p50 s", "max s", "before / this"], rows)


def main(argv: Sequence[str] = ()) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench rebuild")
    parser.add_argument("--chunks", type=int, default=19_900,
                        help="chunks the tenant holds (under EXACT_MAX_CHUNKS: vectors kept)")
    parser.add_argument("--writes", type=int, default=3, help="writes and deletes timed")
    args = parser.parse_args(list(argv))
    return asyncio.run(run(args.chunks, args.writes))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
