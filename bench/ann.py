"""The dense side of search: Chroma's approximate HNSW graph against an exact comparison with
every chunk, on one tenant's worth of mixed documents.

The tenant: every document of the answer benchmark's sets, one collection, written document by
document in batches as the embed workers write them (``bench/answers.py``: the real documents
of ../shared/corpus and the development filings when present, the project's own handbooks,
examples and fictional reports always). The questions: all of those sets' questions, the
unanswerable ones included, embedded as the Searcher embeds them.

Rows, side by side in one run on one private Chroma server (started here):

- *exact*: the question's vector compared with every chunk's, in process, by the gateway's own
  ``LexicalIndex.nearest``: what the gateway does for a tenant of up to
  ``chat_gateway.lexical.EXACT_MAX_CHUNKS`` chunks; the reference of the recall columns;
- *Chroma default*: a collection created with Chroma's own graph settings (16 links per vector,
  build breadth 100);
- *Parley*: ``parley.vectors.chroma.HNSW`` (32 links, build breadth 200), what a new collection
  gets, and what a tenant too large for the exact side is searched through.

The graph is random: each HNSW row is built ``--builds`` times (3 by default), each build its own
collection. Measures: recall@10 (the share of the exact top 10 that the graph's top 40, the
candidates a hybrid search ranks, put in its top 10), the questions whose recall@10 is 0 (the
graph found none of the closest chunks: their documents were unreachable from where the search
entered) or under 0.5, and the time of one nearest-neighbour query (over HTTP for Chroma, in
process for exact).

Run: python -m bench ann [--builds N]
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.table import render

BATCH = 32  # chunks per write, as an embed worker's batch
TOP = 10
FETCH = 40  # chat_gateway.search.CANDIDATES


def tenant_files() -> tuple[dict[str, bytes], list[str], list[str]]:
    """Every document of the answer sets (a set's name before each file's) and their
    questions; the sets that were skipped, and why."""
    from bench import answers
    from bench.corpus_questions import CORPUS

    sets: list[tuple[str, Any]] = []
    skipped = []
    for name, path, make in (("dev", answers.EVAL, answers.dev_set),
                             ("corpus", CORPUS, answers.corpus_set)):
        if path.exists():
            sets.append((name, make()))
        else:
            skipped.append(f"{name}: {path} is absent")
    sets += [("handbooks", answers.handbooks_set()), ("examples", answers.examples_set()),
             ("synthetic", answers.synthetic_set())]
    files: dict[str, bytes] = {}
    questions: list[str] = []
    for name, (docs, items, none) in sets:
        files.update({f"{name}/{f}": data for f, data in docs.items()})
        questions += [i.question for i in (*items, *none)]
    return files, list(dict.fromkeys(questions)), skipped


def recall(found: Sequence[Sequence[str]], exact: Sequence[set[str]]) -> np.ndarray:
    return np.array([len(set(f[:TOP]) & e) / TOP for f, e in zip(found, exact, strict=True)])


async def graph_rows(
    url: str, ids: list[str], matrix: np.ndarray, questions: np.ndarray, exact: list[set[str]],
    builds: int,
) -> list[list[object]]:
    import chromadb

    from parley.vectors.chroma import HNSW

    host, port = url.rsplit(":", 1)
    client = await chromadb.AsyncHttpClient(host=host.removeprefix("http://"), port=int(port))
    rows: list[list[object]] = []
    graphs: list[tuple[str, Any]] = [
        ("Chroma default (16 links, breadth 100)", {"space": "cosine"}),
        ("Parley (32 links, breadth 200)", HNSW),
    ]
    for label, graph in graphs:
        for build in range(1, builds + 1):
            collection = await client.create_collection(
                f"ann-{len(rows)}", configuration={"hnsw": graph}, embedding_function=None)
            for start in range(0, len(ids), BATCH):
                await collection.add(ids=ids[start:start + BATCH],
                                     embeddings=matrix[start:start + BATCH])
            found, took = [], []
            for vector in questions:
                started = time.perf_counter()
                got = await collection.query(query_embeddings=[vector], n_results=FETCH,
                                             include=[])
                took.append(time.perf_counter() - started)
                found.append(got["ids"][0])
            got_recall = recall(found, exact)
            rows.append([label, build, float(got_recall.mean()), int((got_recall == 0).sum()),
                         int((got_recall < 0.5).sum()), 1000 * statistics.median(took),
                         1000 * float(np.quantile(took, 0.99))])
            await client.delete_collection(collection.name)
    return rows


async def run(builds: int) -> str:
    from bench.retrieval import embed, embedded_text, parley_records
    from chat_gateway.focus import expanded
    from chat_gateway.lexical import LexicalIndex
    from parley_cli import localstack

    files, asked, skipped = tenant_files()
    records = parley_records(files)
    ids = [str(r.chunk_id) for r in records]
    matrix = await embed([embedded_text(r, seed=False) for r in records])
    questions = await embed([expanded(q) for q in asked])
    load_before = os.getloadavg()[0]

    # The gateway's own exact search (a tenant's index holding its chunks' vectors).
    index = LexicalIndex([dataclasses.replace(r, embedding=v) for r, v in zip(
        records, matrix, strict=True)])
    everything = np.ones(len(records), dtype=bool)
    exact: list[set[str]] = []
    took = []
    for vector in questions:
        started = time.perf_counter()
        hits = index.nearest(vector, everything, k=FETCH)
        took.append(time.perf_counter() - started)
        exact.append({str(h.chunk_id) for h in hits[:TOP]})
    rows: list[list[object]] = [["exact (numpy, in process)", "-", 1.0, 0, 0,
                                 1000 * statistics.median(took),
                                 1000 * float(np.quantile(took, 0.99))]]
    with tempfile.TemporaryDirectory() as state:
        chroma = localstack.start_chroma(Path(state))
        try:
            rows += await graph_rows(chroma.url, ids, matrix, questions, exact, builds)
        finally:
            chroma.stop()
    title = (f"Nearest chunks: exact vs Chroma's HNSW graph ({len(ids)} chunks of {len(files)} "
             f"documents in one collection, {len(asked)} questions; load average "
             f"{load_before:.1f} -> {os.getloadavg()[0]:.1f})")
    table = render(title, ["search", "build", "recall@10", "at 0", "under 0.5", "query p50 ms",
                           "query p99 ms"], rows)
    return table + "".join(f"skipped: {s}\n" for s in skipped)


def main(argv: Sequence[str] = ()) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench ann")
    parser.add_argument("--builds", type=int, default=3, help="graphs built per HNSW row")
    args = parser.parse_args(list(argv))
    return asyncio.run(run(args.builds))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
