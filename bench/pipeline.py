"""Ingestion speed, side by side in one run on the same files (local all-MiniLM-L6-v2):

1. pipeline throughput: chunks/s end to end (upload -> blob -> queue -> ingest worker process ->
   embed worker process -> Chroma server, until every document is ``ready``) divided by the bare
   embedding throughput of the workers' embedder (the graph ``PARLEY_EMBED_GRAPH`` names, int8 by
   default) on the same chunk texts in one process, in full batches of ``embed_batch_size``
   (goal >= 0.9). Beside it, the bare embedding in the pipeline's own calls: each document's
   chunk batches (4, 8, 16, then full ones), which cost the int8 graph more per chunk than full
   batches and give the pipeline's very vectors (a text's int8 vector depends a little on its
   mini-batch, so the full batches' vectors differ slightly). Measured in one process on the
   dev filings, five rounds at load 2.3-7: the pipeline's calls took 6-9.5% more CPU per chunk
   than full batches, and 6-13% more time in the three rounds at load 2.3-2.7, so against full
   batches the pipeline stays under ~0.88-0.94 even with no overhead at all;
2. time until the documents are searchable: Parley vs the seed's approach in one process
   (pypdf + LangChain RecursiveCharacterTextSplitter(1000, 10) + Chroma.from_texts), the seed
   running the same model the plain way: the packaged ONNX file as shipped (goal >= 2x);
3. time from upload until the first chunk of a 50-page PDF is searchable.

The machine's load average is printed before and after: on a shared machine the figures move.
``--spin both`` (or ``on,off``) runs 1 and 3 twice, with the embedder's onnxruntime threads
spinning (shipped: onnxruntime's default) and sleeping (``PARLEY_EMBED_SPIN=false``).

Warm-up: as many documents as the ingest worker takes at once go through first, so that worker
start-up (model load, one extraction child per concurrent document) is not counted. While the
documents are on the way the bench reads one status every 50 ms (the first document not yet
settled): its own CPU is taken from the cores the workers share.

Where the CPU goes during 1: each process's own CPU time (``/proc``: user + system, its child
processes included, so the ingest worker's extraction children count as "ingest worker") from the
start of the uploads until every document is ready, in milliseconds per chunk, beside the bare
embedding's. ``--before CHECKOUT`` (e.g. a worktree of main) runs the workers of that checkout
too, alternating with this tree's ``--repeat`` times, each tree's run right after the other, so
that the figures of both see the same load (the bare embedding is this tree's, measured once per
round).

Files: the four filings of ../shared/eval/sec10q-dev when present, else generated PDFs.
Run: python -m bench pipeline [--spin off|on|both] [--before CHECKOUT] [--repeat N] [--no-seed]
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.table import render
from parley.errors import Retry
from parley.ids import TenantId

ROOT = Path(__file__).resolve().parent.parent
EVAL_DOCS = ROOT.parent / "shared" / "eval" / "sec10q-dev" / "docs"


def files() -> dict[str, bytes]:
    if EVAL_DOCS.exists():
        return {p.name: p.read_bytes() for p in sorted(EVAL_DOCS.glob("*.pdf"))}
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import documents

    return {
        f"generated-{i}.pdf": documents.text_pdf(
            [documents.lorem(350, seed=i * 100 + p) for p in range(25)]
        )
        for i in range(4)
    }


def fifty_page_pdf() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import documents

    return documents.text_pdf([documents.lorem(400, seed=9000 + p) for p in range(50)])


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, clock ticks) of every process now (Linux ``/proc``): user + system
    time of the process and of its children that ended and were waited for."""
    out: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # After the name: state ppid ... utime stime cutime cstime (fields 14-17 in proc(5)).
        out[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return out


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its live descendants (a named
    process is counted under its own name only, never under its parent's)."""
    ticks = _cpu_ticks()
    children: dict[int, list[int]] = {}
    for pid, (parent, _t) in ticks.items():
        children.setdefault(parent, []).append(pid)
    out: dict[str, float] = {}
    hertz = os.sysconf("SC_CLK_TCK")
    for name, root in roots.items():
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += ticks.get(pid, (0, 0))[1]
            todo += [c for c in children.get(pid, []) if c not in roots.values()]
        out[name] = total / hertz
    return out


PROCESSES = ("ingest worker (with its extraction children)", "embed worker", "Chroma server",
             "Redis", "bench client (uploads, status polls)")


def chunk_texts(pdfs: dict[str, bytes]) -> list[str]:
    """What the embed worker embeds for these files, computed with the workers' own functions."""
    from embed_worker.handler import embedding_text
    from ingest_worker.chunking import chunk
    from ingest_worker.context import document_context
    from ingest_worker.extract.dispatch import extract
    from parley.contracts import ChunkBatch
    from parley.embedder.local import MiniLMTokenizer
    from parley.settings import Settings

    settings = Settings()
    tokenizer = MiniLMTokenizer()
    texts = []
    for name, data in pdfs.items():
        blocks = extract(data, name, max_pages=5000, max_bytes=10**9).blocks
        drafts = chunk(
            blocks,
            tokenizer=tokenizer,
            max_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        batch = ChunkBatch.model_validate(
            {
                "tenant": "t",
                "document_id": "d",
                "version": "v",
                "filename": name,
                "path": name,
                "batch_index": 0,
                "batch_count": 1,
                "chunks": [],
                "context": document_context(blocks, name),
            }
        )
        texts += [embedding_text(batch, d.text, d.heading) for d in drafts]
    return texts


async def bare(calls: list[list[str]]) -> tuple[float, float]:
    """Seconds to embed the texts of ``calls`` in one process with the workers' embedder, one
    ``embed`` call each, and the CPU seconds it used."""
    from backends.factory import build_embedder
    from parley.settings import Settings

    embedder = build_embedder(Settings())
    try:
        await embedder.embed(calls[0][:2])
        start, cpu = time.perf_counter(), time.process_time()
        for texts in calls:
            await embedder.embed(texts)
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        await embedder.close()


def in_batches(texts: list[str], size: int) -> list[list[str]]:
    """The texts in calls of ``size`` (the goal's bare embedding: full batches throughout)."""
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def as_pipeline_batches(documents: list[list[str]], size: int) -> list[list[str]]:
    """Each document's texts in the chunk batches the ingest worker makes of them (4, 8, 16, then
    ``size``: :func:`ingest_worker.handler.batch_sizes`), which the embed worker embeds one call
    each. The int8 graph's vectors depend a little on their mini-batch, so these calls give the
    pipeline's very vectors, where :func:`in_batches` gives slightly different ones."""
    from ingest_worker.handler import batch_sizes

    calls = []
    for texts in documents:
        start = 0
        for count in batch_sizes(len(texts), size):
            calls.append(texts[start : start + count])
            start += count
    return calls


def seed(pdfs: dict[str, bytes]) -> tuple[float, int]:
    """The seed's approach, in one process: seconds until searchable, chunks."""
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    loop = asyncio.new_event_loop()
    embedder = LocalEmbedder(LocalEmbedderConfig(graph="packaged"))  # the plain way

    class Same(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return loop.run_until_complete(embedder.embed(texts))

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    Same().embed_query("warm up")
    start = time.perf_counter()
    texts: list[str] = []
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=10)
    for name, data in pdfs.items():
        try:
            text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
        except Exception as exc:
            print(f"seed: pypdf failed on {name}: {type(exc).__name__}", file=sys.stderr)
            continue
        texts += splitter.split_text(text)
    store = Chroma.from_texts(texts, Same(), collection_name=f"seed{uuid.uuid4().hex[:6]}")
    store.similarity_search("net sales", k=1)
    elapsed = time.perf_counter() - start
    loop.run_until_complete(embedder.close())
    loop.close()
    return elapsed, len(texts)


async def parley_run(
    pdfs: dict[str, bytes], state: Path, *, first_chunk_of: bytes | None = None,
    root: Path = ROOT,
) -> dict[str, Any]:
    """The workers of the checkout ``root`` (default: this tree) ingest ``pdfs``: seconds,
    chunks, CPU seconds per process (:data:`PROCESSES`) and, with ``first_chunk_of``, the
    first-chunk and ready times of that PDF."""
    from backends.clients import open_clients
    from chat_gateway.search import Searcher
    from parley.ids import document_id
    from parley.settings import Settings
    from parley.status import Stage
    from parley.uploads import upload
    from parley_cli import localstack

    redis = localstack.start_redis(state / "redis")
    chroma = localstack.start_chroma(state)
    env = {
        "PARLEY_REDIS_URL": redis.url,
        "PARLEY_CHROMA_URL": chroma.url,
        "PARLEY_BLOB_DIR": str(state / "blobs"),
        "PARLEY_BLOB_WATCH_SECONDS": "0",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    path = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", m],
            cwd=root,
            env={**os.environ, **env, "PYTHONPATH": path},
            stdout=subprocess.DEVNULL,
            stderr=(state / f"{m}.log").open("ab"),
        )
        for m in ("ingest_worker", "embed_worker")
    ]
    result: dict[str, Any] = {}
    try:
        settings = Settings()
        async with contextlib.AsyncExitStack() as stack:
            clients = await open_clients(stack, settings, blobs=True, vectors=True)
            broker = clients.brokers.for_queue(settings.queues.ingest)
            searcher = Searcher(clients.embedder, clients.vectors, clients.status)
            # Warm-up documents, as many as the ingest worker takes at once, so worker start-up
            # (model load, an extraction child per concurrent document) is not counted.
            warm = zip(range(settings.queues.ingest.concurrency), itertools.cycle(pdfs.values()))
            await _ingest(
                settings, clients, broker, "warm", {f"warm-{i}.pdf": d for i, d in warm}, Stage
            )
            roots = dict(zip(PROCESSES, [w.pid for w in workers]
                             + [chroma.process.pid, redis.process.pid, os.getpid()], strict=True))
            cpu = cpu_seconds(roots)
            start = time.perf_counter()
            total = await _ingest(settings, clients, broker, "bench", pdfs, Stage)
            result["seconds"] = time.perf_counter() - start
            result["chunks"] = total
            result["cpu"] = {k: v - cpu[k] for k, v in cpu_seconds(roots).items()}
            if first_chunk_of is not None:
                tenant = TenantId("first")
                start = time.perf_counter()
                request, _ = await upload(
                    settings,
                    blobs=clients.blobs,
                    broker=broker,
                    tenant=tenant,
                    filename="fifty.pdf",
                    data=first_chunk_of,
                    status=clients.status,
                )
                doc = document_id(tenant, request.path)
                while True:
                    try:
                        hits = await searcher.search(tenant, "lorem ipsum", k=1)
                    except Retry:  # Chroma: a new collection's index not yet on disk
                        hits = []
                    if any(h.document_id == doc for h in hits):
                        break
                    await asyncio.sleep(0.02)
                result["first_chunk"] = time.perf_counter() - start
                while (await clients.status.get(tenant, doc)).stage != Stage.READY:  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                result["fifty_ready"] = time.perf_counter() - start
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        chroma.stop()
        redis.stop()
    return result


async def _ingest(
    settings: Any, clients: Any, broker: Any, tenant: str, pdfs: dict[str, bytes], stage: Any
) -> int:
    from parley.ids import document_id
    from parley.uploads import upload

    tenant = TenantId(tenant)
    ids = []
    for name, data in pdfs.items():
        request, _ = await upload(
            settings,
            blobs=clients.blobs,
            broker=broker,
            tenant=tenant,
            filename=name,
            data=data,
            status=clients.status,
        )
        ids.append(document_id(tenant, request.path))
    # Every 50 ms, one status read: the first document not yet settled (the next ones are read
    # once it is). Reading all of them each time cost this process ~3 ms of CPU per chunk
    # ingested, taken from the cores the workers share.
    chunks = 0
    pending = list(ids)
    while pending:
        state = await clients.status.get(tenant, pending[0])
        if state is not None and state.stage in (stage.READY, stage.FAILED):
            chunks += state.chunks if state.stage == stage.READY else 0
            pending.pop(0)
            continue
        await asyncio.sleep(0.05)
    return chunks


def main() -> None:
    import argparse

    from parley.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spin", default="on", choices=["on", "off", "both", "on,off"],
                        help="PARLEY_EMBED_SPIN of bare embedding and the workers: on (shipped, "
                             "onnxruntime's default), off, or both side by side (both: off first)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. a worktree of main) whose workers run too, "
                             "alternating with this tree's")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (each: bare, then the "
                        "pipeline of each tree; with --before the order alternates)")
    parser.add_argument("--no-seed", action="store_true", help="leave out the seed's run")
    args = parser.parse_args()
    load_before = os.getloadavg()
    graph = Settings().embed_graph
    pdfs = files()
    documents = [chunk_texts({name: data}) for name, data in pdfs.items()]
    texts = [t for d in documents for t in d]
    size = Settings().embed_batch_size
    spins = ["off", "on"] if args.spin == "both" else args.spin.split(",")
    trees = [("this tree", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    rows: list[list[Any]] = []
    parley_seconds = 0.0
    for spin in spins:
        os.environ["PARLEY_EMBED_SPIN"] = "true" if spin == "on" else "false"
        for round_ in range(args.repeat):
            bare_seconds, bare_cpu = asyncio.run(bare(in_batches(texts, size)))
            plan_seconds, _ = asyncio.run(bare(as_pipeline_batches(documents, size)))
            runs: dict[str, dict[str, Any]] = {}
            order = trees[::-1] if round_ % 2 == 0 else trees  # before first in round 1
            for name, root in order:
                with tempfile.TemporaryDirectory() as tmp:
                    runs[name] = asyncio.run(
                        parley_run(pdfs, Path(tmp), first_chunk_of=fifty_page_pdf(), root=root))
                runs[name]["load"] = os.getloadavg()[0]
            rows += _rows(f"[spin {spin}, round {round_ + 1}] ", runs, [t for t, _ in trees],
                          len(texts) / bare_seconds, bare_cpu * 1000 / len(texts),
                          len(texts) / plan_seconds)
            parley_seconds = runs["this tree"]["seconds"]
    header = ["measure", *(t for t, _ in trees)] + (["this / before"] if args.before else [])
    if not args.no_seed:
        seed_seconds, seed_chunks = seed(pdfs)
        rows += [
            [f"seed: pypdf + splitter + Chroma.from_texts ({seed_chunks} chunks), s",
             seed_seconds, *([""] * (len(header) - 2))],
            [f"seed / Parley [spin {spins[-1]}] (goal >= 2)", seed_seconds / parley_seconds,
             *([""] * (len(header) - 2))],
        ]
    print(
        render(
            f"Ingestion of {len(pdfs)} PDFs ({sum(map(len, pdfs.values())) / 2**20:.1f} MiB), "
            f"local MiniLM ({graph} graph; the seed: the packaged file), {os.cpu_count()} cores",
            header,
            rows,
        )
    )
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")


def _rows(tag: str, runs: dict[str, dict[str, Any]], trees: list[str], bare_rate: float,
          bare_cpu_ms: float, plan_rate: float) -> list[list[Any]]:
    """One round's rows: a column per tree (and their ratio when there are two)."""

    def row(measure: str, values: list[float]) -> list[Any]:
        ratio = [values[0] / values[1] if values[1] else "-"] if len(values) == 2 else []
        return [tag + measure, *values, *ratio]

    def each(figure: Any) -> list[float]:
        return [float(figure(runs[t])) for t in trees]

    rates = each(lambda r: r["chunks"] / r["seconds"])
    out = [
        row("bare embedding (same chunks, one process), chunks/s", [bare_rate] * len(trees)),
        row("pipeline end to end (blob -> Chroma), chunks/s", rates),
        row("pipeline / bare (goal >= 0.9)", [r / bare_rate for r in rates]),
        row("bare embedding in the pipeline's batches (4, 8, 16, 32.. a document), chunks/s",
            [plan_rate] * len(trees)),
        row("pipeline / bare in the pipeline's batches", [r / plan_rate for r in rates]),
        row("Parley: upload until all searchable, s", each(lambda r: r["seconds"])),
        row("50-page PDF: upload until first chunk searchable, s",
            each(lambda r: r["first_chunk"])),
        row("50-page PDF: upload until ready, s", each(lambda r: r["fifty_ready"])),
        row("CPU ms/chunk: bare embedding (one process)", [bare_cpu_ms] * len(trees)),
    ]
    for process in PROCESSES:
        out.append(row(f"CPU ms/chunk: {process}",
                       each(lambda r, p=process: r["cpu"][p] * 1000 / r["chunks"])))
    out.append(row("CPU ms/chunk: all of them",
                   each(lambda r: sum(r["cpu"].values()) * 1000 / r["chunks"])))
    out.append(row("load average (1 min) after the run", each(lambda r: r["load"])))
    return out


if __name__ == "__main__":
    main()
