"""Retrieval quality and search latency.

Quality, on two sets: ../shared/eval/sec10q-dev (four 10-Q filings of one company, 39 questions;
skipped when absent) and the fictional multi-company, multi-period reports of
``tests/fixtures/filings.py`` (three companies, seven quarters, one layout, meaningless file names;
always run). Rankers, side by side, over the same chunks and the same embedder (local MiniLM int8):

- *seed*: the seed's approach: pypdf + RecursiveCharacterTextSplitter(1000, 10), dense only;
- *dense*: Parley's extraction and chunking, chunks embedded with their document context header;
- *lexical*: BM25 alone (:mod:`chat_gateway.lexical`);
- *hybrid*: both fused by reciprocal rank (:func:`chat_gateway.search.rank`, no focus);
- *hybrid + focus*: what :class:`chat_gateway.search.Searcher` does: hybrid on the question with its
  abbreviations spelled out, the documents it names by period or entity first, and one chunk per
  document for questions that span periods (:mod:`chat_gateway.focus`); also at other fusion weights
  (how the weights were chosen);
- *hybrid + rerank*: not run: no cross-encoder ships inside a registry package (ARCHITECTURE.md).

A third set, ``tests/fixtures/offices.py`` (one DOCX per fictional company, two long tables that
share their row labels and differ in their columns), asks for single cells by company, column and
row label; the seed's rows are left out there (it reads PDFs only). A fourth,
``tests/fixtures/handbooks.py`` (handbooks, an IT guide, a manual, an FAQ, an expense workbook,
security slides of three fictional organisations), asks everyday questions mostly in the asker's
words; the seed's rows there cover its two PDFs only. A fifth, real documents nobody on the
project wrote (../shared/corpus: IRS instructions in three columns, a rig procedure, a course
schedule, an OCRed diary, a data model, a contract notice; skipped when absent), asks the 48
questions of ``bench/corpus_questions.py``; its answer passage is the chunk holding the
question's first expected phrase.

The search is exact (numpy cosine) here and the ranking code is the Searcher's own, so only the
ranking differs between rows. Measures:

- source recall@5: the share of questions whose top 5 hold a chunk of every source document;
- answer-passage hit@5: the share whose top 5 hold an *answer passage*: a chunk of a source
  document that contains a figure of the reference answer (numbers of three digits or more,
  years left out) or, when the reference has no such figure, a chunk of a source document whose
  distinct content words shared with the reference answer are at least half as many as the best
  such chunk's (for the fictional sets: the chunk holding the known figure, phrase or table
  row, whitespace runs compared as one space). Computed on each approach's own chunks;
- MRR: the mean of 1/rank of the first answer passage (0 when none in the ranking).

Latency: the Searcher as the gateway runs it, dense-only and hybrid + focus, on real servers
(a private Redis and Chroma, started here) holding the development set's chunks, the question
embedded by the local model each time; warm; k = 5. Hybrid + focus twice: with the exact dense
side of a tenant small enough to keep its vectors (what runs here), and through Chroma's graph
(a tenant over ``chat_gateway.lexical.EXACT_MAX_CHUNKS``). (Quality above is exact everywhere;
``python -m bench ann`` measures what the graph misses.)

Run: python -m bench retrieval
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fnmatch
import io
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.table import render
from chat_gateway.focus import Focus, expanded, focus
from chat_gateway.lexical import LexicalIndex, top_rows
from chat_gateway.search import rank
from parley.embedder.text import context_metadata, document_text
from parley.ids import ChunkId, DocumentId
from parley.vectors.store import ChunkRecord, Hit

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "sec10q-dev"
K = 5
POOL = 40  # candidates each side ranks (chat_gateway.search.CANDIDATES)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
STOP = frozenset(
    re.findall(
        r"\w+",
        "the a an of in to and or for on by with as is are was were be been this that these those "
        "its it from at which what how did does do has have had any if so their there than into "
        "over per not also such other more most",
    )
)
VERSION = "v1"
TEXT_SHARE = 0.5  # see "answer passage" in the module docstring


@dataclass(frozen=True)
class Case:
    question: str
    sources: frozenset[str]  # document names
    figures: frozenset[str]  # numbers of the reference answer, without separators
    reference: str  # the reference answer's text (used when it has no figure)
    phrase: str | None = None  # a phrase an answer passage holds (the fictional set)


@dataclass
class Corpus:
    records: list[ChunkRecord]
    matrix: np.ndarray  # one unit vector per record
    index: LexicalIndex


def numbers(text: str) -> set[str]:
    """Numbers of at least two digits, without thousands separators or trailing dots."""
    found = {m.group().replace(",", "").rstrip(".") for m in NUMBER.finditer(text)}
    return {n for n in found if len(n.replace(".", "")) >= 2}


def figures_of(answer: str) -> frozenset[str]:
    """The figures of a reference answer that identify a passage: three digits or more (so "12"
    months or "2.4" percent, which many chunks hold, do not count), years left out."""
    return frozenset(
        n for n in numbers(answer)
        if len(n.replace(".", "")) >= 3 and not re.fullmatch(r"(19|20)\d\d", n)
    )


# ------------------------------------------------------------------------------ chunkings


def parley_records(files: dict[str, bytes]) -> list[ChunkRecord]:
    """The chunks the workers store: extraction, document context, chunking, metadata."""
    from ingest_worker.chunking import chunk
    from ingest_worker.context import document_context, docx_properties
    from ingest_worker.extract.dispatch import extract
    from parley.embedder.local import MiniLMTokenizer
    from parley.settings import Settings

    settings = Settings()
    tokenizer = MiniLMTokenizer()
    out = []
    for name, data in files.items():
        extraction = extract(data, name, max_pages=5000, max_bytes=10**9)
        props = docx_properties(data) if extraction.kind == "docx" else None
        context = document_context(extraction.blocks, name, props, stored_title=extraction.title)
        drafts = chunk(
            extraction.blocks,
            tokenizer=tokenizer,
            max_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        for d in drafts:
            meta: dict[str, str | int | float | bool] = {
                "filename": name, "ordinal": d.ordinal, **context_metadata(context)
            }
            if d.page is not None:
                meta["page"] = d.page
            if d.heading:
                meta["heading"] = d.heading
            if d.unit:
                meta["unit"] = d.unit
            out.append(
                ChunkRecord(ChunkId(f"{name}#{d.ordinal}"), DocumentId(name), VERSION, d.text, (),
                            meta)
            )
    return out


def seed_records(files: dict[str, bytes]) -> list[ChunkRecord]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=10)
    out = []
    for name, data in files.items():
        try:
            text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
        except Exception as exc:  # the seed has no fallback: a file it cannot read is lost
            print(f"seed: pypdf failed on {name}: {type(exc).__name__}", file=sys.stderr)
            continue
        for i, t in enumerate(splitter.split_text(text)):
            out.append(ChunkRecord(ChunkId(f"{name}#{i}"), DocumentId(name), VERSION, t, (), {}))
    return out


def embedded_text(record: ChunkRecord, *, seed: bool) -> str:
    if seed:
        return record.text
    heading = record.metadata.get("heading")
    from parley.embedder.text import context_of

    return document_text(
        str(record.metadata["filename"]), record.text, str(heading) if heading else None,
        context_of(record.metadata),
    )


async def embed(texts: Sequence[str]) -> np.ndarray:
    from parley.embedder.local import LocalEmbedder

    embedder = LocalEmbedder()
    try:
        return np.asarray(await embedder.embed(list(texts)), dtype=np.float32)
    finally:
        await embedder.close()


async def corpus(records: list[ChunkRecord], *, seed: bool) -> Corpus:
    matrix = await embed([embedded_text(r, seed=seed) for r in records])
    return Corpus(records, matrix, LexicalIndex(records))


# -------------------------------------------------------------------------------- rankers

Ranker = Callable[[Corpus, str, np.ndarray], list[Hit]]


def _dense(c: Corpus, vector: np.ndarray, rows: np.ndarray | None = None) -> list[Hit]:
    sims = c.matrix @ vector
    if rows is not None:
        sims = np.where(rows, sims, -np.inf)
    top = [int(i) for i in np.argsort(-sims)[:POOL] if np.isfinite(sims[i])]
    return [c.index.hit(i, float(sims[i])) for i in top]


def dense(c: Corpus, question: str, vector: np.ndarray) -> list[Hit]:
    return _dense(c, vector)


def lexical(c: Corpus, question: str, vector: np.ndarray) -> list[Hit]:
    found = c.index.search(question, np.ones(len(c.records), dtype=bool), k=POOL)
    return [c.index.hit(f.row, f.score) for f in found]


def hybrid(weights: tuple[float, float], *, focused: bool) -> Ranker:
    def ranker(c: Corpus, question: str, vector: np.ndarray) -> list[Hit]:
        served = {r.document_id: VERSION for r in c.records}
        where = Focus()
        if focused:
            contexts = {d: ctx for (d, _v), ctx in c.index.contexts.items()}
            where = focus(c.index.respelled(question), contexts)
        scores = c.index.scores(expanded(question) if focused else question)
        everything = c.index.served_rows(served)
        dense_focus: list[Hit] = []
        lexical_focus = []
        if where.documents is not None:
            rows = c.index.served_rows(served, sorted(where.documents))
            dense_focus = _dense(c, vector, rows)
            lexical_focus = top_rows(scores, rows, k=POOL)
        return rank(
            c.index, where, _dense(c, vector), dense_focus, top_rows(scores, everything, k=POOL),
            lexical_focus, weights=weights,
        )

    return ranker


# -------------------------------------------------------------------------------- measures


def answer_passages(case: Case, records: Sequence[ChunkRecord]) -> set[ChunkId]:
    candidates = [r for r in records if r.document_id in case.sources]
    if case.phrase is not None:  # compared with whitespace runs as one space (PDF line breaks)
        phrase = " ".join(case.phrase.lower().split())
        return {r.chunk_id for r in candidates if phrase in " ".join(r.text.lower().split())}
    if case.figures:
        found = {r.chunk_id for r in candidates if case.figures & numbers(r.text)}
        if found:
            return found
    words = {w for w in re.findall(r"[a-z]{3,}", case.reference.lower()) if w not in STOP}
    overlap = {r.chunk_id: len(words & set(re.findall(r"[a-z]{3,}", r.text.lower())))
               for r in candidates}
    best = max(overlap.values(), default=0)
    return {c for c, n in overlap.items() if best and n >= TEXT_SHARE * best}


def measure(
    c: Corpus, cases: Sequence[Case], vectors: np.ndarray, ranker: Ranker
) -> tuple[float, float, float]:
    recall = hit = mrr = 0.0
    for case, vector in zip(cases, vectors, strict=True):
        ranked = ranker(c, case.question, vector)
        top = ranked[:K]
        recall += all(any(h.document_id == s for h in top) for s in case.sources)
        wanted = answer_passages(case, c.records)
        ranks = [i for i, h in enumerate(ranked, start=1) if h.chunk_id in wanted]
        hit += bool(ranks) and ranks[0] <= K
        mrr += 1 / ranks[0] if ranks else 0.0
    n = len(cases)
    return recall / n, hit / n, mrr / n


# -------------------------------------------------------------------------------- the sets


def dev_set() -> tuple[dict[str, bytes], list[Case]] | None:
    if not EVAL.exists():
        return None
    files = {p.name: p.read_bytes() for p in sorted((EVAL / "docs").glob("*.pdf"))}
    cases = []
    for row in csv.DictReader((EVAL / "qna.csv").open(encoding="utf-8")):
        answer = row["Answer"].split("SOURCE(S):")[0]
        sources = frozenset(n for n in files if fnmatch.fnmatch(n, row["Source Docs"]))
        cases.append(Case(row["Question"], sources, figures_of(answer), answer))
    return files, cases


def fictional_set() -> tuple[dict[str, bytes], list[Case]]:
    from tests.fixtures import filings

    reports = filings.reports()
    files = {r.filename: r.pdf() for r in reports}
    cases = []
    for q in filings.questions(reports):
        figures = figures_of(q.answer)
        cases.append(Case(q.text, frozenset(r.filename for r in q.sources), figures, q.answer,
                          phrase=None if figures else q.answer))
    return files, cases


def offices_set() -> tuple[dict[str, bytes], list[Case]]:
    from tests.fixtures import offices

    companies = offices.companies()
    files = {c.filename: c.docx() for c in companies}
    cases = [
        Case(q.text, frozenset({q.source.filename}), frozenset(), q.row, phrase=q.row)
        for q in offices.questions(companies)
    ]
    return files, cases


def handbooks_set() -> tuple[dict[str, bytes], list[Case]]:
    """Everyday documents (tests/fixtures/handbooks.py), asked mostly in the asker's words; the
    answer passage is the chunk of the question's source that holds its expected phrase."""
    from tests.fixtures import handbooks

    cases = [
        Case(q.text, frozenset({q.source}), frozenset(), q.expected[0], phrase=q.expected[0])
        for q in handbooks.questions()
    ]
    return handbooks.documents(), cases


def corpus_set() -> tuple[dict[str, bytes], list[Case]] | None:
    """Real documents nobody on the project wrote (../shared/corpus; bench/corpus_questions.py):
    the answer passage is the chunk of the question's document that holds its first phrase."""
    from bench.corpus_questions import CORPUS, QUESTIONS, documents

    if not CORPUS.exists():
        return None
    cases = [Case(question, frozenset({Path(name).name}), frozenset(), phrases[0],
                  phrase=phrases[0]) for name, question, phrases in QUESTIONS]
    return documents(), cases


async def quality(name: str, files: dict[str, bytes], cases: list[Case]) -> str:
    vectors = await embed([c.question for c in cases])
    parley = await corpus(parley_records(files), seed=False)
    # As the Searcher asks: a misspelt word as the documents spell it (chat_gateway.lexical).
    expanded_vectors = await embed([parley.index.respelled(expanded(c.question)) for c in cases])
    rows: list[list[object]] = []
    pdfs = {n: d for n, d in files.items() if n.endswith(".pdf")}
    if pdfs:
        seed = await corpus(seed_records(pdfs), seed=True)
        rows.append(["seed: pypdf + recursive 1000/10, dense", len(seed.records),
                     *measure(seed, cases, vectors, dense)])
        rows.append(["seed chunks, hybrid (no context)", len(seed.records),
                     *measure(seed, cases, vectors, hybrid((1.0, 1.0), focused=False))])
    from chat_gateway.search import DENSE_WEIGHT, LEXICAL_WEIGHT

    shipped = (DENSE_WEIGHT, LEXICAL_WEIGHT)
    others = [w for w in ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0)) if w != shipped]
    for label, ranker, focused in (
        ("parley dense (context header)", dense, False),
        ("parley lexical (BM25)", lexical, False),
        ("parley hybrid (RRF 1:1)", hybrid((1.0, 1.0), focused=False), False),
        (f"parley hybrid + focus (RRF {shipped[0]:g}:{shipped[1]:g}, shipped)",
         hybrid(shipped, focused=True), True),
        *((f"parley hybrid + focus (RRF {w[0]:g}:{w[1]:g})", hybrid(w, focused=True), True)
          for w in others),
    ):
        # "focus" rows ask as the Searcher does: abbreviations spelled out (chat_gateway.focus).
        asked = expanded_vectors if focused else vectors
        rows.append([label, len(parley.records), *measure(parley, cases, asked, ranker)])
    rows.append(["parley hybrid + rerank", "-", "n/a", "n/a", "n/a"])
    return render(
        f"Retrieval on {name} ({len(files)} documents, {len(cases)} questions, k={K}, "
        "same embedder; rerank: no packaged cross-encoder)",
        ["ranking", "chunks", "source recall@5", "answer hit@5", "MRR"],
        rows,
    )


# -------------------------------------------------------------------------------- latency


async def latency(files: dict[str, bytes], cases: list[Case], rounds: int) -> str:
    import redis.asyncio as aioredis

    from chat_gateway.search import Lexical, Searcher
    from parley.embedder.local import LocalEmbedder
    from parley.ids import TenantId
    from parley.status import Stage, StatusStore
    from parley.vectors.chroma import ChromaStore
    from parley.vectors.generations import Generations
    from parley_cli import localstack

    records = parley_records(files)
    matrix = await embed([embedded_text(r, seed=False) for r in records])
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = localstack.start_redis(Path(tmp) / "redis")
        chroma_server = localstack.start_chroma(Path(tmp) / "chroma")
        try:
            async with contextlib.AsyncExitStack() as stack:
                redis = aioredis.Redis.from_url(redis_server.url)
                stack.push_async_callback(redis.aclose)
                embedder = LocalEmbedder()
                stack.push_async_callback(embedder.close)
                generations = Generations(redis, prefix="bench")
                store = await ChromaStore.connect(
                    chroma_server.url, embedder.model_id, on_write=generations.bump
                )
                status = StatusStore(redis, prefix="bench")
                tenant = TenantId("bench")
                by_doc: dict[DocumentId, list[ChunkRecord]] = {}
                for r, v in zip(records, matrix, strict=True):
                    by_doc.setdefault(r.document_id, []).append(
                        ChunkRecord(r.chunk_id, r.document_id, VERSION, r.text, v.tolist(),
                                    r.metadata))
                for doc, rows in by_doc.items():
                    await status.begin_version(tenant, doc, VERSION, batches_total=1,
                                               chunks=len(rows), stage=Stage.EMBEDDING,
                                               filename=doc, path=doc)
                    for start in range(0, len(rows), 200):
                        await store.upsert(tenant, rows[start : start + 200])
                    await status.batch_landed(tenant, doc, VERSION, 0, len(rows))
                searchers = {
                    "dense only": Searcher(embedder, store, status),
                    "hybrid + focus (exact dense side, shipped)": Searcher(
                        embedder, store, status,
                        lexical=Lexical.for_store(store, redis, prefix="bench"),
                    ),
                    # A tenant over chat_gateway.lexical.EXACT_MAX_CHUNKS: Chroma's graph.
                    "hybrid + focus (HNSW dense side)": Searcher(
                        embedder, store, status,
                        lexical=Lexical.for_store(store, redis, prefix="bench",
                                                  exact_max_chunks=0),
                    ),
                }
                rows_out: list[list[object]] = []
                for label, searcher in searchers.items():
                    for case in cases[:5]:  # warm: model, connections, the lexical index
                        await searcher.search(tenant, case.question, k=K)
                    times = []
                    for _ in range(rounds):
                        for case in cases:
                            started = time.perf_counter()
                            await searcher.search(tenant, case.question, k=K)
                            times.append((time.perf_counter() - started) * 1000)
                    times.sort()
                    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
                    rows_out.append([label, len(times), statistics.median(times), p99,
                                     times[-1]])
        finally:
            chroma_server.stop()
            redis_server.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return render(
        f"Search latency, warm, k={K}, {len(records)} chunks, real Redis + Chroma, "
        f"{os.cpu_count()} cores, load average {load}",
        ["searcher", "searches", "p50 ms", "p99 ms", "max ms"],
        rows_out,
    )


async def run() -> str:
    out = []
    dev = dev_set()
    if dev is None:
        out.append(f"sec10q-dev: skipped: {EVAL} is absent (../shared is beside the project only "
                   "in CI and dev)\n")
    else:
        out.append(await quality("sec10q-dev", *dev))
    out.append(await quality("fictional reports (tests/fixtures/filings.py)", *fictional_set()))
    out.append(await quality("fictional office tables, DOCX (tests/fixtures/offices.py)",
                             *offices_set()))
    out.append(await quality("everyday documents (tests/fixtures/handbooks.py)",
                             *handbooks_set()))
    real = corpus_set()
    if real is None:
        out.append("real documents: skipped: ../shared/corpus is absent\n")
    else:
        out.append(await quality("real documents (../shared/corpus, bench/corpus_questions.py)",
                                 *real))
    if dev is not None:
        out.append(await latency(*dev, rounds=int(os.environ.get("BENCH_ROUNDS", "3"))))
    return "\n".join(out)


def main() -> str:
    return asyncio.run(run())


if __name__ == "__main__":
    print(main())
